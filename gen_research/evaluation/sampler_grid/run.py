"""Running the sampler sweep: reference features once, then samples and metrics at every grid point.

Why it is built this way:

- The reference set's extractor outputs are computed once (through the same on-disk cache, under the same
  key as a plain ``evaluate``) and fed to a fresh :class:`Evaluator` at every grid point; a fresh evaluator
  is the simplest way to be sure no metric state leaks from one point into the next.
- Every grid point samples with a generator seeded by ``--seed``: the same initial noise (and, for the
  stochastic samplers, the same noise stream), so differences between rows come from the sampler settings.
- Class-conditional models draw classes in turn (0, 1, ..., C-1, 0, ...) at every point, so every class has
  the same share and class metrics (``accuracy``) know each sample's intended class.
- NFE is measured, not computed from the step count: a forward hook on the denoising network counts its
  calls during the first batch (one sampling trajectory). Heun takes 2 calls a step but one on the last
  step, PNDM one extra at the start; whatever the scheduler does is what is counted.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError
from gen_research.models.contract import conditioning_classes
from gen_research.evaluation.sampler_grid.grid import (ForwardCounter, GridPoint, SweepAxes, check_model, denoising_network, expand_grid,
                                                       model_defaults, point_options)

GRID_IMAGES = 20  # samples shown per grid point: two rows of ten (classes 0..9 twice for a 10-class model)
SWEEP_ONLY_OPTIONS = ("eta", "out")


def check_arguments(args: argparse.Namespace, axes: SweepAxes | None, folder_mode: bool) -> None:
    """One-line errors for options that contradict the sweep (or need it), before anything is loaded."""
    if axes is None:
        given = [f"--{name}" for name in SWEEP_ONLY_OPTIONS if getattr(args, name, None) is not None]
        if given:
            raise GenResearchError(f"{', '.join(given)} only apply to the sampler sweep; add --samplers, --steps or --guidance-scales")
        return
    if folder_mode:
        raise GenResearchError("the sampler sweep samples a checkpoint: pass --config EXP --ckpt_path CKPT instead of --real/--fake")
    if args.json:
        raise GenResearchError("--json is for a single evaluation; the sampler sweep writes sweep.json into its output folder (--out)")
    if args.out and Path(args.out).exists() and (not Path(args.out).is_dir() or any(Path(args.out).iterdir())):
        raise GenResearchError(f"--out {args.out} is not an empty folder; pass a new one (results are never overwritten)")


def output_folder(args: argparse.Namespace) -> Path:
    """``--out`` (new or empty), else a fresh ``runs/<experiment>/<timestamp>-sampler-sweep``."""
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    from gen_research.training.run_folder import new_run_dir

    return new_run_dir(Path("runs"), Path(args.config).stem, "sampler-sweep")


@dataclass
class PointStats:
    """What sampling one grid point cost: network calls and rows of one trajectory, and total wall time."""

    nfe: int = 0
    nfe_weighted: float = 0.0
    sampling_seconds: float = 0.0


def generate(model: Any, point: GridPoint, num_images: int, batch_size: int, seed: int, num_classes: int | None,
             stats: PointStats) -> Iterator[tuple[Any, Any]]:
    """(images, labels or None) batches of one grid point; fills ``stats`` while it runs."""
    import torch

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)  # same noise at every grid point
    network = denoising_network(model)
    done = 0
    while done < num_images:
        count = min(batch_size, num_images - done)
        keywords: dict[str, Any] = point_options(model, point)
        labels = None
        if num_classes:
            labels = torch.arange(done, done + count, device=device) % num_classes
            keywords["labels"] = labels
        counter = ForwardCounter(network) if done == 0 else nullcontext()
        start = time.perf_counter()
        with torch.no_grad(), counter:
            images = model.sample(count, generator=generator, **keywords)
        if device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(device)
        stats.sampling_seconds += time.perf_counter() - start
        if done == 0:
            stats.nfe = counter.calls
            stats.nfe_weighted = round(counter.rows / count, 3)
        done += count
        yield images.float().clamp(-1, 1), labels


def warm_up(model: Any, point: GridPoint, count: int, num_classes: int | None) -> None:
    """One untimed single-step draw of the first grid point at the sweep's batch size, so one-time costs (lazy
    initialisation, cuDNN autotuning, allocator growth) are not billed to the first point's ``sampling_seconds``."""
    import torch

    device = next(model.parameters()).device
    labels = torch.arange(count, device=device) % num_classes if num_classes else None
    with torch.no_grad():
        model.sample(count, labels=labels, generator=torch.Generator(device=device).manual_seed(0), **{**point_options(model, point), "steps": 1})


