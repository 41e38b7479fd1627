"""The job half of the SLURM requeue test; tests/slurm/run_requeue_test.sh starts the cluster and runs this.

    SLURM_CONF=... python tests/slurm/check_requeue.py --workdir DIR [--partition P]

1. ``python -m gen_research submit`` a 2-task CPU DDP fit of tests/slurm/tiny_vae_requeue.yaml (60 steps).
2. Once metrics.csv shows step >= 10: ``scancel --signal=USR1 JOB`` (the signal SLURM sends before the time
   limit, to the job steps). Lightning's SLURMEnvironment handler saves hpc_ckpt_1.ckpt and runs
   ``scontrol requeue JOB``; the requeued job is released at once with ``scontrol update StartTime=now``.
3. After the job completes: the log shows two starts (restart 0 and restart 1) and the restore from the HPC
   checkpoint; there is one run folder (runs/<name>/slurm-<jobid>) with both starts' configs and one W&B run
   id (two offline run folders with that id); last.ckpt is at step 60 with the optimizer, LR scheduler and
   EMA states carried across the restart.
4. The same job submitted again and left alone ends with exactly the same weights (training and EMA).
Prints PASS or FAIL lines; exit status 1 on failure.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "slurm" / "tiny_vae_requeue.yaml"
NAME = "slurm_requeue"
REFERENCE_NAME = "slurm_reference"
TOTAL_STEPS = 60  # trainer.max_steps in the config
SIGNAL_AT_STEP = 10


class CheckFailed(AssertionError):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def job_fields(job: str) -> dict[str, str]:
    """``scontrol show job`` as key=value pairs ({} once the job is gone)."""
    result = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True)
    if result.returncode != 0:
        return {}
    return dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)


def wait_for(what: str, condition, timeout_s: float, job: str, job_log: Path, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    state = job_fields(job)
    raise CheckFailed(f"timed out after {timeout_s:.0f} s waiting for {what} (job state {state.get('JobState')}, "
                      f"reason {state.get('Reason')}); job log tail:\n{tail(job_log)}")


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else f"(no {path})"


def max_logged_step(metrics: Path) -> int:
    if not metrics.is_file():
        return -1
    with metrics.open(newline="") as file:
        steps = [int(float(row["step"])) for row in csv.DictReader(file) if row.get("step")]
    return max(steps, default=-1)


def submit(name: str, runs_root: Path, partition: str | None) -> str:
    """``python -m gen_research submit`` the test experiment as a 2-task CPU DDP job; returns the job id."""
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE") or "offline", "PYTHONUNBUFFERED": "1"}
    env.pop("GEN_RESEARCH_RUN_DIR", None)
    command = [sys.executable, "-m", "gen_research", "submit", "--config", str(CONFIG), "--name", name,
               "--runs_root", str(runs_root), "--tasks-per-node", "2", "--cpus-per-task", "1", "--time", "00:30:00"]
    if partition:
        command += ["--partition", partition]
    log("$ python " + " ".join(command[1:]))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    print(result.stdout + result.stderr, end="", flush=True)
    match = re.search(r"Submitted job (\d+)", result.stdout)
    if result.returncode != 0 or not match:
        raise CheckFailed(f"submit failed (exit {result.returncode})")
    return match.group(1)


def wait_until_done(job: str, job_log: Path, what: str) -> str:
    def finished() -> str | None:
        state = job_fields(job).get("JobState")
        return state if state and state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED") else None

    state = wait_for(what, finished, 480, job, job_log, poll_s=2)
    log(f"job {job} ended: {state}")
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="temp folder; runs go to WORKDIR/runs")
    parser.add_argument("--partition")
    args = parser.parse_args()
    runs_root = args.workdir / "runs"

    job = submit(NAME, runs_root, args.partition)
    experiment = runs_root / NAME
    job_log = experiment / f"slurm-{job}.log"
    run_dir = experiment / f"slurm-{job}"

    # ---- first start: wait until training is under way, then send what SLURM sends before a time limit
    def training_progress() -> bool:
        if not job_fields(job).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"):
            raise CheckFailed(f"job {job} ended before it was signalled ({job_fields(job).get('JobState')}); "
                              f"job log tail:\n{tail(job_log)}")
        return max_logged_step(run_dir / "metrics.csv") >= SIGNAL_AT_STEP

    wait_for(f"step {SIGNAL_AT_STEP} in {run_dir}/metrics.csv", training_progress, 420, job, job_log)
    log(f"job {job} at step {max_logged_step(run_dir / 'metrics.csv')}: scancel --signal=USR1 {job}")
    slurm("scancel", "--signal=USR1", job)

    # ---- Lightning saves hpc_ckpt_1.ckpt and requeues; the requeued job would wait ~2 min: release it
    def requeued() -> bool:
        fields = job_fields(job)
        return fields.get("JobState") == "PENDING" and int(fields.get("Restarts", "0")) >= 1

    wait_for("the job to be requeued (PENDING, Restarts=1)", requeued, 120, job, job_log, poll_s=0.5)
    log(f"job {job} requeued: scontrol update jobid={job} StartTime=now")
    slurm("scontrol", "update", f"jobid={job}", "StartTime=now")
    final_state = wait_until_done(job, job_log, "the restarted job to finish")

    # ---- the same job, not interrupted: the reference for the final weights
    reference = submit(REFERENCE_NAME, runs_root, args.partition)
    reference_log = runs_root / REFERENCE_NAME / f"slurm-{reference}.log"
    reference_state = wait_until_done(reference, reference_log, "the uninterrupted reference job to finish")
    reference_ckpt = runs_root / REFERENCE_NAME / f"slurm-{reference}" / "checkpoints" / "last.ckpt"
    return check_results(job, final_state, job_log, experiment, run_dir, reference_state, reference_ckpt)


def check_results(job: str, final_state: str, job_log: Path, experiment: Path, run_dir: Path, reference_state: str,
                  reference_ckpt: Path) -> int:
    text = job_log.read_text(errors="replace") if job_log.is_file() else ""
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append((name, bool(ok), detail))

    check("job completed", final_state == "COMPLETED", final_state)
    starts = re.findall(rf"job {job} restart (\d+) on", text)
    check("job ran twice: restart 0, then restart 1 (SLURM_RESTART_COUNT)", starts == ["0", "1"], f"starts {starts}")
    check("USR1 handled by Lightning's SLURM auto-requeue", "Handling auto-requeue signal" in text and f"Requeued SLURM job: {job}" in text,
          "log lines 'Handling auto-requeue signal' and 'Requeued SLURM job'")
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    restored = re.search(r"Restoring states from the checkpoint path at (\S+)", text)
    check("restart restored the HPC checkpoint", restored is not None and Path(restored.group(1)) == hpc,
          restored.group(0) if restored else "no 'Restoring states' line")
    folders = sorted(p.name for p in experiment.iterdir() if p.is_dir())
    check("one run folder, named after the job", folders == [f"slurm-{job}"], f"{experiment}: {folders}")
    configs = sorted(p.name for p in run_dir.glob("config*.yaml"))
    check("both starts wrote into it", configs == ["config.resume-1.yaml", "config.yaml"], f"configs {configs}")

    summaries = re.findall(r"config used:\s+(\S+)", text)
    check("restart's run summary names its config", summaries[-1:] == [str(run_dir / "config.resume-1.yaml")], f"config used: {summaries[-1:]}")

    id_file = run_dir / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    wandb_runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    check("one W&B run id, continued by the restart", run_id is not None and len(wandb_runs) == 2 and all(n.endswith(f"-{run_id}") for n in wandb_runs),
          f"id {run_id}, offline runs {wandb_runs}")

    hpc_step = -1
    if hpc.is_file():
        hpc_step = torch.load(hpc, map_location="cpu", weights_only=False)["global_step"]
    check("HPC checkpoint written mid-training", SIGNAL_AT_STEP <= hpc_step < TOTAL_STEPS, f"{hpc.name} at step {hpc_step}")
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        step = ckpt["global_step"]
        check(f"last.ckpt at the full {TOTAL_STEPS} steps", step == TOTAL_STEPS, f"global_step {step}")
        adam_steps = {int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
        check("optimizer state carried over (Adam step count = total steps)", adam_steps == {TOTAL_STEPS}, f"Adam steps {adam_steps}")
        schedulers = ckpt.get("lr_schedulers") or []
        check("LR scheduler state carried over", all(s.get("last_epoch") == TOTAL_STEPS for s in schedulers),
              f"last_epoch {[s.get('last_epoch') for s in schedulers]}")
        averaged = int(ckpt.get("averaging_state", {}).get("n_averaged", -1))
        check("EMA state carried over (updates = total steps)", averaged == TOTAL_STEPS and "current_model_state" in ckpt,
              f"n_averaged {averaged}")
        if reference_state == "COMPLETED" and reference_ckpt.is_file():
            reference = torch.load(reference_ckpt, map_location="cpu", weights_only=False)
            differing = [f"{part}:{key}" for part in ("current_model_state", "state_dict")
                         for key in reference[part] if key not in ckpt[part] or not torch.equal(reference[part][key], ckpt[part][key])]
            check("same weights (training and EMA) as the uninterrupted reference job", not differing,
                  f"{len(differing)} tensors differ, e.g. {differing[:2]}" if differing else f"{len(reference['state_dict'])} tensors equal")
        else:
            check("same weights (training and EMA) as the uninterrupted reference job", False, f"reference job {reference_state}, {reference_ckpt}")
    else:
        check(f"last.ckpt at the full {TOTAL_STEPS} steps", False, f"no {last}")
    logged = max_logged_step(run_dir / "metrics.csv")
    check("metrics.csv continued to the last step", logged >= TOTAL_STEPS - 1, f"last logged step {logged}")

    for name, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f"  [{detail}]" if detail else ""))
    failed = [name for name, ok, _ in checks if not ok]
    if failed:
        print(f"job log {job_log}, last lines:\n{tail(job_log, 60)}")
        print(f"FAIL slurm requeue test: {len(failed)} of {len(checks)} checks failed")
        return 1
    evidence = [line for line in text.splitlines()
                if re.search(r"^job \d+ restart|Handling auto-requeue|Requeued SLURM job|Restoring states from|max_steps=\d+. reached", line)]
    print("Job log lines that show it:\n" + "\n".join(f"  | {line}" for line in evidence))
    print(f"PASS slurm requeue test: job {job} was signalled at step {hpc_step}, requeued, resumed from {hpc.name} "
          f"in {run_dir} and finished at step {TOTAL_STEPS} with the weights of an uninterrupted run ({len(checks)} checks)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckFailed, subprocess.CalledProcessError) as error:
        detail = error.stderr.strip() if isinstance(error, subprocess.CalledProcessError) and error.stderr else ""
        print(f"FAIL slurm requeue test: {error} {detail}".rstrip(), flush=True)
        sys.exit(1)
