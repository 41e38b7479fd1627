"""Learning-rate schedules shared by the model families."""

from __future__ import annotations

import math


def lr_lambda(step: int, warmup_steps: int, total_steps: int | None) -> float:
    """Multiplier on the base lr: linear warm-up, then constant (total_steps None) or cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps is None:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
