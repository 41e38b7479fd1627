"""``python -m gen_research sweep FILE``: run a W&B sweep file locally, no W&B server needed.

    sweep FILE [--count N] [--seed S] [--runs_root DIR] [--sweep-dir DIR] [--shard i/K] [--dry-run]

The file is the one ``wandb sweep FILE`` takes (experiments/sweeps/). grid: every point of the
Cartesian product in W&B's order (``--count`` keeps the first N); random: W&B's distributions, seeded;
bayes: Optuna's TPE. Each run is the file's ``command`` with the parameters as ``--name=value``
(what ``wandb agent`` runs), logging to W&B offline unless you have set WANDB_MODE or an API key.
Results: ``<runs_root>/sweeps/<file stem>/<timestamp>/`` with ``leaderboard.csv``, ``sweep.yaml`` and a
folder per run. ``--shard i/K`` runs the i-th of K parts of the sweep (``submit --sweep FILE --array K``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import sys
import time
from pathlib import Path

from gen_research.errors import GenResearchError, OneLineArgumentParser

SLURM_ARRAY_JOB_ENV = "SLURM_ARRAY_JOB_ID"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m gen_research sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="W&B sweep YAML, e.g. experiments/sweeps/vae_beta_grid.yaml")
    parser.add_argument("--count", type=int, help="number of runs (required for random and bayes; grid: the first N points)")
    parser.add_argument("--seed", type=int, help="seed of random/bayes proposals (default: a new one, printed)")
    parser.add_argument("--runs_root", default="runs", help="the sweep folder goes to <runs_root>/sweeps/<file stem>/<timestamp>")
    parser.add_argument("--sweep-dir", help="use this sweep folder instead (all shards of one sweep share it)")
    parser.add_argument("--shard", help="i/K: run only the i-th of K parts of the sweep (one SLURM array task)")
    parser.add_argument("--dry-run", action="store_true", help="check everything and print the planned runs; run nothing")
    return parser


def choose_sweep_dir(args: argparse.Namespace, stem: str, sharded: bool) -> Path:
    """The sweep folder: given, shared by a SLURM array's shards, or a new timestamped one."""
    if args.sweep_dir:
        return Path(args.sweep_dir)
    base = Path(args.runs_root) / "sweeps" / stem
    if sharded:
        if not os.environ.get(SLURM_ARRAY_JOB_ENV):
            raise GenResearchError("--shard needs --sweep-dir DIR, the folder all shards of the sweep share")
        return base / f"slurm-{os.environ[SLURM_ARRAY_JOB_ENV]}"
    return base / time.strftime("%Y%m%d-%H%M%S")


def create_sweep_dir(path: Path, leaderboard_name: str, exact: bool) -> Path:
    """Make the folder; a timestamped one gets a suffix if taken, a given one must not hold this sweep's results yet."""
    if exact:
        if (path / leaderboard_name).exists():
            raise GenResearchError(f"{path} already holds {leaderboard_name} of an earlier sweep; choose another --sweep-dir")
        path.mkdir(parents=True, exist_ok=True)
        return path
    candidate, suffix = path, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            candidate, suffix = path.with_name(f"{path.name}-{suffix}"), suffix + 1


def reproduce_command(args: argparse.Namespace, count: int | None, seed: int, sweep_dir: Path | None) -> str:
    parts = [sys.executable, "-m", "gen_research", "sweep", args.file, "--seed", str(seed)]
    parts += ["--count", str(count)] if count else []
    parts += ["--shard", args.shard] if args.shard else []
    parts += ["--sweep-dir", str(sweep_dir)] if sweep_dir else []
    return shlex.join(parts)


def command_builder(sweep, sweep_dir: Path):
    """Each run's command: the sweep file's, plus its own experiment name and the sweep folder as runs_root."""
    from gen_research.launch.sweep.command import build_command

    return lambda label, assignment: build_command(sweep, assignment, [f"--name={label}", f"--runs_root={sweep_dir}"])


def print_plan(sweep, search, sweep_dir: Path) -> None:
    """--dry-run: the command line of every planned run (bayes: Optuna's first proposals, before any result)."""
    from gen_research.launch.sweep.search import BayesSearch

    print(f"Dry run: {search.total} runs would go to {sweep_dir}/ (nothing is created)")
    if isinstance(search, BayesSearch):
        print("  (bayes: each later run's values depend on earlier results; shown are proposals with no results yet)")
    command_for = command_builder(sweep, sweep_dir)
    while (proposal := search.propose()) is not None:
        index, assignment = proposal
        label = f"{sweep.name}-{index:03d}"
        print(f"  {label}: {shlex.join(command_for(label, assignment))}")
        search.report(index, None)


