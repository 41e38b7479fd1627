"""Random number generator state in checkpoints, so a resumed run continues the same random stream."""

from __future__ import annotations

from typing import Any

from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch import Callback

from gen_research.registry import CALLBACKS


@CALLBACKS.register("rng_state", "saves torch/numpy/python RNG states in checkpoints and restores them on resume")
class RandomStateCheckpoint(Callback):
    """Lightning restores model, optimizer, schedulers and loop counters but not the global RNGs; this does.

    Together with data loaders that do not draw from the global RNG, a resumed run ends with the same
    weights as an uninterrupted one. The CLI adds it to every run.
    """

    def state_dict(self) -> dict[str, Any]:
        return {"rng_states": _collect_rng_states(include_cuda=True)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = dict(state_dict.get("rng_states", {}))
        try:
            import torch

            if "torch.cuda" in states and len(states["torch.cuda"]) != torch.cuda.device_count():
                states.pop("torch.cuda")  # resumed on another number of GPUs: keep their fresh seeds
        except Exception:  # pragma: no cover - CUDA queries can fail on broken drivers
            states.pop("torch.cuda", None)
        if states:
            _set_rng_states(states)
