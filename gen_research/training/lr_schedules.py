"""Learning-rate schedules shared by the model families."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.utilities import rank_zero_warn


def lr_lambda(step: int, warmup_steps: int, total_steps: int | None, shape: str = "cosine", decay_fraction: float = 0.5) -> float:
    """Multiplier on the base lr: linear warm-up, then constant (total_steps None), cosine to 0, or (``shape``
    "linear") constant and then linear to 0 over the last ``decay_fraction`` of the steps after warm-up.

    "linear" is pix2pix/CycleGAN's ``lr_policy linear`` (n_epochs constant + n_epochs_decay linear, 100 + 100: a
    decay fraction of 0.5) and StarGAN's (the last 100k of 200k iterations), per iteration instead of per epoch (the
    same line, without steps), reaching 0 at the last step (the reference stops at 1 / (n_epochs_decay + 1))."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps is None:
        return 1.0
    if shape == "linear":
        decay_steps = max(1, round(decay_fraction * (total_steps - warmup_steps)))
        return min(1.0, max(0.0, (total_steps - step) / decay_steps))
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """``lr_lambda`` as a callable object: LambdaLR saves an object's attributes (not a function's) in its
    state, so a checkpoint records the schedule length it was trained with and a resume can compare."""

    def __init__(self, warmup_steps: int, total_steps: int | None, shape: str = "cosine", decay_fraction: float = 0.5) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.shape = shape
        self.decay_fraction = decay_fraction

    def __call__(self, step: int) -> float:
        return lr_lambda(step, self.warmup_steps, self.total_steps, self.shape, self.decay_fraction)


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR over :class:`WarmupCosine` that keeps the *configured* schedule length on resume, and says so
    when it differs from the checkpoint's.

    The cosine length is derived from the trainer budget (max_steps / max_epochs). A finished run continued
    with a larger budget therefore gets a longer cosine than the one it was trained with: its learning rate
    jumps from the old curve to the new one, and it cannot end with the weights of a run that had the larger
    budget from the start (that run used a different learning rate from step 0). That is inherent in
    budget-derived schedules, so it is announced rather than hidden; a constant schedule resumes exactly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int | None, shape: str = "cosine",
                 decay_fraction: float = 0.5) -> None:
        super().__init__(optimizer, WarmupCosine(warmup_steps, total_steps, shape, decay_fraction))

    def load_state_dict(self, state_dict: dict) -> None:
        configured = [(fn.warmup_steps, fn.total_steps) for fn in self.lr_lambdas]
        shapes = [(fn.shape, fn.decay_fraction) for fn in self.lr_lambdas]
        configured_lrs = list(self.base_lrs)
        super().load_state_dict(state_dict)
        if [float(lr) for lr in self.base_lrs] != [float(lr) for lr in configured_lrs]:
            # Lightning restores the optimizer (and this scheduler) as saved: a new lr in the config has no effect.
            rank_zero_warn(
                f"the configured learning rate {configured_lrs} is not used on resume: training continues with the "
                f"checkpoint's {list(self.base_lrs)} (optimizer state is restored as saved)"
            )
        for fn, (warmup, total), shape in zip(self.lr_lambdas, configured, shapes):
            fn.shape, fn.decay_fraction = shape  # the configured shape (a checkpoint before "linear" has none)
            if fn.total_steps != total:
                old, new = fn(self.last_epoch), lr_lambda(self.last_epoch, warmup, total, *shape)
                rank_zero_warn(
                    f"the {shape[0]} learning-rate schedule was {fn.total_steps} steps long in the checkpoint "
                    f"and is {total} steps with this budget; from step {self.last_epoch} the learning rate follows the "
                    f"{total}-step curve (multiplier {old:.4g} -> {new:.4g}); use lr_schedule: constant for a budget-independent schedule"
                )
            fn.warmup_steps, fn.total_steps = warmup, total
