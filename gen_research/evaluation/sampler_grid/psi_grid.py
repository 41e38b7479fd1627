"""The truncation grid: ``evaluate --truncation-psis 0.5,0.7,1`` measures a checkpoint at each truncation psi.

    python -m gen_research evaluate --config EXP --ckpt_path CKPT --truncation-psis 0.5,0.7,1.0 \
        [--metrics fid,precision,recall ...] [--out DIR]

Truncation trades diversity for fidelity (precision up, recall down as psi falls); metrics are reported at psi 1
(off) unless told, so this grid is how the trade-off is measured. It shares the sampler sweep's pieces
(``run.prepare_bench``: reference features once, through the plain ``evaluate``'s cache entry; a fresh evaluator per
point; ``report``: table, plot, sample grids, W&B). A grid point is a dict of the model's declared sampling options
(``{"truncation_psi": psi}`` plus any other declared option given once, held fixed), checked by the model's own
declaration and drawn by the evaluation feeder exactly as a plain ``evaluate`` draws them: the same chunk seeds at
every point, so psi 1's row equals ``evaluate --json`` with the same --seed and --num-images. No NFE is counted
(a GAN samples in one generator call).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError
from gen_research.models.contract import (Generates, ModelFamily, SamplingContext, SamplingOption, SamplingPlan, can, check_sampling_options,
                                          declared_options, options_of_all_families)

PSI_OPTION = "truncation_psi"
PSI_FLAG = "--truncation-psis"


def _check_values(option: SamplingOption, psis: tuple[float, ...]) -> None:
    """Each psi by ``option``'s range, the error naming the grid's flag rather than the single value's."""
    for psi in psis:
        try:
            option.check(psi)
        except GenResearchError as error:
            raise GenResearchError(str(error).replace(option.flag, PSI_FLAG, 1)) from None


def check_psis_alone(psis: tuple[float, ...]) -> None:
    """The values against the registered families' declaration of ``truncation_psi``, before a checkpoint is read."""
    for option, _ in options_of_all_families():
        if option.name == PSI_OPTION:
            _check_values(option, psis)


def grid_points(model: Any, psis: tuple[float, ...], fixed: dict[str, Any], context: SamplingContext | None = None) -> list[dict[str, Any]]:
    """The checked sampling options of every grid point, ``{**fixed, "truncation_psi": psi}``; a model that declares
    no ``truncation_psi``, or a value its declaration (or its family's rules) refuses, is a one-line error."""
    name = type(model).__name__
    declared = {option.name: option for option in declared_options(model)}
    if not can(model, Generates) or PSI_OPTION not in declared:
        raise GenResearchError(f"the truncation grid needs a model with a truncation_psi sampling option (the GANs); {name} declares no "
                               f"truncation_psi; leave out {PSI_FLAG}")
    _check_values(declared[PSI_OPTION], psis)
    return [check_sampling_options(model, {**fixed, PSI_OPTION: psi}, context) for psi in psis]


def slug(psi: float) -> str:
    """File-name form of a grid point: ``psi-0.5``, ``psi-1``."""
    return f"psi-{psi:g}"


def _plan(model: Any, options: dict[str, Any], context: SamplingContext) -> SamplingPlan:
    """The family's preparation of checked options (as a plain evaluate's ``sampling_plan``)."""
    return model.prepare_sampling(options, context) if isinstance(model, ModelFamily) else SamplingPlan(options=dict(options))


def _keeping(batches: Iterable[tuple[Any, ...]], shown: list[Any], count: int) -> Iterator[tuple[Any, ...]]:
    """``batches`` ((images, labels, ...) tuples) passed through, keeping (on the CPU) the first ``count`` images for the
    point's sample grid."""
    for batch in batches:
        if sum(len(kept) for kept in shown) < count:
            shown.append(batch[0][:count].cpu())
        yield batch


def run_psi_grid(args: argparse.Namespace, psis: tuple[float, ...], fixed: dict[str, Any], names: list[str], options: Any, cache: Any,
                 bar: Callable[[str], Any], device: str, loaded: tuple[Any, Any, dict[str, Any]]) -> int:
    """The grid behind ``evaluate --truncation-psis`` of ``loaded`` = (model, data module, data config); ``fixed``: other
    declared sampling options given on the command line, the same at every point. Writes psi.csv, psi.json,
    metrics_vs_psi.png, a sample grid per psi and a W&B run into the output folder, and prints the table."""
    import torch
    from tqdm import tqdm

    from gen_research.evaluation.sampler_grid import report
    from gen_research.evaluation.sampler_grid.run import GRID_IMAGES, compute_references, grid_output, prepare_bench
    from gen_research.evaluation.set_sizes import check_set_sizes

    model = loaded[0]
    points = grid_points(model, psis, fixed)  # before the data is set up
    bench = prepare_bench(args, names, options, device, loaded, "the truncation grid")
    context = SamplingContext(num_images=bench.num_fake, device=device, datamodule=bench.datamodule)
    plans = [_plan(bench.model, point, context) for point in points]
    bench.feeder.check(bench.make_evaluator())  # e.g. accuracy of an unconditional GAN
    check_set_sizes(names, options, bench.num_real, bench.feeder.num_generated, f"the {args.split} split", "the generated set")
    with grid_output(args, "psi-grid") as out:
        compute_references(bench, args, cache, bar)
        rows, grids = [], {}
        for psi, plan in tqdm(list(zip(psis, plans)), desc="truncation grid", unit="point"):
            feeder = dataclasses.replace(bench.feeder, sample_options=plan.options)  # same chunk seeds at every point
            evaluator, shown = bench.fresh_evaluator(), []
            feeder.feed(evaluator, progress=lambda batches: _keeping(bar(slug(psi))(batches), shown, GRID_IMAGES))
            grids[slug(psi)] = report.save_sample_grid(torch.cat(shown)[:GRID_IMAGES], out / "samples" / f"{slug(psi)}.png")
            rows.append({PSI_OPTION: psi, **evaluator.compute()})
    context_lines = {"checkpoint": args.ckpt_path, "reference": f"{args.split} split, {bench.num_real} images",
                     "generated": f"{bench.feeder.describe(args.split)} per grid point, seed {args.seed}",
                     "grid": f"{len(psis)} truncation psi value(s): {', '.join(f'{psi:g}' for psi in psis)}", "features": bench.extractor.name}
    if fixed:
        context_lines["options"] = ", ".join(f"{key}={value}" for key, value in points[0].items() if key != PSI_OPTION)
    sampling = {"grid": {PSI_OPTION: list(psis)}, **{key: value for key, value in points[0].items() if key != PSI_OPTION}}
    report.write_outputs(out, rows, context_lines, grids, experiment=Path(args.config).stem, layout=report.PSI_LAYOUT,
                         plot_files=(("metrics_vs_psi.png", report.plot_metrics_vs_psi),), provenance=bench.provenance(args, sampling))
    return 0


__all__ = ["PSI_FLAG", "PSI_OPTION", "check_psis_alone", "grid_points", "run_psi_grid", "slug"]
