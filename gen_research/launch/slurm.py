"""``python -m gen_research submit``: write an sbatch script for a fit (or sweep agents) and submit it to SLURM.

    submit --config EXP [--nodes N --gpus-per-node G --cpus-per-task C --partition P --time HH:MM:SS
           --account A --mem M] [--dry-run] [fit overrides such as --model.init_args.beta=4]
    submit --sweep FILE_OR_WANDB_SWEEP_ID --array K [--count-per-task N] [--seed S] [same resource options]

One task per device (``srun`` starts them; Lightning's SLURMEnvironment reads the ranks); all tasks of the
step share the run folder ``runs/<name>/slurm-<jobid>`` (gen_research/training/run_folder.py: a second command in
the same job would get its own). Before the time limit SLURM sends USR1 (``--signal=USR1@90``): Lightning
saves an HPC checkpoint into the run folder and requeues the job (``--requeue``). The requeued job (same job
id, SLURM_RESTART_COUNT > 0) runs the script again, finds the same run folder, resumes from its newest
checkpoint by global step (the HPC one, or a step checkpoint after a requeue without USR1, e.g. a node
failure: add ``--checkpoint.every_n_train_steps=N`` for those) and continues the same W&B run.

``--sweep`` submits a job array of K agents instead (gen_research/launch/sweep/slurm_array.py): ``wandb agent`` for a W&B sweep id,
``python -m gen_research sweep FILE --shard i/K`` for a local sweep file (the K tasks split the sweep).
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gen_research.errors import GenResearchError, OneLineArgumentParser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m gen_research submit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="experiment YAML (may repeat, like fit)")
    parser.add_argument("--sweep", help="a sweep file (experiments/sweeps/*.yaml) or a W&B sweep id (entity/project/id): start agents")
    parser.add_argument("--array", type=int, help="with --sweep: how many agents (SLURM array tasks) to start")
    parser.add_argument("--count-per-task", type=int, help="with --sweep: runs per agent (wandb agent --count)")
    parser.add_argument("--seed", type=int, help="with a local sweep file: seed of random/bayes proposals")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0, help="0: a CPU partition (then --tasks-per-node processes per node)")
    parser.add_argument("--tasks-per-node", type=int, help="processes per node on CPU partitions (default 1); GPUs: one per GPU")
    parser.add_argument("--cpus-per-task", type=int, default=4)
    parser.add_argument("--partition")
    parser.add_argument("--time", default="24:00:00", help="HH:MM:SS or D-HH:MM:SS")
    parser.add_argument("--account")
    parser.add_argument("--mem", help="memory per node, e.g. 64G")
    parser.add_argument("--name", help="experiment name (default: the last --config file's name)")
    parser.add_argument("--runs_root", default="runs")
    parser.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    return parser


def _check_time(value: str) -> None:
    if not re.fullmatch(r"(\d+-)?\d{1,2}:\d{2}:\d{2}", value):
        raise GenResearchError(f"--time {value!r} is not HH:MM:SS or D-HH:MM:SS")


_SLURM_NAME = re.compile(r"[A-Za-z0-9_.,:+-]+")  # partition/account names: nothing that could end an #SBATCH line


def check_resources(args: argparse.Namespace) -> None:
    """What sbatch would refuse (or read otherwise), refused before any script is written or printed."""
    for option, value, lowest in (("--nodes", args.nodes, 1), ("--gpus-per-node", args.gpus_per_node, 0),
                                  ("--tasks-per-node", args.tasks_per_node, 1), ("--cpus-per-task", args.cpus_per_task, 1),
                                  ("--array", args.array, 1), ("--count-per-task", args.count_per_task, 1)):
        if value is not None and value < lowest:
            raise GenResearchError(f"submit: {option} must be >= {lowest}, got {value}")
    if args.mem is not None and not re.fullmatch(r"\d+[KMGT]?", args.mem.strip(), flags=re.IGNORECASE):
        raise GenResearchError(f"submit: --mem={args.mem!r} is not a SLURM memory size; give a number with an optional K/M/G/T suffix, e.g. 64G")
    for option, value in (("--partition", args.partition), ("--account", args.account)):
        if value is not None and not _SLURM_NAME.fullmatch(value):
            raise GenResearchError(f"submit: {option}={value!r} is not a SLURM {option[2:]} name (letters, digits, _ . , : + -)")


def render_script(args: argparse.Namespace, overrides: list[str], name: str, workdir: Path, python: str) -> str:
    """The sbatch script: resources, preemption handling, and srun of the fit with matching trainer settings."""
    gpus = args.gpus_per_node
    tasks = gpus if gpus > 0 else (args.tasks_per_node or 1)
    log = Path(args.runs_root) / name / "slurm-%j.log"
    directives = [f"--job-name={name}", f"--nodes={args.nodes}", f"--ntasks-per-node={tasks}", f"--cpus-per-task={args.cpus_per_task}",
                  f"--time={args.time}", "--signal=USR1@90", "--requeue", "--open-mode=append", f"--output={log}"]
    if gpus > 0:
        directives.append(f"--gpus-per-node={gpus}")
    for option, value in (("partition", args.partition), ("account", args.account), ("mem", args.mem)):
        if value:
            directives.append(f"--{option}={value}")
    fit = [python, "-m", "gen_research", "fit", *[item for config in args.config for item in ("--config", config)],
           f"--name={name}", f"--runs_root={args.runs_root}", f"--trainer.num_nodes={args.nodes}", f"--trainer.devices={tasks}",
           f"--trainer.accelerator={'gpu' if gpus > 0 else 'cpu'}", "--trainer.strategy=ddp" if args.nodes * tasks > 1 else "--trainer.strategy=auto",
           *overrides]
    lines = ["#!/bin/bash", f"# Written by `python -m gen_research submit` on {time.strftime('%Y-%m-%d %H:%M:%S')}."]
    lines += [f"#SBATCH {d}" for d in directives]
    lines += [
        "",
        "# W&B: offline without an API key (wandb sync later); the run id lives in the run folder, so a requeued job continues it.",
        'export WANDB_MODE="${WANDB_MODE:-}"',
        "export PYTHONUNBUFFERED=1",
        f"cd {shlex.quote(str(workdir))}",
        'echo "job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $(hostname)"',
        "srun " + " ".join(shlex.quote(part) for part in fit),
        "",
    ]
    return "\n".join(lines)


def submit_command(argv: list[str]) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    check_resources(args)
    if args.sweep is not None or args.config is None:
        from gen_research.launch.sweep.slurm_array import submit_sweep_array

        return submit_sweep_array(args, overrides, write_and_submit)
    for option in ("array", "count_per_task", "seed"):
        if getattr(args, option) is not None:
            raise GenResearchError(f"submit: --{option.replace('_', '-')} goes with --sweep; a single fit takes --config only")
    unknown = [o for o in overrides if o.startswith("--") and "." not in o.split("=")[0] and o.split("=")[0] not in ("--seed_everything", "--ckpt_path")]
    if unknown:
        raise GenResearchError(f"submit: unknown option {unknown[0]}; fit overrides look like --model.init_args.beta=4")
    _check_time(args.time)
    for config in args.config:
        if not Path(config).is_file():
            raise GenResearchError(f"config file not found: {config}; check the path given to --config")
    name = args.name or Path(args.config[-1]).stem
    script = render_script(args, overrides, name, Path.cwd(), sys.executable)
    if args.dry_run:
        print(script)
        return 0
    job, path = write_and_submit(script, Path(args.runs_root) / name)
    folder = Path(args.runs_root) / name
    print(f"Submitted job {job}: script {path}, log {folder}/slurm-{job}.log, run folder {folder}/slurm-{job}")
    return 0


def write_and_submit(script: str, folder: Path) -> tuple[str, Path]:
    """Save the script in ``folder`` (never over an earlier one), run sbatch on it; return the job id and path."""
    if shutil.which("sbatch") is None:
        raise GenResearchError("sbatch not found: run submit on a SLURM login node, or pass --dry-run to see the script")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"submit-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    suffix = 1
    while path.exists():  # never overwrite an earlier script
        path = folder / f"submit-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}.sbatch"
        suffix += 1
    from gen_research.files.atomic import atomic_write_text

    atomic_write_text(path, script)  # sbatch never reads half a script
    result = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise GenResearchError(f"sbatch refused {path}: {(result.stderr or result.stdout).strip().splitlines()[-1]}")
    job = re.search(r"(\d+)", result.stdout)
    return (job.group(1) if job else "?"), path
