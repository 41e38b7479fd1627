"""vendi, vendi_real: the Vendi score of the generated set (and of the reference set), a reference-free diversity.

Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning": with K the n x n
similarity matrix of the samples (K_ii = 1), VS_q = exp(H_q(lambda)), lambda the eigenvalues of K / n and H_q the
Renyi entropy of order q: H_1 = -sum lambda log lambda (Shannon, the paper's default), H_inf = -log max lambda,
H_0 = log #{lambda > 0}, else H_q = log(sum lambda^q) / (1 - q). VS is the effective number of distinct samples:
1 for n copies of one sample, n for n mutually orthogonal ones.

Computed as the ``vendi-score`` package's embedding path (``vendi_score.vendi.score_dual``): rows L2-normalised
(an all-zero row stays zero, as ``sklearn.preprocessing.normalize`` leaves it), K = X X^T the cosine similarity,
whose non-zero eigenvalues over n are those of the d x d matrix X^T X / n. That d x d sum is the metric's state
(float64, summed over batches and processes: no features kept, nothing depends on their order); the eigenvalues
come from ``torch.linalg.eigvalsh`` in float64, one d x d decomposition per compute (about 3 s at d = 2048 on
2 CPU cores). Eigenvalues at or below d * eps * max(lambda) (the rank tolerance of ``numpy.linalg.matrix_rank``)
count as 0: they are rounding noise of the decomposition, and only orders q < 1 would feel them (the package sums
them; for full-rank features both agree to ~1e-15). Note ``vendi_score.vendi.score_X`` ignores its ``q`` argument
(always Shannon); ``score_dual`` and ``score_K`` honour it, and the tests compare against those.

``vendi`` needs no reference set. ``vendi_real`` is the same number for the reference (real) set, a separate name
because it needs one: ask for both to compare the model's diversity with the data's (the reference set is fed
whole, so at equal n the two are comparable; VS grows with n until the set's diversity saturates).
Order q: ``EvalOptions.vendi_q`` (a float >= 0; ``float("inf")`` for q = inf).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import Spec
from gen_research.registry import METRICS


def renyi_entropy(probabilities: Tensor, q: float) -> Tensor:
    """H_q of a probability vector (zeros ignored), float64; q = 1 Shannon, q = inf min-entropy, q = 0 Hartley."""
    p = probabilities.double()
    positive = p[p > 0]
    if q == 1:
        return -(positive * positive.log()).sum()
    if math.isinf(q):
        return -p.max().log()
    if q == 0:
        return torch.tensor(float(positive.numel()), dtype=torch.float64).log()
    return (positive**q).sum().log() / (1 - q)


def vendi_from_gram(gram: Tensor, count: int, q: float) -> float:
    """exp(H_q(eigenvalues of gram / count)): ``gram`` = X^T X of the L2-normalised rows of X (d x d)."""
    eigenvalues = torch.linalg.eigvalsh(gram.double() / count)
    tolerance = eigenvalues.max().clamp(min=0) * gram.shape[0] * torch.finfo(torch.float64).eps
    eigenvalues = torch.where(eigenvalues > tolerance, eigenvalues, torch.zeros_like(eigenvalues))
    return math.exp(float(renyi_entropy(eigenvalues, q)))


def normalized_rows(features: Tensor) -> Tensor:
    """Rows over their L2 norm, float64; an all-zero row stays zero (sklearn.preprocessing.normalize)."""
    x = features.double()
    norms = x.norm(dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def check_order(q: float) -> float:
    q = float(q)
    if math.isnan(q) or q < 0:
        raise GenResearchError(f"vendi_q must be a number >= 0 (1: Shannon, the paper's default; inf: min-entropy), got {q}")
    return q


class VendiScore(Metric):
    """Sums X^T X of L2-normalised feature rows of one set (real or generated); compute -> its Vendi score."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_features: int, q: float = 1.0, real: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_features <= 0:
            raise GenResearchError("vendi needs an extractor that declares num_features (its feature dimension)")
        self.q, self.real = check_order(q), real
        self.add_state("gram", torch.zeros(num_features, num_features, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: Tensor, real: bool) -> None:
        if real != self.real:  # vendi scores the generated set, vendi_real the reference set
            return
        x = normalized_rows(features.detach())
        self.gram += x.T @ x
        self.count += x.shape[0]

    def compute(self) -> Tensor:
        count = int(self.count.item())
        if count < 1:
            which = "reference (real)" if self.real else "generated"
            raise GenResearchError(f"vendi{'_real' if self.real else ''} got no {which} images: evaluate at least one")
        return torch.tensor(vendi_from_gram(self.gram, count, self.q), dtype=torch.float64)


class Vendi(Spec):
    """Vendi score (Friedman & Dieng 2023) of the generated set: the effective number of distinct samples."""

    name = "vendi"
    needs_reals: ClassVar[bool] = False
    scores_reals: ClassVar[bool] = False

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        return VendiScore(extractor.num_features, q=options.vendi_q, real=self.scores_reals)

    def compute(self, metric: Metric) -> dict[str, float]:
        return {"vendi_real" if self.scores_reals else "vendi": float(metric.compute())}


class VendiReal(Vendi):
    """Vendi score of the reference (real) set, to compare the generated set's diversity with the data's."""

    name = "vendi_real"
    needs_reals: ClassVar[bool] = True
    scores_reals: ClassVar[bool] = True


METRICS.add("vendi", Vendi, "Vendi score of the generated set (Friedman & Dieng 2023): effective number of distinct samples")
METRICS.add("vendi_real", VendiReal, "Vendi score of the reference set, to compare with the generated set's vendi")

__all__ = ["Vendi", "VendiReal", "VendiScore", "renyi_entropy", "vendi_from_gram"]
