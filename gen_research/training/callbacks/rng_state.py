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


def distinct_rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s training stream: rank 0 keeps ``seed`` (one process runs as before)."""
    return seed if rank == 0 else (seed + 1_000_003 * rank) % (2**63)


@CALLBACKS.register("rng_state", "saves torch/numpy/python RNG states in checkpoints and restores them on resume")
class RandomStateCheckpoint(Callback):
    """Lightning restores model, optimizer, schedulers and loop counters but not the global RNGs; this does,
    for every process.

    Under DDP, ``seed_everything`` gives every rank the same seed, so every rank drew the same training noise
    (the VAE's reparameterisation, the DDPM's timesteps and noise) on different images: N processes did not
    train like one process at N times the batch. A fresh run therefore moves ranks 1..N-1 to streams of their own
    at the start of training (rank 0 keeps its stream, so one process is unchanged), and checkpoints hold every
    rank's states (gathered at each save, which all ranks perform together), each rank restoring its own on
    resume. With data loaders that do not draw from the global RNG, a resumed run ends with the same weights as
    an uninterrupted one. The CLI adds it to every run.
    """

    def __init__(self) -> None:
        self._restored = False

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.world_size > 1 and not self._restored and trainer.global_rank > 0:
            seed = distinct_rank_seed(torch.initial_seed() % (2**63), trainer.global_rank)
            torch.manual_seed(seed)
            np.random.seed(seed % (2**32))
            random.seed(seed)

    def state_dict(self) -> dict[str, Any]:
        states = collect_rng_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            return {"rng_states": states, "rng_states_per_rank": gathered}
        return {"rng_states": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        per_rank = state_dict.get("rng_states_per_rank")
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        if per_rank is not None and rank < len(per_rank):
            restore_rng_states(per_rank[rank])
            self._restored = True
        elif "rng_states" in state_dict:
            # Saved by one process (or resumed on more processes than saved): rank 0's stream, and ranks > 0
            # start streams of their own at on_train_start as in a fresh run.
            restore_rng_states(state_dict["rng_states"])
            self._restored = rank == 0
