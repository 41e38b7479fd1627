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
from gen_research.models.contract import Generates, ModelFamily, can, check_sampling_options, conditioning_classes, declared_options

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


def parse_truncation_psis(args: argparse.Namespace) -> tuple[float, ...] | None:
    """The truncation grid's psi values (``--truncation-psis 0.5,0.7,1``), or None (no truncation grid). Their range is
    the model's declaration's (checked once it is loaded: gen_research.evaluation.sampler_grid.psi_grid)."""
    text = getattr(args, "truncation_psis", None)
    if text is None:
        return None
    return parse_list(text, "truncation_psis", _finite_float, "numbers such as 0.5,0.7,1")


def model_defaults(model: Any) -> dict[str, Any]:
    """The model's own sampler settings: what an axis left off the command line takes."""
    defaults = model.sampling_defaults() if isinstance(model, ModelFamily) else {}
    return {"sampler": defaults.get("sampler"), "steps": defaults.get("steps"),
            "guidance_scale": float(defaults.get("guidance_scale") or 1.0), "eta": float(defaults.get("eta") or 0.0)}


def point_options(model: Any, point: GridPoint) -> dict[str, Any]:
    """The sampling keywords of one grid point, restricted to what the model declares (e.g. eta)."""
    declared = {option.name for option in declared_options(model)}
    values = {"sampler": point.sampler, "steps": point.steps, "guidance_scale": point.guidance_scale, "eta": point.eta}
    return {name: value for name, value in values.items() if name in declared}


def check_model(model: Any, axes: SweepAxes) -> None:
    """Refuse, in one line, a sweep the model cannot run: it declares no sampler options, or a value breaks its rules."""
    name = type(model).__name__
    declared = {option.name for option in declared_options(model)}
    if not can(model, Generates) or not {"sampler", "steps"} <= declared:
        raise GenResearchError(f"the sampler sweep needs a model with declared sampler and steps options (ddpm); {name} has no "
                               "diffusion samplers: leave out --samplers/--steps/--guidance-scales")
    defaults = model_defaults(model)
    if axes.guidance_scales and conditioning_classes(model) is None and set(axes.guidance_scales) != {defaults["guidance_scale"]}:
        raise GenResearchError(f"--guidance-scales: this {name} is unconditional, so classifier-free guidance does not apply; "
                               "leave --guidance-scales out or sweep a class-conditional checkpoint")
    for sampler in axes.samplers or ():  # e.g. pndm cannot step an x0-predicting model: fail now, not mid-sweep
        check_sampling_options(model, {"sampler": sampler})


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
    """The module whose calls are the NFE (the family says which: the UNet for a diffusion model)."""
    return model.sampling_network() if isinstance(model, ModelFamily) else model


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


__all__ = ["GridPoint", "SweepAxes", "ForwardCounter", "check_model", "denoising_network", "expand_grid",
           "model_defaults", "parse_axes", "parse_list", "parse_truncation_psis", "point_options"]
