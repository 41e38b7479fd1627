"""Benchmark: experiments/text2image_mnist5k.yaml (local CLIP + first stage + text2image) on this CPU, issue 16.

    python benchmarks/bench_text2image.py                       # one `fit` of the experiment (all its stages), then measures
    python benchmarks/bench_text2image.py --ckpt CKPT --config experiments/text2image_mnist5k.yaml --clip-folder DIR --out DIR

1. Training: wall minutes of the whole ``fit`` and of each stage, from the run folders (every run of one ``fit`` is
   named by its start time; each finished run records its end in fit-finished.json), as bench_ldm.py reads them.
2. Quality at guidance scales 1, 2, 3, 5, 7.5 (DPM-Solver++, 20 steps, seed 0; the same noise at every scale): on the
   easy prompts (10 digits x 6 colours, "a large thick red seven on a black background", 4 images each) and on 60
   seeded full captions (other sizes, positions, backgrounds; 4 images each), the share of images whose digit (the
   shipped MNIST classifier on the MNIST-normalised stroke map) and colour (circular mean hue of the saturated
   pixels) are the prompt's (benchmarks/text2image_readout.py), and the CLIP score (local CLIP, clip_score's metric)
   of each image against its prompt. The same read-outs on the real test split give their ceiling.
3. Figures: docs/images/text2image_grid.png (rows digits 0-9, columns the six colours, guidance 3) and
   docs/images/text2image_guidance.png (digit accuracy, colour accuracy and CLIP score against the guidance scale).

The CLIP folder: ``--clip-folder DIR`` (a transformers CLIPModel folder with its tokenizer), else the experiment's
CLIP stage's finished checkpoint exported with ``python -m gen_research export`` into OUT/clip.

Claims checked (issue 16): CLIP + first stage + text2image within 90 minutes; at every guidance scale >= 3 digit and
colour accuracy >= 80% each (easy prompts; full captions listed as their own claims); the CLIP score rises with the
guidance scale from 1 to 3. Writes summary.json (and per-image read-outs, readouts-<scale>.csv) into --out and prints
PASS/FAIL per claim.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # text2image_readout.py lives next to this file

import text2image_readout as readout  # noqa: E402

from gen_research.errors import GenResearchError  # noqa: E402

EXPERIMENT = REPO / "experiments" / "text2image_mnist5k.yaml"
IMAGES = REPO / "docs" / "images"
GUIDANCE_SCALES = (1.0, 2.0, 3.0, 5.0, 7.5)
GRID_SCALE = 3.0
CLAIM_MINUTES, CLAIM_ACCURACY, CLAIM_FROM_SCALE = 90.0, 0.80, 3.0


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def experiment_name(config: Path) -> str:
    """The experiment's run-folder name: its ``name:`` key, else the file's stem (as the commands name runs)."""
    from gen_research.config.files import load_experiment

    return str(load_experiment(config).get("name") or config.stem)


def stage_files(config: Path) -> dict[str, Path]:
    """The experiment's ``stages:`` (option -> stage experiment file, relative to the experiment's folder)."""
    import yaml

    stages = (yaml.safe_load(config.read_text()) or {}).get("stages") or {}
    return {option: (config.parent / file).resolve() for option, file in stages.items()}


def train(config: Path, out: Path) -> Path:
    run([sys.executable, "-m", "gen_research", "fit", "--config", str(config), "--runs_root", str(out / "runs")])
    return max((out / "runs" / experiment_name(config)).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)


def _finished_at(run_dir: Path) -> float:
    record = json.loads((run_dir / "fit-finished.json").read_text())
    return time.mktime(time.strptime(record["finished_at"], "%Y-%m-%dT%H:%M:%S%z"))


def training_minutes(ckpt: Path, experiment: str) -> dict[str, float]:
    """Wall minutes of the fit and of each of its stages that this fit trained: the stages' runs carry the
    second stage's run name (``<runs>/<experiment>.<stage stem>/<start>``); a stage ends when its fit-finished.json
    says, the next one starts then. Empty when the checkpoint's fit did not finish or trained no stage."""
    run_dir = ckpt.parent.parent
    if not (run_dir / "fit-finished.json").is_file():
        return {}
    stage_runs = sorted((r for r in run_dir.parent.parent.glob(f"{experiment}.*/{run_dir.name}") if (r / "fit-finished.json").is_file()),
                        key=_finished_at)
    if not stage_runs:
        return {}
    start = time.mktime(time.strptime(run_dir.name[:15], "%Y%m%d-%H%M%S"))
    minutes, previous = {}, start
    for stage_run in [*stage_runs, run_dir]:
        stage = stage_run.parent.name.removeprefix(f"{experiment}.") if stage_run is not run_dir else experiment
        minutes[f"{stage}_minutes"] = (_finished_at(stage_run) - previous) / 60
        previous = _finished_at(stage_run)
    minutes["total_minutes"] = (previous - start) / 60
    return minutes


