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
    finite, and each validation's logged values before the checkpoint callbacks see them.

    Raising there means the optimizer never applies the bad update and no checkpoint callback runs (Lightning
    does not checkpoint on an exception), so ``last.ckpt`` and ``best-*.ckpt`` keep the last finite state. The
    message names the step and the offending logged loss term (``train/kl``...), or the first parameter whose
    gradient is not finite. Checking costs one reduction per gradient tensor a step, and under DDP one scalar
    all-reduce so that every rank reaches the same verdict and stops together. With fp16 loss scaling
    (``16-mixed``) an occasional inf gradient is expected (the scaler skips that step and lowers its scale), so
    only the loss is checked there. The CLI adds it to every ``fit``.
    """

    def __init__(self) -> None:
        self._loss: torch.Tensor | None = None

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad.detach() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        loss_ok = self._loss is None or bool(self._loss.isfinite().all())
        loss_scaled = getattr(trainer.precision_plugin, "scaler", None) is not None  # fp16 GradScaler: inf grads are skipped steps
        grads_ok = loss_scaled or not grads or bool(torch.stack([g.float().abs().sum() for g in grads]).sum().isfinite())
        bad = not (loss_ok and grads_ok)
        if trainer.world_size > 1:  # decide together: a rank that raised alone would leave the others waiting
            flag = torch.tensor(float(bad), device=pl_module.device)
            bad = bool(trainer.strategy.reduce(flag, reduce_op="sum") > 0)
        if not bad:
            return
        terms = [(name, value) for name, value in _step_values(trainer) if name.startswith("train/") and not math.isfinite(value)]
        if terms:
            detail = ", ".join(f"{name} = {value}" for name, value in sorted(terms))
        elif not loss_ok:
            detail = f"the training loss is {float(self._loss)}"
        elif not grads_ok:
            name = next(n for n, p in pl_module.named_parameters() if p.grad is not None and not bool(p.grad.isfinite().all()))
            detail = f"the gradient of {name} is not finite (the loss was finite)"
        else:
            detail = "another process's loss or gradients are not finite"
        raise TrainingDiverged(_message(trainer, f"step {trainer.global_step + 1}", detail))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        bad_terms = [(name, value) for name, value in _epoch_values(trainer) if name.startswith("val/") and not math.isfinite(value)]
        if bad_terms:
            detail = ", ".join(f"{name} = {value}" for name, value in bad_terms)
            raise TrainingDiverged(_message(trainer, f"the validation at step {trainer.global_step}", detail))


def _step_values(trainer: Trainer) -> list[tuple[str, float]]:
    """This step's logged scalars. ``trainer.callback_metrics`` is updated only after the optimizer step, so this
    reads Lightning's result collection (a private attribute: if it changes, the message names the loss, not a term)."""
    found = []
    for metric in (getattr(trainer, "_results", None) or {}).values():
        name, value = getattr(getattr(metric, "meta", None), "name", None), getattr(metric, "_forward_cache", None)
        if isinstance(name, str) and isinstance(value, torch.Tensor) and value.numel() == 1:
            found.append((name, float(value)))
    return found


def _epoch_values(trainer: Trainer) -> list[tuple[str, float]]:
    return [(name, float(value)) for name, value in trainer.callback_metrics.items()
            if isinstance(value, torch.Tensor) and value.numel() == 1]


def _message(trainer: Trainer, where: str, detail: str) -> str:
    kept = ""
    checkpoint = trainer.checkpoint_callback
    last = getattr(checkpoint, "last_model_path", "") if checkpoint is not None else ""
    if last:
        kept = f" The last finite checkpoint is kept unchanged: {last}."
    module = getattr(trainer, "lightning_module", None)  # tests pass a stand-in trainer
    if module is not None and not module.automatic_optimization:  # several networks: per-network settings (training/optimizers.py)
        where_lr, where_clip = "model.init_args.optimizers.<network>.lr", "model.init_args.optimizers.<network>.gradient_clip_val"
    else:
        where_lr, where_clip = "model.init_args.lr", "trainer.gradient_clip_val"
    return (
        f"training diverged at {where}: {detail}.{kept} Lower the learning rate ({where_lr}), add warm-up or "
        f"gradient clipping ({where_clip}), or check the data"
    )


__all__ = ["StopOnNonFinite", "TrainingDiverged"]
