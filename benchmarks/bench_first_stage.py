"""Benchmark: reconstruction quality of a KL first stage (experiments/autoencoder_kl_mnist5k.yaml) on the test split.

    python benchmarks/bench_first_stage.py RUN/checkpoints/last.ckpt --out DIR

One ``evaluate`` (in this process) of the checkpoint against the test split with the features of the MNIST classifier in assets/
(bench_diffusion.py's features, so the FIDs are on one scale). An autoencoder only reconstructs: its "generated" set
is the reconstruction (decoded posterior mean) of every reference image (gen_research/evaluation/feeder.py), so

- rFID is the FID between the test images and their reconstructions (CompVis report it for their first stages),
- PSNR (dB) and SSIM compare each reconstruction with its original, in [0, 1] pixel units.

Writes summary.json (the numbers, the checkpoint's step and training precision, the machine) and evaluate.json (the
evaluate command's own output) into --out, and prints a markdown row for docs/results.md. Not a test: the issue asks
these numbers reported, with no threshold. tests/integration/test_first_stage_cli.py runs it on a tiny checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "experiments" / "autoencoder_kl_mnist5k.yaml"
CLASSIFIER = REPO / "gen_research" / "assets" / "classifier-mnist5k.ckpt"
FID = "fid/classifier-mnist5k"
HEADER = "| first stage | steps | PSNR (dB) | SSIM | rFID (classifier) | test images |\n|---|---|---|---|---|---|"


def evaluate(ckpt: Path, config: Path, out: Path, num_images: int | None, batch_size: int) -> tuple[dict[str, float], int]:
    """The evaluate command's numbers (fid, ssim, psnr keyed by the classifier's name) for ``ckpt``'s reconstructions,
    and how many test images it reconstructed. In this process: its printed table is read back for that count."""
    from gen_research.commands.main import main as cli

    results = out / "evaluate.json"
    command = ["evaluate", "--config", str(config), "--ckpt_path", str(ckpt), "--features", "classifier",
               "--feature-weights", str(CLASSIFIER), "--split", "test", "--metrics", "fid,ssim,psnr",
               "--batch-size", str(batch_size), "--json", str(results)]
    if num_images is not None:
        command += ["--num-images", str(num_images)]
    print("$ python -m gen_research", " ".join(command), flush=True)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli(command)
    print(printed.getvalue(), end="", flush=True)
    if status != 0:
        raise SystemExit(status)
    reference = re.search(r"reference: test split, (\d+) images", printed.getvalue())
    if reference is None:
        raise RuntimeError("evaluate did not print its reference count ('reference: test split, N images'); update this benchmark")
    return json.loads(results.read_text()), int(reference.group(1))


def metric(numbers: dict[str, float], name: str) -> float:
    """The one value of metric ``name`` (keyed by what computed it: ``fid/classifier-mnist5k``, ``ssim/pixels``)."""
    (value,) = [value for key, value in numbers.items() if key.split("/")[0] == name]
    return float(value)


def checkpoint_facts(ckpt: Path) -> dict[str, object]:
    """The trained step and the precision it was trained in (from the run folder's config.yaml, when there is one)."""
    import torch

    step = int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    config_path = ckpt.parent.parent / "config.yaml"
    config = (yaml.safe_load(config_path.read_text()) or {}) if config_path.is_file() else {}
    return {"trained_steps": step, "precision": (config.get("trainer") or {}).get("precision"),
            "precision_auto": config.get("precision_auto")}


def markdown_row(name: str, summary: dict[str, object]) -> str:
    return (f"| {name} | {summary['trained_steps']} | {summary['psnr']:.2f} | {summary['ssim']:.4f} | {summary['rfid']:.3f} "
            f"| {summary['num_images']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="an autoencoder_kl_mnist5k checkpoint (e.g. RUN/checkpoints/last.ckpt)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_first_stage" / time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--config", default=str(EXPERIMENT), help="the experiment whose data (test split) to use")
    parser.add_argument("--num-images", type=int, help="test images to reconstruct (default: the whole split, 500)")
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args(argv)
    ckpt, out = Path(args.ckpt), Path(args.out)
    if not ckpt.is_file():
        parser.error(f"no checkpoint {ckpt}; train one: python -m gen_research fit --config {EXPERIMENT.relative_to(REPO)}")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "evaluate.json").exists():
        parser.error(f"{out} already holds results (evaluate.json); pass another --out")
    from gen_research.config.precision import describe_cpu

    numbers, num_images = evaluate(ckpt, Path(args.config), out, args.num_images, args.batch_size)
    summary: dict[str, object] = {
        "checkpoint": str(ckpt), "config": str(args.config), "split": "test", **checkpoint_facts(ckpt),
        "num_images": num_images,
        "psnr": metric(numbers, "psnr"), "ssim": metric(numbers, "ssim"), "rfid": numbers[FID],
        "evaluate": numbers, "machine": describe_cpu(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(HEADER)
    print(markdown_row(Path(args.config).stem, summary))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
