"""Optimizers configured in YAML: AdamW with a per-iteration warm-up/cosine schedule, one per network.

A family with one network reads its optimizer settings from its hyperparameters (:func:`configure_adamw`); a family
with several (a GAN's ``generator`` and ``discriminator``) takes one :class:`OptimizerSpec` per network::

    model:
      init_args:
        optimizers:
          generator: {lr: 2.0e-4, betas: [0.5, 0.999]}
          discriminator: {lr: 2.0e-4, betas: [0.5, 0.999], gradient_clip_val: 1.0}

Both go through :func:`build_adamw`, so a network's optimizer and schedule are the same code whatever the family.
A bad value is a one-line error naming its key (``model.init_args.optimizers.discriminator.lr``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import lightning.pytorch as L
import torch

from gen_research.errors import GenResearchError
from gen_research.training.lr_schedules import WarmupCosineLR

LR_SCHEDULES = ("constant", "cosine", "linear")
CLIP_ALGORITHMS = ("norm", "value")


@dataclass(frozen=True)
class OptimizerSpec:
    """One network's AdamW and learning-rate schedule.

    ``warmup_steps`` and the cosine length count training iterations (batches), not optimizer steps: the cosine
    runs over the whole budget (``trainer.max_steps`` or ``max_epochs``). ``linear`` holds the lr, then decays it
    linearly to 0 over the last ``decay_fraction`` of the budget (pix2pix/CycleGAN/StarGAN: 0.5). ``gradient_clip_val`` clips this
    network's gradients (by their total norm, or each value with ``gradient_clip_algorithm: value``) before its
    step; None or 0 does not clip.
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    decay_fraction: float = 0.5
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):  # YAML gives a list; the spec is hashable and compares equal either way
            object.__setattr__(self, "betas", tuple(self.betas))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, where: str, defaults: Mapping[str, Any] | None = None) -> OptimizerSpec:
        """The spec a YAML mapping describes (keys missing there come from ``defaults``, then the class defaults),
        checked; ``where`` is the mapping's key path, e.g. ``model.init_args.optimizers.generator``."""
        if config is not None and not isinstance(config, Mapping):
            raise GenResearchError(f"{where}={config!r} must be a mapping of optimizer settings, e.g. {{lr: 2.0e-4, betas: [0.5, 0.999]}}")
        known = [f.name for f in fields(cls)]
        values = {**(defaults or {}), **(config or {})}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise GenResearchError(f"{where}.{unknown[0]}: unknown optimizer setting; the settings are {', '.join(known)}")
        spec = cls(**values)
        spec.check(where)
        return spec

    def check(self, where: str) -> None:
        """Each value in its range, else a one-line error naming ``<where>.<key>``."""
        _check_number(where, "lr", self.lr, low=0.0, low_inclusive=False, hint="e.g. 2.0e-4")
        betas = self.betas
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)):
            shown = list(betas) if isinstance(betas, (list, tuple)) else betas  # as written in YAML
            raise GenResearchError(f"{where}.betas={shown!r} must be two numbers in [0, 1); set {where}.betas to e.g. [0.5, 0.999]")
        _check_number(where, "weight_decay", self.weight_decay, low=0.0, hint="0 (none) or e.g. 1e-2")
        if not (isinstance(self.warmup_steps, int) and not isinstance(self.warmup_steps, bool) and self.warmup_steps >= 0):
            raise GenResearchError(f"{where}.warmup_steps={self.warmup_steps!r} must be an integer >= 0; set {where}.warmup_steps to 0 (none) or a number of training iterations")
        if self.lr_schedule not in LR_SCHEDULES:
            raise GenResearchError(f"{where}.lr_schedule={self.lr_schedule!r} must be one of {', '.join(LR_SCHEDULES)}")
        if not (_is_number(self.decay_fraction) and 0.0 < self.decay_fraction <= 1.0):
            raise GenResearchError(f"{where}.decay_fraction={self.decay_fraction!r} must be in (0, 1]; set {where}.decay_fraction to e.g. 0.5")
        if self.gradient_clip_val is not None:
            _check_number(where, "gradient_clip_val", self.gradient_clip_val, low=0.0, hint="null (no clipping) or e.g. 1.0")
        if self.gradient_clip_algorithm not in CLIP_ALGORITHMS:
            raise GenResearchError(f"{where}.gradient_clip_algorithm={self.gradient_clip_algorithm!r} must be one of {', '.join(CLIP_ALGORITHMS)}")

    @property
    def clips(self) -> bool:
        return bool(self.gradient_clip_val)

    def as_config(self) -> dict[str, Any]:
        """Plain values (lists, not tuples) as they read in YAML and in a checkpoint's hyperparameters."""
        values = asdict(self)
        values["betas"] = list(self.betas)
        return values


