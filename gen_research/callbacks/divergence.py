"""Stop a diverged run before it writes a checkpoint: a NaN/inf loss or gradient is an error, not a result."""

from __future__ import annotations

import math
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from gen_research.errors import GenResearchError


class TrainingDiverged(GenResearchError):
    """Training produced a non-finite loss or gradient (one line, exit status 2, checkpoints untouched)."""


class StopOnNonFinite(Callback):
    """Checks each step, after backward and before the optimizer step, that the loss and every gradient are
    finite, and each validation's logged values before checkpoints see them.

    Raising there means the optimizer never applies the bad update and no checkpoint callback runs (Lightning
    does not checkpoint on an exception), so ``last.ckpt`` and ``best-*.ckpt`` keep the last finite state. The
    message names the step and the offending logged loss term (``train/kl``...), or the first parameter whose
    gradient is not finite. Checking costs one fused reduction over the gradients per step. Under DDP the
    gradients are all-reduced before this hook, so every rank sees the same verdict and stops together.
    The CLI adds it to every ``fit``.
    """

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        bad_terms = _non_finite_metrics(trainer, "train/")
        if not bad_terms and (not grads or bool(torch.stack([g.detach().float().abs().sum() for g in grads]).sum().isfinite())):
            return
        if bad_terms:
            detail = ", ".join(f"{name} = {value}" for name, value in bad_terms)
        else:
            name = next(n for n, p in pl_module.named_parameters() if p.grad is not None and not bool(p.grad.isfinite().all()))
            detail = f"the gradient of {name} is not finite (the loss was finite)"
        raise TrainingDiverged(_message(trainer, f"step {trainer.global_step + 1}", detail))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        bad_terms = _non_finite_metrics(trainer, "val/")
        if bad_terms:
            detail = ", ".join(f"{name} = {value}" for name, value in bad_terms)
            raise TrainingDiverged(_message(trainer, f"the validation at step {trainer.global_step}", detail))


def _non_finite_metrics(trainer: Trainer, prefix: str) -> list[tuple[str, float]]:
    found = []
    for name, value in trainer.callback_metrics.items():
        if not name.startswith(prefix):
            continue
        number = float(value) if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        if isinstance(number, float) and not math.isfinite(number):
            found.append((name, number))
    return sorted(found)


def _message(trainer: Trainer, where: str, detail: str) -> str:
    kept = ""
    checkpoint = trainer.checkpoint_callback
    last = getattr(checkpoint, "last_model_path", "") if checkpoint is not None else ""
    if last:
        kept = f" The last finite checkpoint is kept unchanged: {last}."
    return (
        f"training diverged at {where}: {detail}.{kept} Lower the learning rate (model.init_args.lr), add warm-up or "
        "gradient clipping (trainer.gradient_clip_val), or check the data"
    )


__all__ = ["StopOnNonFinite", "TrainingDiverged"]