def clip_folder(args: argparse.Namespace, ckpt: Path, config: Path, out: Path) -> Path:
    """--clip-folder, else the experiment's CLIP stage (a stage file named clip*) exported from its finished run."""
    if args.clip_folder:
        return Path(args.clip_folder)
    from gen_research.training.run_folder import latest_run, marker_checkpoint, read_fit_marker

    runs_root, experiment = ckpt.resolve().parents[3], experiment_name(config)
    clip_stages = [file for file in stage_files(config).values() if file.stem.startswith("clip")]
    if not clip_stages:
        raise GenResearchError(f"{config} has no CLIP stage (a stages: entry naming clip*.yaml); pass --clip-folder DIR")
    stage_run = latest_run(runs_root / f"{experiment}.{clip_stages[0].stem}")
    record = read_fit_marker(stage_run) if stage_run else None
    stage_ckpt = marker_checkpoint(stage_run, record) if record else None
    if stage_ckpt is None:
        raise GenResearchError(f"no finished run of the CLIP stage under {runs_root / f'{experiment}.{clip_stages[0].stem}'}; pass --clip-folder DIR")
    folder = out / "clip"
    if not (folder / "config.json").is_file():
        try:
            run([sys.executable, "-m", "gen_research", "export", "--config", str(clip_stages[0]), "--ckpt_path", str(stage_ckpt), "--out", str(folder)])
        except subprocess.CalledProcessError:
            raise GenResearchError(f"exporting the CLIP stage {stage_ckpt} failed (see above); export it yourself and pass --clip-folder DIR") from None
    return folder


def load_clip_scorer(folder: Path) -> Any:
    """clip_score's metric on the local CLIP folder (its per-pair ``scores(images, texts)``: 100 * max(cos, 0))."""
    from gen_research.evaluation.extractors.clip import _Preprocess
    from gen_research.evaluation.specs.clip_score import CLIPScoreMetric, load_clip

    model, tokenizer = load_clip(folder)
    return CLIPScoreMetric(model, tokenizer, _Preprocess(folder, int(model.config.vision_config.image_size)))


@torch.no_grad()
def generate(model: Any, texts: Sequence[str], guidance_scale: float, args: argparse.Namespace) -> torch.Tensor:
    """Images [len(texts), 3, H, W] of ``texts`` in batches, one generator seeded ``args.seed`` for the whole list."""
    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    for start in range(0, len(texts), args.batch_size):
        batch = list(texts[start: start + args.batch_size])
        batches.append(model.sample(len(batch), prompts=batch, negative_prompt=None, guidance_scale=guidance_scale,
                                    sampler=args.sampler, steps=args.steps, generator=generator).float().clamp(-1, 1).cpu())
    return torch.cat(batches)


def read_out(images: torch.Tensor, prompts: Sequence[readout.Prompt], classifier: Any, scorer: Any | None) -> dict[str, Any]:
    """Per-image read-outs of images generated from ``prompts`` (one prompt per image), and their shares."""
    digits = readout.digit_of(images, classifier).tolist()
    colours = readout.colour_of(images)
    scores = [] if scorer is None else torch.cat([scorer.scores(images[i: i + 200], [p.text for p in prompts[i: i + 200]])
                                                  for i in range(0, len(prompts), 200)]).tolist()
    return {"digits": digits, "colours": colours, "clip_scores": scores,
            "digit_accuracy": readout.accuracy(digits, [p.digit for p in prompts]),
            "colour_accuracy": readout.accuracy(colours, [p.colour for p in prompts]),
            "no_colour_share": colours.count(readout.NO_COLOUR) / max(1, len(colours)),
            "clip_score": sum(scores) / len(scores) if scores else math.nan}


