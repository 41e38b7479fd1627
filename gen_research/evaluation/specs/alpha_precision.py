"""alpha_precision, beta_recall: the alpha-precision and beta-recall curves of Alaa et al. 2022 (hand-written).

Alaa, van Breugel, Saveliev & van der Schaar 2022, "How Faithful is your Synthetic Data? Sample-level Metrics for
Evaluating and Auditing Generative Models" (ICML). torchmetrics has no such metric. In an embedding (``features``:
the extractor's features; ``oneclass``: a Deep SVDD network trained on the reals), with alphas = betas =
linspace(0, 1, alpha_steps) and all distances Euclidean, float64:

* alpha-precision P_a = fraction of generated g with ||g - c_r|| <= r_a, where c_r is the reals' centre (their mean
  for ``features``, the network's c for ``oneclass``) and r_a the a-quantile (linear interpolation, numpy's default)
  of ||x_r - c_r|| over the reals: the share of samples inside the minimum-volume ball holding mass a of the reals;
* beta-recall R_b = fraction of reals x_r whose nearest generated sample *within the generated b-support* lies in
  x_r's k-NN ball, |x_r - g*| <= NND_k(x_r) (k = ``nearest_k``, the k-th nearest other real). The b-support is the
  ball around the generated mean c_g holding the fraction b of the generated samples (radius: the b-quantile of
  ||g - c_g||). At b = 1 this is Naeem et al.'s coverage (with <= instead of <);
* the scores are the integrated ones: ``alpha_precision`` = IP = 1 - 2 mean_a |P_a - a| and ``beta_recall`` =
  IR = 1 - 2 mean_b |R_b - b|, the mean over the grid standing for the paper's integral 1 - 2 int_0^1 |P_a - a| da
  (exactly synthcity's ``1 - sum|alphas - curve| / sum(alphas)``). 1 = the curve on the diagonal. A model whose
  samples all sit in the typical core of the reals has P_a = 1 for every a and IP = 0: over-concentration is
  penalised like samples outside the data.

Where the reference code (vanderschaarlab/evaluating-generative-models ``compute_alpha_precision``, synthcity's
``AlphaPrecision``) differs from the paper, this follows the paper: their beta-recall takes each real's nearest
generated sample among *all* of them, fixes k = 1, and places the b-radius at a quantile of only those nearest
samples' distances to c_g. With k = 1 a perfect model scores R_b ~ b/2 in either form; the default k = 5 gives
~0.97 b in low dimensions. In high dimensions k-NN balls are wide relative to the spread of ||x - c||, so R_b rises
above the diagonal even for a perfect model: compare beta-recall only in one embedding and at one k.

``oneclass`` follows the authors' and synthcity's one-class network: a bias-free ReLU MLP (hidden width 32,
embedding min(D, 32)) trained full-batch with AdamW on the reals to minimise mean ||f(x) - c||^2 with the fixed
centre c = 10 * ones. Bias-free layers keep the origin at the origin (so the net cannot collapse onto c), so its
inputs are min-max scaled into [0, 1] per feature by the reals. Training is seeded from ``seed`` (the global RNG is
left untouched) and sees the reals in a canonical row order, so one process and many agree.
The authenticity of the same paper is a memorization number here (specs/memorization.py: against training data).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import (Spec, StoredFeatures, autograd_enabled, canonical_rows, distance_blocks,
                                                  kth_neighbour_radii, seeded)
from gen_research.registry import METRICS

EMBEDDINGS = ("features", "oneclass")
ONECLASS_WIDTH = 32  # hidden units, and the largest embedding dimension
ONECLASS_EPOCHS = 200  # full-batch AdamW steps
ONECLASS_LR = 2e-3  # synthcity's OneClassLayer learning rate and weight decay
ONECLASS_WEIGHT_DECAY = 2e-3
ONECLASS_CENTRE = 10.0  # c = 10 * ones, as synthcity


def integrated_score(curve: Tensor, grid: Tensor) -> float:
    """1 - 2 mean |curve - grid|: 1 on the diagonal, 0 for a curve stuck at 0 or at 1 (the paper's IP / IR)."""
    return float(1.0 - 2.0 * (curve - grid).abs().mean())


def alpha_beta_curves(real: Tensor, fake: Tensor, centre: Tensor, steps: int, nearest_k: int
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """(grid, alpha-precision curve, beta-recall curve) of embedded real and generated rows (see the module doc)."""
    real, fake, centre = real.double(), fake.double(), centre.double()
    grid = torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device=real.device)
    real_radii = torch.quantile((real - centre).norm(dim=1), grid)
    precision = ((fake - centre).norm(dim=1)[None, :] <= real_radii[:, None]).double().mean(dim=1)

    fake_to_fake_centre = (fake - fake.mean(dim=0)).norm(dim=1)
    beta_radii = torch.quantile(fake_to_fake_centre, grid)
    real_balls = kth_neighbour_radii(real, nearest_k)
    # A real is recalled at b when some generated sample of the b-ball lies in its k-NN ball (then so does the
    # nearest one of the b-ball): the smallest ||g - c_g|| among the generated samples in its ball decides all b.
    innermost = torch.empty(real.shape[0], dtype=torch.float64, device=real.device)
    for start, d in distance_blocks(real, fake):
        inside = d <= real_balls[start : start + d.shape[0], None]
        radii = fake_to_fake_centre[None, :].expand_as(d)
        innermost[start : start + d.shape[0]] = torch.where(inside, radii, torch.inf).min(dim=1).values
    recall = (innermost[None, :] <= beta_radii[:, None]).double().mean(dim=1)
    return grid, precision, recall


def oneclass_embedding(real: Tensor, fake: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(embedded reals, embedded fakes, centre c) through a seeded Deep SVDD network trained on the reals."""
    real, fake = canonical_rows(real.float()), fake.float()
    low, high = real.min(dim=0).values, real.max(dim=0).values
    span = torch.where(high > low, high - low, torch.ones_like(high))

    def scaled(x: Tensor) -> Tensor:
        return (x - low) / span

    dim = min(real.shape[1], ONECLASS_WIDTH)
    centre = torch.full((dim,), ONECLASS_CENTRE, device=real.device)
    with seeded(seed), autograd_enabled():
        net = nn.Sequential(
            nn.Linear(real.shape[1], ONECLASS_WIDTH, bias=False), nn.ReLU(),
            nn.Linear(ONECLASS_WIDTH, ONECLASS_WIDTH, bias=False), nn.ReLU(),
            nn.Linear(ONECLASS_WIDTH, dim, bias=False),
        ).to(real.device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=ONECLASS_LR, weight_decay=ONECLASS_WEIGHT_DECAY)
        inputs = scaled(real).clone()
        for _ in range(ONECLASS_EPOCHS):
            optimizer.zero_grad()
            loss = ((net(inputs) - centre) ** 2).sum(dim=1).mean()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return net(inputs).double(), net(scaled(fake)).double(), centre.double()


class AlphaPrecisionRecall(StoredFeatures):
    """Keeps all real and generated features (gathered across processes); compute -> the two curves and scores."""

    higher_is_better = True

    def __init__(self, steps: int = 30, embedding: str = "features", nearest_k: int = 5, seed: int = 0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps, self.embedding, self.nearest_k, self.seed = steps, embedding, nearest_k, seed

    def compute(self) -> dict[str, Tensor]:
        real, fake = self.stored()
        k = self.nearest_k
        if real.shape[0] <= k or fake.shape[0] < 2:
            raise GenResearchError(
                f"alpha_precision/beta_recall need more than nearest_k={k} real and at least 2 generated samples; "
                f"got {real.shape[0]} real and {fake.shape[0]} generated (give more images or a smaller nearest_k)"
            )
        real, fake = canonical_rows(real), canonical_rows(fake)  # bitwise the same sums in one process or many
        if self.embedding == "oneclass":
            real, fake, centre = oneclass_embedding(real, fake, self.seed)
        else:
            real, fake = real.double(), fake.double()
            centre = real.mean(dim=0)
        grid, precision, recall = alpha_beta_curves(real, fake, centre, self.steps, k)
        return {
            "alpha_precision": torch.tensor(integrated_score(precision, grid), dtype=torch.float64),
            "beta_recall": torch.tensor(integrated_score(recall, grid), dtype=torch.float64),
            "grid": grid, "precision_curve": precision, "recall_curve": recall,
        }


class AlphaBeta(Spec):
    """Integrated alpha-precision (fidelity) and beta-recall (diversity) of Alaa et al. 2022, with their curves.

    Registered as ``alpha_precision``, ``beta_recall`` and ``alpha_beta`` (both). ``compute`` also leaves
    ``self.curves`` (the plot data of both curves against the diagonal) for the evaluator to draw.
    """

    name = "alpha_beta"

    def __init__(self) -> None:
        self.curves: dict[str, dict] = {}

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        if options.alpha_embedding not in EMBEDDINGS:
            raise GenResearchError(
                f"alpha_embedding must be one of {', '.join(EMBEDDINGS)}; got {options.alpha_embedding!r}"
            )
        if int(options.alpha_steps) != options.alpha_steps or options.alpha_steps < 2:
            raise GenResearchError(f"alpha_steps must be a whole number of at least 2; got {options.alpha_steps}")
        return AlphaPrecisionRecall(int(options.alpha_steps), options.alpha_embedding, options.nearest_k, options.seed)

    def compute(self, metric: Metric) -> dict[str, float]:
        values = metric.compute()
        grid = [float(a) for a in values["grid"]]
        self.curves = {"alpha_precision_curve": {
            "x": grid,
            "y": {"alpha-precision": [float(p) for p in values["precision_curve"]],
                  "beta-recall": [float(r) for r in values["recall_curve"]], "ideal": grid},
            "xlabel": "alpha / beta", "ylabel": "fraction",
            "title": f"alpha-precision and beta-recall ({metric.embedding} embedding, k={metric.nearest_k})",
        }}
        return {"alpha_precision": float(values["alpha_precision"]), "beta_recall": float(values["beta_recall"])}


METRICS.add("alpha_precision", AlphaBeta, "integrated alpha-precision (Alaa et al. 2022): fakes in the reals' "
            "alpha-quantile balls vs alpha (fidelity, 1 best)")
METRICS.add("beta_recall", AlphaBeta, "integrated beta-recall (Alaa et al. 2022): reals covered by the fakes' "
            "beta-support vs beta (diversity, 1 best)")
METRICS.add("alpha_beta", AlphaBeta, "alpha_precision and beta_recall together, with their curves (one pass)")
