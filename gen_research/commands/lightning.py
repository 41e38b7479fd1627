"""The LightningCLI subclass behind fit/validate/test/predict: run folders, standard callbacks, checks."""

from __future__ import annotations

import importlib
import os
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from gen_research.files.atomic import atomic_write_with
from gen_research.training.callbacks.checkpoint import AtomicCheckpointIO, RunCheckpoint
from gen_research.training.callbacks.divergence import StopOnNonFinite
from gen_research.training.callbacks.preemption import StepBoundaryRequeue
from gen_research.training.callbacks.rng_state import RandomStateCheckpoint
from gen_research.config.checks import check_run_config
from gen_research.config.stages import config_digest
from gen_research.errors import GenResearchError
from gen_research.config.parser_errors import condense_parser_error, signature_keys
from gen_research.config.precision import accept_auto_precision, accept_tf32, resolve_auto_precision, resolve_tf32
from gen_research.training.run_folder import (
    CHECKPOINT_DIR,
    FIT_MARKER,
    RUN_DIR_ENV,
    check_checkpoint_matches,
    new_run_dir,
    newest_valid_checkpoint,
    read_checkpoint,
    resolve_checkpoint_name,
    run_dir_of_checkpoint,
    slurm_restart_count,
    write_fit_marker,
)