def real_ceiling(datamodule: Any, classifier: Any, scorer: Any | None, limit: int) -> dict[str, Any]:
    """The read-outs on the real test split (true digit: the label; true colour: the colour word of the caption)."""
    from gen_research.data.captioned_digits import COLOURS

    datamodule.setup("test")
    images, prompts = [], []
    for batch in datamodule.test_dataloader():
        for image, label, caption in zip(batch["image"], batch["label"], batch["caption"]):
            words = caption.split()
            prompts.append(readout.Prompt(caption, int(label), next((c for c in COLOURS if c in words), readout.NO_COLOUR)))
            images.append(image)
        if len(images) >= limit:
            break
    result = read_out(torch.stack(images[:limit]), prompts[:limit], classifier, scorer)
    return {key: value for key, value in result.items() if not isinstance(value, list)} | {"num_images": len(prompts[:limit])}


def write_readouts(path: Path, prompts: Sequence[readout.Prompt], sets: Sequence[str], result: dict[str, Any]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["set", "prompt", "digit", "colour", "digit_read", "colour_read", "clip_score"])
        scores = result["clip_scores"] or [math.nan] * len(prompts)
        for row in zip(sets, (p.text for p in prompts), (p.digit for p in prompts), (p.colour for p in prompts),
                       result["digits"], result["colours"], scores):
            writer.writerow(row)


def write_grid(images: torch.Tensor, num_colours: int, path: Path) -> None:
    """The prompt-by-attribute grid: one image per easy prompt, digit-major (rows digits 0-9, columns the colours)."""
    from gen_research.files.image_grid import save_grid

    if len(images) != 10 * num_colours:
        raise ValueError(f"the grid needs 10 x {num_colours} images (one per easy prompt), got {len(images)}")
    save_grid(images, path, nrow=num_colours)


