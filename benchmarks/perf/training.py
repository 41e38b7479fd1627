"""Section "training" of ``make bench``: ``fit`` against a hand-written PyTorch loop (benchmarks/perf/hand_loop.py)
with the same network, loss, optimizer, batch and device, for the quickstart VAE and the mnist5k DDPM.

Each run is a fresh process launched by this one (A B A B ..., ctx.pairs rounds, medians): start-up is the wall time
from the launch to the first training step (imports, config, data, model, loggers), throughput the steady-state
steps/s after the warm-up steps. ``fit`` runs the experiment as a user would, minus what the hand loop does not do
(EMA, sample grids, validation and the evaluation callback are left out; W&B offline + CSV logging and the
checkpoint at the end stay in, as they are part of what fit gives).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import yaml

from harness import PYTHON, REPO, alternate, machine_line, markdown_table, ratio, run_child
from perf import Context

CPU_ROUNDS = 5  # alternating rounds on CPU (at least ctx.pairs): runs of a few seconds drift by +-15% on 2 shared cores
CASES = {  # name -> experiment, timed steps after the warm-up, init_args overrides
    "vae": {"experiment": "quickstart", "steps": 150, "warmup": 10, "model_args": {}},
    "ddpm": {"experiment": "ddpm_mnist5k", "steps": 20, "warmup": 3, "model_args": {}},
}
QUICK = {
    "vae": {"experiment": "quickstart", "steps": 4, "warmup": 1, "model_args": {}},
    "ddpm": {"experiment": "ddpm_mnist5k", "steps": 3, "warmup": 1, "model_args": {"block_out_channels": [8, 16, 16]}},
}
ON_GPU = {"ddpm": {"data_args": {"batch_size": 128}}}  # the GPU row: batch 128 as ddpm_cifar10 (mnist5k is on every machine)


def precision_for(device: str) -> str:
    """What ``precision: auto`` resolves to on this device: both loops run it."""
    from gen_research.config.precision import choose_precision

    return choose_precision("cpu" if device == "cpu" else "gpu", 1).precision


def fit_once(name: str, case: dict[str, Any], ctx: Context, precision: str) -> dict[str, Any]:
    folder = ctx.out / "training" / f"{name}-fit-{time.time_ns()}"
    folder.mkdir(parents=True)
    timing = folder / "timing.json"
    overlay = {
        "trainer": {
            "max_steps": case["warmup"] + case["steps"] + 1, "max_epochs": None, "max_time": None, "precision": precision,
            "accelerator": "cpu" if ctx.device == "cpu" else "gpu", "devices": 1,
            "limit_val_batches": 0, "num_sanity_val_steps": 0,
            "callbacks": [{"class_path": "perf.step_timer.StepTimer", "init_args": {"warmup": case["warmup"], "out": str(timing)}}],
        },
        "checkpoint": {"monitor": None},
        "model": {"init_args": case["model_args"]},
        "data": {"init_args": case.get("data_args", {})},
    }
    (folder / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    env = {"PYTHONPATH": str(REPO / "benchmarks"), "GEN_RESEARCH_IMPORTS": "perf.step_timer", "BENCH_LAUNCH_TIME": repr(time.time()),
           "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    command = [PYTHON, "-m", "gen_research", "fit", "--config", str(REPO / "experiments" / f"{case['experiment']}.yaml"),
               "--config", str(folder / "overlay.yaml"), f"--runs_root={folder / 'runs'}"]
    run = run_child(command, env=env, cwd=folder)
    return {**json.loads(timing.read_text()), "wall_s": run["wall_s"]}


def hand_once(case: dict[str, Any], ctx: Context, precision: str) -> dict[str, Any]:
    spec = {**case, "steps": case["warmup"] + case["steps"] + 1, "device": ctx.device, "precision": precision}
    env = {"BENCH_LAUNCH_TIME": repr(time.time())}
    run = run_child([PYTHON, str(REPO / "benchmarks" / "perf" / "hand_loop.py"), json.dumps(spec)], env=env)
    return {**run["result"], "wall_s": run["wall_s"]}


def run(ctx: Context) -> dict[str, Any]:
    precision = precision_for(ctx.device)
    cases = QUICK if ctx.quick else CASES
    results: dict[str, Any] = {"precision": precision, "cases": {}}
    for name, case in cases.items():
        case = {**case, **(ON_GPU.get(name, {}) if ctx.device == "cuda" and not ctx.quick else {})}
        runs: dict[str, list[dict[str, Any]]] = {"fit": [], "hand": []}

        def measure(kind: str):
            def once() -> float:
                result = fit_once(name, case, ctx, precision) if kind == "fit" else hand_once(case, ctx, precision)
                runs[kind].append(result)
                print(f"   {name} {kind}: {result['steps_per_s']:.3g} steps/s, start-up {result['startup_s']:.1f} s", flush=True)
                return result["steps_per_s"]
            return once

        rounds = ctx.pairs if ctx.quick or ctx.device != "cpu" else max(ctx.pairs, CPU_ROUNDS)
        medians = alternate({"fit": measure("fit"), "hand": measure("hand")}, pairs=rounds)
        step = {kind: median_step_s(runs[kind]) for kind in runs}
        startup = {kind: sorted(r["startup_s"] for r in runs[kind])[len(runs[kind]) // 2] for kind in runs}
        results["cases"][name] = {
            "experiment": case["experiment"], "timed_steps": case["steps"], "batch_size": case.get("data_args", {}).get("batch_size"),
            "parameters": runs["hand"][0].get("parameters"),
            "fit_steps_per_s": medians["fit"]["median"], "hand_steps_per_s": medians["hand"]["median"],
            "throughput_ratio": ratio(medians["fit"]["median"], medians["hand"]["median"]),
            "fit_median_step_ms": 1000 * step["fit"], "hand_median_step_ms": 1000 * step["hand"],
            "median_step_ratio": ratio(step["hand"], step["fit"]),  # > 1: fit is faster
            "fit_startup_s": startup["fit"], "hand_startup_s": startup["hand"], "startup_difference_s": startup["fit"] - startup["hand"],
            "runs": runs,
        }
    return results


def median_step_s(runs: list[dict[str, Any]]) -> float:
    """The median duration of one timed step over all the runs of one loop (each run's steps pooled)."""
    steps = sorted(step for run in runs for step in run["step_s"])
    return steps[len(steps) // 2]


def tables(result: dict[str, Any], machine: dict[str, Any]) -> dict[str, str]:
    rows = [[f"{name} (`{case['experiment']}`, {case['parameters'] / 1e6:.2f}M parameters)", case["fit_steps_per_s"], case["hand_steps_per_s"],
             f"**{case['throughput_ratio']:.3f}x**", case.get("fit_median_step_ms"), case.get("hand_median_step_ms"),
             f"{case['median_step_ratio']:.3f}x" if case.get("median_step_ratio") else None,
             case["fit_startup_s"], case["hand_startup_s"]]
            for name, case in result["cases"].items()]
    body = "\n".join([
        machine_line(machine) + f" Precision {result['precision']}; medians of {len(next(iter(result['cases'].values()))['runs']['fit'])} "
        "alternating runs each (fit, hand, fit, hand, ...). steps/s: timed steps over their wall time, per run; median "
        "step: the median of every timed step of all runs of that loop (robust to another process's burst).",
        "",
        markdown_table(["model", "fit steps/s", "hand-written loop steps/s", "fit / hand", "fit median step (ms)",
                        "hand median step (ms)", "fit / hand (median step)", "fit start-up (s)", "hand start-up (s)"], rows),
    ])
    return {f"training-{machine['device']}": body}
