"""The job half of the SLURM requeue test; tests/slurm/run_requeue_test.sh starts the cluster and runs this.

    SLURM_CONF=... python tests/slurm/check_requeue.py --workdir DIR [--partition P]

1. ``python -m gen_research submit`` a 2-task CPU DDP fit of tests/slurm/tiny_vae_requeue.yaml (60 steps, a
   step checkpoint every 7 steps).
2. Once metrics.csv shows step >= 10: ``scancel --signal=USR1 JOB`` (the signal SLURM sends before the time
   limit, to the job steps). Lightning's SLURMEnvironment handler saves hpc_ckpt_1.ckpt and runs
   ``scontrol requeue JOB``; the requeued job is released at once with ``scontrol update StartTime=now``.
3. Once the restarted job has written a step checkpoint past the HPC checkpoint: ``scontrol requeue JOB``
   with no USR1 (what a node failure or an operator's requeue does): no new HPC checkpoint. The third start
   must resume from the newest checkpoint by global step (checkpoints/last.ckpt), not from the stale
   hpc_ckpt_1.ckpt that Lightning alone would pick, and not from step 0.
4. After the job completes: the log shows three starts (restart 0, 1, 2) restoring hpc_ckpt_1.ckpt, then
   last.ckpt; there is one run folder (runs/<name>/slurm-<jobid>) with the three starts' configs and one W&B
   run id (three offline run folders with that id); last.ckpt is at step 60 with the optimizer, LR scheduler
   and EMA states carried across the restarts.
5. A reference job runs the same fit twice, one ``srun`` after the other, without pauses and uninterrupted:
   the two invocations get two run folders (slurm-<ref> and slurm-<ref>-1) with their own W&B runs, neither
   resumes the other, and both end with exactly the weights (training and EMA) of the interrupted job.
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
CHECKPOINT_EVERY = 7  # step checkpoints (last.ckpt), never at an epoch end (20 batches an epoch)
PACE_ENV = "SLURM_TEST_PACE_S"  # tests/slurm/pacing.py: seconds of pause after each step
# monitor null: Lightning defers a step checkpoint while the monitored val/loss is missing (each start, until its
# first validation); without a monitor they come every CHECKPOINT_EVERY steps from the first.
FIT_OVERRIDES = [f"--checkpoint.every_n_train_steps={CHECKPOINT_EVERY}", "--checkpoint.monitor=null"]


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


def job_env(pace_s: float | None = None) -> dict[str, str]:
    """What the jobs inherit from sbatch (it exports the submitting environment)."""
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE") or "offline", "PYTHONUNBUFFERED": "1",
           "GEN_RESEARCH_IMPORTS": "tests.slurm"}  # the config's test-only PacedSteps callback
    env.pop("GEN_RESEARCH_RUN_DIR", None)
    if pace_s is not None:
        env[PACE_ENV] = str(pace_s)
    return env


def submit_command(name: str, runs_root: Path, partition: str | None, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "gen_research", "submit", "--config", str(CONFIG), "--name", name,
               "--runs_root", str(runs_root), "--tasks-per-node", "2", "--cpus-per-task", "1", "--time", "00:30:00", *extra]
    if partition:
        command += ["--partition", partition]
    return command + FIT_OVERRIDES


def submit(name: str, runs_root: Path, partition: str | None) -> str:
    """``python -m gen_research submit`` the test experiment as a 2-task CPU DDP job; returns the job id."""
    command = submit_command(name, runs_root, partition)
    log("$ python " + " ".join(command[1:]))
    result = subprocess.run(command, cwd=REPO, env=job_env(), capture_output=True, text=True)
    print(result.stdout + result.stderr, end="", flush=True)
    match = re.search(r"Submitted job (\d+)", result.stdout)
    if result.returncode != 0 or not match:
        raise CheckFailed(f"submit failed (exit {result.returncode})")
    return match.group(1)


def submit_two_fits(name: str, runs_root: Path, partition: str | None) -> str:
    """The script ``submit`` writes, with its ``srun ... fit`` line twice (two invocations of the same fit in
    one job), submitted with sbatch and no pauses between steps; returns the job id."""
    result = subprocess.run(submit_command(name, runs_root, partition, "--dry-run"), cwd=REPO, env=job_env(),
                            capture_output=True, text=True)
    lines = result.stdout.splitlines()
    fits = [line for line in lines if line.startswith("srun ")]
    if result.returncode != 0 or len(fits) != 1:
        raise CheckFailed(f"submit --dry-run gave no script with one srun line (exit {result.returncode}): {result.stderr.strip()}")
    script = "\n".join(line if not line.startswith("srun ") else f"{line}\n{line}" for line in lines) + "\n"
    path = runs_root / name / "two-fits.sbatch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    log(f"$ sbatch {path}  (submit's script, its srun fit line twice)")
    out = subprocess.run(["sbatch", str(path)], cwd=REPO, env=job_env(pace_s=0), capture_output=True, text=True, check=True).stdout
    return re.search(r"(\d+)", out).group(1)


def checkpoint_step(path: Path) -> int:
    """The global step of a checkpoint, -1 while it is missing or being written."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:
        return -1