def write_guidance_plot(by_scale: dict[float, dict[str, dict[str, float]]], path: Path) -> None:
    """Digit and colour accuracy (easy prompts, full captions) and CLIP score (all prompts) against guidance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted(by_scale)
    figure, (accuracy_axis, clip_axis) = plt.subplots(1, 2, figsize=(9, 3.6))
    for prompt_set, style in (("easy", "-"), ("full", "--")):
        for metric, colour in (("digit_accuracy", "tab:blue"), ("colour_accuracy", "tab:orange")):
            accuracy_axis.plot(scales, [by_scale[s][prompt_set][metric] for s in scales], style, marker="o", color=colour,
                               label=f"{metric.split('_')[0]}, {prompt_set} prompts")
    accuracy_axis.axhline(CLAIM_ACCURACY, color="grey", linewidth=0.8, linestyle=":")
    accuracy_axis.set(xlabel="guidance scale", ylabel="accuracy", ylim=(0, 1.02), title="prompt followed")
    accuracy_axis.legend(fontsize=7)
    clip_axis.plot(scales, [by_scale[s]["all"]["clip_score"] for s in scales], marker="o", color="tab:green")
    clip_axis.set(xlabel="guidance scale", ylabel="CLIP score (local CLIP)", title="image-prompt agreement")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def check_claims(by_scale: dict[float, dict[str, dict[str, float]]], minutes: dict[str, float]) -> dict[str, bool]:
    claims = {}
    if minutes:
        claims[f"CLIP + first stage + text2image within {CLAIM_MINUTES:g} minutes"] = minutes["total_minutes"] <= CLAIM_MINUTES
    high = [s for s in sorted(by_scale) if s >= CLAIM_FROM_SCALE]
    for prompt_set, label in (("easy", "easy prompts"), ("full", "full captions")):
        for metric in ("digit_accuracy", "colour_accuracy"):
            claims[f"{label}: {metric.replace('_', ' ')} >= {CLAIM_ACCURACY:.0%} at every guidance >= {CLAIM_FROM_SCALE:g}"] = bool(high) and all(
                by_scale[s][prompt_set][metric] >= CLAIM_ACCURACY for s in high)
    rising = [s for s in sorted(by_scale) if s <= CLAIM_FROM_SCALE]
    clip = [by_scale[s]["all"]["clip_score"] for s in rising]
    claims[f"CLIP score rises with the guidance scale ({' -> '.join(f'{s:g}' for s in rising)})"] = len(clip) >= 2 and all(
        later > earlier for earlier, later in zip(clip, clip[1:]))
    return claims


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    from gen_research.errors import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="bench_text2image.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="a text2image checkpoint (default: fit the experiment and all its stages first)")
    parser.add_argument("--config", default=str(EXPERIMENT), help="the experiment the checkpoint was trained with")
    parser.add_argument("--clip-folder", help="a local CLIP folder for the CLIP score (default: export the experiment's CLIP stage)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_text2image" / time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--guidance-scales", default=",".join(f"{s:g}" for s in GUIDANCE_SCALES))
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--num-full", type=int, default=60, help="full captions sampled over random attributes")
    parser.add_argument("--sampler", default="dpm-solver++")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=120, help="images per sample call")
    parser.add_argument("--real-images", type=int, default=1000, help="test-split images for the read-outs' ceiling (0: skip)")
    parser.add_argument("--figures", default=str(IMAGES), help="folder of text2image_grid.png and text2image_guidance.png")
    args = parser.parse_args(argv)
    try:
        args.guidance_scales = sorted({float(s) for s in str(args.guidance_scales).split(",") if s.strip()})
    except ValueError:
        raise GenResearchError(f"--guidance-scales {args.guidance_scales!r}: give numbers separated by commas, e.g. 1,2,3,5,7.5") from None
    if not args.guidance_scales or not all(math.isfinite(s) and s >= 0 for s in args.guidance_scales):
        raise GenResearchError(f"--guidance-scales {args.guidance_scales}: give finite scales >= 0 separated by commas, e.g. 1,2,3,5,7.5")
    for option in ("images_per_prompt", "steps", "batch_size"):
        if getattr(args, option) < 1:
            raise GenResearchError(f"--{option.replace('_', '-')} {getattr(args, option)}: must be at least 1")
    for option in ("num_full", "real_images"):
        if getattr(args, option) < 0:
            raise GenResearchError(f"--{option.replace('_', '-')} {getattr(args, option)}: must be 0 or more")
    if not Path(args.config).is_file():
        raise GenResearchError(f"--config {args.config}: no such experiment file")
    if args.ckpt and not Path(args.ckpt).is_file():
        raise GenResearchError(f"--ckpt {args.ckpt}: no such checkpoint; pass a text2image run's checkpoints/last.ckpt, or leave --ckpt out to train")
    if args.clip_folder and not (Path(args.clip_folder) / "config.json").is_file():
        raise GenResearchError(f"--clip-folder {args.clip_folder}: not a CLIP model folder (no config.json); export the CLIP stage or leave it out")
    return args


def measure(args: argparse.Namespace, model: Any, classifier: Any, scorer: Any | None, out: Path) -> tuple[dict[float, Any], torch.Tensor | None]:
    """Read-outs per guidance scale (easy, full, all prompts) and the guidance-3 grid's images (first image per easy prompt)."""
    grid = readout.prompt_grid(args.num_full, args.seed)
    sets = [name for name in ("easy", "full") for _ in grid[name] for _ in range(args.images_per_prompt)]
    prompts = [prompt for name in ("easy", "full") for prompt in grid[name] for _ in range(args.images_per_prompt)]
    by_scale, grid_images = {}, None
    for scale in args.guidance_scales:
        started = time.perf_counter()
        images = generate(model, [p.text for p in prompts], scale, args)
        result = read_out(images, prompts, classifier, scorer)
        write_readouts(out / f"readouts-{scale:g}.csv", prompts, sets, result)
        by_scale[scale] = {"all": {k: v for k, v in result.items() if not isinstance(v, list)}, "seconds": time.perf_counter() - started}
        for name in ("easy", "full"):
            chosen = [i for i, s in enumerate(sets) if s == name]
            part = read_out(images[chosen], [prompts[i] for i in chosen], classifier, None)
            part["clip_score"] = sum(result["clip_scores"][i] for i in chosen) / len(chosen) if result["clip_scores"] and chosen else math.nan
            by_scale[scale][name] = {k: v for k, v in part.items() if not isinstance(v, list)}
        if scale == GRID_SCALE:
            grid_images = images[: len(grid["easy"]) * args.images_per_prompt: args.images_per_prompt]
        row = by_scale[scale]
        print(f"guidance {scale:g}: easy digit {row['easy']['digit_accuracy']:.3f} colour {row['easy']['colour_accuracy']:.3f}; full digit "
              f"{row['full']['digit_accuracy']:.3f} colour {row['full']['colour_accuracy']:.3f}; CLIP {row['all']['clip_score']:.2f} "
              f"({row['seconds']:.0f} s)", flush=True)
    return by_scale, grid_images


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return benchmark(parse_arguments(argv))
    except GenResearchError as error:
        print(f"bench_text2image.py: error: {error}", file=sys.stderr)
        return 2