def optimizer_specs(
    config: Mapping[str, Any] | None,
    networks: Sequence[str],
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
    key: str = "model.init_args.optimizers",
) -> dict[str, OptimizerSpec]:
    """One checked spec per network, in the order of ``networks`` (the order their optimizers step in).

    ``config`` is the family's ``optimizers:`` mapping (network name -> settings; a network left out takes its
    ``defaults``); a name that is not one of ``networks`` is refused, listing them."""
    if config is not None and not isinstance(config, Mapping):
        raise GenResearchError(f"{key}={config!r} must map network names ({', '.join(networks)}) to optimizer settings")
    config = dict(config or {})
    unknown = sorted(set(config) - set(networks))
    if unknown:
        raise GenResearchError(f"{key}.{unknown[0]}: no such network; the networks are {', '.join(networks)}")
    defaults = defaults or {}
    return {name: OptimizerSpec.from_config(config.get(name), f"{key}.{name}", defaults.get(name)) for name in networks}


def schedule_length(module: L.LightningModule, spec: OptimizerSpec) -> int | None:
    """How many training iterations a cosine or linear decay runs over (None for a constant schedule): the whole
    budget of the module's trainer (a constant schedule needs no trainer)."""
    if spec.lr_schedule == "constant":
        return None
    total = module.trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise GenResearchError(f"lr_schedule '{spec.lr_schedule}' needs a finite run: set trainer.max_steps or max_epochs")
    return int(total)


def build_adamw(parameters: Iterable[torch.nn.Parameter], spec: OptimizerSpec, module: L.LightningModule) -> tuple[torch.optim.AdamW, WarmupCosineLR]:
    """AdamW over ``parameters`` and its LambdaLR (linear warm-up, then constant or cosine to 0), stepped once
    per training iteration. The schedule's length is saved in the checkpoint; a resume with another budget says
    how the curve changes (lr_schedules.WarmupCosineLR)."""
    optimizer = torch.optim.AdamW(parameters, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    scheduler = WarmupCosineLR(optimizer, warmup_steps=spec.warmup_steps, total_steps=schedule_length(module, spec),
                               shape=spec.lr_schedule, decay_fraction=spec.decay_fraction)
    return optimizer, scheduler


def spec_from_hparams(hparams: Mapping[str, Any]) -> OptimizerSpec:
    """The single optimizer of a one-network family: its ``lr``, ``weight_decay``, ``warmup_steps`` and
    ``lr_schedule`` hyperparameters (and ``betas`` where the family has it); checked by the family's constructor."""
    return OptimizerSpec(
        lr=hparams["lr"],
        betas=tuple(hparams.get("betas", OptimizerSpec.betas)),
        weight_decay=hparams["weight_decay"],
        warmup_steps=hparams["warmup_steps"],
        lr_schedule=hparams["lr_schedule"],
    )


def configure_adamw(module: L.LightningModule) -> dict[str, Any]:
    """``configure_optimizers`` of a one-network family: AdamW on all parameters, its schedule stepped by Lightning
    after every optimizer step (one a batch under automatic optimization)."""
    optimizer, scheduler = build_adamw(module.parameters(), spec_from_hparams(module.hparams), module)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(where: str, name: str, value: Any, low: float, low_inclusive: bool = True, hint: str = "") -> None:
    ok = _is_number(value) and (value >= low if low_inclusive else value > low)
    if not ok:
        bound = ("[" if low_inclusive else "(") + f"{low:g}, inf)"
        raise GenResearchError(f"{where}.{name}={value!r} must be a number in {bound}; set {where}.{name} to {hint}")


__all__ = ["CLIP_ALGORITHMS", "LR_SCHEDULES", "OptimizerSpec", "build_adamw", "configure_adamw", "optimizer_specs", "schedule_length", "spec_from_hparams"]
