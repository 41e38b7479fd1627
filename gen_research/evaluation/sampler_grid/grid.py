"""The sampler-sweep grid: parsing the axes, filling in the model's defaults, checking them, and counting NFE.

Everything here is cheap and runs before any image is sampled, so a typo in ``--samplers`` or a guidance
scale on an unconditional model fails in one line, not after an hour of sampling.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from gen_research.errors import GenResearchError

AXIS_OPTIONS = ("samplers", "steps", "guidance_scales")


@dataclass(frozen=True)
class GridPoint:
    """One sampler setting of the sweep. ``eta`` is passed to every sampler but only DDIM uses it."""

    sampler: str
    steps: int
    guidance_scale: float
    eta: float

    @property
    def slug(self) -> str:
        """File-name form, e.g. ``dpm-solver++-20-w2`` (``:g`` drops a trailing ``.0``)."""
        return f"{self.sampler}-{self.steps}-w{self.guidance_scale:g}"


@dataclass(frozen=True)
class SweepAxes:
    """The values given on the command line; None where the option was left out (the model's default is used)."""

    samplers: tuple[str, ...] | None = None
    steps: tuple[int, ...] | None = None
    guidance_scales: tuple[float, ...] | None = None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_list(text: str, option: str, convert: Callable[[str], Any], what: str) -> tuple[Any, ...]:
    """``"10, 20,20"`` -> ``(10, 20)``: comma-separated, converted, duplicates dropped (first order kept)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise GenResearchError(f"{_flag(option)} is empty; pass comma-separated {what}")
    values = []
    for item in items:
        try:
            value = convert(item)
        except ValueError:
            raise GenResearchError(f"{_flag(option)}: {item!r} is not {what.rstrip('s')}; pass comma-separated {what}") from None
        if value not in values:
            values.append(value)
    return tuple(values)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def parse_axes(args: argparse.Namespace) -> SweepAxes | None:
    """The sweep asked for on the command line, or None (a plain ``evaluate``). Sampler names are checked here."""
    if all(getattr(args, name, None) is None for name in AXIS_OPTIONS):
        return None
    samplers = steps = scales = None
    if args.samplers is not None:
        from gen_research.sampling.diffusion import check_scheduler_name

        samplers = parse_list(args.samplers, "samplers", str, "sampler names (python -m gen_research list samplers)")
        for name in samplers:
            check_scheduler_name(name)
    if args.steps is not None:
        steps = parse_list(args.steps, "steps", _positive_int, "positive integers such as 10,20,50")
    if args.guidance_scales is not None:
        scales = parse_list(args.guidance_scales, "guidance_scales", _finite_float, "numbers such as 1,2,4")
    return SweepAxes(samplers, steps, scales)


def class_count(model: Any) -> int | None:
    """Number of classes the model samples given (class-conditional), else None.

    DDPM keeps ``num_classes`` in its hparams even when it was trained unconditionally, so its
    ``class_conditional`` flag decides; other families count as conditional when ``sample`` takes labels.
    """
    hparams = getattr(model, "hparams", None) or {}
    if "class_conditional" in hparams:
        return int(hparams["num_classes"]) if hparams.get("class_conditional") and hparams.get("num_classes") else None
    from gen_research.evaluation.sources import samples_by_class

    return int(model.num_classes) if samples_by_class(model) else None


def model_defaults(model: Any) -> dict[str, Any]:
    """The model's own sampler settings (its hparams): what an axis left off the command line takes."""
    hparams = getattr(model, "hparams", None) or {}
    return {"sampler": hparams.get("sampler"), "steps": hparams.get("sampling_steps"),
            "guidance_scale": float(hparams.get("guidance_scale", 1.0)), "eta": float(hparams.get("eta", 0.0))}


def check_model(model: Any, axes: SweepAxes) -> None:
    """Refuse, in one line, a sweep the model cannot run: not a diffusion model, or guidance without classes."""
    name = type(model).__name__
    if not getattr(model, "is_diffusion", False):
        raise GenResearchError(f"the sampler sweep needs a diffusion model (ddpm); {name} has no diffusion samplers: "
                               "leave out --samplers/--steps/--guidance-scales")
    defaults = model_defaults(model)
    if axes.guidance_scales and class_count(model) is None and set(axes.guidance_scales) != {defaults["guidance_scale"]}:
        raise GenResearchError(f"--guidance-scales: this {name} is unconditional, so classifier-free guidance does not apply; "
                               "leave --guidance-scales out or sweep a class-conditional checkpoint")
    train_config = getattr(getattr(model, "noise_scheduler", None), "config", None)
    if train_config is not None:  # e.g. pndm cannot step an x0-predicting model: fail now, not mid-sweep
        from gen_research.sampling.diffusion import make_scheduler

        for sampler in axes.samplers or ():
            make_scheduler(sampler, train_config)


def expand_grid(axes: SweepAxes, defaults: dict[str, Any], eta: float | None = None) -> list[GridPoint]:
    """Every combination, sampler-major then guidance scale then steps (the order of the table's rows)."""
    samplers = axes.samplers or (defaults.get("sampler"),)
    steps = axes.steps or (defaults.get("steps"),)
    scales = axes.guidance_scales or (defaults.get("guidance_scale", 1.0),)
    for option, values in (("samplers", samplers), ("steps", steps)):
        if None in values:
            raise GenResearchError(f"the model has no default for {_flag(option)}; pass {_flag(option)} explicitly")
    eta = defaults.get("eta", 0.0) if eta is None else eta
    return [GridPoint(sampler, int(count), float(scale), float(eta)) for sampler in samplers for scale in scales for count in steps]


def denoising_network(model: Any) -> Any:
    """The module whose calls are the NFE: the UNet when the model has one (however ``forward`` reaches it)."""
    from torch import nn

    unet = getattr(model, "unet", None)
    return unet if isinstance(unet, nn.Module) else model


class ForwardCounter:
    """Counts the calls of a module (``calls``) and the batch rows they carry (``rows``) while entered.

    A forward pre-hook sees every call, whichever code path makes it; rows tell a classifier-free-guidance
    step (conditional and unconditional halves in one doubled batch: 1 call, 2x rows) from a plain one.
    """

    def __init__(self, module: Any) -> None:
        self.module = module
        self.calls = 0
        self.rows = 0
        self._handle: Any = None

    def _hook(self, module: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        self.calls += 1
        first = args[0] if args else next(iter(kwargs.values()), None)
        self.rows += int(first.shape[0]) if hasattr(first, "shape") and len(first.shape) else 0

    def __enter__(self) -> ForwardCounter:
        self._handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._handle.remove()


__all__ = ["GridPoint", "SweepAxes", "ForwardCounter", "check_model", "class_count", "denoising_network", "expand_grid",
           "model_defaults", "parse_axes", "parse_list"]
