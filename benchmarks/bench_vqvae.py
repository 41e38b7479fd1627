"""Benchmark: the VQ-VAE's codebook usage with dead-code restart vs without, and the class balance of its prior's samples.

    OMP_NUM_THREADS=1 python benchmarks/bench_vqvae.py OUT [--vqvae-steps N] [--prior-steps N] [--num-images 1000]

(a) experiments/vqvae_mnist5k.yaml twice, the same seed and number of steps, once with ``restart_unused_after`` as the
    file sets it and once with 0 (the two fits run side by side, one thread each): the fraction of the 512 codes used
    and the perplexity of the codes of the whole test split, with its reconstruction MSE and PSNR.
(b) experiments/vqvae_prior_mnist5k.yaml on the restart run's codes: ``evaluate`` of ``--num-images`` samples (classes
    0..9 in turn) with the shipped MNIST classifier's features (accuracy = the share classified as the class asked
    for, FID against the test split), and the histogram of the classes the classifier gives those samples, with its
    max/min ratio (1 = perfectly even).

Writes OUT/summary.json and prints a markdown table. Not a test: docs/results.md reports its numbers and the machine.
Fewer steps than the experiments' recipes (``--vqvae-steps``/``--prior-steps``) make a quick run; the summary says
which were used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VQVAE_EXPERIMENT = REPO / "experiments" / "vqvae_mnist5k.yaml"
PRIOR_EXPERIMENT = REPO / "experiments" / "vqvae_prior_mnist5k.yaml"
CLASSIFIER = REPO / "assets" / "classifier-mnist5k.ckpt"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.logger=csv"]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gen_research", *args]


def fit_vqvae_pair(out: Path, steps: int | None) -> dict[str, Path]:
    """Both VQ-VAE fits at once (one thread each); {variant: last checkpoint}."""
    budget = [f"--trainer.max_steps={steps}"] if steps else []
    variants = {"restart": [], "no_restart": ["--model.init_args.restart_unused_after=0"]}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    running = {}
    for name, extra in variants.items():
        args = command("fit", "--config", str(VQVAE_EXPERIMENT), "--runs_root", str(out / name), *QUIET, *budget, *extra)
        print("$", " ".join(args), flush=True)
        running[name] = subprocess.Popen(args, cwd=REPO, env=env, stdout=open(out / f"{name}.log", "w"), stderr=subprocess.STDOUT)
    for name, process in running.items():
        if process.wait() != 0:
            raise SystemExit(f"the {name} fit failed: see {out / (name + '.log')}")
    return {name: next((out / name).glob("*/*/checkpoints/last.ckpt")) for name in variants}


def code_statistics(ckpt: Path) -> dict[str, float]:
    """Usage and perplexity of all test-split codes, reconstruction MSE and mean per-image PSNR (images in [0, 1])."""
    import torch

    from gen_research.data.embedded import MNIST5k
    from gen_research.models.vqvae import VQVAE
    from gen_research.nets.quantize import code_histogram, codebook_usage, perplexity

    model = VQVAE.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    data = MNIST5k(batch_size=250)  # the experiment's split (val/test fractions 0.1, split_seed 0)
    data.setup("test")
    histogram, squared, psnr, count = torch.zeros(model.codebook_size, dtype=torch.long), 0.0, 0.0, 0
    with torch.no_grad():
        for batch in data.test_dataloader():
            x = batch["image"]
            codes = model.encode_codes(x)
            histogram += code_histogram(codes, model.codebook_size)
            error = ((model.decode_codes(codes) - x) / 2).pow(2).flatten(1).mean(1)  # in [0, 1] units
            squared += float(error.sum() * 4)
            psnr += float((-10 * error.log10()).sum())
            count += len(x)
    return {"codebook_usage": codebook_usage(histogram), "codes_used": int((histogram > 0).sum()), "perplexity": perplexity(histogram),
            "test_mse": squared / count, "test_psnr": psnr / count, "steps": int(torch.load(ckpt, weights_only=False)["global_step"])}


def fit_prior(out: Path, first_stage: Path, steps: int | None) -> Path:
    budget = [f"--trainer.max_steps={steps}"] if steps else []
    args = command("fit", "--config", str(PRIOR_EXPERIMENT), "--runs_root", str(out / "prior"), *QUIET, *budget,
                   f"--model.init_args.first_stage_ckpt={first_stage}")
    print("$", " ".join(args), flush=True)
    subprocess.run(args, cwd=REPO, check=True)
    return next((out / "prior").glob("*/*/checkpoints/last.ckpt"))


def evaluate_prior(out: Path, ckpt: Path, num_images: int) -> dict[str, float]:
    result = out / "prior_evaluation.json"
    args = command("evaluate", "--config", str(PRIOR_EXPERIMENT), "--ckpt_path", str(ckpt), "--features", "classifier",
                   "--feature-weights", str(CLASSIFIER), "--split", "test", "--metrics", "accuracy,fid",
                   "--num-images", str(num_images), "--json", str(result))
    print("$", " ".join(args), flush=True)
    subprocess.run(args, cwd=REPO, check=True)
    return json.loads(result.read_text())


def class_histogram(ckpt: Path, num_images: int) -> list[int]:
    """How many of ``num_images`` samples (seed 0, classes 0..9 in turn) the shipped classifier puts in each class."""
    import torch

    from gen_research.evaluation.extractors.classifier import ClassifierFeatures
    from gen_research.models.vqvae import VQPrior

    prior = VQPrior.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    classifier = ClassifierFeatures(weights=str(CLASSIFIER)).eval()
    generator = torch.Generator().manual_seed(0)
    predicted = []
    with torch.no_grad():
        for start in range(0, num_images, 250):
            count = min(250, num_images - start)
            labels = torch.arange(start, start + count) % 10
            predicted.append(classifier(prior.sample(count, labels=labels, generator=generator).float())["logits"].argmax(1))
    return torch.bincount(torch.cat(predicted), minlength=10).tolist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for the runs, summary.json and the logs")
    parser.add_argument("--vqvae-steps", type=int, default=None, help="default: the experiment's max_steps")
    parser.add_argument("--prior-steps", type=int, default=None, help="default: the experiment's max_steps")
    parser.add_argument("--num-images", type=int, default=1000)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from gen_research.config.precision import describe_cpu

    started = time.time()
    checkpoints = fit_vqvae_pair(out, args.vqvae_steps)
    vqvae_minutes = (time.time() - started) / 60
    codes = {name: code_statistics(ckpt) for name, ckpt in checkpoints.items()}
    started = time.time()
    prior_ckpt = fit_prior(out, checkpoints["restart"], args.prior_steps)
    prior_minutes = (time.time() - started) / 60
    evaluation = evaluate_prior(out, prior_ckpt, args.num_images)
    histogram = class_histogram(prior_ckpt, args.num_images)
    summary = {
        "machine": describe_cpu(), "vqvae_minutes_side_by_side": vqvae_minutes, "prior_minutes": prior_minutes,
        "vqvae_steps": args.vqvae_steps, "prior_steps": args.prior_steps, "codes_on_test_split": codes,
        "prior": {"evaluation": evaluation, "class_histogram": histogram,
                  "max_min_ratio": max(histogram) / min(histogram) if min(histogram) else None},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n| VQ-VAE (test split) | codes used of 512 | usage | perplexity | MSE | PSNR (dB) | steps |\n|---|---|---|---|---|---|---|")
    for name, row in codes.items():
        print(f"| {name} | {row['codes_used']} | {row['codebook_usage']:.3f} | {row['perplexity']:.1f} | {row['test_mse']:.4f} | "
              f"{row['test_psnr']:.2f} | {row['steps']} |")
    ratio = summary["prior"]["max_min_ratio"]
    print(f"\n| prior ({args.num_images} samples) | accuracy | FID (classifier) | class histogram 0..9 | max/min |\n|---|---|---|---|---|")
    print(f"| vqvae_prior_mnist5k | {evaluation.get('accuracy/classifier-mnist5k', float('nan')):.3f} | "
          f"{evaluation.get('fid/classifier-mnist5k', float('nan')):.2f} | {histogram} | {ratio if ratio is None else round(ratio, 2)} |")
    print(f"\nresults: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
