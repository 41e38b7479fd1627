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

# Memory bound of every pairwise computation (distance_blocks and the k-NN helpers below): one block of rows x
# columns is sized so that it and all its temporaries stay within BLOCK_BYTES, counting 8 bytes per (row, column)
# entry (a float64 distance; or the k-NN pass's float32 squared distance plus its boolean masks). 256 MiB: 50,000
# columns -> blocks of 671 rows. No N x N matrix is ever made; the sets themselves (N x D) are the only other memory.
BLOCK_BYTES = 256 * 2**20
_ENTRY_BYTES = 8
_UNIT_ROUNDOFF_32 = 2.0**-24


def block_rows(columns: int, budget: int | None = None) -> int:
    """Rows per block of a (rows x ``columns``) pairwise computation within ``budget`` bytes (default BLOCK_BYTES)."""
    budget = BLOCK_BYTES if budget is None else budget
    return max(1, budget // (_ENTRY_BYTES * max(1, columns)))


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
    y = y.double()
    rows = block_rows(y.shape[0])
    for start in range(0, x.shape[0], rows):
        yield start, torch.cdist(x[start : start + rows].double(), y)


# The k-NN helpers below find neighbours with float32 matrix products (fast, half the memory of float64) and decide
# every comparison exactly: each float32 squared distance f carries a rigorous bound e on its error (the classical
# gamma_D bound of a float32 dot product of length D, plus the rounding of the norms and of the centring, doubled for
# safety; in practice errors are ~sqrt(D) times smaller), and every pair whose decision lies within e of its threshold (a k-th neighbour candidate, a distance
# against a radius) is recomputed in float64 from the features themselves: sqrt(sum((x_i - y_j)^2)). Results are
# therefore those of float64 distances, independent of the block size, the device and the BLAS.


class _Prepared:
    """A set centred on ``centre`` in float32 with its float64 squared norms (the float32 pass's inputs)."""

    def __init__(self, x: Tensor, centre: Tensor) -> None:
        self.centred = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        self.sq_norms = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
        rows = block_rows(x.shape[1])
        for start in range(0, x.shape[0], rows):
            part = (x[start : start + rows].double() - centre).float()
            self.centred[start : start + rows] = part
            self.sq_norms[start : start + rows] = part.double().square().sum(dim=1)
        self.sq_norms32 = self.sq_norms.float()


def _prepare(x: Tensor, y: Tensor) -> tuple[_Prepared, _Prepared]:
    if x is y:
        prepared = _Prepared(x, x.mean(dim=0, dtype=torch.float64))
        return prepared, prepared
    centre = (x.mean(dim=0, dtype=torch.float64) + y.mean(dim=0, dtype=torch.float64)) / 2
    return _Prepared(x, centre), _Prepared(y, centre)


def _error_coefficient(dim: int) -> float:
    """c with |float32 squared distance - exact| <= c (|x'|^2 + |y'|^2) for centred float32 rows x', y' (see above)."""
    return 2.0 * (dim + 8) * _UNIT_ROUNDOFF_32


def _widen(bound: Tensor, threshold: Tensor) -> Tensor:
    """The bound plus the rounding of ``threshold +- bound`` to float32 (so thresholds may be float32)."""
    return bound + 4 * _UNIT_ROUNDOFF_32 * (threshold.abs() + bound)


@contextmanager
def _ieee_float32() -> Iterator[None]:
    """Full float32 matrix products (no TF32 / bf16 passes), which the error bound assumes. Under the default
    ("highest") nothing is touched: setting it, even to the same value, would also pin oneDNN's CPU matmul flag
    (torch >= 2.9), a global change the rest of the process would see."""
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    cuda = torch.backends.cuda.matmul
    if cuda.allow_tf32 and getattr(torch.backends.mkldnn.matmul, "fp32_precision", "none") in ("none", "ieee"):
        # the CPU is at full fp32 and only the CUDA flag is on (tf32: auto/true, training/speed.py's set_tf32): off
        # and back by the same flag, as restoring "high" through set_float32_matmul_precision would also switch
        # oneDNN's CPU matmuls to tf32
        cuda.allow_tf32 = False
        try:
            yield
        finally:
            cuda.allow_tf32 = True
        return
    torch.set_float32_matmul_precision("highest")  # set by the user through this API: restored through it
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def squared_distance_block(x: _Prepared, y: _Prepared, start: int, rows: int) -> Tensor:
    """float32 ||x_i - y_j||^2 of rows [start, start+rows) of x against all of y (one block of the k-NN pass)."""
    block = torch.addmm(y.sq_norms32[None, :], x.centred[start : start + rows], y.centred.T, alpha=-2.0)
    return block.add_(x.sq_norms32[start : start + rows, None])


def exact_distances(x: Tensor, y: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """float64 ||x[rows] - y[cols]||, pair by pair, gathered in memory-bounded chunks."""
    out = torch.empty(rows.shape[0], dtype=torch.float64, device=x.device)
    # Small chunks (about 1 MiB per float64 operand) stay in cache: several times faster than budget-sized ones.
    chunk = max(1, min(block_rows(3 * x.shape[1]), 2**17 // max(1, x.shape[1])))
    for start in range(0, rows.shape[0], chunk):
        r, c = rows[start : start + chunk], cols[start : start + chunk]
        out[start : start + chunk] = (x[r].double() - y[c].double()).square().sum(dim=1).sqrt()
    return out


def _pair_chunks(mask: Tensor) -> Iterator[tuple[int, Tensor]]:
    """(first row, (P, 2) indices) of the True entries of a block's mask, a few rows at a time so that the index
    tensors stay within the block budget even when most entries are True."""
    counts = mask.sum(dim=1)
    limit = max(1, BLOCK_BYTES // 32)  # 16 bytes of indices per pair, and as much again for sorting them
    start = 0
    while start < mask.shape[0]:
        stop = start + 1
        if stop < mask.shape[0]:
            total = torch.cumsum(counts[start:], dim=0)
            stop = start + max(1, int((total <= limit).sum()))
        yield start, mask[start:stop].nonzero()
        start = stop


def kth_nearest(x: Tensor, y: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(float64 distance, index) of the k-th nearest row of y to each row of x (k = 0: the nearest; when y is x, the
    point itself is its own 0-th neighbour). Ties go to the lowest index. Exact float64 distances (see above)."""
    n, m = x.shape[0], y.shape[0]
    if not 0 <= k < m:
        raise ValueError(f"k={k} needs more than {k} rows in y, got {m}")
    distances = torch.empty(n, dtype=torch.float64, device=x.device)
    indices = torch.empty(n, dtype=torch.long, device=x.device)
    if n == 0:
        return distances, indices
    px, py = _prepare(x, y)
    coefficient = _error_coefficient(x.shape[1])
    bound_rows = coefficient * (px.sq_norms + py.sq_norms.max())
    rows = block_rows(m)
    with _ieee_float32():
        for start in range(0, n, rows):
            block = squared_distance_block(px, py, start, rows)
            kth = block.topk(k + 1, dim=1, largest=False).values[:, k].double()
            bound = _widen(bound_rows[start : start + block.shape[0]], kth)
            # k+1 rows have f <= kth, so the exact k-th is <= kth + e: every row that can be among the k+1 nearest
            # has f <= kth + 2e. These candidates are recomputed exactly; their k-th is the exact k-th.
            candidates = block <= (kth + 2 * bound).float()[:, None]
            del block
            for first, pairs in _pair_chunks(candidates):
                r, c = pairs[:, 0], pairs[:, 1]
                exact = exact_distances(x, y, r + start + first, c)
                order = torch.argsort(exact, stable=True)  # nonzero() lists columns ascending: ties keep that
                order = order[torch.argsort(r[order], stable=True)]
                counts = torch.bincount(r, minlength=int(r.max()) + 1)
                pick = order[torch.cumsum(counts, dim=0) - counts + k]
                at = start + first + r[pick]
                distances[at], indices[at] = exact[pick], c[pick]
    return distances, indices


def kth_neighbour_radii(x: Tensor, k: int) -> Tensor:
    """Distance of each row of x to its k-th nearest other row (the point itself counts as the 0-th), float64."""
    return kth_nearest(x, x, k)[0]


def nearest_distances(x: Tensor, y: Tensor) -> Tensor:
    """Distance of each row of x to its nearest row of y, float64."""
    return kth_nearest(x, y, 0)[0]


def within_radii_blocks(x: Tensor, y: Tensor, row_radii: Tensor | None = None, col_radii: Tensor | None = None
                        ) -> Iterator[tuple[int, Tensor | None, Tensor | None]]:
    """(start row, inside_rows, inside_cols) per memory-bounded row block of x against y: the boolean blocks
    ``||x_i - y_j|| < row_radii[i]`` and ``||x_i - y_j|| < col_radii[j]`` (None when that radius is not given),
    decided exactly on float64 distances (see above)."""
    px, py = _prepare(x, y)
    coefficient = _error_coefficient(x.shape[1])
    rows = block_rows(y.shape[0])
    radii = {}
    if row_radii is not None:
        sq = row_radii.double().square()
        bound = _widen(coefficient * (px.sq_norms + py.sq_norms.max()), sq)
        radii["rows"] = (row_radii.double(), (sq - bound).float()[:, None], (sq + bound).float()[:, None])
    if col_radii is not None:
        sq = col_radii.double().square()
        bound = _widen(coefficient * (px.sq_norms.max() + py.sq_norms), sq)
        radii["cols"] = (col_radii.double(), (sq - bound).float()[None, :], (sq + bound).float()[None, :])
    with _ieee_float32():
        for start in range(0, x.shape[0], rows):
            block = squared_distance_block(px, py, start, rows)
            stop = start + block.shape[0]
            out: dict[str, Tensor] = {}
            for side, (radius, low, high) in radii.items():
                low = low[start:stop] if side == "rows" else low
                high = high[start:stop] if side == "rows" else high
                inside = block < low  # certainly inside
                unsure = block <= high
                unsure.logical_and_(inside.logical_not())  # within e of the radius: decided in float64
                for first, pairs in _pair_chunks(unsure):
                    r, c = pairs[:, 0] + first, pairs[:, 1]
                    exact = exact_distances(x, y, r + start, c)
                    inside[r, c] = exact < (radius[r + start] if side == "rows" else radius[c])
                del unsure
                out[side] = inside
            del block
            yield start, out.get("rows"), out.get("cols")


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
