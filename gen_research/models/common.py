"""What every model family shares: seeded evaluation randomness, the AdamW + warm-up/cosine optimizer
(gen_research/training/optimizers.py), and the
Lightning steps of modules that are just a ``compute_losses`` (diffusion models, the noisy classifier)."""

from __future__ import annotations

import contextlib

import math
from typing import Any, Iterator, ClassVar

import torch

from gen_research.errors import GenResearchError
from gen_research.training.optimizers import IMPLEMENTATION_HPARAM, check_implementation
from gen_research.training.optimizers import configure_adamw  # noqa: F401  (re-exported: one optimizer path for every family)


@contextlib.contextmanager
def own_hyperparameters() -> Iterator[None]:
    """Build or load a LightningModule inside another one's ``__init__`` (a frozen first stage, a text encoder).

    While LightningCLI instantiates the outer model, Lightning hands the OUTER model's hyperparameters to every
    ``save_hyperparameters()`` that runs (the private ContextVar ``_given_hyperparameters`` of its hparams mixin), so a
    nested model would record the outer model's hyperparameters instead of its own. This resets it for the nested build."""
    from lightning.pytorch.core.mixins import hparams_mixin

    token = hparams_mixin._given_hyperparameters.set(None)
    try:
        yield
    finally:
        hparams_mixin._given_hyperparameters.reset(token)


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


def check_optimizer_settings(model: str, lr: float, weight_decay: float, warmup_steps: int, optimizer_implementation: str = "auto") -> None:
    """The optimizer settings every family shares, checked in its constructor (torch would raise only when
    training starts, after the run folder is written, and with a traceback). ``optimizer_implementation`` is the
    AdamW kernel (gen_research/training/optimizers.py); whether ``fused`` suits the parameters is checked when the
    optimizer is built, where their devices and dtypes are known."""
    check_number(model, "lr", lr, low=0.0, low_inclusive=False, hint="e.g. 1e-3")
    check_number(model, "weight_decay", weight_decay, low=0.0, hint="0 (none) or e.g. 1e-2")
    check_number(model, "warmup_steps", warmup_steps, low=0, hint="0 (none) or a number of optimizer steps")
    check_implementation(optimizer_implementation, f"model.init_args.{IMPLEMENTATION_HPARAM}")


def check_number(model: str, name: str, value: float, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True, high_inclusive: bool = True, hint: str = "") -> None:
    """``value`` finite and within [low, high] (ends open when not inclusive), else a one-line error naming the option."""
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        lo = "" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        allowed = f"in {lo or '(-inf'}, {hi or 'inf)'}"
        raise GenResearchError(f"{model}: model.init_args.{name}={value!r} must be {allowed}; set model.init_args.{name} to {hint or 'a value ' + allowed}")


def check_widths(model: str, name: str, widths: Any) -> None:
    """Channel lists and layer sizes: a non-empty list of positive integers."""
    values = list(widths) if isinstance(widths, (list, tuple)) else [widths]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise GenResearchError(f"{model}: model.init_args.{name}={widths!r} must be positive integers; set e.g. model.init_args.{name}=[32, 64]")


class LossSteps(SeededEvaluation):
    """Mixin (list it before LightningModule) for a module whose ``compute_losses(x, labels, generator=None)``
    returns a dict with ``loss`` and other scalars: trains on ``loss`` with the global (checkpointed) RNG,
    validates and tests with the seeded evaluation generator, logs every key as ``<stage>/<key>``, and
    optimizes with :func:`configure_adamw`. Batches are dicts of named fields: ``x`` is ``batch["image"]``,
    ``labels`` is ``batch["label"]`` (None when the data has none)."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, labels = batch["image"], batch.get("label")
        losses = self.compute_losses(x, labels)  # global RNG: part of the checkpointed training stream
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(x))
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=len(x))
        return losses["loss"]

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        x, labels = batch["image"], batch.get("label")
        metrics = self.compute_losses(x, labels, generator=self.eval_generator())
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, prog_bar=stage == "val", on_epoch=True,
                      sync_dist=True, batch_size=len(x))
        return metrics

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self)
