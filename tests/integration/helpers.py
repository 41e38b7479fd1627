import os
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback

from gen_research.cli import main

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


def load_state(ckpt: Path, key: str = "state_dict") -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)[key]


def snapshot(root: Path) -> dict:
    """Every file under root with its size and modification time: to prove nothing was overwritten."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


class SimulatedCrash(RuntimeError):
    pass


class CrashAtStep(Callback):
    """Kills training once ``step`` optimizer steps are done and checkpointed, before the next batch: a preemption."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise SimulatedCrash(f"simulated crash at step {trainer.global_step}")
