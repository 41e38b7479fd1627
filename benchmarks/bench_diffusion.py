"""Benchmark: quality of the class-conditional DDPM of experiments/cfg_mnist5k.yaml after at most 60 CPU minutes.

    python benchmarks/bench_diffusion.py                      # trains (the experiment's max_steps; max_time caps it at 60 min), then measures
    python benchmarks/bench_diffusion.py --ckpt RUN/checkpoints/last.ckpt --out DIR   # measures a trained model

Three sampler sweeps (``evaluate --samplers ...``) of the same checkpoint, all with the features of the MNIST
classifier in assets/, against the test split, with the same seed (same initial noise) at every point:

1. DDIM at 10, 20, 50 and 100 steps and DPM-Solver++ at 10 and 20 steps, guidance scale 1 (plain conditional);
2. DPM-Solver++ at 20 steps with classifier-free guidance scales 0 (unconditional), 1, 2, 3 and 4.

and checks the claims of the diffusion issue: samples are labelled as their class by the classifier at least
90% of the time at guidance scale >= 2; FID falls from DDIM 10 to DDIM 50 steps; DPM-Solver++ at 20 steps is
within 10% of DDIM at 100 steps. It writes summary.json, fid_vs_nfe.png (both samplers in one plot) and the
sweep folders into --out, and prints PASS/FAIL per claim. Not a test (it takes about an hour and a half on 2
cores): docs/results.md reports its numbers, with the machine they were measured on. summary.json records that
machine: the CPU model, whether it computes bf16 natively (what ``precision: auto`` decides on) and the precision
the checkpoint was trained in (from its run folder's config.yaml, when there is one).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from gen_research.config.precision import describe_cpu

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "experiments" / "cfg_mnist5k.yaml"
FEATURES = ["--features", "classifier", "--feature-weights", str(REPO / "assets" / "classifier-mnist5k.ckpt"), "--split", "test"]
FID = "fid/classifier-mnist5k"
ACCURACY = "accuracy/classifier-mnist5k"


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def train(out: Path) -> tuple[Path, float]:
    """Fit the experiment (max_steps, capped by its max_time) into out/runs; the last checkpoint and the minutes taken."""
    start = time.time()
    run([sys.executable, "-m", "gen_research", "fit", "--config", str(EXPERIMENT), "--runs_root", str(out / "runs")])
    minutes = (time.time() - start) / 60
    print(f"trained in {minutes:.1f} min", flush=True)
    return next((out / "runs").glob("*/*/checkpoints/last.ckpt")), minutes


def training_precision(ckpt: Path) -> dict[str, str | None]:
    """trainer.precision and the auto choice's reason from the run folder's config.yaml (None if not found)."""
    config_path = ckpt.parent.parent / "config.yaml"
    if not config_path.is_file():
        return {"precision": None, "precision_auto": None}
    config = yaml.safe_load(config_path.read_text()) or {}
    return {"precision": (config.get("trainer") or {}).get("precision"), "precision_auto": config.get("precision_auto")}


def trained_steps(ckpt: Path) -> int:
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


def sweep(ckpt: Path, out: Path, num_images: int, *axes: str, metrics: str) -> list[dict[str, str]]:
    run([sys.executable, "-m", "gen_research", "evaluate", "--config", str(EXPERIMENT), "--ckpt_path", str(ckpt), *FEATURES,
         "--metrics", metrics, "--num-images", str(num_images), "--out", str(out), *axes])
    with open(out / "sweep.csv") as handle:
        return list(csv.DictReader(handle))


def plot_fid_vs_nfe(rows: list[dict[str, str]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    for sampler in sorted({row["sampler"] for row in rows}):
        points = sorted((int(row["nfe"]), float(row[FID])) for row in rows if row["sampler"] == sampler)
        axis.plot(*zip(*points), marker="o", label=sampler)
    axis.set(xscale="log", xlabel="network evaluations per sample (NFE)", ylabel="FID (classifier features)",
             title="cfg_mnist5k, guidance scale 1")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="a cfg_mnist5k checkpoint (default: train one first)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_diffusion" / time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--num-images", type=int, default=500, help="samples per grid point (the test split holds 500)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_cpu()  # timings only compare on the same CPU kind: bf16 is 1.5x faster with AMX, 10x slower without
    print(f"CPU: {machine['cpu']}; native bf16: {'yes (' + ', '.join(machine['bf16_flags']) + ')' if machine['bf16_native'] else 'no'}; "
          f"precision auto -> {machine['precision_auto']}", flush=True)
    ckpt, minutes = (Path(args.ckpt), None) if args.ckpt else train(out)
    steps_done, max_steps = trained_steps(ckpt), yaml.safe_load(EXPERIMENT.read_text())["trainer"]["max_steps"]

    steps = sweep(ckpt, out / "ddim-steps", args.num_images, "--samplers", "ddim", "--steps", "10,20,50,100",
                  "--guidance-scales", "1", metrics="fid,precision,recall")
    steps += sweep(ckpt, out / "dpm-steps", args.num_images, "--samplers", "dpm-solver++", "--steps", "10,20",
                   "--guidance-scales", "1", metrics="fid,precision,recall")
    guidance = sweep(ckpt, out / "guidance", args.num_images, "--samplers", "dpm-solver++", "--steps", "20",
                     "--guidance-scales", "0,1,2,3,4", metrics="fid,precision,recall,is,accuracy")
    plot_fid_vs_nfe(steps, out / "fid_vs_nfe.png")

    fid = {(row["sampler"], int(row["steps"])): float(row[FID]) for row in steps}
    accuracy = {float(row["guidance_scale"]): float(row[ACCURACY]) for row in guidance}
    claims = {
        "accuracy >= 0.90 at every guidance scale >= 2": all(acc >= 0.90 for scale, acc in accuracy.items() if scale >= 2),
        "FID falls from DDIM 10 to DDIM 50 steps": fid[("ddim", 50)] < fid[("ddim", 10)],
        "DPM-Solver++ 20 steps within 10% of DDIM 100 steps": fid[("dpm-solver++", 20)] <= 1.10 * fid[("ddim", 100)],
    }
    if minutes is not None:  # trained here: the whole recipe, not a max_time-truncated one, within the hour
        claims[f"all {max_steps} steps trained within 60 minutes"] = steps_done == max_steps and minutes <= 60
    summary = {"machine": machine, "training": training_precision(ckpt), "checkpoint": str(ckpt), "trained_steps": steps_done, "training_minutes": minutes, "num_images": args.num_images, "fid": {f"{s}-{n}": v for (s, n), v in fid.items()},
               "accuracy_by_guidance_scale": accuracy, "claims": claims}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for claim, ok in claims.items():
        print(f"{'PASS' if ok else 'FAIL'}  {claim}")
    print(f"results: {out}")
    return 0 if all(claims.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
