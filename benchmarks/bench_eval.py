"""Benchmark: FID + KID + IS + precision/recall/density/coverage with ONE shared feature pass (gen_research's
Evaluator) against running the torchmetrics metrics one by one, each with its own pass over the same images.

    python benchmarks/bench_eval.py --num-images 10000 --extractor inception-random

Each variant runs in its own process, so its peak resident memory (ru_maxrss) is its own. The extractor
``inception-random`` is the FID InceptionV3 architecture with random weights: the same compute as the real
network (the official weights cannot be downloaded here), so timings are realistic and metric values are
not. ``classifier`` uses assets/classifier-mnist5k.ckpt on 28x28 images. Not a test: results go to
docs/results.md by hand, with the machine they were measured on (the first printed line names the CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gen_research.config.precision import describe_cpu

REPO = Path(__file__).resolve().parent.parent
METRICS = ["fid", "kid", "is", "precision", "recall", "density", "coverage"]


def random_inception_weights(folder: Path) -> Path:
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    from gen_research.evaluation.extractors.inception import WEIGHTS_FILE

    original_load, original_url = tfi.FeatureExtractorInceptionV3.load_state_dict, tfi.load_state_dict_from_url
    tfi.load_state_dict_from_url = lambda *args, **kwargs: {}
    tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, *args, **kwargs: None
    try:
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    finally:
        tfi.FeatureExtractorInceptionV3.load_state_dict, tfi.load_state_dict_from_url = original_load, original_url
    path = folder / WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return path


def make_extractor(kind: str, weights_dir: Path):
    from gen_research.registry import FEATURES, load_builtins

    load_builtins()
    if kind == "inception-random":
        return FEATURES.get("inception")(weights=str(weights_dir / "weights-inception-2015-12-05-6726825d.pth"), verify_hash=False), (3, 32, 32)
    return FEATURES.get("classifier")(weights=str(REPO / "assets" / "classifier-mnist5k.ckpt"), image_shape=(1, 28, 28)), (1, 28, 28)


def images(n: int, shape: tuple[int, int, int], seed: int, batch: int):
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch):
        yield torch.rand(min(batch, n - start), *shape, generator=generator) * 2 - 1


def run_shared(args, weights_dir: Path) -> dict:
    from gen_research.evaluation.base import EvalOptions
    from gen_research.evaluation.evaluator import Evaluator

    extractor, shape = make_extractor(args.extractor, weights_dir)
    evaluator = Evaluator(extractor, METRICS, EvalOptions(kid_subset_size=min(1000, args.num_images)))
    for batch in images(args.num_images, shape, 1, args.batch_size):
        evaluator.add_images(batch, "real")
    for batch in images(args.num_images, shape, 2, args.batch_size):
        evaluator.add_images(batch, "fake")
    return evaluator.compute()


def run_separate(args, weights_dir: Path) -> dict:
    """Each torchmetrics metric runs the network itself (``feature=<module>``), as when used one by one."""
    from torchmetrics.image import FrechetInceptionDistance, InceptionScore, KernelInceptionDistance

    from gen_research.evaluation.base import EvalOptions
    from gen_research.evaluation.specs.fidelity_diversity import PRDC

    extractor, shape = make_extractor(args.extractor, weights_dir)

    class Output(torch.nn.Module):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key, self.num_features = key, extractor.num_features if key == "features" else extractor.num_logits

        def forward(self, x):
            with torch.no_grad():
                return extractor(x)[self.key]

    results = {}
    for name, metric in (("fid", FrechetInceptionDistance(feature=Output("features"))),
                         ("kid", KernelInceptionDistance(feature=Output("features"), subset_size=min(1000, args.num_images)))):
        for real, seed in ((True, 1), (False, 2)):
            for batch in images(args.num_images, shape, seed, args.batch_size):
                metric.update(batch, real=real)
        value = metric.compute()
        results[name] = float(value[0] if isinstance(value, tuple) else value)
    inception_score = InceptionScore(feature=Output("logits"))
    for batch in images(args.num_images, shape, 2, args.batch_size):
        inception_score.update(batch)
    results["is"] = float(inception_score.compute()[0])
    spec = PRDC()
    prdc = spec.build(extractor, EvalOptions())
    for real, seed in ((True, 1), (False, 2)):
        for batch in images(args.num_images, shape, seed, args.batch_size):
            spec.update(prdc, {"features": extractor(batch)["features"]}, real=real)
    results.update(spec.compute(prdc))
    return results


def child(args) -> None:
    torch.set_num_threads(args.threads)
    weights_dir = Path(args.weights_dir)
    start = time.perf_counter()
    results = run_shared(args, weights_dir) if args.variant == "shared" else run_separate(args, weights_dir)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "results": results}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=10000, help="real and generated images each")
    parser.add_argument("--extractor", choices=("inception-random", "classifier"), default="inception-random")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--variant", choices=("shared", "separate"), help=argparse.SUPPRESS)
    parser.add_argument("--weights-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return child(args)
    with tempfile.TemporaryDirectory() as folder:
        if args.extractor == "inception-random":
            random_inception_weights(Path(folder))
        measured = {}
        for variant in ("shared", "separate"):
            command = [sys.executable, __file__, "--variant", variant, "--weights-dir", folder, "--num-images", str(args.num_images),
                       "--extractor", args.extractor, "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            measured[variant] = json.loads(output.strip().splitlines()[-1])
    shared, separate = measured["shared"], measured["separate"]
    machine = describe_cpu()  # evaluation runs in fp32; the CPU model still decides the timings
    print(f"CPU: {machine['cpu']}; native bf16: {'yes (' + ', '.join(machine['bf16_flags']) + ')' if machine['bf16_native'] else 'no'}")
    print(f"extractor {args.extractor}, {args.num_images} real + {args.num_images} generated images, {args.threads} threads")
    print("| variant | time (s) | peak RSS (MiB) |\n| --- | --- | --- |")
    for name, row in (("one shared feature pass (gen_research)", shared), ("torchmetrics metrics one by one", separate)):
        print(f"| {name} | {row['seconds']:.1f} | {row['peak_rss_mib']:.0f} |")
    print(f"speed-up: {separate['seconds'] / shared['seconds']:.2f}x")
    for key in ("fid", "precision", "recall", "density", "coverage"):
        ours = next(v for k, v in shared["results"].items() if k.startswith(key + "/"))
        print(f"{key}: shared {ours:.6g}  separate {separate['results'][key]:.6g}")
    print(json.dumps({"machine": machine, "threads": args.threads, "shared": shared, "separate": separate}))  # all of it, for the record


if __name__ == "__main__":
    main()