LIGHTNING_CKPT_KEYWORDS = ("hpc", "registry")  # passed on to Lightning (fit only)
AUTO_MONITOR = "auto"  # checkpoint.monitor/mode default: what the model family declares (CHECKPOINT_MONITOR)
RANKED_FILENAME = "best-epoch{epoch:03d}-step{step:06d}"
UNRANKED_FILENAME = "epoch{epoch:03d}-step{step:06d}"  # no monitor: the newest, not the best


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config into the run folder (never over an existing file) and sends it to the loggers."""

    saved_path: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            run_dir = Path(trainer.default_root_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            path, attempt = run_dir / "config.yaml", 1
            while path.exists():  # a resumed run keeps the first config and adds config.resume-N.yaml
                path, attempt = run_dir / f"config.resume-{attempt}.yaml", attempt + 1
            self.parser.save(self.config, str(path), skip_none=False, overwrite=False, multifile=False)
            self.saved_path = path
            resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            resolved.pop("config", None)
            for logger in trainer.loggers:
                logger.log_hyperparams(resolved)  # W&B config == the resolved config, nested as in the YAML
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


class GenResearchCLI(LightningCLI):
    """LightningCLI with registry names, per-run folders, standard callbacks and checkpoint checks."""

    def __init__(self, args: list[str]) -> None:
        self.run_dir: Path | None = None
        self.checkpoint: dict[str, Any] | None = None
        self.checkpoint_path: Path | None = None
        super().__init__(
            model_class=LightningModule,
            subclass_mode_model=True,
            datamodule_class=LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=RunConfigSaver,
            auto_configure_optimizers=False,
            args=args,
        )

    # ----------------------------------------------------------------------------------------- parser
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("exit_on_error", False)  # raise, so that we can print one line instead of a usage dump
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self._raw_args = list(args)
        try:
            self.config = parser.parse_args(args)
        except ArgumentError as error:
            raise GenResearchError(condense_parser_error(str(error), self._option_names)) from None

    def _option_names(self, section: str) -> list[str]:
        """What a config section accepts, for "did you mean" hints."""
        if section == "":
            return ["model", "data", "trainer", "checkpoint", "seed_everything", "name", "runs_root", "ckpt_path", "config", "tf32"]
        if section == "trainer":
            return signature_keys(Trainer)
        if section == "checkpoint":
            return signature_keys(ModelCheckpoint)
        class_path = _configured_class_path(self._raw_args, section)
        if class_path:
            module_name, _, class_name = class_path.rpartition(".")
            try:
                return signature_keys(getattr(importlib.import_module(module_name), class_name))
            except (ImportError, AttributeError):
                return []
        return []

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--name", type=str | None, default=None, help="Experiment name: runs go to <runs_root>/<name>/. Default: the last --config file's name.")
        parser.add_argument("--runs_root", type=str, default="runs", help="Folder holding all experiments' run folders.")
        parser.add_argument("--imports", type=list[str], default=[], help="Modules whose classes the config may name besides gen_research and the field's libraries (docs/security.md).")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")  # Lightning's, with last.ckpt = the final step
        accept_auto_precision(parser)  # trainer.precision: auto (gen_research/config/precision.py)
        accept_tf32(parser)  # tf32: auto | true | false (gen_research/config/precision.py)
        parser.set_defaults(
            {
                "checkpoint.monitor": AUTO_MONITOR,  # the family's CHECKPOINT_MONITOR (resolve_checkpoint_monitor)
                "checkpoint.mode": AUTO_MONITOR,
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": RANKED_FILENAME,
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # Every model is told the shape and class count of its data (models ignore what they do not use).
        parser.link_arguments("data.image_shape", "model.init_args.image_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        parser.set_defaults({"weights_only": True})  # Trainer.fit/validate/test/predict never unpickle objects (docs/security.md)
        return parser

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would silently replace the YAML's model arguments by the checkpoint's; we check instead.
        return

    # ------------------------------------------------------------------------------------ run folder
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        _refuse_unsafe_loading(config)  # --weights_only=false (docs/security.md)
        # Checks and choices made on the parsed config, before anything is built or written (one step a line).
        check_run_config(config, self.subcommand)  # trainer/checkpoint/run-folder values that cannot work (gen_research/config/checks.py)
        resolve_auto_precision(config)  # trainer.precision: auto -> bf16-mixed or 32-true for this machine
        resolve_tf32(config)  # tf32: auto -> on for CUDA devices of compute capability >= 8.0 (training/speed.py: set_tf32)
        resolve_checkpoint_monitor(config)  # checkpoint.monitor: auto -> the family's CHECKPOINT_MONITOR
        self._resolve_checkpoint(config)
        self._choose_run_dir(config)
        self._resume_requeued_slurm_job(config)  # SLURM: an explicit checkpoint, the run's newest (never a stale hpc_ckpt)

    def _resolve_checkpoint(self, config: Namespace) -> None:
        """``--ckpt_path last|best|PATH`` -> a checkpoint file, read and checked before anything runs.

        Every subcommand resolves the names the same way (``last``: the newest valid checkpoint of the experiment's
        latest run by global step; ``best``: that run's best by the monitored metric). validate/test/predict without
        a checkpoint would evaluate freshly initialised weights with exit status 0: refused, unless the model is
        initialised from pretrained weights (``init_from``)."""
        experiment = config.name or "default"
        runs_root = Path(config.runs_root)
        ckpt = config.get("ckpt_path")
        if ckpt in ("last", "best"):
            ckpt = str(resolve_checkpoint_name(ckpt, runs_root, experiment))
        elif ckpt in LIGHTNING_CKPT_KEYWORDS and self.subcommand != "fit":
            raise GenResearchError(f"{self.subcommand} --ckpt_path {ckpt}: use last, best or a checkpoint file")
        elif not ckpt and self.subcommand != "fit" and not _initialised_from_pretrained(config):
            raise GenResearchError(
                f"{self.subcommand} needs trained weights: pass --ckpt_path last (the newest checkpoint of "
                f"{runs_root / experiment}), --ckpt_path best, or a .ckpt file"
            )
        config.ckpt_path = ckpt
        if ckpt and ckpt not in LIGHTNING_CKPT_KEYWORDS:
            self.checkpoint_path = Path(ckpt)
            self.checkpoint = read_checkpoint(self.checkpoint_path)

    def _choose_run_dir(self, config: Namespace) -> None:
        """A fresh run folder, or the resumed run's own for ``fit`` from one of its checkpoints."""
        experiment = config.name or "default"
        runs_root = Path(config.runs_root)
        resumed_dir = run_dir_of_checkpoint(self.checkpoint_path) if self.checkpoint_path else None
        if self.subcommand == "fit" and resumed_dir is not None:
            self.run_dir = resumed_dir
        else:
            self.run_dir = new_run_dir(runs_root, experiment, self.subcommand)
        os.environ[RUN_DIR_ENV] = str(self.run_dir)  # DDP workers re-run this command: same folder
        config.trainer.default_root_dir = str(self.run_dir)
        for logger in _logger_configs(config.trainer.get("logger")):
            if "save_dir" in logger.get("init_args", Namespace()):
                logger.init_args.save_dir = str(self.run_dir)

    def _resume_requeued_slurm_job(self, config: Namespace) -> None:
        """Inside a SLURM job ``fit`` hands Lightning an explicit checkpoint, the newest of its run folder by global
        step (gen_research/training/run_folder.py chose the folder: a requeued job gets its first start's). Left to itself
        (ckpt_path None or "hpc") Lightning takes the highest-numbered ``hpc_ckpt_*`` there even when a later
        ``last.ckpt`` exists, and a job requeued without USR1 (node failure, ``scontrol requeue``) has no HPC
        checkpoint and would start again from step 0. A requeued job begun from an older run's checkpoint
        (``--ckpt_path PATH``) continues from that run's newest one too, not from PATH again."""
        job = os.environ.get("SLURM_JOB_ID")
        ckpt = config.get("ckpt_path")
        restarted = slurm_restart_count() > 0
        if self.subcommand != "fit" or not job or self.run_dir is None:
            return
        if ckpt not in (None, "hpc") and not (restarted and self.checkpoint is not None):
            return
        newest = newest_valid_checkpoint(self.run_dir)
        if newest is None:
            if ckpt == "hpc":
                raise GenResearchError(f"--ckpt_path hpc: no checkpoint in {self.run_dir}; run fit without --ckpt_path")
            return
        if ckpt is None and not restarted:
            raise GenResearchError(
                f"run folder {self.run_dir} already holds checkpoints ({newest.name}) but SLURM job {job} was never "
                "requeued (SLURM_RESTART_COUNT 0): a job id reused after the controller's state was reset? Move that "
                f"folder away, or pass --ckpt_path {newest} to continue it"
            )
        checkpoint = read_checkpoint(newest)
        if self.checkpoint is not None and int(checkpoint["global_step"]) <= int(self.checkpoint.get("global_step", -1)):
            return  # the checkpoint given is already the newest
        if os.environ.get("SLURM_PROCID", "0") == "0":
            print(f"SLURM job {job} restart {slurm_restart_count()}: resuming from {newest} (step {checkpoint['global_step']}), "
                  f"the newest checkpoint of {self.run_dir}", flush=True)
        config.ckpt_path = str(newest)
        self.checkpoint_path, self.checkpoint = newest, checkpoint

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as error:
            # jsonargparse wraps errors raised in a constructor (e.g. a missing dataset folder) in its own.
            user_error = _find_user_error(error)
            if user_error is None:
                raise
            raise user_error from None

    def after_instantiate_classes(self) -> None:
        from gen_research.models.contract import ModelFamily, check_batch_fields
        from gen_research.registry import DATA

        if isinstance(self.model, ModelFamily) and hasattr(self.datamodule, "batch_fields"):  # the batch contract
            data_name = DATA.name_of(self.datamodule) or type(self.datamodule).__name__
            check_batch_fields(self.model, tuple(self.datamodule.batch_fields), data_name)
            self.model.check_data(self.datamodule, data_name)  # e.g. a translator's source channels, domain names
        if self.checkpoint is not None and self.checkpoint_path is not None:
            model_class = self.config[self.subcommand].model.class_path
            check_checkpoint_matches(self.checkpoint, self.checkpoint_path, self.model, model_class)
            self.checkpoint = None  # release the memory; Lightning reads the file itself
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(self.run_dir / CHECKPOINT_DIR)
        # The resolved config is what we log; Lightning would add the module hparams a second time.
        self.model._log_hyperparams = False
        if self.datamodule is not None:
            self.datamodule._log_hyperparams = False

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={})
        callbacks = list(trainer_config.get("callbacks") or [])
        callbacks.append(RandomStateCheckpoint())
        callbacks.append(StopOnNonFinite())  # a NaN/inf loss or gradient is an error before any checkpoint sees it
        callbacks.append(StepBoundaryRequeue())  # SLURM preemption: checkpoint at a step boundary (inert elsewhere)
        if trainer_config.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RichProgressBar())
        if trainer_config.get("logger") not in (False, None) and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        plugins = trainer_config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # temp file beside the checkpoint, fsync, rename
        return super().instantiate_trainer(callbacks=callbacks, plugins=plugins, **kwargs)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            if self.trainer.state.finished and self.run_dir is not None:  # not interrupted (gen_research/config/stages.py)
                final = _final_checkpoint(self.trainer, self.run_dir)
                write_fit_marker(self.run_dir, final, self.trainer.global_step, config_digest(self._raw_args))
            print_run_summary(self.trainer, self.run_dir)

    def predict(self, **kwargs: Any) -> None:
        """Run predict_step over the data module's predict split and save the outputs in the run folder."""
        predictions = self.trainer.predict(**kwargs)
        if predictions and self.trainer.is_global_zero and self.run_dir is not None:
            if isinstance(predictions[0], dict):  # one dict per batch -> one dict of concatenated tensors
                predictions = {k: torch.cat([batch[k].cpu() for batch in predictions]) for k in predictions[0]}
            path = self.run_dir / "predictions.pt"
            atomic_write_with(path, lambda handle: torch.save(predictions, handle))
            print(f"Predictions: {path}", flush=True)


