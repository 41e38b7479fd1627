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

Which AdamW kernel runs (``implementation: auto | fused | foreach | for_loop``; the numbers agree to float rounding):

- ``fused``: one kernel per step for all parameters (``torch.optim.AdamW(fused=True)``), on CPU and CUDA;
- ``foreach``: a few multi-tensor kernels per step (torch's own default on CUDA);
- ``for_loop``: one set of kernels per parameter tensor (torch's own default on CPU);
- ``auto`` (the default): ``fused`` where every parameter is a floating-point tensor on a device with fused
  kernels, else ``foreach``. Why: fused is the fastest measured here on CPU (AdamW step alone on the 1.06M-parameter
  ddpm_mnist5k UNet, 152 tensors, 2 threads of an AMD EPYC: fused about 2-4x faster than foreach and for_loop; see
  docs/results.md for the whole training step) and is the usual answer on CUDA (one launch instead of hundreds).

A fused optimizer can also unscale 16-mixed gradients inside its step, and Lightning refuses to clip the gradients
of such an optimizer under ``16-mixed``/``bf16-mixed``. Where this network's gradients are clipped
(``trainer.gradient_clip_val``, or ``gradient_clip_val`` of its OptimizerSpec), :func:`build_adamw` turns that
in-step unscaling off (``_step_supports_amp_scaling``, the flag torch's GradScaler and Lightning read): the
GradScaler then unscales before clipping as it does for any optimizer, and the fused kernel still does the update.

The implementation is not part of the training state: a run resumed from a checkpoint written with another one
continues with the configured implementation (:class:`AdamW` keeps its own choice when it loads a state dict).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import lightning.pytorch as L
import torch

from gen_research.errors import GenResearchError
from gen_research.training.lr_schedules import WarmupCosineLR

LR_SCHEDULES = ("constant", "cosine", "linear")
CLIP_ALGORITHMS = ("norm", "value")
AdamWImplementation = Literal["auto", "fused", "foreach", "for_loop"]  # the type of every family's setting
IMPLEMENTATIONS: tuple[str, ...] = get_args(AdamWImplementation)
IMPLEMENTATION_HPARAM = "optimizer_implementation"  # a one-network family's hyperparameter for OptimizerSpec.implementation


@dataclass(frozen=True)
class OptimizerSpec:
    """One network's AdamW and learning-rate schedule.

    ``warmup_steps`` and the cosine length count training iterations (batches), not optimizer steps: the cosine
    runs over the whole budget (``trainer.max_steps`` or ``max_epochs``). ``linear`` holds the lr, then decays it
    linearly to 0 over the last ``decay_fraction`` of the budget (pix2pix/CycleGAN/StarGAN: 0.5). ``gradient_clip_val`` clips this
    network's gradients (by their total norm, or each value with ``gradient_clip_algorithm: value``) before its
    step; None or 0 does not clip. ``implementation`` picks the AdamW kernel (auto, fused, foreach, for_loop; see the
    module docstring).
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    decay_fraction: float = 0.5
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    implementation: str = "auto"

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
        check_implementation(self.implementation, f"{where}.implementation")

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


class AdamW(torch.optim.AdamW):
    """torch's AdamW that keeps its own implementation (``fused``/``foreach``) when it loads a state dict.

    ``torch.optim.Optimizer.load_state_dict`` takes every param-group setting from the saved dict, ``fused`` and
    ``foreach`` included, so a run resumed from a checkpoint written with another implementation (or before the
    choice existed) would silently keep the old one. The saved groups are given this optimizer's values before
    loading, so torch also places each ``step`` counter where the kernel wants it (on the parameter's device for
    fused). Moments, step counts and hyperparameters load exactly as saved; the state dict format is torch's."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        own = [{key: group.get(key) for key in ("fused", "foreach")} for group in self.param_groups]
        saved = state_dict.get("param_groups")
        if isinstance(saved, list) and len(saved) == len(own):
            state_dict = {**state_dict, "param_groups": [{**group, **mine} for group, mine in zip(saved, own)]}
        super().load_state_dict(state_dict)


def check_implementation(value: Any, key: str) -> None:
    """A one-line error naming the setting ``key`` unless ``value`` is one of IMPLEMENTATIONS."""
    if not (isinstance(value, str) and value in IMPLEMENTATIONS):
        raise GenResearchError(f"{key}={value!r} must be one of {', '.join(IMPLEMENTATIONS)}")


def choose_implementation(requested: str, parameters: Sequence[torch.Tensor], key: str = "implementation") -> str:
    """The AdamW implementation for ``parameters``: ``requested`` if it is not ``auto`` (``fused`` checked against
    the parameters' devices and dtypes, a one-line error naming the setting ``key`` otherwise); ``auto``:
    fused where all parameters are floating-point on devices with fused kernels (CPU, CUDA, ...), else foreach."""
    check_implementation(requested, key)
    if requested not in ("auto", "fused"):
        return requested
    devices = _fused_devices()
    unsupported = next((p for p in parameters if p.device.type not in devices or not p.is_floating_point()), None)
    if unsupported is None:
        return "fused"
    if requested == "fused":
        raise GenResearchError(f"{key}=fused: torch has no fused AdamW for {unsupported.dtype} parameters on "
                               f"{unsupported.device.type} (fused devices: {', '.join(devices)}); set {key} to foreach or auto")
    return "foreach"


def implementation_kwargs(implementation: str) -> dict[str, bool]:
    """The ``torch.optim.AdamW`` keyword arguments of an implementation other than ``auto``."""
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[implementation]


def build_adamw(parameters: Iterable[torch.nn.Parameter], spec: OptimizerSpec, module: L.LightningModule,
                key: str = "model.init_args.optimizers.<network>.implementation") -> tuple[torch.optim.AdamW, WarmupCosineLR]:
    """AdamW over ``parameters`` and its LambdaLR (linear warm-up, then constant or cosine to 0), stepped once
    per training iteration. The schedule's length is saved in the checkpoint; a resume with another budget says
    how the curve changes (lr_schedules.WarmupCosineLR). The kernel is ``spec.implementation`` (auto: see the
    module docstring); ``key`` names that setting in error messages."""
    parameters = list(parameters)
    tensors = [p for item in parameters for p in (item["params"] if isinstance(item, Mapping) else [item])]
    implementation = choose_implementation(spec.implementation, tensors, key)
    optimizer = AdamW(parameters, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, **implementation_kwargs(implementation))
    if implementation == "fused" and (spec.clips or _trainer_clips(module)):
        # Lightning refuses to clip an optimizer that unscales 16-mixed gradients inside its step (the fused kernels
        # can): let the GradScaler unscale first, as for any optimizer; the update is still one fused kernel.
        optimizer._step_supports_amp_scaling = False
    scheduler = WarmupCosineLR(optimizer, warmup_steps=spec.warmup_steps, total_steps=schedule_length(module, spec),
                               shape=spec.lr_schedule, decay_fraction=spec.decay_fraction)
    return optimizer, scheduler


def optimizer_implementation(optimizer: torch.optim.Optimizer) -> str:
    """Which implementation an optimizer's first param group runs: fused, foreach or for_loop (torch's default,
    ``None``/``None``, is foreach when all parameters are on CUDA, else for_loop)."""
    group = optimizer.param_groups[0]
    if group.get("fused"):
        return "fused"
    if group.get("foreach") is None:
        return "foreach" if all(p.is_cuda for p in group["params"]) else "for_loop"
    return "foreach" if group.get("foreach") else "for_loop"


def _fused_devices() -> tuple[str, ...]:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return tuple(_get_fused_kernels_supported_devices())
    except ImportError:  # torch moved its private list: the two devices this project runs on
        return ("cpu", "cuda")


def _trainer_clips(module: L.LightningModule) -> bool:
    trainer = getattr(module, "_trainer", None)  # a module built outside a Trainer (tests, benchmarks) has none
    return bool(trainer is not None and getattr(trainer, "gradient_clip_val", None))


def spec_from_hparams(hparams: Mapping[str, Any]) -> OptimizerSpec:
    """The single optimizer of a one-network family: its ``lr``, ``weight_decay``, ``warmup_steps`` and
    ``lr_schedule`` hyperparameters (and ``betas`` and ``optimizer_implementation`` where the family has them:
    every one-network family takes ``optimizer_implementation: AdamWImplementation = "auto"`` next to
    ``weight_decay``, checked by models/common.py's check_optimizer_settings); checked by the family's constructor."""
    return OptimizerSpec(
        lr=hparams["lr"],
        betas=tuple(hparams.get("betas", OptimizerSpec.betas)),
        weight_decay=hparams["weight_decay"],
        warmup_steps=hparams["warmup_steps"],
        lr_schedule=hparams["lr_schedule"],
        implementation=hparams.get(IMPLEMENTATION_HPARAM, OptimizerSpec.implementation),
    )


def configure_adamw(module: L.LightningModule) -> dict[str, Any]:
    """``configure_optimizers`` of a one-network family: AdamW on all parameters, its schedule stepped by Lightning
    after every optimizer step (one a batch under automatic optimization)."""
    optimizer, scheduler = build_adamw(module.parameters(), spec_from_hparams(module.hparams), module,
                                       key=f"model.init_args.{IMPLEMENTATION_HPARAM}")
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(where: str, name: str, value: Any, low: float, low_inclusive: bool = True, hint: str = "") -> None:
    ok = _is_number(value) and (value >= low if low_inclusive else value > low)
    if not ok:
        bound = ("[" if low_inclusive else "(") + f"{low:g}, inf)"
        raise GenResearchError(f"{where}.{name}={value!r} must be a number in {bound}; set {where}.{name} to {hint}")


__all__ = ["AdamW", "AdamWImplementation", "check_implementation", "CLIP_ALGORITHMS", "IMPLEMENTATIONS", "LR_SCHEDULES", "OptimizerSpec", "build_adamw", "choose_implementation",
           "configure_adamw", "implementation_kwargs", "optimizer_implementation", "optimizer_specs", "schedule_length", "spec_from_hparams"]
