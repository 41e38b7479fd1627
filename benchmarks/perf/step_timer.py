"""A callback for benchmarks/perf/training.py: when the first training batch starts (start-up, measured from the
launch time the parent passes in $BENCH_LAUNCH_TIME) and the steady-state steps/s after ``warmup`` steps.
Loaded by ``fit`` through $GEN_RESEARCH_IMPORTS=perf.step_timer (a user module, as docs/security.md describes)."""

from __future__ import annotations

import json
import os
import time

from lightning.pytorch import Callback


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class StepTimer(Callback):
    def __init__(self, warmup: int = 3, out: str = "timing.json") -> None:
        self.warmup, self.out = warmup, out
        self.first_start: float | None = None
        self.marks: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_start is None:
            self.first_start = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(str(pl_module.device))
        self.marks[trainer.global_step] = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        steps = sorted(self.marks)
        first, last = steps[min(self.warmup, len(steps) - 1)], steps[-1]
        timed = last - first
        result = {
            "startup_s": self.first_start - float(os.environ["BENCH_LAUNCH_TIME"]),
            "steps_per_s": timed / (self.marks[last] - self.marks[first]) if timed else None,
            "timed_steps": timed,
            # per timed step: the median step is robust to another process's burst on a shared machine
            "step_s": [self.marks[b] - self.marks[a] for a, b in zip(steps, steps[1:]) if a >= first],
        }
        with open(self.out, "w") as handle:
            json.dump(result, handle)
