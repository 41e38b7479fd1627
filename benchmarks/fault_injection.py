"""Fault injection: SIGKILL a training run at random moments (and in the middle of a checkpoint write), resume it
with ``--ckpt_path last``, and check it ends bit-identical to an uninterrupted run.

    python benchmarks/fault_injection.py --trials 20 --seed 0 --out fault-injection.json

The run is the tiny VAE of the test suite (EMA, sample grids, the evaluation callback) for 3 epochs, or with
``--experiment ddpm`` the tiny DDPM (EMA, sample grids, the evaluation callback) for 5 epochs, with a
checkpoint after every step, so that kills land before, between and during checkpoint writes. Each trial:
start the run in a fresh process, SIGKILL it after a seeded random delay (four trials in five: 0 to 105% of the
reference run's training time after the first checkpoint appeared; one in five: during start-up, before any
checkpoint; a run that finished first counts as not killed), note what the run folder holds (the newest step, a leftover ``.tmp-`` file = killed during a
write), resume until it finishes, and compare weights (EMA and training), optimizer moments, LR schedule, step
counters and RNG state with the uninterrupted run. Trials with ``--write-kills`` more are killed from inside
the checkpoint IO after half of a checkpoint's bytes were written (tests.integration.helpers.KillDuringWrite).
Results (one line a trial and a summary) go to stdout and to the JSON file; docs/reliability.md quotes them.
tests/integration/test_fault_injection.py runs one trial of each kind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.integration.helpers import assert_same_training_state  # noqa: E402

EVALUATION = ('--trainer.callbacks+={"class_path": "evaluation", "init_args": {"metrics": "fid,precision,recall", '
              '"num_samples": 40, "batch_size": 20, "cache_dir": "cache"}}')
CHECKPOINT_EVERY_STEP = ["--trainer.enable_progress_bar=false", "--trainer.logger=false",
                         "--checkpoint.every_n_train_steps=1", "--checkpoint.monitor=null", EVALUATION]
# 15 optimizer steps each: the VAE 3 epochs of 5 batches, the DDPM 5 epochs of 3, both with EMA and sample grids.
EXPERIMENTS = {
    "vae": ["--config", str(REPO / "tests" / "configs" / "tiny_vae.yaml"), "--trainer.max_epochs=3",
            "--model.init_args.lr_schedule=constant", *CHECKPOINT_EVERY_STEP],
    "ddpm": ["--config", str(REPO / "tests" / "configs" / "tiny_ddpm.yaml"), "--trainer.max_epochs=5",
             '--trainer.callbacks+={"class_path": "ema", "init_args": {"decay": 0.8}}',
             '--trainer.callbacks+={"class_path": "sample_grid", "init_args": {"num_samples": 4}}', *CHECKPOINT_EVERY_STEP],
}
COMMON = EXPERIMENTS["vae"]  # main() switches it with --experiment
WRITE_KILL = '--trainer.callbacks+={{"class_path": "tests.integration.helpers.KillDuringWrite", "init_args": {{"step": {}}}}}'


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env["GEN_RESEARCH_IMPORTS"] = ",".join(filter(None, [env.get("GEN_RESEARCH_IMPORTS"), "tests"]))
    env.pop("GEN_RESEARCH_RUN_DIR", None)
    return env


def fit(workdir: Path, name: str, *extra: str, kill_after: float | None = None, from_first_checkpoint: bool = False) -> int:
    """One ``fit`` in a fresh process; SIGKILLed ``kill_after`` seconds after its start (or after its first checkpoint
    appeared) if it is still running then. Returns its exit code (-9 when killed)."""
    process = subprocess.Popen([sys.executable, "-m", "gen_research", "fit", *COMMON, f"--name={name}", *extra],
                               cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        if from_first_checkpoint:
            while process.poll() is None and not list((workdir / "runs" / name).rglob("*.ckpt")):
                time.sleep(0.01)
        deadline = time.monotonic() + kill_after
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.communicate()
            return -signal.SIGKILL
    _, err = process.communicate(timeout=900)
    if process.returncode not in (0, -signal.SIGKILL):  # -9 here: it killed itself (KillDuringWrite)
        raise RuntimeError(f"fit failed ({process.returncode}): {err[-2000:]}")
    return process.returncode


def run_folder(workdir: Path, name: str) -> Path | None:
    runs = sorted((workdir / "runs" / name).glob("*")) if (workdir / "runs" / name).is_dir() else []
    return runs[-1] if runs else None


def final_state(workdir: Path, name: str) -> dict[str, Any]:
    folder = run_folder(workdir, name)
    assert folder is not None, f"no run folder for {name}"
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def reference(workdir: Path) -> tuple[dict[str, Any], float, float]:
    """The uninterrupted run: its final state, its start-up time (to the first checkpoint) and its training time."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "gen_research", "fit", *COMMON, "--name=reference"],
                               cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and not list((workdir / "runs").rglob("*.ckpt")):
        time.sleep(0.01)
    first_checkpoint = time.monotonic()
    _, err = process.communicate(timeout=900)
    if process.returncode != 0:
        raise RuntimeError(f"reference fit failed: {err[-2000:]}")
    return final_state(workdir, "reference"), first_checkpoint - started, time.monotonic() - first_checkpoint


