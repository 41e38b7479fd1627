"""Section "knn" of ``make bench``: the k-NN metrics (precision/recall/density/coverage, memorization) at N = 1,000,
10,000 and 50,000 per side, time and peak memory, each size in a fresh child process (its own peak RSS; on CUDA
also torch.cuda.max_memory_allocated). At 1,000 and 10,000 the reference ``prdc`` package (full distance matrices,
float64, numpy/sklearn) runs side by side with ours (A B A B, ctx.pairs), with both sets of numbers.

Random Gaussian features with a fixed seed: reals N(0, 1); fakes N(0.05, 0.95^2) (a nearby distribution; at D = 768
the narrower fakes sit inside the reals' balls: high precision and coverage, low recall, density far above 1); for
memorization a training set of N, held-out reals of N and N generated rows of which 10% are copies of training rows
plus noise.

    python benchmarks/run.py --sections knn                 # CPU
    python benchmarks/run.py --sections knn --device cuda   # GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/: harness
sys.path.insert(0, str(HERE.parent.parent))  # the repository: gen_research

import harness  # noqa: E402

DIM = 768  # feature dimension of the full run (2048 does not fit the ~10 min of the section on 2 CPU cores)
SIZES = (1_000, 10_000, 50_000)
COMPARED = (1_000, 10_000)  # sizes where prdc (three full N x N float64 matrices) also runs
QUICK_SIZES, QUICK_DIM = (200, 400), 16
PRDC_KEYS = ("precision", "recall", "density", "coverage")
MEMO_KEYS = ("nn_distance", "copy_fraction", "data_copying_zu", "authenticity")


def features(n: int, dim: int, seed: int, scale: float = 1.0, shift: float = 0.0):
    import torch

    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * scale + shift


def resident_mb() -> float:
    """This process's resident memory now (Linux /proc; 0 where there is none)."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def child(kind: str, n: int, dim: int, device: str) -> dict[str, Any]:
    """One measurement in this (fresh) process: ``kind`` prdc (ours), prdc-package or memorization.
    ``start_rss_mb``: resident memory once the libraries are imported and the features made, before the metric."""
    import torch

    real, fake = features(n, dim, 1), features(n, dim, 2, 0.95, 0.05)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if kind == "prdc-package":
        from prdc import compute_prdc

        real64, fake64 = real.double().numpy(), fake.double().numpy()
        start_rss, start = resident_mb(), time.perf_counter()
        values = compute_prdc(real64, fake64, nearest_k=5)
        return {"time_s": time.perf_counter() - start, "values": {k: float(values[k]) for k in PRDC_KEYS},
                "start_rss_mb": start_rss}
    import gen_research.evaluation.specs  # noqa: F401  (registration)
    from gen_research.evaluation.base import EvalOptions
    from gen_research.registry import METRICS

    class Extractor:
        num_features, num_logits, name = dim, None, "gaussian"

    spec = METRICS.get("prdc" if kind == "prdc" else "memorization")()
    metric = spec.build(Extractor(), EvalOptions()).to(device)
    sets = [("real", real), ("fake", fake)]
    if kind == "memorization":
        train = features(n, dim, 3)
        copies = n // 10
        generated = torch.cat([train[:copies] + 0.01 * features(copies, dim, 4), features(n - copies, dim, 5)])
        sets = [("train", train), ("real", features(n, dim, 6)), ("fake", generated)]
    sets = [(role, x.to(device)) for role, x in sets]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync()
    start_rss, start = resident_mb(), time.perf_counter()
    for role, x in sets:
        for rows in x.split(1000):
            if role == "train":
                spec.update_train(metric, {"features": rows})
            else:
                spec.update(metric, {"features": rows}, real=role == "real")
    values = spec.compute(metric)
    sync()
    out = {"time_s": time.perf_counter() - start, "values": values,
           "features_mb": sum(x.numel() * 4 for _, x in sets) / 2**20, "start_rss_mb": start_rss}
    if device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _measure(kind: str, n: int, dim: int, device: str, log: list, quick: bool = False) -> float:
    """One child process (``quick``: in this process, no fresh-process memory figure: it measures nothing)."""
    if quick:
        result = {**child(kind, n, dim, device), "peak_rss_mb": None}
    else:
        result = harness.run_child([harness.PYTHON, str(Path(__file__)), "--child", kind, "--n", str(n), "--dim",
                                    str(dim), "--device", device])["result"]
    log.append({"kind": kind, "n": n, **result})
    return result["time_s"]


