"""Where a run writes its files, and how a resumed run finds its folder again.

Layout: ``<runs_root>/<experiment>/<run id>/`` holding ``config.yaml``, ``checkpoints/``, ``samples/``,
``metrics.csv`` and ``wandb/``. Every new ``fit`` gets a new folder, so nothing of an earlier run is ever
overwritten; ``fit --ckpt_path last`` (or a checkpoint inside a run folder) continues in that run's folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from gen_research.files.atomic import atomic_write_text, file_lock
from gen_research.errors import GenResearchError
from gen_research.files.safe_load import load_plain

# Set by the launching process so that DDP worker processes (which re-run the command) use the same folder.
RUN_DIR_ENV = "GEN_RESEARCH_RUN_DIR"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
# Folders made by this process, so that a command failing on user input can remove them if still empty.
CREATED_RUN_DIRS: list[Path] = []


# ------------------------------------------------------------------------------------------ SLURM
# Inside a SLURM job several processes ask for a run folder, and they must be told apart:
#   * the tasks of one multi-task step (``srun --ntasks=2 ... fit``: every task runs the command itself) must all
#     get the same folder, whoever asks first;
#   * every other invocation (a second ``fit`` or ``sample`` in the job script, sequential or concurrent) gets a
#     new folder, so nothing of the first is overwritten and each fit has its own checkpoints and W&B run;
#   * a requeued job (same job id, SLURM_RESTART_COUNT > 0) runs its script again: its n-th invocation of a
#     command (the same subcommand and arguments) gets the folder of the first run's n-th invocation of it,
#     so that it resumes there.
# An invocation is identified by (start of the job, step, command, j) where the start is SLURM_RESTART_COUNT
# (0 or unset on the first start), the step SLURM_STEP_ID ("batch" in the job script itself), the command a hash
# of the subcommand and arguments, and j how many times this task (SLURM_PROCID) already ran that command in that
# step. Tasks of one step compute the same identity; the folder it maps to is kept in a small record in the
# experiment folder, ``.slurm-<job>.invocations.json``, read and rewritten atomically under a file lock.
# Where Slurm (>= 23.02) sets SLURM_JOB_START_TIME, a first start (restart 0) with another start time than the
# recorded one is a job id reused after the controller's state was wiped: it maps nothing to the old folders.
SLURM_RECORD = ".slurm-{job}.invocations.json"


def _slurm_job() -> str | None:
    """The job's name for folders: ``<jobid>``, or ``<array job id>_<task>`` in a job array; None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"{array_job}_{task}" if task else array_job
    return os.environ.get("SLURM_JOB_ID") or None


def slurm_restart_count() -> int:
    """0 on a job's first start, n after its n-th requeue (SLURM_RESTART_COUNT, unset on the first start)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def _run_id(subcommand: str) -> str:
    """The first choice of folder name: ``slurm-<job>`` inside a SLURM job, else the time; ``-<subcommand>``
    added for commands other than fit. A taken name gets ``-1``, ``-2``, ... (see ``new_run_dir``)."""
    job = _slurm_job()
    run_id = f"slurm-{job}" if job else time.strftime("%Y%m%d-%H%M%S")
    return run_id if subcommand == "fit" else f"{run_id}-{subcommand}"


def new_run_dir(runs_root: Path, experiment: str, subcommand: str, invocation: Sequence[str] | None = None) -> Path:
    """Create (and so reserve) a fresh run folder; never returns one that already has files, except inside a
    SLURM job to the other tasks of the same step and to the requeue of the same invocation (see above).
    ``invocation``: the command's arguments, which tell invocations apart (default: this process's sys.argv)."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return Path(inherited)
    base = runs_root / experiment / _run_id(subcommand)
    job = _slurm_job()
    if job:
        return _slurm_run_dir(base, job, [subcommand, *(sys.argv[1:] if invocation is None else invocation)])
    return _create_unique(base)


def _create_unique(base: Path) -> Path:
    candidate, suffix = base, 1
    while True:
        missing_parents = [p for p in base.parents if not p.exists()]  # deepest first: removed after a user error too
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            CREATED_RUN_DIRS.extend([candidate, *missing_parents])
            return candidate
        except FileExistsError:
            candidate = base.with_name(f"{base.name}-{suffix}")
            suffix += 1


