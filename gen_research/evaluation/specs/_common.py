"""Helpers shared by the metric specs: a base with the optional evaluator hooks, seeding, chunked distances."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import FeatureMetric

# Pairwise-distance blocks hold at most this many float64 entries (256 MiB): 10k x 10k fits on any machine.
_BLOCK_ELEMENTS = 2**25


class Spec(FeatureMetric):
    """FeatureMetric plus the optional hooks the evaluator looks up with getattr (training features, image pairs)."""

    needs_train: ClassVar[bool] = False
    paired: ClassVar[bool] = False


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the CPU RNG seeded, leaving the global RNG state exactly as it was (the CPU generator only:
    ``torch.manual_seed`` would also reseed every CUDA generator, which ``fork_rng(devices=[])`` does not restore)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


@contextmanager
def quiet_buffer_warning() -> Iterator[None]:
    """torchmetrics warns on construction that KID/IS/MiFID keep all features; that is expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        yield


def to_float(value: Tensor | float) -> float:
    return float(value.item() if isinstance(value, Tensor) else value)


def nan_to_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def distance_blocks(x: Tensor, y: Tensor) -> Iterator[tuple[int, Tensor]]:
    """(start row, float64 Euclidean distances of x[start:start+rows] to all of y), in memory-bounded row blocks."""
    x, y = x.double(), y.double()
    rows = max(1, _BLOCK_ELEMENTS // max(1, y.shape[0]))
    for start in range(0, x.shape[0], rows):
        yield start, torch.cdist(x[start : start + rows], y)


def kth_neighbour_radii(x: Tensor, k: int) -> Tensor:
    """Distance of each row of x to its k-th nearest other row (the point itself counts as the 0-th), float64."""
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for start, d in distance_blocks(x, x):
        out[start : start + d.shape[0]] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def nearest_distances(x: Tensor, y: Tensor) -> Tensor:
    """Distance of each row of x to its nearest row of y, float64."""
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for start, d in distance_blocks(x, y):
        out[start : start + d.shape[0]] = d.min(dim=1).values
    return out


def canonical_order(x: Tensor) -> Tensor:
    """Row indices sorting the rows of x by their bytes: an order that depends only on their contents.

    A DDP gather concatenates rank 0's rows then rank 1's; one process has them interleaved. Anything that depends
    on the order (training, shuffles, subsets, float summation) runs on this order, so both give the same numbers.
    """
    rows = np.ascontiguousarray(x.detach().cpu().numpy())
    if rows.shape[0] < 2:
        return torch.arange(rows.shape[0], device=x.device)
    keys = rows.reshape(rows.shape[0], -1).view(np.dtype((np.void, rows.dtype.itemsize * int(np.prod(rows.shape[1:]))))).ravel()
    return torch.from_numpy(np.argsort(keys, kind="stable")).to(x.device)


def canonical_rows(x: Tensor) -> Tensor:
    """The rows of x in :func:`canonical_order`."""
    return x[canonical_order(x)] if x.shape[0] > 1 else x


@contextmanager
def autograd_enabled() -> Iterator[None]:
    """Gradients inside compute() (metrics that train a network: nnd, cas, alpha_precision's one-class embedding,
    fld's bandwidths): evaluation may run under no_grad or inference_mode (Lightning's validation loop). Tensors made
    before must be cloned inside the block to take part in autograd."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


class StoredFeatures(Metric):
    """Keeps every feature row of each role (gathered across processes by torchmetrics' "cat"); subclasses compute
    from :meth:`stored`. ``roles``: real and generated; :class:`StoredFeaturesWithTrain` adds the training set."""

    full_state_update = False
    roles: ClassVar[tuple[str, ...]] = ("real", "fake")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for role in self.roles:
            self.add_state(f"{role}_features", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, real: bool = True, train: bool = False) -> None:
        role = "train" if train else "real" if real else "fake"
        getattr(self, f"{role}_features").append(features.detach().float())

    def stored(self) -> tuple[Tensor, ...]:
        """The features of each role, in ``roles`` order (empty tensors for a role never fed)."""
        return tuple(state_cat(self, f"{role}_features") for role in self.roles)


class StoredFeaturesWithTrain(StoredFeatures):
    """Training, held-out real and generated features (memorization, fld); ``stored()`` returns them in that order."""

    roles: ClassVar[tuple[str, ...]] = ("train", "real", "fake")

    def three_sets(self, metric: str, heldout: str = "held-out real") -> tuple[Tensor, Tensor, Tensor]:
        """(train, real, fake), or a one-line error naming ``metric`` when a set has fewer than 2 rows."""
        train, real, fake = self.stored()
        if min(train.shape[0], real.shape[0], fake.shape[0]) < 2:
            raise GenResearchError(
                f"metric '{metric}' needs training, {heldout} and generated images (at least 2 each); got "
                f"{train.shape[0]} training, {real.shape[0]} {heldout.split()[0]} and {fake.shape[0]} generated"
            )
        return train, real, fake


def state_cat(metric: Metric, name: str) -> Tensor:
    """A list/cat state as one tensor (a list before sync, a tensor after a DDP gather), empty if never updated."""
    from torchmetrics.utilities.data import dim_zero_cat

    value = getattr(metric, name)
    if isinstance(value, list):
        return dim_zero_cat(value) if value else torch.empty(0, 0, device=metric.device)
    return value