def run(ctx) -> dict[str, Any]:
    sizes, dim = (QUICK_SIZES, QUICK_DIM) if ctx.quick else (SIZES, DIM)
    compared = sizes if ctx.quick else COMPARED
    rows: list[dict[str, Any]] = []
    for n in sizes:
        log: list[dict[str, Any]] = []
        if n in compared and not ctx.device.startswith("cuda"):  # prdc is numpy: CPU only
            timing = harness.alternate({"prdc-package": lambda: _measure("prdc-package", n, dim, ctx.device, log, ctx.quick),
                                        "prdc": lambda: _measure("prdc", n, dim, ctx.device, log, ctx.quick)}, ctx.pairs)
        else:
            timing = {"prdc": {"median": _measure("prdc", n, dim, ctx.device, log, ctx.quick)}}
        _measure("memorization", n, dim, ctx.device, log, ctx.quick)
        for kind in ("prdc", "prdc-package", "memorization"):
            runs = [entry for entry in log if entry["kind"] == kind]
            if not runs:
                continue
            rows.append({
                "kind": kind, "n": n, "dim": dim,
                "time_s": timing[kind]["median"] if kind in timing else runs[0]["time_s"],
                "runs_s": [entry["time_s"] for entry in runs],
                "peak_rss_mb": None if ctx.quick else max(entry["peak_rss_mb"] for entry in runs),
                "start_rss_mb": min(entry["start_rss_mb"] for entry in runs),
                "cuda_peak_mb": max((entry.get("cuda_peak_mb") or 0) for entry in runs) or None,
                "features_mb": runs[0].get("features_mb"),
                "values": runs[0]["values"],
                "same_values_every_run": all(entry["values"] == runs[0]["values"] for entry in runs),
            })
            print(f"   knn {kind} N={n} D={dim}: {rows[-1]['time_s']:.2f} s, peak RSS {rows[-1]['peak_rss_mb']} MB",
                  flush=True)
    return {"dim": dim, "pairs": ctx.pairs, "rows": rows}


def tables(result: dict[str, Any], machine: dict[str, Any]) -> dict[str, str]:
    device = "cuda" if str(machine.get("device", "cpu")).startswith("cuda") else "cpu"
    by = {(row["kind"], row["n"]): row for row in result["rows"]}
    table = []
    for row in result["rows"]:
        ours = by.get(("prdc", row["n"]))
        ratio = harness.ratio(row["time_s"], ours["time_s"]) if row["kind"] == "prdc-package" and ours else None
        above = None if row["peak_rss_mb"] is None else row["peak_rss_mb"] - row["start_rss_mb"]
        values = ", ".join(f"{key} {row['values'][key]:.4g}" for key in (PRDC_KEYS if row["kind"] != "memorization" else MEMO_KEYS))
        name = {"prdc": "prdc (ours, blocked)", "prdc-package": "prdc package (full matrices)",
                "memorization": "memorization (ours)"}[row["kind"]]
        table.append([name, f"{row['n']:,}", row["time_s"], ratio, row["peak_rss_mb"], above,
                      row.get("cuda_peak_mb"), row.get("features_mb"), values])
    headers = ["metric", "N per side", "time (s, median)", "time / ours", "peak RSS (MB)",
               "peak above start (MB)", "CUDA peak (MB)", "features held (MB)", "values"]
    note = (f"Random Gaussian features, D = {result['dim']}, nearest_k = 5; time = update + compute of the registered "
            f"metric (the prdc package: compute_prdc), each run in a fresh process; side by side A B A B, "
            f"{result['pairs']} rounds, medians. Peak RSS is the whole process (the imports alone hold about 0.8 GB); "
            f"'above start': the peak less the resident memory once imports and feature sets were there (the "
            f"metric's own state copies and work memory).")
    return {f"knn-{device}": harness.machine_line(machine) + "\n\n" + note + "\n\n" + harness.markdown_table(headers, table)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one k-NN measurement (child of the knn bench section)")
    parser.add_argument("--child", required=True, choices=("prdc", "prdc-package", "memorization"))
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    harness.report(child(args.child, args.n, args.dim, args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
