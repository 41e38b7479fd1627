"""Benchmark: experiments/ldm_mnist5k.yaml, both stages, against the pixel-space cfg_mnist5k.yaml on this CPU.

    python benchmarks/bench_ldm.py                               # fits both stages, then measures
    python benchmarks/bench_ldm.py --ckpt RUN/checkpoints/last.ckpt --out DIR   # measures a trained ldm

1. Training: one ``fit`` of the two-stage experiment (the KL autoencoder, then the LDM), timed in all and per stage.
2. Quality: ``evaluate --samplers dpm-solver++ --steps 20 --guidance-scales 0,1,2,3`` with the features and labels of
   the MNIST classifier in assets/ against the test split (bench_diffusion.py's protocol for cfg_mnist5k, so the FIDs
   compare): accuracy is the share of samples the classifier labels as the class asked for.
3. Speed: images per second of ``sample`` at DPM-Solver++ 20 steps, guidance 2, for the ldm and for cfg_mnist5k's
   model (its architecture; speed does not depend on its weights), measured side by side (A B A B A B, medians).

Claims checked (issue 15): both stages within 60 minutes; accuracy >= 95% at guidance 2; sampling >= 3x faster per
image than cfg_mnist5k. Writes summary.json into --out and prints PASS/FAIL per claim.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "experiments" / "ldm_mnist5k.yaml"
PIXEL_EXPERIMENT = REPO / "experiments" / "cfg_mnist5k.yaml"
FEATURES = ["--features", "classifier", "--feature-weights", str(REPO / "gen_research" / "assets" / "classifier-mnist5k.ckpt"), "--split", "test"]
FID = "fid/classifier-mnist5k"
ACCURACY = "accuracy/classifier-mnist5k"


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def train(out: Path) -> Path:
    run([sys.executable, "-m", "gen_research", "fit", "--config", str(EXPERIMENT), "--runs_root", str(out / "runs")])
    return next((out / "runs" / "ldm_mnist5k").glob("*/checkpoints/last.ckpt"))


def _finished_at(run_dir: Path) -> float:
    record = json.loads((run_dir / "fit-finished.json").read_text())
    return time.mktime(time.strptime(record["finished_at"], "%Y-%m-%dT%H:%M:%S%z"))


def training_minutes(ckpt: Path) -> dict[str, float]:
    """Wall minutes of both stages, from the run folders: the two-stage fit names both folders by its start time
    (``<runs>/ldm_mnist5k/<YYYYmmdd-HHMMSS>``) and each finished fit records when it ended (fit-finished.json)."""
    ldm_run = ckpt.parent.parent
    stage_runs = sorted(ldm_run.parent.parent.glob(f"ldm_mnist5k.*/{ldm_run.name}"))
    if not stage_runs or not (ldm_run / "fit-finished.json").is_file():
        return {}
    start = time.mktime(time.strptime(ldm_run.name[:15], "%Y%m%d-%H%M%S"))
    first_end, ldm_end = _finished_at(stage_runs[0]), _finished_at(ldm_run)
    return {"total_minutes": (ldm_end - start) / 60, "first_stage_minutes": (first_end - start) / 60, "ldm_minutes": (ldm_end - first_end) / 60}


def sweep(ckpt: Path, out: Path, num_images: int) -> list[dict[str, str]]:
    run([sys.executable, "-m", "gen_research", "evaluate", "--config", str(EXPERIMENT), "--ckpt_path", str(ckpt), *FEATURES,
         "--metrics", "fid,precision,recall,accuracy", "--num-images", str(num_images), "--out", str(out),
         "--samplers", "dpm-solver++", "--steps", "20", "--guidance-scales", "0,1,2,3"])
    with open(out / "sweep.csv") as handle:
        return list(csv.DictReader(handle))


def sampling_speed(ckpt: Path, num_images: int, pairs: int) -> dict[str, float]:
    """Images/s of the ldm and of cfg_mnist5k's DDPM (random weights), alternated, at DPM-Solver++ 20 steps, guidance 2."""
    import torch

    from gen_research.commands.loading import load_model_and_data
    from gen_research.config.files import load_experiment
    from gen_research.models.diffusion.ddpm import DDPM

    ldm, _, _ = load_model_and_data(str(EXPERIMENT), str(ckpt))
    pixel_args = dict(load_experiment(PIXEL_EXPERIMENT)["model"]["init_args"])
    pixel = DDPM(image_shape=(1, 28, 28), num_classes=10, **pixel_args)
    times: dict[str, list[float]] = {"ldm": [], "cfg_mnist5k": []}
    labels = torch.arange(num_images) % 10
    for model in (ldm, pixel):  # one warm-up call each (allocator, first-call overheads)
        model.eval().sample(4, labels=labels[:4], generator=torch.Generator().manual_seed(0), sampler="dpm-solver++", steps=20, guidance_scale=2.0)
    for _ in range(pairs):
        for name, model in (("ldm", ldm), ("cfg_mnist5k", pixel)):
            start = time.perf_counter()
            model.sample(num_images, labels=labels, generator=torch.Generator().manual_seed(0), sampler="dpm-solver++", steps=20, guidance_scale=2.0)
            times[name].append(time.perf_counter() - start)
    ldm_rate = num_images / statistics.median(times["ldm"])
    pixel_rate = num_images / statistics.median(times["cfg_mnist5k"])
    return {"ldm_images_per_s": ldm_rate, "cfg_mnist5k_images_per_s": pixel_rate, "speedup": ldm_rate / pixel_rate,
            "seconds": times, "num_images": num_images, "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="an ldm_mnist5k checkpoint (default: fit both stages first)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_ldm" / time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--num-images", type=int, default=500, help="samples per guidance scale (the test split holds 500)")
    parser.add_argument("--speed-images", type=int, default=100)
    parser.add_argument("--speed-pairs", type=int, default=3)
    parser.add_argument("--reuse-sweep", help="a guidance sweep folder of this checkpoint written earlier (skips the evaluation)")
    args = parser.parse_args()
    from gen_research.config.precision import describe_cpu
    from gen_research.registry import load_builtins

    load_builtins()  # the experiment names families by their registered short names

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_cpu()
    print(f"CPU: {machine['cpu']}; precision auto -> {machine['precision_auto']}", flush=True)
    ckpt = Path(args.ckpt) if args.ckpt else train(out)
    minutes = training_minutes(ckpt)
    if args.reuse_sweep:  # the sweep of an earlier invocation on the same checkpoint
        with open(Path(args.reuse_sweep) / "sweep.csv") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = sweep(ckpt, out / "guidance", args.num_images)
    speed = sampling_speed(ckpt, args.speed_images, args.speed_pairs)
    by_scale = {float(row["guidance_scale"]): {"fid": float(row[FID]), "accuracy": float(row[ACCURACY]),
                                               "precision": float(row["precision/classifier-mnist5k"]),
                                               "recall": float(row["recall/classifier-mnist5k"])} for row in rows}
    claims = {
        "accuracy >= 0.95 at guidance 2": by_scale[2.0]["accuracy"] >= 0.95,
        "sampling >= 3x faster per image than cfg_mnist5k (dpm-solver++ 20 steps, guidance 2)": speed["speedup"] >= 3.0,
    }
    if minutes:
        claims["both stages within 60 minutes"] = minutes["total_minutes"] <= 60
    summary = {"machine": machine, "checkpoint": str(ckpt), "training": minutes, "sweep": args.reuse_sweep or str(out / "guidance"), "num_images": args.num_images,
               "by_guidance_scale": by_scale, "sampling_speed": speed, "claims": claims}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("| guidance | FID | accuracy | precision | recall |\n|---|---|---|---|---|")
    for scale, row in sorted(by_scale.items()):
        print(f"| {scale:g} | {row['fid']:.1f} | {row['accuracy']:.3f} | {row['precision']:.3f} | {row['recall']:.3f} |")
    print(f"sampling: ldm {speed['ldm_images_per_s']:.1f} img/s, cfg_mnist5k {speed['cfg_mnist5k_images_per_s']:.1f} img/s, {speed['speedup']:.2f}x")
    for claim, ok in claims.items():
        print(f"{'PASS' if ok else 'FAIL'}  {claim}")
    print(f"results: {out}")
    return 0 if all(claims.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