def benchmark(args: argparse.Namespace) -> int:
    """Train (unless --ckpt), measure, draw, check the claims; 0 when all pass."""
    from gen_research.commands.loading import load_model_and_data
    from gen_research.config.precision import describe_cpu
    from gen_research.registry import load_builtins

    load_builtins()  # the experiment names families by their registered short names
    out, config = Path(args.out), Path(args.config)
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_cpu()
    print(f"CPU: {machine['cpu']}; precision auto -> {machine['precision_auto']}", flush=True)
    ckpt = Path(args.ckpt) if args.ckpt else train(config, out)
    minutes = training_minutes(ckpt, experiment_name(config))
    model, datamodule, _ = load_model_and_data(str(config), str(ckpt))
    model.eval()
    classifier = readout.load_digit_classifier()
    scorer = load_clip_scorer(clip_folder(args, ckpt, config, out))
    ceiling = real_ceiling(datamodule, classifier, scorer, args.real_images) if args.real_images else {}
    by_scale, grid_images = measure(args, model, classifier, scorer, out)
    figures = Path(args.figures)
    if grid_images is not None:
        write_grid(grid_images, len(grid_images) // 10, figures / "text2image_grid.png")
    write_guidance_plot(by_scale, figures / "text2image_guidance.png")
    claims = check_claims(by_scale, minutes)
    summary = {"machine": machine, "checkpoint": str(ckpt), "config": str(config), "training": minutes, "sampler": args.sampler,
               "steps": args.steps, "seed": args.seed, "images_per_prompt": args.images_per_prompt, "num_full": args.num_full,
               "real_test_split": ceiling, "by_guidance_scale": {f"{s:g}": row for s, row in by_scale.items()}, "claims": claims}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_table(by_scale, ceiling))
    for claim, ok in claims.items():
        print(f"{'PASS' if ok else 'FAIL'}  {claim}")
    print(f"results: {out}; figures: {figures}")
    return 0 if all(claims.values()) else 1


def format_table(by_scale: dict[float, Any], ceiling: dict[str, Any]) -> str:
    lines = ["| guidance | digit (easy) | colour (easy) | digit (full) | colour (full) | CLIP score |", "|---|---|---|---|---|---|"]
    for scale, row in sorted(by_scale.items()):
        lines.append(f"| {scale:g} | {row['easy']['digit_accuracy']:.3f} | {row['easy']['colour_accuracy']:.3f} | "
                     f"{row['full']['digit_accuracy']:.3f} | {row['full']['colour_accuracy']:.3f} | {row['all']['clip_score']:.2f} |")
    if ceiling:
        lines.append(f"| real test images | {ceiling['digit_accuracy']:.3f} | {ceiling['colour_accuracy']:.3f} | | | {ceiling['clip_score']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