def evaluate_point(model: Any, point: GridPoint, evaluator: Any, args: argparse.Namespace, num_images: int, num_classes: int | None,
                   out: Path, bar: Callable[[str], Any]) -> tuple[dict[str, Any], Any]:
    """Sample one grid point into an evaluator already holding the reference outputs: (table row, uint8 sample grid)."""
    import torch

    from gen_research.evaluation.sampler_grid import report

    stats, shown = PointStats(), []
    for images, labels in bar(point.slug)(generate(model, point, num_images, args.batch_size, args.seed, num_classes, stats)):
        if sum(len(s) for s in shown) < GRID_IMAGES:
            shown.append(images[:GRID_IMAGES].cpu())
        evaluator.add_images(images, "fake", labels if args.with_labels else None)
    grid = report.save_sample_grid(torch.cat(shown)[:GRID_IMAGES], out / "samples" / f"{point.slug}.png")
    row = {"sampler": point.sampler, "steps": point.steps, "guidance_scale": point.guidance_scale, "eta": point.eta,
           "nfe": stats.nfe, "nfe_weighted": stats.nfe_weighted, "sampling_seconds": round(stats.sampling_seconds, 4), **evaluator.compute()}
    return row, grid


def run_sampler_sweep(args: argparse.Namespace, axes: SweepAxes, names: list[str], options: Any, cache: Any,
                      bar: Callable[[str], Any], device: str, loaded: tuple[Any, Any, dict[str, Any]]) -> int:
    """The sweep behind ``evaluate --samplers/--steps/--guidance-scales`` of ``loaded`` = (model, data module, data
    config) (gen_research.commands.loading); writes and prints the table and plots."""
    import torch

    from gen_research.evaluation.evaluator import Evaluator, batched, reference_outputs
    from gen_research.evaluation.feeder import Feeder
    from gen_research.evaluation.sampler_grid import report
    from gen_research.evaluation.sources import image_batches
    from gen_research.registry import FEATURES

    model, datamodule, data_config = loaded
    check_model(model, axes)
    grid = expand_grid(axes, model_defaults(model), args.eta)
    num_classes = conditioning_classes(model)
    if args.with_labels and not num_classes:
        raise GenResearchError(f"class-conditional metrics need a model that samples given classes; {type(model).__name__} does not")
    model = model.to(device).eval()
    datamodule.setup("validate")
    options.num_classes = datamodule.num_classes
    extractor = FEATURES.get(args.features)(weights=args.feature_weights, resize=args.resize, image_shape=tuple(datamodule.image_shape))
    make_evaluator = lambda: Evaluator(extractor, names, options, device=device)  # noqa: E731  fresh metric states
    probe = make_evaluator()
    unsupported = [what for what, needed in (("pairs (ssim, psnr, lpips)", probe.needs_pairs), ("a generator (ppl)", probe.needs_generator),
                                             ("captions (clip_score)", probe.needs_texts)) if needed]
    if unsupported:
        raise GenResearchError(f"the sampler sweep compares samples; metrics needing {unsupported[0]} do not apply: remove them from --metrics")
    split_set = getattr(datamodule, f"{args.split}_set")
    num_real = min(args.num_images or len(split_set), len(split_set))
    num_fake = args.num_images or num_real
    feeder = Feeder(model, split_set, num_real, num_fake, args.batch_size, args.seed, args.with_labels)
    out = output_folder(args)
    try:
        data_key = json.dumps(data_config, sort_keys=True)  # the same key as a plain evaluate: one shared cache entry
        references: dict[str, dict[str, torch.Tensor]] = {}
        if probe.needs_reals:
            key = {"dataset": data_key, "split": args.split, "num_images": num_real, "preprocessing": "datamodule"}
            references["real"] = reference_outputs(probe, feeder.reference_batches, key, cache, progress=bar("features of real images"))
        if probe.needs_train:
            train_set = datamodule.train_set
            key = {"dataset": data_key, "split": "train", "num_images": len(train_set), "preprocessing": "datamodule"}
            references["train"] = reference_outputs(probe, lambda: image_batches(train_set, args.batch_size), key, cache,
                                                    progress=bar("features of training images"))
        from tqdm import tqdm

        warm_up(model, grid[0], min(args.batch_size, num_fake), num_classes)
        rows, grids = [], {}
        for point in tqdm(grid, desc="sampler sweep", unit="point"):
            evaluator = make_evaluator()
            for role, outputs in references.items():
                for chunk in batched(outputs, 1000):
                    evaluator.add_outputs(chunk, role)
            if evaluator.needs_raw_reals:  # cas tests its classifier on the real images themselves
                for images, labels in feeder.raw_reals():
                    evaluator.add_raw_images(images, "real", labels)
            row, grids[point.slug] = evaluate_point(model, point, evaluator, args, num_fake, num_classes, out, bar)
            rows.append(row)
    except GenResearchError:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    context = {"checkpoint": args.ckpt_path, "reference": f"{args.split} split, {num_real} images",
               "generated": f"{num_fake} samples per grid point, seed {args.seed}" + (" (classes in turn)" if num_classes else ""),
               "grid": report.grid_summary(grid), "features": extractor.name}
    report.write_outputs(out, rows, context, grids, experiment=Path(args.config).stem)
    return 0


__all__ = ["GRID_IMAGES", "PointStats", "check_arguments", "evaluate_point", "generate", "output_folder", "run_sampler_sweep", "warm_up"]
