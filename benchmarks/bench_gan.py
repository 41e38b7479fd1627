"""Benchmark: quality of the GAN experiments on mnist5k, trained on this CPU, measured as the GAN issue asks.

    python benchmarks/bench_gan.py dcgan_mnist5k cgan_mnist5k            # trains each (the experiment's budget), then measures
    python benchmarks/bench_gan.py dcgan_mnist5k --run runs/dcgan_mnist5k/<run>   # measures a trained run
    python benchmarks/bench_gan.py stylegan_mnist5k progan_mnist5k               # 32x32: + psi sweep and grids

Each experiment's best checkpoint (by the FID its evaluation callback measured on the validation split) is
evaluated with ``evaluate`` on the shipped MNIST classifier's features against the **test** split (500 images),
500 samples, seed 0, truncation off: FID, KID, precision, recall, density, coverage, and for class-conditional models
the classifier's agreement with the class asked for (``accuracy``, classes drawn in turn). The issue's claims are
checked and printed PASS/FAIL: cgan accuracy >= 0.95; dcgan FID <= 50 (within 2x of the class-conditional DDPM's 25.1
measured the same way); stylegan: a truncation sweep psi 0.5 / 0.7 / 1.0 (``evaluate --truncation-psis``) shows
precision rising and recall falling as psi falls. The 32x32 models (stylegan, progan) are read by the 28x28 classifier
through its ``--resize 28`` (reals and fakes alike). Grids (samples; latent interpolation; style mixing for a
StyleGAN) are drawn with ``sample --grid`` into --out. It writes summary.json into --out. Not a test: minutes per
model; docs/results.md reports it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLAIMS = {"cgan_mnist5k": ("accuracy/classifier-mnist5k", ">=", 0.95), "dcgan_mnist5k": ("fid/classifier-mnist5k", "<=", 50.0)}
RESIZED = {"stylegan_mnist5k": 28, "progan_mnist5k": 28}  # 32x32 models on the 28x28 classifier
PSI_SWEEPS = {"stylegan_mnist5k": "0.5,0.7,1.0"}
GRIDS = {"stylegan_mnist5k": ("interpolation", "style-mixing"), "progan_mnist5k": ("interpolation",)}


def run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gen_research", *args], cwd=REPO, check=True)


def newest_run(runs_root: Path, experiment: str) -> Path:
    return sorted((runs_root / experiment).iterdir())[-1]


def measure(experiment: str, run_dir: Path, out: Path) -> dict:
    config = REPO / "experiments" / f"{experiment}.yaml"
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    ckpt = best[-1] if best else run_dir / "checkpoints" / "last.ckpt"
    metrics = "fid,kid,precision,recall,density,coverage" + (",accuracy" if experiment.startswith("cgan") else "")
    result = out / f"{experiment}.json"
    common = ["--config", str(config), "--ckpt_path", str(ckpt), "--split", "test", "--features", "classifier",
              "--feature-weights", "package://classifier-mnist5k.ckpt", "--num-images", "500", "--seed", "0",
              "--kid-subset-size", "250", "--kid-subsets", "50"]
    if experiment in RESIZED:
        common += ["--resize", str(RESIZED[experiment])]
    run("evaluate", *common, "--metrics", metrics, "--json", str(result))
    numbers = {k: v for k, v in json.loads(result.read_text()).items() if k != "provenance"}  # the metrics; provenance stays in the file
    row = {"experiment": experiment, "checkpoint": str(ckpt), **numbers}
    if experiment in PSI_SWEEPS:
        sweep = out / f"{experiment}-psi"
        run("evaluate", *common, "--metrics", "fid,precision,recall", "--truncation-psis", PSI_SWEEPS[experiment], "--out", str(sweep))
        points = sorted(json.loads((sweep / "psi.json").read_text())["rows"], key=lambda p: p["truncation_psi"])
        row["psi_sweep"] = points
        precision = [p["precision/classifier-mnist5k"] for p in points]  # psi ascending
        recall = [p["recall/classifier-mnist5k"] for p in points]
        holds = precision == sorted(precision, reverse=True) and recall == sorted(recall)
        row["claim"] = f"precision rises and recall falls as psi falls: {'PASS' if holds else 'FAIL'} (precision {precision}, recall {recall}, psi ascending)"
        print(row["claim"])
    for grid in GRIDS.get(experiment, ()):
        run("sample", "--config", str(config), "--ckpt_path", str(ckpt), "--grid", grid, "--seed", "0", "--out", str(out / f"{experiment}-{grid}"))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--run", help="a trained run folder (one experiment only): measure it, do not train")
    parser.add_argument("--runs-root", default=str(REPO / "runs"))
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_gan"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for experiment in args.experiments:
        seconds = None
        if args.run:
            run_dir = Path(args.run)
        else:
            start = time.perf_counter()
            run("fit", "--config", str(REPO / "experiments" / f"{experiment}.yaml"), "--runs_root", args.runs_root,
                "--trainer.enable_progress_bar=false")
            seconds = round(time.perf_counter() - start, 1)
            run_dir = newest_run(Path(args.runs_root), experiment)
        row = {**measure(experiment, run_dir, out), "train_seconds": seconds}
        if experiment in CLAIMS and "claim" not in row:
            key, op, bound = CLAIMS[experiment]
            value = row[key]
            row["claim"] = f"{key} {op} {bound}: {'PASS' if (value >= bound if op == '>=' else value <= bound) else 'FAIL'} ({value:.4g})"
            print(row["claim"])
        rows.append(row)
    summary = {"machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
