"""The sections of ``make bench`` (benchmarks/run.py). Each module ``benchmarks/perf/<section>.py`` exposes

    run(ctx: Context) -> dict                       # JSON-serialisable measurements
    tables(result: dict, machine: dict) -> dict     # generated block name -> markdown, for docs/results.md

and measures every comparison side by side (benchmarks/harness.py: alternate A B A B, medians, ratios).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Context:
    device: str = "cpu"  # "cpu" or "cuda" (the GPU suite): every section runs on either
    quick: bool = False  # tiny sizes: the smoke test of the machinery (tests/benchmarks), not a measurement
    pairs: int = 3  # rounds of A B A B ... per comparison (medians of these)
    out: Path = Path("benchmarks/out")  # scratch files and the JSON results
