"""precision, recall, density, coverage: one k-NN pass over real and generated features.

Hand-written (torchmetrics has no such metric): improved precision/recall of Kynkaanniemi et al. 2019 and
density/coverage of Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models",
computed exactly as the reference ``prdc.compute_prdc`` (strict ``<`` against k-NN radii, the point itself
counting as its own 0-th neighbour), on float64 distances in memory-bounded blocks: float32 matrix products find
the neighbours and every decision within rounding of its radius is recomputed in float64 (specs/_common.py), so
memory stays O(block + N x D) and nothing N x N is ever held (50,000 x 50,000 within 4 GB).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import Spec, StoredFeatures, kth_neighbour_radii, within_radii_blocks
from gen_research.registry import METRICS


class FidelityDiversity(StoredFeatures):
    """Keeps all real and generated features (gathered across processes); compute -> the four PRDC numbers."""

    higher_is_better = True

    def __init__(self, nearest_k: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nearest_k = nearest_k

    def compute(self) -> dict[str, Tensor]:
        real, fake = self.stored()
        k = self.nearest_k
        if real.shape[0] <= k or fake.shape[0] <= k:
            raise GenResearchError(
                f"precision/recall/density/coverage need more than nearest_k={k} real and generated samples; "
                f"got {real.shape[0]} real and {fake.shape[0]} generated (give more images or a smaller nearest_k)"
            )
        real_radii = kth_neighbour_radii(real, k)
        fake_radii = kth_neighbour_radii(fake, k)
        # One pass over real x fake blocks (rows: reals), each pair decided exactly against both radii.
        fake_hits = torch.zeros(fake.shape[0], dtype=torch.float64, device=real.device)  # reals whose ball holds it
        recalled = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
        covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
        for start, in_real_ball, in_fake_ball in within_radii_blocks(real, fake, real_radii, fake_radii):
            stop = start + in_real_ball.shape[0]
            fake_hits += in_real_ball.sum(dim=0)
            covered[start:stop] = in_real_ball.any(dim=1)  # the nearest fake is inside the real's ball
            recalled[start:stop] = in_fake_ball.any(dim=1)
        return {
            "precision": (fake_hits > 0).double().mean(),
            "recall": recalled.double().mean(),
            "density": fake_hits.sum() / (k * fake.shape[0]),
            "coverage": covered.double().mean(),
        }


class PRDC(Spec):
    """Precision, recall (Kynkaanniemi 2019), density and coverage (Naeem 2020) from one k-NN pass."""

    name = "prdc"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        return FidelityDiversity(nearest_k=options.nearest_k)

    def compute(self, metric: Metric) -> dict[str, float]:
        return {key: float(value) for key, value in metric.compute().items()}


METRICS.add("precision", PRDC, "improved precision: fraction of fakes inside the k-NN balls of the reals (fidelity)")
METRICS.add("recall", PRDC, "improved recall: fraction of reals inside the k-NN balls of the fakes (diversity)")
METRICS.add("density", PRDC, "density: mean number of real k-NN balls holding a fake, over k (fidelity, ~1 when matched)")
METRICS.add("coverage", PRDC, "coverage: fraction of reals whose k-NN ball holds some fake (diversity)")
METRICS.add("prdc", PRDC, "precision, recall, density and coverage together (one k-NN pass)")