def resolve_checkpoint_monitor(config: Namespace) -> None:
    """``checkpoint.monitor: auto`` (the default) -> the model family's declared ``CHECKPOINT_MONITOR`` (metric, mode),
    ``("val/loss", "min")`` unless the family says otherwise; None ranks nothing (a GAN has no loss to rank by): the
    checkpoint callback then keeps ``last.ckpt`` and its newest step/epoch checkpoint, named without ``best-``.
    A monitor the user configured is kept, with ``mode`` ``min`` unless configured too."""
    checkpoint = config.get("checkpoint")
    if checkpoint is None:
        return
    declared: tuple[str, str] | None = ("val/loss", "min")
    if checkpoint.monitor == AUTO_MONITOR:
        class_path = config.model.get("class_path") if isinstance(config.get("model"), Namespace) else None
        module_name, _, class_name = (class_path or "").rpartition(".")
        try:
            model_class = getattr(importlib.import_module(module_name), class_name) if module_name else None
        except (ImportError, AttributeError):
            model_class = None
        declared = getattr(model_class, "CHECKPOINT_MONITOR", declared)
        checkpoint.monitor = declared[0] if declared else None
    if checkpoint.mode == AUTO_MONITOR:
        checkpoint.mode = declared[1] if declared else "min"
    if checkpoint.monitor is None and checkpoint.filename == RANKED_FILENAME:
        checkpoint.filename = UNRANKED_FILENAME


