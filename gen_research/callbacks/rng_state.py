"""Random number generator state in checkpoints, so a resumed run continues the same random stream."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback

from gen_research.registry import CALLBACKS


def collect_rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python states as tensors and tuples: loadable with weights_only=True."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda_states = states.get("torch.cuda")
    # Resumed on another number of GPUs: keep their fresh seeds rather than guessing a mapping.
    if cuda_states is not None and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


@CALLBACKS.register("rng_state", "saves torch/numpy/python RNG states in checkpoints and restores them on resume")
class RandomStateCheckpoint(Callback):
    """Lightning restores model, optimizer, schedulers and loop counters but not the global RNGs; this does.

    Together with data loaders that do not draw from the global RNG, a resumed run ends with the same
    weights as an uninterrupted one. The CLI adds it to every run.
    """

    def state_dict(self) -> dict[str, Any]:
        return {"rng_states": collect_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng_states" in state_dict:
            restore_rng_states(state_dict["rng_states"])