def _slurm_run_dir(base: Path, job: str, command: list[str]) -> Path:
    key = hashlib.sha256(json.dumps(command).encode()).hexdigest()[:16]
    restart, started = slurm_restart_count(), os.environ.get("SLURM_JOB_START_TIME", "")
    start = f"{restart}@{started}" if started else str(restart)
    step = os.environ.get("SLURM_STEP_ID") or "batch"
    task = os.environ.get("SLURM_PROCID") or "0"
    record_path = base.parent / SLURM_RECORD.format(job=job)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(record_path):
            record = json.loads(record_path.read_text()) if record_path.is_file() else {}
            if restart == 0 and record.get("first_start") != start:  # a new job (or its id reused): nothing to map
                record = {"job": job, "first_start": start, "commands": {}, "folders": {}, "starts": {}}
            this_start = record["starts"].setdefault(start, {"ran": {}, "claims": {}})
            counter = f"{step}/{task}/{key}"
            repeat = this_start["ran"].get(counter, 0)  # this task's earlier runs of the command in this step
            this_start["ran"][counter] = repeat + 1
            claims = this_start["claims"].setdefault(key, {})
            instance = f"{step}/{repeat}"
            name = claims.get(instance)  # set by another task of this step
            if name is None:
                folders = record["folders"].setdefault(key, [])
                n = len(claims)  # this is the n-th invocation of the command in this start of the job
                name = folders[n] if n < len(folders) else _create_unique(base).name  # a requeue: the earlier start's n-th
                if n >= len(folders):
                    folders.append(name)
                claims[instance] = name
                record["commands"][key] = command
            atomic_write_text(record_path, json.dumps(record, indent=1) + "\n")
    except ValueError:  # not JSON: edited by hand
        raise GenResearchError(
            f"{record_path} is damaged (not JSON); move it away (this job's invocations then get new run folders)"
        ) from None
    except OSError as error:
        raise GenResearchError(
            f"cannot record this SLURM invocation in {record_path} ({error.strerror or error}); --runs_root must be a "
            "writable folder on a filesystem with file locks (flock), shared by all nodes of the job"
        ) from None
    run_dir = base.parent / name
    if not run_dir.is_dir():  # another task created and then removed it after a user error
        run_dir.mkdir(parents=True, exist_ok=True)
        CREATED_RUN_DIRS.append(run_dir)
    return run_dir


def remove_empty_run_dirs(since: int = 0) -> None:
    """After a user error: remove the folders this process created (from index ``since``) if still empty."""
    for run_dir in CREATED_RUN_DIRS[since:]:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
    del CREATED_RUN_DIRS[since:]


def run_dir_of_checkpoint(ckpt_path: Path) -> Path | None:
    """The run folder a checkpoint lives in (``<run>/checkpoints/x.ckpt``), if it is one of ours."""
    if ckpt_path.parent.name == CHECKPOINT_DIR:
        return ckpt_path.parent.parent
    return None


def checkpoint_files(run_dir: Path) -> list[Path]:
    """Every checkpoint a run folder holds, whatever Lightning named it: ``checkpoints/*.ckpt`` (``last.ckpt``,
    ``last-v1.ckpt``, ``best-*.ckpt``, step checkpoints) and SLURM's ``hpc_ckpt_*.ckpt`` in the folder itself."""
    found = list((run_dir / CHECKPOINT_DIR).glob("*.ckpt")) + list(run_dir.glob("hpc_ckpt_*.ckpt"))
    return [path for path in found if path.is_file()]


def _global_step(path: Path) -> tuple[int | None, str]:
    """The checkpoint's global step, or None and why it cannot be used (damaged, foreign, or needing pickled
    objects, which are never unpickled)."""
    try:
        checkpoint = load_plain(path, "checkpoint", mmap=True)
        return int(checkpoint["global_step"]), ""
    except GenResearchError:
        return None, "holds pickled Python objects and is not loaded (loading it could execute code)"
    except Exception:  # torch raises many types for a damaged file
        return None, "cannot be read (truncated or damaged)"


def newest_valid_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of ``run_dir`` with the highest global step (ties: the one written last), or None if it
    has none. An unusable checkpoint written after it (a truncated copy, a damaged disk, a foreign file) is never
    silently skipped: that is an error naming both files, so the user decides."""
    readable: list[tuple[int, int, Path]] = []
    unusable: list[tuple[int, Path, str]] = []
    for path in checkpoint_files(run_dir):
        mtime = path.stat().st_mtime_ns
        step, problem = _global_step(path)
        if step is None:
            unusable.append((mtime, path, problem))
        else:
            readable.append((step, mtime, path))
    best = max(readable, default=None, key=lambda item: (item[0], item[1]))
    newer_unusable = [(path, problem) for mtime, path, problem in sorted(unusable, key=lambda item: item[0])
                      if best is None or mtime > best[1]]
    if newer_unusable:
        path, problem = newer_unusable[-1]
        offer = f"the newest valid one is {best[2]} (step {best[0]}): pass --ckpt_path {best[2]}" if best else "no valid checkpoint remains in this run"
        raise GenResearchError(f"checkpoint {path} {problem}; {offer}, or move that file away")
    return best[2] if best else None


def find_last_checkpoint(runs_root: Path, experiment: str) -> Path:
    """``--ckpt_path last``: the newest valid checkpoint (by global step) of the experiment's latest run, the
    run whose checkpoints were written last."""
    run = latest_run(runs_root / experiment)
    if run is None:
        raise GenResearchError(
            f"--ckpt_path last: no checkpoint under {runs_root / experiment}/*/{CHECKPOINT_DIR}; "
            "run fit without --ckpt_path first, or pass a checkpoint file"
        )
    newest = newest_valid_checkpoint(run)
    assert newest is not None  # the run has checkpoint files: a valid one, or newest_valid_checkpoint raised
    return newest


def find_best_checkpoint(runs_root: Path, experiment: str) -> Path:
    """``--ckpt_path best``: the best checkpoint (by the monitored metric) of the experiment's latest run, as its
    newest checkpoint's ModelCheckpoint state records it."""
    newest = find_last_checkpoint(runs_root, experiment)
    checkpoint = load_plain(newest, "checkpoint", mmap=True)
    recorded = [state.get("best_model_path") for name, state in (checkpoint.get("callbacks") or {}).items()
                if name.startswith("ModelCheckpoint") and isinstance(state, dict)]
    run_dir = run_dir_of_checkpoint(newest) or newest.parent
    for path in filter(None, recorded):
        candidate = run_dir / CHECKPOINT_DIR / Path(path).name  # the run folder may be named another way now
        if candidate.is_file():
            return candidate
    raise GenResearchError(
        f"--ckpt_path best: {run_dir} records no best checkpoint that still exists (set checkpoint.monitor and "
        "save_top_k >= 1 when training); pass --ckpt_path last or a checkpoint file"
    )


