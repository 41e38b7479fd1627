"""What every model family shares: seeded evaluation randomness and the AdamW + warm-up/cosine optimizer."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, ClassVar

import lightning.pytorch as L
import torch

from gen_research.errors import GenResearchError
from gen_research.nets.schedules import lr_lambda


class SeededEvaluation:
    """Mixin (list it before LightningModule): validation and test draw their randomness (noise, timesteps,
    reparameterisation) from a private generator re-seeded at each epoch start, so their numbers are
    comparable between epochs and the global (training, checkpointed) random stream is never touched."""

    eval_seed: ClassVar[int] = 0
    _eval_gen: torch.Generator | None = None

    def eval_generator(self) -> torch.Generator:
        """The validation/test generator on the module's device, created on first use."""
        if self._eval_gen is None or self._eval_gen.device != self.device:
            self._eval_gen = torch.Generator(device=self.device)
            self._eval_gen.manual_seed(self.eval_seed)
        return self._eval_gen

    def on_validation_epoch_start(self) -> None:
        self.eval_generator().manual_seed(self.eval_seed)

    def on_test_epoch_start(self) -> None:
        self.eval_generator().manual_seed(self.eval_seed)


def configure_adamw(module: L.LightningModule) -> dict[str, Any]:
    """AdamW on all parameters with a per-step LambdaLR: linear warm-up, then constant or cosine to 0.

    Reads ``lr``, ``weight_decay``, ``warmup_steps`` and ``lr_schedule`` from ``module.hparams``.
    """
    hp = module.hparams
    optimizer = torch.optim.AdamW(module.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    total = None
    if hp.lr_schedule == "cosine":
        total = module.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise GenResearchError("lr_schedule 'cosine' needs a finite run: set trainer.max_steps or max_epochs")
        total = int(total)
    # partial of a module-level function (not a lambda) so the scheduler state stays picklable.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_lambda, warmup_steps=hp.warmup_steps, total_steps=total))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
