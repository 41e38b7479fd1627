import os
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback

from gen_research.commands.main import main

REPO = Path(__file__).resolve().parents[2]
TEST_CONFIGS = REPO / "tests" / "configs"


def run_in_process(*args: str) -> int:
    """The CLI in this process (no 10 s import per call); SystemExit from --help/--print_config is returned."""
    try:
        return main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)


def run_subprocess(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("GEN_RESEARCH_RUN_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "gen_research", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def only_run_dir(root: Path, experiment: str) -> Path:
    runs = sorted((root / "runs" / experiment).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def last_checkpoint(root: Path, name: str) -> dict:
    """The last.ckpt of the only run of experiment ``name`` under ``root``/runs, loaded."""
    return torch.load(only_run_dir(root, name) / "checkpoints" / "last.ckpt", weights_only=True)


def load_state(ckpt: Path, key: str = "state_dict") -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)[key]


def snapshot(root: Path) -> dict:
    """Every file under root with its size and modification time: to prove nothing was overwritten."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


#: A checkpoint after every batch (a crash loses nothing), and the CLI argument that crashes a run after ``step``
#: checkpointed steps (``CRASH.format(step)``): the resume tests of every family use both.
EVERY_STEP = "--checkpoint.every_n_train_steps=1"
CRASH = '--trainer.callbacks+={{"class_path": "tests.integration.helpers.CrashAtStep", "init_args": {{"step": {}}}}}'


class SimulatedCrash(RuntimeError):
    pass


class CrashAtStep(Callback):
    """Kills training once ``step`` optimizer steps are done and checkpointed, before the next batch: a preemption."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise SimulatedCrash(f"simulated crash at step {trainer.global_step}")


def assert_same_training_state(expected: dict, actual: dict) -> None:
    """Bit-identical training state of two Lightning checkpoints: step counters, EMA and raw weights, every
    optimizer moment, the LR schedule and the global RNG streams."""
    assert actual["global_step"] == expected["global_step"] and actual["epoch"] == expected["epoch"]
    for key in ("state_dict", "current_model_state", "averaging_state"):  # EMA weights, raw weights, EMA counters
        if key in expected or key in actual:
            mismatched = [k for k in expected[key] if not torch.equal(expected[key][k], actual[key][k])]
            assert expected[key].keys() == actual[key].keys() and not mismatched, (key, mismatched[:3])
    for want, got in zip(expected["optimizer_states"], actual["optimizer_states"], strict=True):
        for index, moments in want["state"].items():
            for name, value in moments.items():
                assert torch.equal(value, got["state"][index][name]), (index, name)
    for want, got in zip(expected["lr_schedulers"], actual["lr_schedulers"], strict=True):
        assert want["last_epoch"] == got["last_epoch"] and want["_last_lr"] == got["_last_lr"]
    want_rng = expected["callbacks"]["RandomStateCheckpoint"]["rng_states"]["torch"]
    assert torch.equal(want_rng, actual["callbacks"]["RandomStateCheckpoint"]["rng_states"]["torch"])


class SleepAtStep(Callback):
    """Sleeps after optimizer step ``step`` so that a ``max_time`` budget runs out exactly there (Lightning's Timer
    checks after this callback, at the same step end): a deterministic max_time stop."""

    def __init__(self, step: int, seconds: float) -> None:
        self.step, self.seconds = step, seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            import time

            time.sleep(self.seconds)


class KillDuringWrite(Callback):
    """SIGKILLs the process in the middle of writing the checkpoint of optimizer step ``step``: half of its bytes are
    in the checkpoint IO's temporary file (fsynced), the rename has not happened. A power cut during a save."""

    def __init__(self, step: int) -> None:
        self.step = step

    def setup(self, trainer, pl_module, stage) -> None:
        import io
        import signal

        from gen_research.files.atomic import atomic_open

        checkpoint_io = trainer.strategy.checkpoint_io
        original = checkpoint_io.save_checkpoint

        def save(checkpoint, path, storage_options=None):
            if checkpoint.get("global_step") == self.step:
                buffer = io.BytesIO()
                torch.save(checkpoint, buffer)
                data = buffer.getvalue()
                with atomic_open(path, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
            return original(checkpoint, path, storage_options)

        checkpoint_io.save_checkpoint = save


class CrashBeforeValidation(Callback):
    """Kills training when the validation after optimizer step ``step`` starts: after that step's checkpoint,
    before the epoch end (for the last step of a run: after its final step checkpoint, before training ended)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.global_step >= self.step:
            raise SimulatedCrash(f"simulated crash before the validation at step {trainer.global_step}")
