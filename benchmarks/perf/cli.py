"""Section "cli" of ``make bench``: wall time of the commands that should answer at once, each in a fresh process
(python start-up included, as a user types them), medians of ctx.pairs alternating rounds.

For the commands the index of built-ins serves (gen_research/registry_index.py) the comparison is side by side:
the same command with the index (what users get) and with $GEN_RESEARCH_NO_INDEX=1 (every family imported first,
as before). The target is 2 s on the 2-core CPU; commands that must build Lightning's parser (``--print_config``,
an unknown key of a class) import lightning and cannot meet it: their rows say so.
"""

from __future__ import annotations

from typing import Any

from harness import PYTHON, REPO, alternate, machine_line, markdown_table, ratio
from perf import Context

QUICKSTART = str(REPO / "experiments" / "quickstart.yaml")
INDEXED = {  # label -> argv: served from the index
    "list": ["list"],
    "sample --help": ["sample", "--help"],
    "evaluate --help": ["evaluate", "--help"],
    "fit: unknown model name (one-line error)": ["fit", "--config", QUICKSTART, "--model=vea"],
}
OTHERS = {
    "--help": ["--help"],
    "fit: missing config file (one-line error)": ["fit", "--config", "experiments/nope.yaml"],
    "fit --print_config": ["fit", "--config", QUICKSTART, "--print_config"],
    "fit: unknown init_args key (one-line error, from Lightning's parser)": ["fit", "--config", QUICKSTART, "--model.init_args.bogus=3"],
}
TARGET_S = 2.0


def timed(argv: list[str], no_index: bool = False):
    import os
    import subprocess
    import time

    env = {k: v for k, v in os.environ.items() if k != "GEN_RESEARCH_NO_INDEX"}
    if no_index:
        env["GEN_RESEARCH_NO_INDEX"] = "1"

    def once() -> float:
        start = time.perf_counter()
        subprocess.run([PYTHON, "-m", "gen_research", *argv], capture_output=True, env=env, cwd=REPO, timeout=600)
        return time.perf_counter() - start
    return once


def run(ctx: Context) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    indexed = dict(list(INDEXED.items())[:1]) if ctx.quick else INDEXED
    for label, argv in indexed.items():
        medians = alternate({"index": timed(argv), "imports": timed(argv, no_index=True)}, pairs=ctx.pairs)
        rows[label] = {"wall_s": medians["index"]["median"], "without_index_s": medians["imports"]["median"],
                       "speedup": ratio(medians["imports"]["median"], medians["index"]["median"]), "runs": medians}
        print(f"   {label}: {rows[label]['wall_s']:.2f} s (without the index {rows[label]['without_index_s']:.2f} s)", flush=True)
    others = dict(list(OTHERS.items())[:1]) if ctx.quick else OTHERS
    measured = alternate({label: timed(argv) for label, argv in others.items()}, pairs=ctx.pairs)
    for label, values in measured.items():
        rows[label] = {"wall_s": values["median"], "runs": values}
        print(f"   {label}: {values['median']:.2f} s", flush=True)
    return {"target_s": TARGET_S, "commands": rows}


def tables(result: dict[str, Any], machine: dict[str, Any]) -> dict[str, str]:
    table = []
    for label, row in result["commands"].items():
        verdict = "yes" if row["wall_s"] < result["target_s"] else "**no**"
        table.append([f"`{label}`" if not label.startswith("fit:") else label, row["wall_s"], row.get("without_index_s"),
                      f"{row['speedup']:.0f}x" if row.get("speedup") else None, verdict])
    body = "\n".join([
        machine_line(machine) + " Wall time of `python -m gen_research ...` in a fresh process, medians of alternating runs.",
        "",
        markdown_table(["command", "wall (s)", "importing every family first (s)", "speed-up", f"under {result['target_s']:g} s"], table),
    ])
    return {f"cli-{machine['device']}": body}