def wait_until_done(job: str, job_log: Path, what: str) -> str:
    def finished() -> str | None:
        state = job_fields(job).get("JobState")
        return state if state and state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED") else None

    state = wait_for(what, finished, 480, job, job_log, poll_s=2)
    log(f"job {job} ended: {state}")
    return state


def release_requeued(job: str, restarts: int, job_log: Path) -> None:
    """Wait for the requeued job (PENDING, Restarts=n); it would wait ~2 min before it may start: release it."""
    def requeued() -> bool:
        fields = job_fields(job)
        return fields.get("JobState") == "PENDING" and int(fields.get("Restarts", "0")) >= restarts

    wait_for(f"the job to be requeued (PENDING, Restarts={restarts})", requeued, 120, job, job_log, poll_s=0.5)
    log(f"job {job} requeued: scontrol update jobid={job} StartTime=now")
    slurm("scontrol", "update", f"jobid={job}", "StartTime=now")


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

    def still_running(what: str) -> None:
        if job_fields(job).get("JobState") not in ("PENDING", "RUNNING", "CONFIGURING"):
            raise CheckFailed(f"job {job} ended before {what} ({job_fields(job).get('JobState')}); job log tail:\n{tail(job_log)}")

    # ---- first start: wait until training is under way, then send what SLURM sends before a time limit
    def training_progress() -> bool:
        still_running("it was signalled")
        return max_logged_step(run_dir / "metrics.csv") >= SIGNAL_AT_STEP

    wait_for(f"step {SIGNAL_AT_STEP} in {run_dir}/metrics.csv", training_progress, 420, job, job_log)
    log(f"job {job} at step {max_logged_step(run_dir / 'metrics.csv')}: scancel --signal=USR1 {job}")
    slurm("scancel", "--signal=USR1", job)
    # ---- Lightning saves hpc_ckpt_1.ckpt and requeues
    release_requeued(job, 1, job_log)

    # ---- second start resumes from it; once it wrote a step checkpoint past it, requeue without USR1
    hpc_step = checkpoint_step(run_dir / "hpc_ckpt_1.ckpt")
    target = (hpc_step // CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY
    if not 0 < hpc_step < target < TOTAL_STEPS:
        raise CheckFailed(f"hpc_ckpt_1.ckpt is at step {hpc_step}: no step checkpoint after it before step {TOTAL_STEPS}")

    def newer_checkpoint() -> bool:
        still_running("it was requeued without USR1")
        return checkpoint_step(run_dir / "checkpoints" / "last.ckpt") >= target

    wait_for(f"last.ckpt at step >= {target} (hpc_ckpt_1.ckpt is at {hpc_step})", newer_checkpoint, 420, job, job_log, poll_s=0.3)
    log(f"job {job} wrote last.ckpt at step {checkpoint_step(run_dir / 'checkpoints' / 'last.ckpt')}: "
        f"scontrol requeue {job} (no USR1: no HPC checkpoint)")
    slurm("scontrol", "requeue", job)
    release_requeued(job, 2, job_log)
    final_state = wait_until_done(job, job_log, "the twice-requeued job to finish")

    # ---- the same fit twice in one job, not interrupted: two run folders, and the reference for the weights
    reference = submit_two_fits(REFERENCE_NAME, runs_root, args.partition)
    reference_log = runs_root / REFERENCE_NAME / f"slurm-{reference}.log"
    reference_state = wait_until_done(reference, reference_log, "the uninterrupted two-fit reference job to finish")
    return check_results(job, final_state, job_log, experiment, run_dir, reference, reference_state, runs_root / REFERENCE_NAME)


def equal_weights(a: dict, b: dict) -> list[str]:
    """The tensors (training and EMA weights) in which two checkpoints differ."""
    return [f"{part}:{key}" for part in ("current_model_state", "state_dict")
            for key in a[part] if key not in b[part] or not torch.equal(a[part][key], b[part][key])]


def check_results(job: str, final_state: str, job_log: Path, experiment: Path, run_dir: Path, reference: str,
                  reference_state: str, reference_experiment: Path) -> int:
    text = job_log.read_text(errors="replace") if job_log.is_file() else ""
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append((name, bool(ok), detail))

    check("job completed", final_state == "COMPLETED", final_state)
    starts = re.findall(rf"job {job} restart (\d+) on", text)
    check("job ran three times: restart 0, 1, 2 (SLURM_RESTART_COUNT)", starts == ["0", "1", "2"], f"starts {starts}")
    check("USR1 handled by Lightning's SLURM auto-requeue, once", "Handling auto-requeue signal" in text
          and text.count(f"Requeued SLURM job: {job}") == 1, "log lines 'Handling auto-requeue signal' and 'Requeued SLURM job'")
    hpc, last = run_dir / "hpc_ckpt_1.ckpt", run_dir / "checkpoints" / "last.ckpt"
    restored = [Path(path) for path in re.findall(r"Restoring states from the checkpoint path at (\S+)", text)]
    check("restart 1 restored the HPC checkpoint", restored[:1] == [hpc], f"restored {restored}")
    check("restart 2 (requeued without USR1) restored the newest checkpoint, checkpoints/last.ckpt, not the stale HPC one",
          restored[1:] == [last], f"restored {restored}")
    hpc_step = checkpoint_step(hpc)
    resumed = re.findall(rf"SLURM job {job} restart (\d+): resuming from (\S+) \(step (\d+)\)", text)
    check("restart 2 resumed at a later step than the HPC checkpoint's", len(resumed) == 2 and resumed[1][0] == "2"
          and int(resumed[1][2]) > hpc_step, f"resumed {resumed}, hpc_ckpt_1.ckpt at step {hpc_step}")
    check("no second HPC checkpoint (the requeue sent no USR1)", sorted(p.name for p in run_dir.glob("hpc_ckpt_*")) == [hpc.name],
          f"{sorted(p.name for p in run_dir.glob('hpc_ckpt_*'))}")
    folders = sorted(p.name for p in experiment.iterdir() if p.is_dir())
    check("one run folder, named after the job", folders == [f"slurm-{job}"], f"{experiment}: {folders}")
    configs = sorted(p.name for p in run_dir.glob("config*.yaml"))
    check("all three starts wrote into it", configs == ["config.resume-1.yaml", "config.resume-2.yaml", "config.yaml"], f"configs {configs}")
    summaries = re.findall(r"config used:\s+(\S+)", text)
    check("the last start's run summary names its config", summaries[-1:] == [str(run_dir / "config.resume-2.yaml")],
          f"config used: {summaries[-1:]}")

    id_file = run_dir / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    wandb_runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    check("one W&B run id, continued by both restarts", run_id is not None and len(wandb_runs) == 3 and all(n.endswith(f"-{run_id}") for n in wandb_runs),
          f"id {run_id}, offline runs {wandb_runs}")
    check("HPC checkpoint written mid-training", SIGNAL_AT_STEP <= hpc_step < TOTAL_STEPS, f"{hpc.name} at step {hpc_step}")

    final = torch.load(last, map_location="cpu", weights_only=False) if last.is_file() else None
    if final is not None:
        step = final["global_step"]
        check(f"last.ckpt at the full {TOTAL_STEPS} steps", step == TOTAL_STEPS, f"global_step {step}")
        adam_steps = {int(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
        check("optimizer state carried over (Adam step count = total steps)", adam_steps == {TOTAL_STEPS}, f"Adam steps {adam_steps}")
        schedulers = final.get("lr_schedulers") or []
        check("LR scheduler state carried over", all(s.get("last_epoch") == TOTAL_STEPS for s in schedulers),
              f"last_epoch {[s.get('last_epoch') for s in schedulers]}")
        averaged = int(final.get("averaging_state", {}).get("n_averaged", -1))
        check("EMA state carried over (updates = total steps)", averaged == TOTAL_STEPS and "current_model_state" in final,
              f"n_averaged {averaged}")
    else:
        check(f"last.ckpt at the full {TOTAL_STEPS} steps", False, f"no {last}")
    logged = max_logged_step(run_dir / "metrics.csv")
    check("metrics.csv continued to the last step", logged >= TOTAL_STEPS - 1, f"last logged step {logged}")

    # ---- the reference job: the same fit twice in one job
    reference_text = (reference_experiment / f"slurm-{reference}.log").read_text(errors="replace") \
        if (reference_experiment / f"slurm-{reference}.log").is_file() else ""
    check("reference job (two fits) completed", reference_state == "COMPLETED", reference_state)
    ref_folders = sorted(p.name for p in reference_experiment.iterdir() if p.is_dir()) if reference_experiment.is_dir() else []
    check("two fits in one job: two run folders", ref_folders == [f"slurm-{reference}", f"slurm-{reference}-1"], f"{ref_folders}")
    ids = [(reference_experiment / f / "wandb_run_id").read_text().strip() if (reference_experiment / f / "wandb_run_id").is_file() else None
           for f in ref_folders]
    check("each fit its own W&B run", len(ids) == 2 and None not in ids and ids[0] != ids[1], f"ids {ids}")
    check("neither fit resumed anything", "Restoring states" not in reference_text and reference_text.count("Run folder:") == 2,
          f"{reference_text.count('Restoring states')} restores, {reference_text.count('Run folder:')} run summaries")
    for folder in ref_folders:
        ref_last = reference_experiment / folder / "checkpoints" / "last.ckpt"
        if final is None or not ref_last.is_file():
            check(f"same weights as {folder} (uninterrupted)", False, f"{ref_last} or {last} missing")
            continue
        ref = torch.load(ref_last, map_location="cpu", weights_only=False)
        differing = equal_weights(ref, final)
        check(f"same weights (training and EMA) as {folder}, uninterrupted, at step {ref['global_step']}",
              not differing and ref["global_step"] == TOTAL_STEPS,
              f"{len(differing)} tensors differ, e.g. {differing[:2]}" if differing else f"{len(ref['state_dict'])} tensors equal")

    for name, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f"  [{detail}]" if detail else ""))
    failed = [name for name, ok, _ in checks if not ok]
    if failed:
        print(f"job log {job_log}, last lines:\n{tail(job_log, 60)}")
        print(f"FAIL slurm requeue test: {len(failed)} of {len(checks)} checks failed")
        return 1
    evidence = [line for line in text.splitlines()
                if re.search(r"^job \d+ restart|Handling auto-requeue|Requeued SLURM job|Restoring states from|resuming from|max_steps=\d+. reached", line)]
    print("Job log lines that show it:\n" + "\n".join(f"  | {line}" for line in evidence))
    print(f"PASS slurm requeue test: job {job} was signalled (USR1) and checkpointed at step {hpc_step}, requeued, resumed from "
          f"{hpc.name}, requeued again without USR1 and resumed from {last.name} (step {resumed[1][2]}), and finished at step "
          f"{TOTAL_STEPS} in {run_dir} with the weights of an uninterrupted run; the same fit twice in job {reference} got "
          f"two run folders ({len(checks)} checks)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckFailed, subprocess.CalledProcessError) as error:
        detail = error.stderr.strip() if isinstance(error, subprocess.CalledProcessError) and error.stderr else ""
        print(f"FAIL slurm requeue test: {error} {detail}".rstrip(), flush=True)
        sys.exit(1)
