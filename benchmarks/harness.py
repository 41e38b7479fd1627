"""What every section of ``make bench`` (benchmarks/run.py) shares: side-by-side timing, peak memory of a child
process, the machine's description and the refresh of generated tables in docs/results.md.

The machines drift by +-15% over minutes, so no figure here is a lone time: each comparison runs its variants
alternately (A B A B ..., :func:`alternate`) and reports medians and the ratio of medians, measured in one
invocation. Absolute times are printed next to the machine they were measured on (:func:`machine`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def alternate(variants: Mapping[str, Callable[[], float]], pairs: int = 3, warmup: bool = False) -> dict[str, dict[str, Any]]:
    """Run the variants in turn, ``pairs`` rounds (A B A B ... for two), each call returning one measurement
    (seconds, steps/s, ...); -> {name: {"runs": [...], "median": m}}. ``warmup`` first calls each once, unrecorded."""
    if pairs < 1:
        raise ValueError("pairs must be >= 1")
    if warmup:
        for measure in variants.values():
            measure()
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(pairs):
        for name, measure in variants.items():
            runs[name].append(float(measure()))
    return {name: {"runs": values, "median": statistics.median(values)} for name, values in runs.items()}


def ratio(numerator: float, denominator: float) -> float | None:
    return None if not denominator else numerator / denominator


def run_child(args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 1800.0,
              cwd: Path | None = None) -> dict[str, Any]:
    """Run ``args`` (a command) in a fresh process -> {"wall_s", "peak_rss_mb", "result"}.

    ``result`` is the JSON object the child printed on its last stdout line starting with ``{`` (None if none;
    :func:`report` prints it). The peak resident memory is the one the child reports for itself, so each
    measurement starts from an empty process. A child that fails raises with the tail of its stderr."""
    start = time.perf_counter()
    process = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})}, cwd=cwd or REPO)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({process.returncode}):\n{err[-3000:]}")
    result = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            break
    return {"wall_s": wall, "peak_rss_mb": (result or {}).get("peak_rss_mb"), "result": result}


def report(result: Mapping[str, Any]) -> None:
    """Child side of :func:`run_child`: print ``result`` (plus this process's peak RSS) as the last JSON line."""
    print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory, MiB: VmHWM of /proc/self/status, the high-water mark of this program's
    own address space. Not getrusage's ru_maxrss: Linux carries the parent's resident size at the fork across the
    exec into it, so a child of a 4 GB parent reports 4 GB whatever it used."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (see above), bytes on macOS


def machine(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on: CPU (and GPU) names, threads, library versions."""
    import torch

    from gen_research.config.precision import cpu_bf16_flags, cpu_model_name

    info: dict[str, Any] = {
        "cpu": cpu_model_name(),
        "cpu_bf16_units": cpu_bf16_flags(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
        "measured": time.strftime("%Y-%m-%d %H:%M"),
    }
    for package in ("lightning", "diffusers", "torchmetrics"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = None
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    """One line naming the hardware, for the head of a generated table."""
    cpu = f"{info['cpu']}, {info['cpu_threads']} threads" + (f", bf16 units: {'/'.join(info['cpu_bf16_units'])}" if info.get("cpu_bf16_units") else ", no bf16 units")
    gpu = f"; GPU: {info['gpu']}" if info.get("gpu") else ""
    return f"Measured {info['measured']} on {cpu}{gpu}; torch {info['torch']}, lightning {info.get('lightning')}."


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub table; floats get 3 significant digits, None is an empty cell (never an estimate)."""
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


BLOCK = "<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the generated block ``name`` (between ``<!-- bench:name -->`` and ``<!-- /bench:name -->``)
    replaced by ``body``; a document without the markers is refused (the tables' places are chosen by hand)."""
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->\n.*?\n?<!-- /bench:{re.escape(name)} -->", re.S)
    if not pattern.search(text):
        raise KeyError(f"docs have no block <!-- bench:{name} --> ... <!-- /bench:{name} -->")
    return pattern.sub(lambda _: BLOCK.format(name=name, body=body.strip("\n")), text, count=1)


def refresh_docs(path: Path, blocks: Mapping[str, str]) -> list[str]:
    """Write each generated table into its block of ``path``; -> the names written."""
    text = path.read_text()
    for name, body in blocks.items():
        text = replace_block(text, name, body)
    path.write_text(text)
    return list(blocks)
