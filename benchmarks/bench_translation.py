"""Benchmark: quality of the image-to-image experiments on this CPU, measured as the image-to-image issue asks.

    python benchmarks/bench_translation.py pix2pix        # pix2pix and its L1-only baseline, side by side, then measured
    python benchmarks/bench_translation.py cyclegan stargan
    python benchmarks/bench_translation.py cyclegan --run runs/cyclegan_digits2colour/<run>   # measure a trained run

Runs started together train side by side, one thread each, so each gets the same share of the machine and the
same wall-clock budget (the experiments' ``max_time``, 30 minutes, unless --max-time). Each run's **last**
checkpoint (what the budget bought) is evaluated with ``evaluate`` against the **test** split, seed 0:

- pix2pix_edges2digits, with the adversarial term and without (``lambda_gan=0``): SSIM and PSNR of translations
  against the paired digits, FID/KID in the shipped MNIST classifier's features. Claim: pix2pix's SSIM > the L1-only
  baseline's.
- cyclegan_digits2colour, B -> A (colour to grey, so the shipped MNIST classifier reads the outputs): accuracy = the
  share of translated digits classified as their source's class; FID/KID, cycle_l1. Claim: accuracy >= 0.85.
- stargan_digit_domains, each test digit into another domain: accuracy by the shipped domain classifier (the
  requested domain; claim >= 0.90) and by the shipped digit classifier of the same data (the digit class kept);
  FID/KID in the digit classifier's features, cycle_l1.

It writes summary.json into --out and prints PASS/FAIL per claim. Not a test: tens of minutes; docs/results.md
reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MNIST = ["--features", "classifier", "--feature-weights", "package://classifier-mnist5k.ckpt"]
RUNS = {  # name -> (experiment, extra fit arguments)
    "pix2pix": ("pix2pix_edges2digits", []),
    "pix2pix_l1_only": ("pix2pix_edges2digits", ["--model.init_args.lambda_gan=0", "--name=pix2pix_edges2digits_l1_only"]),
    "cyclegan": ("cyclegan_digits2colour", []),
    "stargan": ("stargan_digit_domains", []),
}
GROUPS = {"pix2pix": ["pix2pix", "pix2pix_l1_only"], "cyclegan": ["cyclegan"], "stargan": ["stargan"]}
#: name -> [(metrics, extractor arguments)], each one ``evaluate`` call on the test split.
EVALUATIONS = {
    "pix2pix": [("ssim,psnr,fid,kid", MNIST)],
    "pix2pix_l1_only": [("ssim,psnr,fid,kid", MNIST)],
    "cyclegan": [("accuracy,fid,kid,cycle_l1", MNIST)],
    "stargan": [("accuracy", ["--features", "classifier", "--feature-weights", "package://domain-classifier-digit-domains.ckpt"]),
                ("accuracy,fid,kid,cycle_l1", ["--features", "classifier", "--feature-weights", "package://classifier-digit-domains.ckpt"])],
}


def run_name(name: str) -> str:
    experiment, extra = RUNS[name]
    return next((arg.split("=", 1)[1] for arg in extra if arg.startswith("--name=")), experiment)


def newest_run(runs_root: Path, name: str) -> Path:
    return sorted((runs_root / run_name(name)).iterdir())[-1]


def train_side_by_side(names: list[str], max_time: str | None, logs: Path) -> dict[str, float]:
    """Start every run at once (one thread each), wait for all; seconds each took."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    started, processes = time.time(), {}
    for name in names:
        experiment, extra = RUNS[name]
        command = [sys.executable, "-m", "gen_research", "fit", "--config", f"experiments/{experiment}.yaml", *extra,
                   "--trainer.enable_progress_bar=false", *([f"--trainer.max_time={max_time}"] if max_time else [])]
        processes[name] = subprocess.Popen(command, cwd=REPO, env=env, stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT)
    seconds: dict[str, float] = {}
    while len(seconds) < len(processes):  # each run's own end, not the order they are waited for in
        for name, process in processes.items():
            if name not in seconds and process.poll() is not None:
                if process.returncode != 0:
                    raise SystemExit(f"{name} failed: see {logs / f'{name}.log'}")
                seconds[name] = round(time.time() - started, 1)
        time.sleep(1.0)
    return seconds


def measure(name: str, run_dir: Path, out: Path) -> dict:
    experiment, _ = RUNS[name]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    row: dict = {"run": name, "experiment": experiment, "checkpoint": str(ckpt.relative_to(REPO) if ckpt.is_relative_to(REPO) else ckpt)}
    for index, (metrics, extractor) in enumerate(EVALUATIONS[name]):
        result = out / f"{name}-{index}.json"
        subprocess.run([sys.executable, "-m", "gen_research", "evaluate", "--config", f"experiments/{experiment}.yaml", "--ckpt_path", str(ckpt),
                        "--split", "test", *extractor, "--metrics", metrics, "--seed", "0", "--kid-subset-size", "100",
                        "--kid-subsets", "50", "--json", str(result)], cwd=REPO, check=True)
        row.update({k: v for k, v in json.loads(result.read_text()).items() if not k.startswith("sampling/") and k != "provenance"})
    grids = sorted((run_dir / "samples").glob("*translations*.png")) if (run_dir / "samples").is_dir() else []
    row["last_translation_grid"] = str(grids[-1]) if grids else None
    return row


def claims(rows: dict[str, dict]) -> list[str]:
    lines = []
    if "pix2pix" in rows and "pix2pix_l1_only" in rows:
        gan, l1 = rows["pix2pix"]["ssim/pixels"], rows["pix2pix_l1_only"]["ssim/pixels"]
        lines.append(f"pix2pix SSIM {gan:.4f} > L1-only SSIM {l1:.4f}: {'PASS' if gan > l1 else 'FAIL'}")
    if "cyclegan" in rows:
        kept = rows["cyclegan"]["accuracy/classifier-mnist5k"]
        lines.append(f"cyclegan keeps the digit class {kept:.3f} >= 0.85: {'PASS' if kept >= 0.85 else 'FAIL'}")
    if "stargan" in rows:
        domain, digit = rows["stargan"]["accuracy/domain-classifier-digit-domains"], rows["stargan"]["accuracy/classifier-digit-domains"]
        lines.append(f"stargan in the requested domain {domain:.3f} >= 0.90: {'PASS' if domain >= 0.90 else 'FAIL'}; digit class kept {digit:.3f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="+", choices=sorted(GROUPS))
    parser.add_argument("--run", help="a trained run folder (one group of one run only): measure it, do not train")
    parser.add_argument("--max-time", help="override the experiments' trainer.max_time, e.g. 00:00:15:00")
    parser.add_argument("--runs-root", default=str(REPO / "runs"))
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_translation"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [name for group in args.groups for name in GROUPS[group]]
    seconds = {}
    if not args.run:
        seconds = train_side_by_side(names, args.max_time, out)
    elif len(names) != 1:
        raise SystemExit("--run measures one run: name one group with one run (cyclegan or stargan)")
    rows = {name: {**measure(name, Path(args.run) if args.run else newest_run(Path(args.runs_root), name), out),
                   "train_seconds_side_by_side": seconds.get(name)} for name in names}
    summary = {"machine": platform.processor() or platform.machine(), "runs_together": names, "rows": rows, "claims": claims(rows)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(summary["claims"]))
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
