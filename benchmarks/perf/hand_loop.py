"""The hand-written loop ``fit`` is compared with (benchmarks/perf/training.py): plain PyTorch, no Trainer.

    python benchmarks/perf/hand_loop.py '{"experiment": "ddpm_mnist5k", "steps": 20, "warmup": 3, "device": "cpu",
                                          "precision": "32-true", "model_args": {}}'

The same network, loss, optimizer and schedule as ``fit`` (the family's own ``training_step`` and
``configure_optimizers``, built from the experiment's YAML), the same batch size, with the batches collated once
and held in memory on the device; forward, backward, optional gradient clipping, optimizer and scheduler steps.
Prints one JSON line: start-up (launch to the first step, from $BENCH_LAUNCH_TIME) and steady-state steps/s.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    spec = json.loads(sys.argv[1])
    import torch

    from harness import report
    from perf.build import build, experiment_config
    from perf.step_timer import synchronize

    warnings.filterwarnings("ignore", message=".*self.log.*")  # training_step logs; there is no trainer to log to
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    model, data = build(spec["experiment"], spec.get("model_args"), spec.get("data_args"))
    clip = (experiment_config(spec["experiment"]).get("trainer") or {}).get("gradient_clip_val")
    data.setup("fit")
    batches = [
        {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        for batch in itertools.islice(itertools.cycle(data.train_dataloader()), spec["steps"])
    ]
    model.to(device).train()
    from gen_research.training import optimizers

    # The cosine schedule's length comes from the Trainer's budget (optimizers.schedule_length); there is none here.
    optimizers.schedule_length = lambda module, spec: None if spec.lr_schedule == "constant" else len(batches)
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = (configured.get("lr_scheduler") or {}) if isinstance(configured, dict) else {}
    scheduler = scheduler.get("scheduler") if isinstance(scheduler, dict) else scheduler
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["precision"] == "bf16-mixed")
    first_start, marks = None, []
    for step, batch in enumerate(batches):
        if first_start is None:
            first_start = time.time()
        with autocast:
            loss = model.training_step(batch, step)
        loss = loss["loss"] if isinstance(loss, dict) else loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        synchronize(spec["device"])
        marks.append(time.perf_counter())
    warmup = min(spec["warmup"], len(marks) - 1)
    timed = len(marks) - 1 - warmup
    report({
        "startup_s": first_start - float(os.environ["BENCH_LAUNCH_TIME"]),
        "steps_per_s": timed / (marks[-1] - marks[warmup]) if timed else None,
        "timed_steps": timed,
        "step_s": [b - a for a, b in zip(marks[warmup:], marks[warmup + 1:])],  # per step, as perf/step_timer.py
        "parameters": sum(p.numel() for p in model.parameters()),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
