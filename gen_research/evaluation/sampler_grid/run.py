"""Running the sampler sweep: reference features once, then samples and metrics at every grid point.

Why it is built this way:

- The reference set's extractor outputs are computed once (through the same on-disk cache, under the same
  key as a plain ``evaluate``) and fed to a fresh :class:`Evaluator` at every grid point; a fresh evaluator
  is the simplest way to be sure no metric state leaks from one point into the next. :func:`prepare_bench`
  does this part for every kind of grid (this sampler sweep, and the truncation grid of ``psi_grid``).
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError
from gen_research.models.contract import conditioning_classes
from gen_research.evaluation.sampler_grid.grid import (ForwardCounter, GridPoint, SweepAxes, check_model, denoising_network, expand_grid,
                                                       model_defaults, point_options)

GRID_IMAGES = 20  # samples shown per grid point: two rows of ten (classes 0..9 twice for a 10-class model)
SWEEP_ONLY_OPTIONS = ("eta", "out")


def check_arguments(args: argparse.Namespace, axes: SweepAxes | None, folder_mode: bool, psis: tuple[float, ...] | None = None) -> None:
    """One-line errors for options that contradict a grid (or need one), before anything is loaded. ``axes``: the
    sampler sweep's (grid.parse_axes); ``psis``: the truncation grid's (grid.parse_truncation_psis)."""
    if psis is not None:
        if axes is not None:
            raise GenResearchError("--truncation-psis cannot be combined with --samplers/--steps/--guidance-scales; "
                                   "run the truncation grid and the sampler sweep as two evaluate commands")
        if getattr(args, "truncation_psi", None) is not None:
            raise GenResearchError("--truncation-psi (one value) and --truncation-psis (a grid) together: pass only one of them")
        if args.eta is not None:
            raise GenResearchError("--eta only applies to the sampler sweep; leave it out of the truncation grid")
        check_grid_arguments(args, folder_mode, "the truncation grid", "psi.json")
        return
    if axes is None:
        given = [f"--{name}" for name in SWEEP_ONLY_OPTIONS if getattr(args, name, None) is not None]
        if given:
            raise GenResearchError(f"{', '.join(given)} only apply to the sampler sweep or the truncation grid; "
                                   "add --samplers, --steps, --guidance-scales or --truncation-psis")
        return
    check_grid_arguments(args, folder_mode, "the sampler sweep", "sweep.json")


def check_grid_arguments(args: argparse.Namespace, folder_mode: bool, what: str, table: str) -> None:
    """What every grid refuses: folders (a grid samples a checkpoint), --json, an --out holding files."""
    if folder_mode:
        raise GenResearchError(f"{what} samples a checkpoint: pass --config EXP --ckpt_path CKPT instead of --real/--fake")
    if args.json:
        raise GenResearchError(f"--json is for a single evaluation; {what} writes {table} into its output folder (--out)")
    if getattr(args, "plots", None):
        raise GenResearchError(f"--plots is for a single evaluation; {what} draws its own plots into its output folder (--out)")
    if args.out and Path(args.out).exists() and (not Path(args.out).is_dir() or any(Path(args.out).iterdir())):
        raise GenResearchError(f"--out {args.out} is not an empty folder; pass a new one (results are never overwritten)")


def output_folder(args: argparse.Namespace, suffix: str = "sampler-sweep") -> Path:
    """``--out`` (new or empty), else a fresh ``runs/<experiment>/<timestamp>-<suffix>``."""
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    from gen_research.training.run_folder import new_run_dir

    return new_run_dir(Path("runs"), Path(args.config).stem, suffix)


@contextmanager
def grid_output(args: argparse.Namespace, suffix: str) -> Iterator[Path]:
    """The output folder, removed again if a one-line error ends the grid before anything was written into it."""
    out = output_folder(args, suffix)
    try:
        yield out
    except GenResearchError:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


@dataclass
class GridBench:
    """What every point of a grid shares: the model on its device and its data, the feature extractor, a feeder
    of the reference split, and the reference outputs (computed once, fed to each point's fresh evaluator)."""

    model: Any
    datamodule: Any
    split_set: Any
    extractor: Any
    make_evaluator: Callable[[], Any]
    feeder: Any
    num_real: int
    num_fake: int
    data_key: str
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference_info: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> dataset, split, images, fingerprint

    def provenance(self, args: argparse.Namespace, sampling: dict[str, Any]) -> dict[str, Any]:
        """What every point of this grid was measured with (gen_research.evaluation.provenance); ``sampling``: the
        grid's axes and the settings fixed at every point."""
        from gen_research.evaluation.provenance import build_provenance

        probe, train = self.make_evaluator(), self.reference_info.get("train")
        return build_provenance(self.extractor, options=probe.options, metrics=probe.requested, num_generated=self.num_fake,
                                num_reference=self.num_real if probe.needs_reals else None, reference=self.reference_info.get("real") or {},
                                sampling=sampling, num_train=train["num_images"] if train else None, train_reference=train,
                                subject={"checkpoint": str(Path(args.ckpt_path).resolve()), "config": args.config})

    def fresh_evaluator(self) -> Any:
        """A new evaluator holding the reference outputs only: no metric state from an earlier point."""
        from gen_research.evaluation.evaluator import batched

        evaluator = self.make_evaluator()
        for role, outputs in self.references.items():
            for chunk in batched(outputs, 1000):
                evaluator.add_outputs(chunk, role)
        return evaluator


def prepare_bench(args: argparse.Namespace, names: list[str], options: Any, device: str, loaded: tuple[Any, Any, dict[str, Any]],
                  what: str) -> GridBench:
    """Model on ``device``, extractor, feeder and set sizes of a grid; metrics it cannot compare refused in one line
    (``what`` names the grid). Nothing is computed yet: :func:`compute_references` does that."""
    from gen_research.evaluation.evaluator import Evaluator
    from gen_research.evaluation.feeder import Feeder
    from gen_research.registry import FEATURES

    model, datamodule, data_config = loaded
    model = model.to(device).eval()
    datamodule.setup("validate")
    options.num_classes = datamodule.num_classes
    extractor = FEATURES.get(args.features)(weights=args.feature_weights, resize=args.resize, resize_mode=args.resize_mode,
                                            image_shape=tuple(datamodule.image_shape))
    make_evaluator = lambda: Evaluator(extractor, names, options, device=device)  # noqa: E731  fresh metric states
    probe = make_evaluator()
    unsupported = [need for need, needed in (("pairs (ssim, psnr, lpips)", probe.needs_pairs or probe.needs_cycle_pairs), ("a generator (ppl)", probe.needs_generator),
                                             ("captions (clip_score)", probe.needs_texts)) if needed]
    if unsupported:
        raise GenResearchError(f"{what} compares samples; metrics needing {unsupported[0]} do not apply: remove them from --metrics")
    split_set = getattr(datamodule, f"{args.split}_set")
    num_real = min(args.num_images or len(split_set), len(split_set))
    num_fake = args.num_images or num_real
    feeder = Feeder(model, split_set, num_real, num_fake, args.batch_size, args.seed, args.with_labels, label_field=extractor.label_field)
    data_key = json.dumps(data_config, sort_keys=True)  # the same key as a plain evaluate: one shared cache entry
    return GridBench(model, datamodule, split_set, extractor, make_evaluator, feeder, num_real, num_fake, data_key)


def compute_references(bench: GridBench, args: argparse.Namespace, cache: Any, bar: Callable[[str], Any]) -> None:
    """The reference outputs (real split, training set if a metric needs it), from the cache or computed once, under
    the keys and fingerprints a plain ``evaluate`` uses (gen_research.commands.evaluate._feed_reference)."""
    from gen_research.evaluation.evaluator import reference_outputs
    from gen_research.evaluation.sources import dataset_fingerprint, image_batches

    probe = bench.make_evaluator()
    if probe.needs_reals:
        key = {"dataset": bench.data_key, "split": args.split, "num_images": bench.num_real, "preprocessing": "datamodule"}
        fingerprint = dataset_fingerprint(bench.split_set, bench.num_real)  # the cache key and the provenance alike
        bench.references["real"] = reference_outputs(probe, bench.feeder.reference_batches, key, cache,
                                                     progress=bar("features of real images"), fingerprint=fingerprint)
        bench.reference_info["real"] = {**key, "fingerprint": fingerprint}
    if probe.needs_train:
        train_set = bench.datamodule.train_set
        key = {"dataset": bench.data_key, "split": "train", "num_images": len(train_set), "preprocessing": "datamodule"}
        fingerprint = dataset_fingerprint(train_set)
        bench.references["train"] = reference_outputs(probe, lambda: image_batches(train_set, args.batch_size), key, cache,
                                                      progress=bar("features of training images"), fingerprint=fingerprint)
        bench.reference_info["train"] = {**key, "fingerprint": fingerprint}


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
    from tqdm import tqdm

    from gen_research.evaluation.sampler_grid import report

    model = loaded[0]
    check_model(model, axes)
    grid = expand_grid(axes, model_defaults(model), args.eta)
    num_classes = conditioning_classes(model)
    if args.with_labels and not num_classes:
        raise GenResearchError(f"class-conditional metrics need a model that samples given classes; {type(model).__name__} does not")
    bench = prepare_bench(args, names, options, device, loaded, "the sampler sweep")
    model = bench.model
    with grid_output(args, "sampler-sweep") as out:
        compute_references(bench, args, cache, bar)
        warm_up(model, grid[0], min(args.batch_size, bench.num_fake), num_classes)
        rows, grids = [], {}
        for point in tqdm(grid, desc="sampler sweep", unit="point"):
            evaluator = bench.fresh_evaluator()
            if evaluator.needs_raw_reals:  # cas tests its classifier on the real images themselves
                for images, labels in bench.feeder.raw_reals():
                    evaluator.add_raw_images(images, "real", labels)
            row, grids[point.slug] = evaluate_point(model, point, evaluator, args, bench.num_fake, num_classes, out, bar)
            rows.append(row)
    context = {"checkpoint": args.ckpt_path, "reference": f"{args.split} split, {bench.num_real} images",
               "generated": f"{bench.num_fake} samples per grid point, seed {args.seed}" + (" (classes in turn)" if num_classes else ""),
               "grid": report.grid_summary(grid), "features": bench.extractor.name}
    sampling = {"grid": {"sampler": sorted({p.sampler for p in grid}), "steps": sorted({p.steps for p in grid}),
                         "guidance_scale": sorted({p.guidance_scale for p in grid}), "eta": sorted({p.eta for p in grid}, key=str)}}
    report.write_outputs(out, rows, context, grids, experiment=Path(args.config).stem, provenance=bench.provenance(args, sampling))
    return 0


__all__ = ["GRID_IMAGES", "GridBench", "PointStats", "check_arguments", "check_grid_arguments", "compute_references", "evaluate_point",
           "generate", "grid_output", "output_folder", "prepare_bench", "run_sampler_sweep", "warm_up"]
