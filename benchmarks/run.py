"""``make bench``: every speed figure of docs/results.md, measured side by side in one invocation.

    python benchmarks/run.py                              # all CPU sections, JSON + refreshed docs tables
    python benchmarks/run.py --sections knn,cli           # some sections
    python benchmarks/run.py --device cuda --out DIR      # on a GPU (benchmarks/gpu_suite.sh)
    python benchmarks/run.py --quick --no-docs            # tiny sizes: checks the machinery, measures nothing
    python benchmarks/run.py --docs-from DIR/bench-cuda.json   # write a saved run's tables (the GPU suite's) into the docs

Each section (benchmarks/perf/<name>.py) returns its measurements; they are written to ``<out>/bench-<device>.json``
with the machine's description, and each section's tables replace their ``<!-- bench:NAME -->`` blocks in
docs/results.md (a --quick run never writes the docs).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ itself: harness, perf

from harness import REPO, machine, machine_line, refresh_docs  # noqa: E402
from perf import Context  # noqa: E402

CPU_SECTIONS = ("cli", "training", "speed_options", "data_loading", "throughput", "knn")
GPU_SECTIONS = ("training", "speed_options", "data_loading", "throughput", "knn", "gpu_precision")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", help=f"comma-separated; default: {','.join(CPU_SECTIONS)} (cpu), {','.join(GPU_SECTIONS)} (cuda)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "results.md")
    parser.add_argument("--no-docs", action="store_true", help="write the JSON only")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the machinery (implies --no-docs)")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of A B A B per comparison (default 3)")
    parser.add_argument("--docs-from", type=Path, help="write the tables of a saved results JSON into --docs; measure nothing")
    args = parser.parse_args(argv)
    if args.docs_from:
        return docs_from(args.docs_from, args.docs)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is visible here")
    sections = args.sections.split(",") if args.sections else list(CPU_SECTIONS if args.device == "cpu" else GPU_SECTIONS)
    unknown = [name for name in sections if name not in set(CPU_SECTIONS) | set(GPU_SECTIONS)]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(sorted(set(CPU_SECTIONS) | set(GPU_SECTIONS)))}")
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(device=args.device, quick=args.quick, pairs=1 if args.quick else args.pairs, out=args.out)
    info = machine(args.device)
    print(machine_line(info), flush=True)
    path = args.out / f"bench-{args.device}{'-quick' if args.quick else ''}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = info
    failed = []
    suite_start = time.perf_counter()
    for name in sections:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"perf.{name}")
            result = module.run(ctx)
        except Exception:  # one broken section must not cost the others' measurements (the GPU suite runs once)
            failed.append(name)
            results[name] = {"machine": info, "error": traceback.format_exc()[-4000:]}
            path.write_text(json.dumps(results, indent=1, default=str))
            print(f"   {name} FAILED:\n{results[name]['error']}", file=sys.stderr, flush=True)
            continue
        result["section_wall_s"] = time.perf_counter() - start
        results[name] = {"machine": info, **result}
        path.write_text(json.dumps(results, indent=1, default=str))  # after every section: a crash keeps the rest
        print(f"   {name}: {result['section_wall_s']:.0f} s", flush=True)
        if not (args.quick or args.no_docs):
            written = refresh_docs(args.docs, module.tables(result, info))
            print(f"   docs: {', '.join(written)} in {args.docs}", flush=True)
    total = time.perf_counter() - suite_start
    print(f"results: {path} ({len(sections)} sections in {total / 60:.1f} min)"
          + (f"; FAILED sections: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def docs_from(results_path: Path, docs: Path) -> int:
    """The tables of every section of a saved run (e.g. benchmarks/gpu_suite.sh's bench-cuda.json) into ``docs``."""
    results = json.loads(results_path.read_text())
    for name, result in results.items():
        if name == "machine" or not isinstance(result, dict) or "error" in result:
            continue
        module = importlib.import_module(f"perf.{name}")
        written = refresh_docs(docs, module.tables(result, result.get("machine", results["machine"])))
        print(f"{name}: {', '.join(written)} in {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
