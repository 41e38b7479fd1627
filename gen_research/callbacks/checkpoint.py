"""Lightning's ModelCheckpoint, with ``last.ckpt`` always holding the state at the end of training."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint (best-k by ``monitor``, ``last.ckpt``), plus one guarantee.

    Lightning writes ``last.ckpt`` after validations and, at the end of training, only if it never wrote one. A run
    that stops between two validations (``max_steps`` or ``max_time`` reached mid-epoch, or ``check_val_every_n_epoch``
    > 1) would then keep the ``last.ckpt`` of the last validation, silently without its final steps, and ``sample``,
    ``evaluate`` and ``export`` of "the last checkpoint" would use stale weights. Here it is rewritten at the end.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # _should_skip_saving_checkpoint: not fitting, sanity check, fast_dev_run, or this step is already saved.
        if self.save_last and self._last_checkpoint_saved and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


__all__ = ["ModelCheckpoint"]