def trial(workdir: Path, name: str, expected: dict[str, Any], kill_after: float | None = None, write_kill_step: int | None = None,
          from_first_checkpoint: bool = True) -> dict[str, Any]:
    """Kill one run (``kill_after`` s after its first checkpoint, or after its start, or inside the checkpoint write
    of ``write_kill_step``), resume it, compare with the uninterrupted run."""
    extra = [WRITE_KILL.format(write_kill_step)] if write_kill_step is not None else []
    code = fit(workdir, name, *extra, kill_after=kill_after, from_first_checkpoint=from_first_checkpoint)
    folder = run_folder(workdir, name)
    checkpoints = folder / "checkpoints" if folder else None
    names = sorted(p.name for p in checkpoints.iterdir()) if checkpoints and checkpoints.is_dir() else []
    temp_left = [n for n in names if n.startswith(".tmp-")]
    from gen_research.training.run_folder import newest_valid_checkpoint

    newest = newest_valid_checkpoint(folder) if folder else None
    killed_at = torch.load(newest, map_location="cpu", weights_only=True)["global_step"] if newest else None
    if code == -signal.SIGKILL:  # resume; killed before the first checkpoint, start again (a new run folder)
        fit(workdir, name, *(["--ckpt_path=last"] if newest else []))
    try:
        assert_same_training_state(expected, final_state(workdir, name))
        identical = True
    except AssertionError:
        identical = False
    return {"trial": name, "kill_after_s": kill_after, "after_first_checkpoint": from_first_checkpoint and kill_after is not None,
            "write_kill_step": write_kill_step, "killed": code == -signal.SIGKILL,
            "newest_step_at_kill": killed_at, "killed_during_write": bool(temp_left), "identical": identical}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="random-time SIGKILL trials")
    parser.add_argument("--write-kills", type=int, default=5, help="trials killed inside a checkpoint write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="vae")
    parser.add_argument("--workdir", type=Path, default=Path("fault-injection-runs"))
    parser.add_argument("--out", type=Path, default=Path("fault-injection.json"))
    args = parser.parse_args()
    global COMMON
    COMMON = EXPERIMENTS[args.experiment]
    args.workdir.mkdir(parents=True, exist_ok=True)
    from gen_research.config.precision import describe_cpu

    print(f"CPU: {describe_cpu()}", flush=True)
    expected, startup, training = reference(args.workdir)
    print(f"reference run: start-up {startup:.1f} s, training {training:.1f} s, step {expected['global_step']}", flush=True)
    rng = random.Random(args.seed)
    results = []
    for index in range(args.trials):
        # One trial in five is killed during start-up (before any checkpoint), the others while training runs.
        during_startup = index % 5 == 4
        delay = rng.uniform(0.3 * startup, startup) if during_startup else rng.uniform(0, 1.05 * training)
        result = trial(args.workdir, f"kill-{index:02d}", expected, kill_after=delay, from_first_checkpoint=not during_startup)
        results.append(result)
        print(json.dumps(result), flush=True)
    for index in range(args.write_kills):
        result = trial(args.workdir, f"write-kill-{index:02d}", expected, write_kill_step=rng.randint(1, expected["global_step"] - 1))
        results.append(result)
        print(json.dumps(result), flush=True)
    summary = {
        "experiment": args.experiment, "cpu": describe_cpu(), "reference_startup_seconds": round(startup, 1), "reference_training_seconds": round(training, 1), "trials": len(results),
        "killed": sum(r["killed"] for r in results), "killed_during_write": sum(r["killed_during_write"] for r in results),
        "identical": sum(r["identical"] for r in results),
        "kill_steps": sorted({r["newest_step_at_kill"] for r in results if r["newest_step_at_kill"] is not None}),
    }
    print(json.dumps(summary), flush=True)
    args.out.write_text(json.dumps({"summary": summary, "trials": results}, indent=2) + "\n")
    return 0 if summary["identical"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
