"""Two-stage experiments: ``fit`` trains the experiment an option needs (a first stage) before the experiment itself.

A second-stage model (``ldm``, ``vq_prior``) takes a frozen first stage's checkpoint. Instead of copying its path by
hand, an experiment names the first stage's experiment under a top-level ``stages:`` key::

    stages:
      model.init_args.first_stage_ckpt: autoencoder_kl_mnist5k.yaml   # relative to this file's folder

Each entry maps a dotted option path to an experiment file. The key is removed before LightningCLI parses the
config (gen_research/config/files.py). For ``fit``, ``validate``, ``test`` and ``predict``, a stage whose option is
still unset (null in the composed config and not given on the command line) is resolved first:

* stage runs are ordinary runs of the stage file under the experiment name ``<experiment>.<stage file stem>``
  (``runs/ldm_mnist5k.autoencoder_kl_mnist5k/<run>/``), in the same runs_root; the launch options of the command line
  (:data:`INHERITED_OPTIONS`: devices, strategy, nodes) apply to them too, so they run under the same strategy;
* ``fit``: the stage's latest run (the one whose checkpoints were written last, as ``--ckpt_path last`` picks it)
  is reused when its ``fit-finished.json`` records the same composed config; a latest run without that record but
  with checkpoints is resumed when the command says ``--ckpt_path last``; otherwise the stage is fitted anew. The
  option is then set to the stage's final checkpoint. A ``--ckpt_path last|best`` of the second stage is dropped
  (with a note) when a stage was trained in this command: its old checkpoint holds another first stage's weights;
* ``validate``/``test``/``predict``: the stage must have a finished run of the same config;
* ``--print_config`` and ``--help`` resolve nothing (and train nothing).

``fit-finished.json`` (:data:`FIT_MARKER`) is written atomically into the run folder by rank 0 when a ``fit`` ends
finished (``max_steps``/``max_epochs``/``max_time``/early stopping; never when interrupted, crashed or preempted)::

    {"checkpoint": "checkpoints/last.ckpt", "global_step": 10, "config_digest": "sha256:...", "finished_at": "..."}

``config_digest`` hashes the run's composed config and overrides (every ``--config`` file as composed, every
``--key=value``), without the options that only say where it runs from (``name``, ``runs_root``, ``ckpt_path``), so
a resumed run has the digest of the run it continues and an edited stage file (or piece) another one.

DDP: Lightning's launcher (and SLURM's srun) runs this whole command in every process. The process that starts
the command decides and reserves the run folders, and hands the plan to the processes it launches in
:data:`PLAN_ENV`, so every rank runs the same fits in the same folders (SLURM tasks each plan, and the run-folder
record of gen_research/training/run_folder.py maps them to the same folders). A requeued SLURM job replans: a
stage finished before the requeue is reused, an unfinished one is fitted "anew" in its own run folder, where the
SLURM resume (commands/lightning.py ``_resume_requeued_slurm_job``) continues it from its newest checkpoint.
Nested stages (a stage file with ``stages:`` itself) are refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gen_research.errors import GenResearchError
from gen_research.training.run_folder import FIT_MARKER, latest_run, marker_checkpoint, read_fit_marker, write_fit_marker  # noqa: F401 (re-exported)

PLAN_ENV = "GEN_RESEARCH_STAGE_PLAN"  # the starting process's plan, for the DDP workers that re-run the command
# Launch options of the command line that stage fits get too: they say where and how the command runs.
INHERITED_OPTIONS = ("trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy")
LOCATION_OPTIONS = ("name", "runs_root", "ckpt_path")  # not part of a run's config digest
SUBCOMMANDS = ("fit", "validate", "test", "predict")
CHECKPOINT_KEYWORDS = ("last", "best", "hpc", "registry")
_CONFIG_FLAGS = ("--config", "-c")
_DOTTED_OPTION = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


# ---- the finished-fit marker ------------------------------------------------------------------------------
def config_digest(args: Sequence[str]) -> str:
    """``sha256:...`` of a command's expanded arguments (``--config`` YAML strings compared as data), without
    :data:`LOCATION_OPTIONS` and the subcommand."""
    items: list[Any] = []
    i = 1 if args and args[0] in SUBCOMMANDS else 0
    while i < len(args):
        arg = args[i]
        flag, has_value, _ = arg.partition("=")
        key = flag.lstrip("-")
        if flag in _CONFIG_FLAGS and not has_value and i + 1 < len(args):
            items.append(["--config", yaml.safe_load(args[i + 1])])
            i += 2
            continue
        if flag.startswith("--") and key in LOCATION_OPTIONS:
            i += 1 if has_value or i + 1 >= len(args) or args[i + 1].startswith("-") else 2
            continue
        items.append(arg)
        i += 1
    text = json.dumps(items, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# ---- reading the command line ------------------------------------------------------------------------------
def option_values(argv: Sequence[str], key: str) -> list[str]:
    """Every value the command line gives ``--key`` (``--key=v`` or ``--key v``), in order."""
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{key}="):
            values.append(arg.split("=", 1)[1])
        elif arg == f"--{key}" and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def without_option(argv: Sequence[str], key: str) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg.startswith(f"--{key}="):
            continue
        elif arg == f"--{key}":
            skip = i + 1 < len(argv)
        else:
            out.append(arg)
    return out


def config_files(argv: Sequence[str]) -> list[str]:
    files = []
    for i, arg in enumerate(argv):
        flag, has_value, value = arg.partition("=")
        if flag in _CONFIG_FLAGS:
            if has_value:
                files.append(value)
            elif i + 1 < len(argv):
                files.append(argv[i + 1])
    return files


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _is_rank_zero() -> bool:
    return os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")) == "0"


def _say(text: str) -> None:
    if _is_rank_zero():
        print(text, flush=True)


# ---- the plan ----------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """One ``stages:`` entry of an experiment: the option it sets and the experiment that trains it."""

    option: str
    experiment_file: Path
    name: str  # its runs' experiment name: <experiment>.<stage file stem>


def read_stages(argv: Sequence[str]) -> tuple[list[Stage], dict[str, Any], str, Path]:
    """(the stages whose option is still unset, the composed config, the experiment name, the runs root)."""
    from gen_research.config.files import STAGES_KEY, load_experiment, merge

    files = config_files(argv)
    composed: dict[str, Any] = {}
    for file in files:
        composed = merge(composed, load_experiment(Path(file)))
    entries = composed.get(STAGES_KEY)
    if not entries:
        return [], composed, "", Path()
    where = f"'{STAGES_KEY}' in {files[-1]}"
    if not isinstance(entries, dict):
        raise GenResearchError(f"{where} must map option paths to experiment files, e.g. "
                               "model.init_args.first_stage_ckpt: autoencoder_kl_mnist5k.yaml")
    names = option_values(argv, "name")
    experiment = names[-1] if names else composed.get("name") or Path(files[-1]).stem
    roots = option_values(argv, "runs_root")
    runs_root = Path(roots[-1] if roots else composed.get("runs_root") or "runs")
    stages = []
    for option, file in entries.items():
        if not isinstance(option, str) or not _DOTTED_OPTION.fullmatch(option):
            raise GenResearchError(f"{where}: {option!r} is not a dotted option path; write e.g. model.init_args.first_stage_ckpt")
        if not isinstance(file, str) or not Path(file).is_file():
            raise GenResearchError(f"{where}: {option} names the experiment {file!r}, which does not exist; give an experiment "
                                   "file relative to the folder of the file that names it")
        if option_values(argv, option) or _lookup(composed, option) is not None:
            continue  # set by the user: no stage runs
        if load_experiment(Path(file)).get(STAGES_KEY):
            raise GenResearchError(f"{where}: the stage {file} has 'stages' of its own; nested stages are not supported: "
                                   f"fit it as an experiment of its own and set {option} to its checkpoint")
        stages.append(Stage(option, Path(file), f"{experiment}.{Path(file).stem}"))
    return stages, composed, experiment, runs_root


def stage_arguments(stage: Stage, argv: Sequence[str], runs_root: Path) -> list[str]:
    """The fit command line of a stage: its file, its experiment name, and the launch options of ``argv``."""
    inherited = [f"--{key}={value}" for key in INHERITED_OPTIONS for value in option_values(argv, key)[-1:]]
    return ["fit", "--config", str(stage.experiment_file), f"--name={stage.name}", f"--runs_root={runs_root}", *inherited]


def stage_digest(arguments: Sequence[str]) -> str:
    """The config digest the fit of these arguments will record (the same expansion as commands/main.py)."""
    from gen_research.config.files import expand_argv

    return config_digest(expand_argv(list(arguments[1:]))[0])


def finished_stage(stage: Stage, arguments: Sequence[str], runs_root: Path) -> tuple[Path | None, Path | None, str]:
    """(latest run, its final checkpoint if that run finished with this config, why not)."""
    run = latest_run(runs_root / stage.name)
    if run is None:
        return None, None, f"{runs_root / stage.name} holds no run with checkpoints"
    record = read_fit_marker(run)
    if record is None:
        return run, None, f"its latest run {run} did not finish (no {FIT_MARKER})"
    if record["config_digest"] != stage_digest(arguments):
        return run, None, (f"its latest run {run} was fitted with another config (the stage file, its pieces or the "
                           "launch options changed)")
    checkpoint = marker_checkpoint(run, record)
    if checkpoint is None:
        return run, None, f"the final checkpoint of its latest run {run} ({record.get('checkpoint')}) is gone"
    return run, checkpoint.resolve(), ""


def plan_stages(subcommand: str, argv: list[str]) -> dict[str, Any] | None:
    """Decide, for each unset stage, reuse / resume / fit anew, and reserve the folders of the fits to run.

    Returns None for a command without stages to resolve, else ``{"fits": [{"args", "run_dir", "checkpoint"}, ...],
    "argv": the second stage's argv, "run_dir": its reserved folder or None, "reserved": [...]}``."""
    reserved: list[str] = []
    try:
        return _plan(subcommand, argv, reserved)
    except BaseException:
        _remove_empty(reserved)
        raise


def _remove_empty(folders: list[str]) -> None:
    for folder in map(Path, folders):  # reserved for a fit that never wrote anything
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _plan(subcommand: str, argv: list[str], reserved: list[str]) -> dict[str, Any] | None:
    from gen_research.training.run_folder import new_run_dir, newest_valid_checkpoint, slurm_restart_count

    stages, _, experiment, runs_root = read_stages(argv)
    if not stages:
        return None
    user_ckpt = (option_values(argv, "ckpt_path") or [None])[-1]
    fits: list[dict[str, Any]] = []
    settings: list[str] = []
    for stage in stages:
        arguments = stage_arguments(stage, argv, runs_root)
        run, checkpoint, why_not = finished_stage(stage, arguments, runs_root)
        if checkpoint is not None:
            _say(f"Stage {stage.option}: reusing {checkpoint} (the finished fit of {stage.experiment_file.name})")
            settings.append(f"--{stage.option}={checkpoint}")
            continue
        if subcommand != "fit":
            raise GenResearchError(f"{subcommand}: the stage {stage.experiment_file} of {stage.option} has no finished fit ({why_not}); "
                                   f"fit {config_files(argv)[-1]} first")
        if user_ckpt not in (None, *CHECKPOINT_KEYWORDS):
            raise GenResearchError(f"--ckpt_path {user_ckpt}: that second-stage checkpoint was trained on another first stage than "
                                   f"the one this command fits first ({stage.experiment_file.name}: {why_not}); leave --ckpt_path "
                                   "out, or set the stage's option yourself")
        if run is not None and read_fit_marker(run) is None and user_ckpt == "last":
            newest = newest_valid_checkpoint(run)
            _say(f"Stage {stage.option}: resuming {run} from {newest} (--ckpt_path last)")
            checkpoint = (run / "checkpoints" / "last.ckpt").resolve()
            fits.append({"args": [*arguments, f"--ckpt_path={newest}"], "run_dir": None, "checkpoint": str(checkpoint)})
        else:
            restarted = slurm_restart_count() > 0 and os.environ.get("SLURM_JOB_ID")
            hint = "" if run is None or read_fit_marker(run) is not None else "; pass --ckpt_path last to resume it instead"
            _say(f"Stage {stage.option}: " + ("SLURM requeue: continuing the stage in this job's run folder" if restarted
                                               else f"fitting {stage.experiment_file.name}: {why_not}{hint}"))
            run_dir = new_run_dir(runs_root, stage.name, "fit")
            reserved.append(str(run_dir))
            checkpoint = (run_dir / "checkpoints" / "last.ckpt").resolve()
            fits.append({"args": arguments, "run_dir": str(run_dir), "checkpoint": str(checkpoint)})
        settings.append(f"--{stage.option}={checkpoint}")
    second = list(argv)
    run_dir = None
    if fits:
        if user_ckpt is not None:
            _say(f"Note: --ckpt_path {user_ckpt} of {experiment} is dropped: a stage is trained in this command, and the "
                 "second stage's old checkpoint holds another first stage's weights; the second stage is fitted anew")
            second = without_option(second, "ckpt_path")
        if subcommand == "fit":
            run_dir = str(new_run_dir(runs_root, experiment, "fit"))
            reserved.append(run_dir)
    elif user_ckpt is not None and subcommand == "fit":  # validate/test/predict read the first stage's weights from it
        _check_second_stage_checkpoint(stages, settings, user_ckpt, runs_root, experiment)
    return {"fits": fits, "argv": [*second, *settings], "run_dir": run_dir, "reserved": reserved}


def _check_second_stage_checkpoint(stages: list[Stage], settings: list[str], ckpt: str, runs_root: Path, experiment: str) -> None:
    """A second-stage checkpoint that recorded another value of a stage's option (``model.init_args.X``) was trained
    on another first stage: resuming it with this one would mix the two."""
    from gen_research.training.run_folder import read_checkpoint, resolve_checkpoint_name

    if ckpt in ("hpc", "registry"):
        return
    path = resolve_checkpoint_name(ckpt, runs_root, experiment)
    hyper = read_checkpoint(path).get("hyper_parameters") or {}
    for stage, setting in zip(stages, settings):
        if not stage.option.startswith("model.init_args."):
            continue
        recorded = hyper.get(stage.option.removeprefix("model.init_args."))
        wanted = setting.split("=", 1)[1]
        if isinstance(recorded, str) and Path(recorded).resolve() != Path(wanted):
            raise GenResearchError(f"--ckpt_path {ckpt}: {path} was trained with {stage.option}={recorded}, but the stage's finished "
                                   f"fit is {wanted}; fit without --ckpt_path to train the second stage on it")


@contextlib.contextmanager
def stages_resolved(argv: list[str], fit: Callable[[list[str]], int]) -> Iterator[list[str]]:
    """``with stages_resolved(["fit", ...], fit=run_lightning) as argv:`` run the command ``argv`` after its stages.

    Runs the stage fits this command needs (``fit`` runs one command), then yields the second stage's command with
    each stage's option set; the run folder of the second stage's fit is held in RUN_DIR_ENV while it runs."""
    from gen_research.training.run_folder import RUN_DIR_ENV

    subcommand, rest = argv[0], argv[1:]
    if subcommand not in SUBCOMMANDS or any(a in ("-h", "--help") or a.startswith("--print_config") for a in rest):
        yield argv
        return
    inherited_plan = os.environ.get(PLAN_ENV)
    if inherited_plan is not None and not read_stages(rest)[0]:
        yield argv  # a stage's own fit inside a planned command (or a command without stages)
        return
    inherited_run_dir = os.environ.get(RUN_DIR_ENV)
    if inherited_plan is None:
        os.environ.pop(RUN_DIR_ENV, None)  # every fit of the plan gets its own folder, reserved here
        try:
            plan = plan_stages(subcommand, rest)
        finally:
            _set_run_dir(inherited_run_dir)
    else:
        plan = json.loads(inherited_plan)  # a DDP worker re-running the command: the same fits in the same folders
    if plan is None:
        yield argv
        return
    succeeded = False
    try:
        if inherited_plan is None:
            os.environ[PLAN_ENV] = json.dumps(plan)
        for stage_fit in plan["fits"]:
            _set_run_dir(stage_fit["run_dir"])
            fit(list(stage_fit["args"]))
            if not Path(stage_fit["checkpoint"]).is_file():
                raise GenResearchError(f"the stage fit {' '.join(stage_fit['args'])} ended without {stage_fit['checkpoint']}; "
                                       "leave checkpoint.save_last at true in the stage's experiment")
        _set_run_dir(plan["run_dir"])
        yield [subcommand, *plan["argv"]]
        succeeded = True
    finally:
        if inherited_plan is None:
            os.environ.pop(PLAN_ENV, None)
        _set_run_dir(inherited_run_dir)
        if not succeeded and inherited_plan is None:
            _remove_empty(plan["reserved"])


def _set_run_dir(run_dir: str | None) -> None:
    from gen_research.training.run_folder import RUN_DIR_ENV

    if run_dir is None:
        os.environ.pop(RUN_DIR_ENV, None)
    else:
        os.environ[RUN_DIR_ENV] = run_dir


__all__ = ["FIT_MARKER", "INHERITED_OPTIONS", "Stage", "config_digest", "latest_run", "plan_stages", "read_fit_marker",
           "stages_resolved", "write_fit_marker"]
