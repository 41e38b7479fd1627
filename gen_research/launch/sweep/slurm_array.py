"""``submit --sweep ID_OR_FILE --array K``: K sweep agents as one SLURM job array.

Each array task is one agent on one node that runs fits one after another on its devices:
``wandb agent [--count N] ID`` for a W&B sweep (the server hands out the values), or
``python -m gen_research sweep FILE --shard $SLURM_ARRAY_TASK_ID/K`` for a local sweep file (grid points
i, i+K, ...; random/bayes: N runs per task, seeds per task, bayes tasks sharing one Optuna study).
"""

from __future__ import annotations

import argparse
import re
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

from gen_research.errors import GenResearchError

WANDB_SWEEP_ID = re.compile(r"^[\w.-]+(/[\w.-]+){0,2}$")  # id, project/id or entity/project/id


def _check_options(args: argparse.Namespace, overrides: list[str]) -> None:
    if args.config and args.sweep:
        raise GenResearchError("submit takes --config (one fit) or --sweep (sweep agents), not both")
    if args.sweep is None:
        raise GenResearchError("submit needs --config EXP for a fit, or --sweep FILE_OR_WANDB_ID --array K for sweep agents")
    if overrides:
        raise GenResearchError(f"submit --sweep: unknown option {overrides[0]}; fit settings belong in the sweep file's command or parameters")
    if args.array is None or args.array < 1:
        raise GenResearchError("submit --sweep needs --array K (K >= 1): how many agents to start")
    if args.count_per_task is not None and args.count_per_task < 1:
        raise GenResearchError(f"--count-per-task must be >= 1, not {args.count_per_task}")
    if args.nodes != 1 or args.tasks_per_node not in (None, 1):
        raise GenResearchError("each sweep agent runs on one node: drop --nodes/--tasks-per-node and give its devices with --gpus-per-node")
    if args.gpus_per_node < 0:
        raise GenResearchError("--gpus-per-node must be >= 0")


def is_sweep_file(target: str) -> bool:
    return target.endswith((".yaml", ".yml")) or Path(target).is_file()


def local_agent_command(args: argparse.Namespace, python: str, name: str) -> str:
    """This task's share of a local sweep file; the sweep folder is named after the array job, shared by all tasks."""
    from gen_research.launch.sweep.experiment import check_against_experiment
    from gen_research.launch.sweep.spec import load_sweep_file

    sweep = load_sweep_file(Path(args.sweep))
    total = args.count_per_task * args.array if args.count_per_task else None
    if sweep.method != "grid" and total is None and sweep.run_cap is None:
        raise GenResearchError(f"a {sweep.method} sweep never ends by itself: pass --count-per-task N (or set run_cap: N in {args.sweep})")
    check_against_experiment(sweep)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)  # one seed for all tasks: repeatable
    sweep_dir = Path(args.runs_root) / "sweeps" / name
    static = [python, "-m", "gen_research", "sweep", args.sweep, "--runs_root", args.runs_root, "--seed", str(seed)]
    static += ["--count", str(total)] if total else []
    return (f'{shlex.join(static)} --shard "$TASK_ID/{args.array}" '
            f'--sweep-dir "{sweep_dir}/slurm-$ARRAY_JOB_ID"')


def wandb_agent_command(args: argparse.Namespace, python: str) -> str:
    if not WANDB_SWEEP_ID.match(args.sweep):
        raise GenResearchError(f"--sweep {args.sweep!r} is neither a sweep file (.yaml) nor a W&B sweep id such as entity/project/abc123")
    if args.seed is not None:
        raise GenResearchError("--seed applies to local sweep files; with a W&B sweep id the server chooses the values")
    count = ["--count", str(args.count_per_task)] if args.count_per_task else []
    return shlex.join([python, "-m", "wandb", "agent", *count, args.sweep])


def render_array_script(args: argparse.Namespace, name: str, agent: str, workdir: Path, python: str, local: bool) -> str:
    """The sbatch script: an array of K one-node tasks, each running one agent."""
    log = Path(args.runs_root) / "sweeps" / name / "slurm-%A_%a.log"
    directives = [f"--job-name=sweep-{name}", f"--array=0-{args.array - 1}", "--nodes=1", "--ntasks=1",
                  f"--cpus-per-task={args.cpus_per_task}", f"--time={args.time}", f"--output={log}"]
    if args.gpus_per_node > 0:
        directives.append(f"--gpus-per-node={args.gpus_per_node}")
    for option, value in (("partition", args.partition), ("account", args.account), ("mem", args.mem)):
        if value:
            directives.append(f"--{option}={value}")
    wandb_note = ("# W&B: offline without an API key (wandb sync later)." if local
                  else "# wandb agent needs an API key (wandb login) and network on the compute nodes.")
    lines = ["#!/bin/bash", f"# Written by `python -m gen_research submit --sweep` on {time.strftime('%Y-%m-%d %H:%M:%S')}: "
             f"{args.array} sweep agents as a SLURM job array."]
    lines += [f"#SBATCH {d}" for d in directives]
    lines += [
        "",
        wandb_note,
        'export WANDB_MODE="${WANDB_MODE:-}"',
        "export PYTHONUNBUFFERED=1",
        f'export PATH={shlex.quote(str(Path(python).parent))}:"$PATH"  # `python` in the sweep command: this environment',
        f"cd {shlex.quote(str(workdir))}",
        "TASK_ID=$SLURM_ARRAY_TASK_ID",
        "ARRAY_JOB_ID=$SLURM_ARRAY_JOB_ID",
        "# Each fit the agent starts is a plain process on this task's devices, not an srun step: the job name",
        "# 'interactive' turns Lightning's SLURM detection off (it launches its own DDP workers), and without the",
        "# job id every fit gets its own run folder instead of sharing runs/<name>/slurm-<job id>.",
        "export SLURM_JOB_NAME=interactive",
        "unset SLURM_JOB_ID SLURM_ARRAY_JOB_ID SLURM_ARRAY_TASK_ID",
        f'echo "sweep agent $TASK_ID of {args.array} (array job $ARRAY_JOB_ID) on $(hostname)"',
        agent,
        "",
    ]
    return "\n".join(lines)


def submit_sweep_array(args: argparse.Namespace, overrides: list[str], write_and_submit: Callable[[str, Path], tuple[str, Path]]) -> int:
    """Check, render, then print (--dry-run) or submit the array script."""
    from gen_research.launch.slurm import _check_time

    _check_options(args, overrides)
    _check_time(args.time)
    local = is_sweep_file(args.sweep)
    name = Path(args.sweep).stem if local else args.sweep.rstrip("/").split("/")[-1]
    agent = local_agent_command(args, sys.executable, name) if local else wandb_agent_command(args, sys.executable)
    script = render_array_script(args, name, agent, Path.cwd(), sys.executable, local)
    if args.dry_run:
        print(script)
        return 0
    folder = Path(args.runs_root) / "sweeps" / name
    job, path = write_and_submit(script, folder)
    where = f", sweep folder {folder}/slurm-{job}" if local else ""
    print(f"Submitted array job {job} ({args.array} agents): script {path}, logs {folder}/slurm-{job}_<task>.log{where}")
    return 0
