"""Feed metric specs exactly as the Evaluator does: build -> update per batch -> compute."""

from __future__ import annotations

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

import gen_research.evaluation.specs  # noqa: F401  (registration)
from gen_research.evaluation.base import EvalOptions
from gen_research.registry import METRICS


class FakeExtractor:
    """Stands in for a FeatureExtractor: only the attributes metrics look at."""

    def __init__(self, num_features: int, num_logits: int | None = None, name: str = "fake-extractor") -> None:
        self.num_features, self.num_logits, self.name = num_features, num_logits, name


def batches(x: Tensor, size: int):
    for start in range(0, len(x), size):
        yield x[start : start + size]


def run_spec(name: str, real: Tensor | None = None, fake: Tensor | None = None, train: Tensor | None = None,
             options: EvalOptions | None = None, batch: int = 64, logits: bool = False,
             num_logits: int | None = None) -> dict[str, float]:
    """One spec through build/update/compute; ``logits``: the given tensors are logits (for ``is``)."""
    spec = METRICS.get(name)()
    sample = next(t for t in (real, fake, train) if t is not None)
    dim = sample.shape[1]
    extractor = FakeExtractor(dim, num_logits=(dim if logits else num_logits))
    metric = spec.build(extractor, options or EvalOptions())
    key = "logits" if logits else "features"
    for role, data in (("train", train), ("real", real), ("fake", fake)):
        if data is None:
            continue
        for chunk in batches(data, batch):
            outputs = {key: chunk, "features": chunk} if logits else {"features": chunk}
            if role == "train":
                spec.update_train(metric, outputs)
            elif role == "fake" or spec.needs_reals:
                spec.update(metric, outputs, real=role == "real")
    return spec.compute(metric)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, jobs: list, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        results = []
        for name, kwargs in jobs:
            shard = {k: (v[rank::world_size] if isinstance(v, Tensor) else v) for k, v in kwargs.items()}
            results.append(run_spec(name, **shard))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ddp(jobs: list[tuple[str, dict]], world_size: int = 2) -> list[list[dict[str, float]]]:
    """Each job ``(metric name, run_spec kwargs)`` on ``world_size`` CPU processes, each with every
    world_size-th row; returns, per rank, the list of compute() results."""
    with tempfile.TemporaryDirectory() as out_dir:
        # fork: the children inherit the imported modules (spawn would re-import torch + torchmetrics, ~10 s).
        mp.start_processes(_ddp_worker, args=(world_size, _free_port(), jobs, out_dir), nprocs=world_size,
                           join=True, start_method="fork")
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(world_size)]
