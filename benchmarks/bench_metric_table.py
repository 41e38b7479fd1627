"""Every metric on two trained models under one protocol: the metric table of docs/results.md.

    python benchmarks/bench_metric_table.py --vae runs/quickstart/<run> --ddpm runs/cfg_mnist5k/<run> [--out DIR]

Protocol (the same for both models): the MNIST classifier shipped in assets/ as the extractor (its features and
logits: `classifier-mnist5k`), the 500 images of mnist5k's test split as the reference set, 500 generated samples
(seed 0; the class-conditional DDPM draws classes 0..9 in turn, the VAE is unconditional), the 4,000 training images
for the metrics that compare with the training set (memorization, authenticity, FLD), each checkpoint's own
sampling defaults. One `evaluate` call per model computes all of its metrics from one set of samples; its JSON
(with provenance) and plots go to --out, and the printed Markdown table is what docs/results.md shows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSIFIER = REPO / "assets" / "classifier-mnist5k.ckpt"
SHARED = ("fid,kid,is,mifid,prdc,memorization,fld,fld_gap,alpha_beta,vendi,vendi_real,nnd,nnd_accuracy,fid_infinity,"
          "fid_infinity_slope,cafd,cafd_kl")
MODELS = {
    # name -> (experiment, metrics beyond the shared ones)
    "vae": ("quickstart.yaml", "ssim,psnr"),  # its reconstructions of the test images as the pairs
    "ddpm": ("cfg_mnist5k.yaml", "accuracy,intra_fid,cfid,cas"),  # class-conditional: classes in turn
}


def checkpoint(run: Path) -> Path:
    path = run / "checkpoints" / "last.ckpt"
    if not path.is_file():
        sys.exit(f"{path} not found: train the model first (python -m gen_research fit --config experiments/...)")
    return path


def evaluate(name: str, run: Path, out: Path, num_images: int) -> tuple[dict, float]:
    experiment, extra = MODELS[name]
    result = out / f"{name}.json"
    command = [sys.executable, "-m", "gen_research", "evaluate", "--config", str(run / "config.yaml"), "--ckpt_path", str(checkpoint(run)),
               "--features", "classifier", "--feature-weights", str(CLASSIFIER), "--split", "test", "--num-images", str(num_images),
               "--metrics", f"{SHARED},{extra}", "--seed", "0", "--batch-size", "250", "--kid-subset-size", str(num_images),
               "--json", str(result), "--plots", str(out / f"{name}_plots")]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    return json.loads(result.read_text()), time.perf_counter() - start


def table(results: dict[str, dict]) -> str:
    keys = sorted({key for numbers in results.values() for key in numbers if key not in ("provenance",) and not key.startswith("sampling/")})
    lines = ["| metric | " + " | ".join(results) + " |", "| --- |" + " --- |" * len(results)]
    for key in keys:
        cells = [f"{numbers[key]:.4g}" if key in numbers else "n/a" for numbers in results.values()]
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", type=Path, required=True, help="run folder of experiments/quickstart.yaml")
    parser.add_argument("--ddpm", type=Path, required=True, help="run folder of experiments/cfg_mnist5k.yaml")
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "metric_table")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)  # never over an earlier table
    results, seconds = {}, {}
    for name in MODELS:
        results[name], seconds[name] = evaluate(name, getattr(args, name), args.out, args.num_images)
    markdown = table(results)
    (args.out / "table.md").write_text(markdown + "\n")
    (args.out / "summary.json").write_text(json.dumps({"seconds": seconds, "results": results}, indent=2) + "\n")
    print(markdown)
    print(", ".join(f"{name}: {value:.0f} s" for name, value in seconds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
