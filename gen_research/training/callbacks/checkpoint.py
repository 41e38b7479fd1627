"""Checkpoints of a run: :class:`RunCheckpoint` (Lightning's ModelCheckpoint with ``last.ckpt`` always the final step
and resumes that keep their file names) and a CheckpointIO whose writes are atomic on any filesystem layout."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from gen_research.errors import GenResearchError
from gen_research.files.atomic import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file in the checkpoint's own directory, fsync, rename.

    Lightning's TorchCheckpointIO goes through an fsspec transaction whose temporary file lives in ``$TMPDIR``:
    when that is another filesystem (node-local /tmp, networked run folder) the final step is a copy, and a kill
    or a full disk during it leaves a truncated ``last.ckpt``. Here the previous checkpoint stays intact until
    the new one is complete on disk. A full disk ends in a one-line error (atomic_files)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options; got {storage_options!r}")
        with atomic_open(Path(path), "wb") as handle:
            torch.save(checkpoint, handle)


class RunCheckpoint(ModelCheckpoint):
    """The checkpoints of a run (registered as ``checkpoint``; the CLI's ``checkpoint:`` key configures its default
    one): Lightning's ModelCheckpoint (best-k by ``monitor``, ``last.ckpt``), plus two guarantees.

    1. ``last.ckpt`` is the state at the end of training, and resumable. Lightning writes it after validations
       and, at the end of training, only if it never wrote one: a run that stops between two validations
       (``max_steps`` or ``max_time`` reached mid-epoch, ``check_val_every_n_epoch`` > 1) would keep the
       ``last.ckpt`` of the last validation, silently without its final steps. Here it is written at the last step.
    2. A resume keeps writing ``last.ckpt``. Lightning restores its bookkeeping (``last_model_path``, best-k) only
       when the saved ``dirpath`` string equals the current one; a resume that names the run folder by another
       spelling (absolute vs relative, a symlink, a moved folder) lost it and wrote ``last-v1.ckpt`` beside an
       older ``last.ckpt``, which the next ``--ckpt_path last`` then took. Here directories are compared as
       directories, and the bookkeeping is rebased onto the current one.
    3. A resume with another checkpoint cadence keeps it too. Lightning keys the bookkeeping by monitor, mode *and*
       cadence (``every_n_train_steps``, ``every_n_epochs``, ``train_time_interval``): a run crashed with step
       checkpoints and resumed without them lost it (Lightning only warned), wrote ``last-v1.ckpt`` beside a stale
       ``last.ckpt`` and restarted the best-k ranking. Here the state saved under another cadence, for the same
       folder, monitor and mode, is taken over; one that cannot be is named in a one-line warning.
    """

    _epoch_at_last_save: int | None = None

    def _generate_state_key(self, **kwargs: Any) -> str:
        # Lightning keys a callback's state in the checkpoint by its class name: keep the name this class had
        # (ModelCheckpoint) so that runs checkpointed before the rename resume with their bookkeeping and
        # ``--ckpt_path best`` (run_folder.find_best_checkpoint) finds their best checkpoint.
        return f"ModelCheckpoint{kwargs!r}"

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        # A metric the evaluation callback computes only every n epochs/steps (FID) is missing from the validations in
        # between; Lightning would raise there. Rank checkpoints when it is measured; a monitor nobody produces still fails.
        if self.monitor is not None and self.monitor not in monitor_candidates and self.save_top_k:
            if any(getattr(callback, "produces", lambda key: False)(self.monitor) for callback in trainer.callbacks):
                return
            if trainer.fit_loop.epoch_loop.val_loop._has_run:  # where Lightning raises, with a traceback
                logged = ", ".join(sorted(k for k in monitor_candidates if "/" in k)) or "none"
                raise GenResearchError(f"checkpoint.monitor={self.monitor!r} is never logged (logged: {logged}); set checkpoint.monitor "
                                       "to one of them, or to null to keep last and periodic checkpoints only")
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Lightning's warning about checkpoint states no callback claims comes before on_load_checkpoint, which takes
        # a cadence-changed state over (guarantee 3) and warns itself, accurately, about any it cannot.
        warnings.filterwarnings("ignore", message=_UNCLAIMED_CHECKPOINT_STATES)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("callbacks")
        if not isinstance(saved, dict):
            return
        claimed = {callback.state_key for callback in trainer.callbacks}
        if self.state_key not in saved:
            # The same monitor and mode under another cadence: the key's prefix up to the cadence arguments.
            same_ranking = self._generate_state_key(monitor=self.monitor, mode=self.mode)[:-1] + ", "
            candidates = [key for key, state in saved.items() if key not in claimed and key.startswith(same_ranking)
                          and isinstance(state, dict) and self._is_this_folder(state.get("dirpath"))]
            if len(candidates) == 1:  # renamed in the loaded dict: Lightning's load_state_dict pass then restores it
                saved[self.state_key] = saved.pop(candidates[0])
        unclaimed = [key for key in saved if key.startswith("ModelCheckpoint{") and key not in claimed]
        last_of_kind = [callback for callback in trainer.callbacks if isinstance(callback, RunCheckpoint)][-1] is self
        if unclaimed and last_of_kind:
            rank_zero_warn(f"--ckpt_path: no checkpoint callback of this run has the saved {', '.join(unclaimed)} state (best-k "
                           "ranking, last.ckpt), so it is not restored; to keep it, resume with the checkpoint.monitor, checkpoint.mode "
                           "and checkpoint.every_n_train_steps / every_n_epochs / train_time_interval of the run that wrote it")

    def _is_this_folder(self, saved_dir: Any) -> bool:
        if not isinstance(saved_dir, str) or self.dirpath is None:
            return False
        return saved_dir == self.dirpath or _same_run_dir(saved_dir, self.dirpath)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # The step that ends training in the middle of an epoch (max_steps, or max_time / an early stop setting
        # should_stop): save last.ckpt here, while the loops still describe an epoch in progress. Saved later, in
        # on_train_end, Lightning's loop state already counts that epoch as completed, and a resume with a larger
        # budget would skip the rest of the epoch (or stop at once at max_epochs).
        stops = trainer.should_stop or (trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps)
        if self.save_last and stops and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Written again when the last save was at this step but before the epoch counted as completed (a step
        # checkpoint on the last batch): last.ckpt then records the finished run the same way whether it ran
        # through or was resumed from that step checkpoint.
        # (Only when that epoch's batches were all run: a mid-epoch stop keeps the in-progress state saved above.)
        epoch_done = trainer.fit_loop.epoch_loop.batch_progress.current.ready >= trainer.num_training_batches
        epoch_moved = epoch_done and self._last_global_step_saved == trainer.global_step and self._epoch_at_last_save != trainer.current_epoch
        skip = self._should_skip_saving_checkpoint(trainer) and not (epoch_moved and not trainer.sanity_checking and not trainer.fast_dev_run)
        if self.save_last and self._last_checkpoint_saved and not skip:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._epoch_at_last_save = trainer.current_epoch

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_dir = state_dict.get("dirpath")
        if saved_dir is not None and self.dirpath is not None and saved_dir != self.dirpath and _same_run_dir(saved_dir, self.dirpath):
            state_dict = _rebased(state_dict, Path(saved_dir), Path(self.dirpath))
        super().load_state_dict(state_dict)


#: Lightning's resume warning when the only states no callback claims are ModelCheckpoint ones (trainer/call.py).
_UNCLAIMED_CHECKPOINT_STATES = (re.escape("Be aware that when using `ckpt_path`, callbacks used to create the checkpoint")
                                + r'.* Please add the following callbacks: \[("ModelCheckpoint\{[^"]*\}"(, )?)+\]\.$')


def _same_run_dir(saved: str, current: str) -> bool:
    """Whether a checkpoint's recorded dirpath is the current checkpoint folder under another spelling."""
    saved_path, current_path = Path(saved), Path(current)
    try:
        if saved_path.exists() and os.path.samefile(saved_path, current_path):
            return True
    except OSError:
        pass
    # A relative path recorded from another working directory, or a run folder that was moved or copied: the
    # same <experiment>/<run>/checkpoints tail names the same run.
    return saved_path.parts[-3:] == current_path.resolve().parts[-3:]


def _rebased(state_dict: dict[str, Any], saved_dir: Path, current_dir: Path) -> dict[str, Any]:
    def rebase(path: Any) -> Any:
        if not isinstance(path, str) or not path:
            return path
        return str(current_dir / Path(path).name) if Path(path).parent == saved_dir else path

    rebased = dict(state_dict)
    rebased["dirpath"] = str(current_dir)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in rebased:
            rebased[key] = rebase(rebased[key])
    if "best_k_models" in rebased:
        rebased["best_k_models"] = {rebase(path): score for path, score in rebased["best_k_models"].items()}
    return rebased


__all__ = ["AtomicCheckpointIO", "RunCheckpoint"]
