"""memorization: are generated samples closer to the training set than fresh data is? (hand-written).

torchmetrics has nothing comparing generated samples with the training set against held-out data, so this
metric is written here. Three sets of features: training (``update_train``), held-out reals (``real=True``)
and generated (``real=False``). With L(x) = distance from x to its nearest training feature:

* ``nn_distance``   = mean_gen L / mean_heldout L: ~1 for a model that generalises, << 1 for one that copies;
* ``copy_fraction`` = fraction of generated x with L(x) below the 5th percentile of held-out L;
* ``data_copying_zu`` = C_T of Meehan, Chaudhuri & Dasgupta 2020, "A Non-Parametric Test to Detect
  Data-Copying in Generative Models": k-means (fitted on the training features) splits space into cells pi;
  in each cell, Z_U(pi) = (U - m n / 2) / sqrt(m n (m + n + 1) / 12), U the Mann-Whitney statistic counting
  pairs (generated, held-out) of the cell with L(generated) > L(held-out) (m, n: their counts in the cell);
  C_T = sum_pi P_n(pi) Z_U(pi) / sum_pi P_n(pi) over cells with at least tau = 20 generated samples (the
  paper's tau = 20/m; fewer make Z_U unreliable), P_n(pi) the held-out fraction in the cell. C_T ~ 0 for a
  model that generalises; C_T << 0 (e.g. < -3) means data copying. nan when no cell qualifies;
* ``authenticity`` of Alaa et al. 2022, "How Faithful is your Synthetic Data?": with t* the training feature nearest
  to a generated x, x is unauthentic (a copy) when L(x) = ||x - t*|| <= ||t* - its nearest other training feature||
  and authentic when it is farther; ``authenticity`` = fraction authentic (1 for fresh points far from the data, 0
  for copies). As the authors' ``compute_alpha_precision`` (a tie, e.g. a copy of a duplicated training image,
  counts as a copy); synthcity's ``AlphaPrecision`` indexes the nearest-neighbour distances by the wrong set (the
  fake nearest to each real) and is not followed. Fresh iid draws score well below 1 (exactly 1/3 for uniform
  points on a circle).
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import Spec, StoredFeaturesWithTrain, kth_nearest, nearest_distances
from gen_research.registry import METRICS

COPY_PERCENTILE = 0.05
MIN_GENERATED_PER_CELL = 20  # tau, as a count of generated samples
MAX_CELLS = 20


def data_copying_statistic(train: np.ndarray, heldout: np.ndarray, heldout_dist: np.ndarray,
                           generated: np.ndarray, generated_dist: np.ndarray, seed: int) -> float:
    """C_T of Meehan et al. 2020 (see the module docstring), from features and nearest-training distances.

    k-means runs in float64 whatever the features' dtype; the float64 copies are made one set at a time (at 50,000 x
    2,048 each is 0.8 GB), and the training copy is centred in place (``copy_x=False``, same result)."""
    from scipy.stats import mannwhitneyu
    from sklearn.cluster import KMeans

    cells = max(1, min(MAX_CELLS, train.shape[0] // 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's convergence / memory-leak notices
        kmeans = KMeans(n_clusters=cells, n_init=3, random_state=seed, copy_x=False)
        kmeans.fit(np.array(train, dtype=np.float64))  # a fresh copy: centring it in place touches nothing else
    heldout_cell = kmeans.predict(np.asarray(heldout, dtype=np.float64))
    generated_cell = kmeans.predict(np.asarray(generated, dtype=np.float64))
    weighted, weights = 0.0, 0.0
    for cell in range(cells):
        gen_d, real_d = generated_dist[generated_cell == cell], heldout_dist[heldout_cell == cell]
        m, n = len(gen_d), len(real_d)
        if m < MIN_GENERATED_PER_CELL or n == 0:
            continue
        u = mannwhitneyu(gen_d, real_d, alternative="two-sided", method="asymptotic").statistic  # U of generated
        z = (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)
        weight = n / len(heldout_dist)
        weighted, weights = weighted + weight * z, weights + weight
    return weighted / weights if weights > 0 else float("nan")


def nearest_rows(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(float64 distance, index) of each row of x's nearest row of y (lowest index on ties), in memory-bounded
    blocks."""
    return kth_nearest(x, y, 0)


def authenticity(train: Tensor, generated: Tensor, nearest: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Fraction of generated rows farther from their nearest training row than that row is from its own nearest
    other training row (Alaa et al. 2022, see the module doc); float64 scalar. ``nearest``: ``nearest_rows(generated,
    train)`` when the caller has it already."""
    generated_d, nearest_index = nearest if nearest is not None else nearest_rows(generated, train)
    used, position = torch.unique(nearest_index, return_inverse=True)  # only the training rows someone is nearest to
    own = kth_nearest(train[used], train, 1)[0]  # 1: the nearest other row ([0] is the row itself)
    return (generated_d > own[position]).double().mean()


class Memorization(StoredFeaturesWithTrain):
    """Training, held-out and generated features (gathered across processes); compute -> four memorization numbers."""

    def __init__(self, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed

    def compute(self) -> dict[str, Tensor]:
        train, real, fake = self.three_sets("memorization")
        real_d = nearest_distances(real, train)
        fake_d, fake_nearest = nearest_rows(fake, train)
        threshold = torch.quantile(real_d, COPY_PERCENTILE)
        zu = data_copying_statistic(
            train.cpu().numpy(), real.cpu().numpy(), real_d.cpu().numpy(),
            fake.cpu().numpy(), fake_d.cpu().numpy(), self.seed,
        )
        return {
            "nn_distance": fake_d.mean() / real_d.mean(),
            "copy_fraction": (fake_d < threshold).double().mean(),
            "data_copying_zu": torch.tensor(zu, dtype=torch.float64),
            "authenticity": authenticity(train, fake, (fake_d, fake_nearest)),
        }


class MemorizationSpec(Spec):
    """Generated vs held-out distances to the training set: nn_distance, copy_fraction, data_copying_zu (C_T),
    authenticity (Alaa et al. 2022). Registered as ``memorization`` (all four) and ``authenticity``."""

    name = "memorization"
    needs_train: ClassVar[bool] = True

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        return Memorization(seed=options.seed)

    def update_train(self, metric: Metric, outputs: dict[str, Tensor]) -> None:
        metric.update(outputs[self.needs], train=True)

    def compute(self, metric: Metric) -> dict[str, float]:
        return {key: float(value) for key, value in metric.compute().items()}


METRICS.add("memorization", MemorizationSpec,
            "training-set copying: nn_distance ratio, copy_fraction, data_copying_zu (Meehan et al. C_T), authenticity")
METRICS.add("authenticity", MemorizationSpec,
            "authenticity (Alaa et al. 2022): fraction of fakes farther from their nearest training image than it is "
            "from its own nearest neighbour (0 = copies)")