def print_summary(sweep, leaderboard: Path, sweep_dir: Path) -> None:
    """The leaderboard, best first, and where everything is."""
    from gen_research.launch.sweep.runner import format_table, leaderboard_columns, ranked, read_csv

    rows = ranked(read_csv(leaderboard), sweep.metric, sweep.goal)
    columns = [c for c in leaderboard_columns(sweep) if c not in ("seconds", "run_folder")]
    if not any(row.get("note") for row in rows):
        columns.remove("note")
    print(f"\nLeaderboard ({sweep.goal} {sweep.metric}, best first):\n{format_table(rows, columns, rounded=(sweep.metric,))}")
    print(f"\nSweep folder: {sweep_dir}\n  leaderboard: {leaderboard}\n  runs:        {sweep_dir}/<run>/ (fit.log and the run folder)")
    best = next((row for row in rows if row.get("rank") == 1), None)
    if best:
        print(f"  best run:    {best['run_folder']}")
    if any(sweep_dir.glob("*/*/wandb/offline-run-*")):
        print(f"  W&B (offline), upload later: wandb sync {sweep_dir}/*/*/wandb/offline-run-*")


def sweep_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)  # before the imports below: --help answers at once
    from gen_research.launch.sweep.command import run_environment
    from gen_research.launch.sweep.experiment import check_against_experiment
    from gen_research.launch.sweep.runner import SweepRunner
    from gen_research.launch.sweep.search import Shard, make_search
    from gen_research.launch.sweep.spec import load_sweep_file

    sweep = load_sweep_file(Path(args.file))
    if args.count is not None and args.count < 1:
        raise GenResearchError(f"--count must be >= 1, not {args.count}")
    count = args.count or sweep.run_cap
    shard = Shard.parse(args.shard)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    make_search(sweep, count, shard, seed)  # a missing --count fails here, before the slow experiment check
    sweep_dir = choose_sweep_dir(args, sweep.name, shard.total > 1)
    goal_note = " (W&B's default goal)" if sweep.goal_is_default else ""
    seed_note = f"; seed {seed}" if sweep.method != "grid" else ""
    print(f"Sweep {sweep.path}: {sweep.method} search, {sweep.goal} {sweep.metric}{goal_note}{seed_note}", flush=True)
    print(f"Checking {len(sweep.parameters)} parameters against {' + '.join(sweep.experiment_configs)} ...", flush=True)
    check_against_experiment(sweep)
    if "early_terminate" in sweep.raw:
        print("Note: early_terminate applies under wandb agent only; every local run goes to the end.")
    if args.dry_run:
        print_plan(sweep, make_search(sweep, count, shard, seed), sweep_dir)
        return 0

    leaderboard_name = f"leaderboard-{shard.suffix}.csv" if shard.suffix else "leaderboard.csv"
    sweep_dir = create_sweep_dir(sweep_dir, leaderboard_name, exact=bool(args.sweep_dir) or shard.total > 1)
    if not (sweep_dir / "sweep.yaml").exists():
        shutil.copyfile(sweep.path, sweep_dir / "sweep.yaml")
    with (sweep_dir / "command.txt").open("a") as handle:  # how to repeat exactly this (shard of the) sweep
        handle.write(reproduce_command(args, count, seed, sweep_dir) + "\n")
    search = make_search(sweep, count, shard, seed, journal=sweep_dir / "optuna-journal.log")
    print(f"Sweep folder: {sweep_dir}  ({search.total} runs)", flush=True)
    runner = SweepRunner(sweep, search, sweep_dir, command_builder(sweep, sweep_dir), lambda label: run_environment(sweep, sweep_dir, label),
                         shard_suffix=shard.suffix, echo=lambda line: print(line, flush=True))
    interrupted = False
    try:
        runner.run()
    except KeyboardInterrupt:
        interrupted = True
    print_summary(sweep, runner.write_leaderboard(), sweep_dir)
    if interrupted:
        print("Interrupted: the leaderboard holds the runs done so far.")
        return 130
    if runner.records and not any(record.status == "finished" for record in runner.records):
        print("No run of this sweep finished; see the notes above and the runs' fit.log", file=sys.stderr)
        return 1
    return 0