def _initialised_from_pretrained(config: Namespace) -> bool:
    """Whether the configured model loads pretrained weights itself (a diffusers pipeline folder as ``init_from``)."""
    init_args = config.model.get("init_args") if isinstance(config.get("model"), Namespace) else None
    return bool(init_args is not None and init_args.get("init_from"))


def _refuse_unsafe_loading(config: Namespace) -> None:
    if config.get("weights_only") is not True:
        raise GenResearchError("--weights_only=false would let a checkpoint run code while it is read; leave it out "
                               "and convert the file to plain tensors instead (docs/security.md)")


def _find_user_error(error: BaseException) -> GenResearchError | None:
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, GenResearchError):
            return current
        stack += [current.__cause__, current.__context__]
    return None


def _configured_class_path(args: list[str], section: str) -> str | None:
    """The class_path the (expanded) arguments give ``section``; the last one wins, as in parsing."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            node = (yaml.safe_load(args[i + 1]) or {}).get(section)
            if isinstance(node, dict) and node.get("class_path"):
                found = node["class_path"]
        elif arg.startswith((f"--{section}=", f"--{section}.class_path=")):
            found = arg.split("=", 1)[1]
    return found


def _final_checkpoint(trainer: Trainer, run_dir: Path) -> Path | None:
    """The checkpoint of a fit's last step: ``last.ckpt`` (RunCheckpoint writes it at the final step)."""
    checkpoint = trainer.checkpoint_callback
    recorded = checkpoint.last_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    for last in (Path(recorded) if recorded else None, run_dir / CHECKPOINT_DIR / "last.ckpt"):
        if last is not None and last.is_file():
            return last
    return None


def _logger_configs(value: Any) -> list[Namespace]:
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, Namespace)]


def print_run_summary(trainer: Trainer, run_dir: Path | None) -> None:
    """The last thing a fit prints: where its files are."""
    if run_dir is None:
        return
    lines = [f"\nRun folder: {run_dir}"]
    configs = sorted(run_dir.glob("config*.yaml"), key=lambda p: p.stat().st_mtime_ns)  # a resumed run: config.resume-N.yaml
    if configs:
        lines.append(f"  config used:   {configs[-1]}")
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint):
        if checkpoint.best_model_path and checkpoint.monitor:  # without a monitor it is only the newest
            score = f" ({checkpoint.monitor}={float(checkpoint.best_model_score):.4f})" if checkpoint.best_model_score is not None else ""
            lines.append(f"  best checkpoint: {checkpoint.best_model_path}{score}")
        if checkpoint.last_model_path:
            lines.append(f"  last checkpoint: {checkpoint.last_model_path}")
    samples = sorted((run_dir / "samples").glob("*.png"))
    if samples:
        lines.append(f"  image grids:   {run_dir / 'samples'} ({len(samples)} PNG, latest {samples[-1].name})")
    if (run_dir / FIT_MARKER).is_file():
        lines.append(f"  finished:      {run_dir / FIT_MARKER} (final checkpoint, step, config digest)")
    if (run_dir / "metrics.csv").is_file():
        lines.append(f"  metrics:       {run_dir / 'metrics.csv'}")
    wandb_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    if wandb_runs:
        lines.append(f"  W&B (offline): {wandb_runs[-1]}  (upload later: wandb sync {wandb_runs[-1]})")
    elif (run_dir / "wandb").is_dir():
        lines.append(f"  W&B:           {run_dir / 'wandb'}")
    print("\n".join(lines), flush=True)


__all__ = ["GenResearchCLI"]