def resolve_checkpoint_name(ckpt_path: str, runs_root: Path, experiment: str) -> Path:
    """``last`` and ``best`` as every command reads them (the experiment's latest run); any other value is a path."""
    if ckpt_path == "last":
        return find_last_checkpoint(runs_root, experiment)
    if ckpt_path == "best":
        return find_best_checkpoint(runs_root, experiment)
    return Path(ckpt_path)


# ---- the finished-fit record (two-stage experiments reuse a finished stage: gen_research/config/stages.py) ----------
FIT_MARKER = "fit-finished.json"


def write_fit_marker(run_dir: Path, checkpoint: Path | None, global_step: int, digest: str) -> Path:
    """Record a finished fit in ``<run_dir>/fit-finished.json`` (atomically); the checkpoint relative to the run."""
    if checkpoint is not None:
        with contextlib.suppress(ValueError):
            checkpoint = checkpoint.resolve().relative_to(run_dir.resolve())
    record = {"checkpoint": None if checkpoint is None else str(checkpoint), "global_step": int(global_step),
              "config_digest": digest, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = run_dir / FIT_MARKER
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def read_fit_marker(run_dir: Path) -> dict[str, Any] | None:
    """The finished-fit record of a run folder, None when it has none (or an unreadable one: not finished)."""
    try:
        record = json.loads((run_dir / FIT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "config_digest" in record else None


def marker_checkpoint(run_dir: Path, record: dict[str, Any]) -> Path | None:
    """The final checkpoint a finished-fit record names, if it still exists."""
    name = record.get("checkpoint")
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() else run_dir / name
    return path if path.is_file() else None


def latest_run(experiment_dir: Path) -> Path | None:
    """The run of an experiment whose checkpoints were written last (the run ``--ckpt_path last`` reads)."""
    newest: dict[Path, int] = {}
    for run in experiment_dir.glob("*"):
        found = checkpoint_files(run) if run.is_dir() else []
        if found:
            newest[run] = max(path.stat().st_mtime_ns for path in found)
    return max(newest, key=newest.__getitem__) if newest else None


def read_checkpoint(ckpt_path: Path) -> dict[str, Any]:
    """Load a Lightning checkpoint on CPU, or say in one line why it cannot be used."""
    if not ckpt_path.is_file():
        raise GenResearchError(
            f"checkpoint not found: {ckpt_path}; pass an existing .ckpt file, or --ckpt_path last to resume the latest run"
        )
    try:
        checkpoint = load_plain(ckpt_path, "checkpoint", mmap=True)  # weights_only: never runs code from the file
    except GenResearchError:  # it needs pickled objects: refused, named
        raise
    except Exception as error:  # a truncated or foreign file; torch raises many types here
        raise GenResearchError(f"cannot read checkpoint {ckpt_path} ({type(error).__name__}); is it a Lightning .ckpt file?") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise GenResearchError(f"{ckpt_path} is not a Lightning checkpoint (no state_dict); pass a .ckpt written by fit")
    return checkpoint


def check_checkpoint_matches(checkpoint: dict[str, Any], ckpt_path: Path, model: torch.nn.Module, model_class_path: str) -> None:
    """Refuse a checkpoint of another model (class, missing keys or other shapes) before anything runs."""
    saved_class = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if saved_class and saved_class != model_class_path:
        raise GenResearchError(
            f"checkpoint {ckpt_path} was written by model {saved_class}, but the config builds {model_class_path}; "
            "use a checkpoint of this experiment or change model.class_path"
        )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if hasattr(v, "shape")}
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(saved) if expected[k] != saved[k])
    if missing or unexpected or reshaped:
        if reshaped:
            key = reshaped[0]
            detail = f"{key} has shape {saved[key]} in the checkpoint but {expected[key]} in the model"
        elif missing:
            detail = f"{len(missing)} weights missing from the checkpoint, e.g. {missing[0]}"
        else:
            detail = f"{len(unexpected)} weights in the checkpoint the model lacks, e.g. {unexpected[0]}"
        raise GenResearchError(
            f"checkpoint {ckpt_path} does not match the configured model: {detail}; "
            "use the config the checkpoint was trained with (its run folder's config.yaml)"
        )
