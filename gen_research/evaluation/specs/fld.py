"""fld, fld_gap: feature likelihood divergence of Jiralerspong et al. 2023 (hand-written, after marcojira/fld).

Jiralerspong, Bose, Gemp, Qin, Bachrach & Gidel 2023, "Feature Likelihood Divergence: Evaluating the
Generalization of Generative Models Using Samples" (NeurIPS). Three sets of features: training (``update_train``,
memorization's training set), test (the reference reals, ``real=True``) and generated (``real=False``). Computed
as the reference ``fld.metrics.FLD`` / ``fld.MoG`` do, in float64:

1. every set is standardised with the test set's per-feature mean and (unbiased) standard deviation (a constant
   test feature is left unscaled instead of dividing by 0, where the reference gives nan); at most 10,000 generated
   samples are kept (a seeded random subset, as the reference's ``GEN_SIZE``);
2. a mixture of isotropic Gaussians, one per generated sample g_j with its own variance s_j^2 and weight 1/m:
   log p(x) = logsumexp_j [-||x - g_j||^2 / (2 s_j^2) - (D/2) log s_j^2 - (D/2) log 2 pi - log m];
3. the log-variances are fitted to the TRAIN features: initialised at log((min_i ||x_i - g_j||^2 + 1e-3) / D),
   then 50 epochs of Adam (lr 0.5) over seeded shuffles of the train set in batches of 10,000 on the loss
   -mean_i log p'(x_i) / D, where p' adds (with weight 1, unnormalised, as the reference) one more Gaussian at the
   train mean, its squared distances scaled by 0.9^2 and its own fitted log-variance (so no point has ~0
   likelihood); log-variances are clamped to [-40, 20] after each step. The extra Gaussian is used only in fitting;
4. NLL(S) = mean_{x in S} -log p(x) / D (dimension-normalised), and with a baseline mixture centred at a seeded
   random part of the train set (min(m, n_train // 2) points) fitted the same way to the rest of it:
   ``fld`` = 100 (NLL(test) - NLL_baseline(test)): lower is better, ~0 for samples as good as held-out training
   data (it can go below 0); ``fld_gap`` = 100 (NLL(train) - NLL(test)), the generalization gap (the reference's
   "gap" mode, equal to its train FLD minus test FLD): ~0 for a model that generalises, strongly negative when
   the training set is much likelier than the test set, i.e. the samples copy training images.

Differences from the reference: seeded shuffles (the reference draws from numpy's global RNG, so its numbers
change from run to run), float64 instead of float32, no second standardisation of the already standardised
features before the baseline fit (the reference repeats it, a no-op up to rounding), and all three sets are put
into a canonical row order first, so one process and many give the same numbers.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import Spec, StoredFeaturesWithTrain, autograd_enabled, canonical_rows, distance_blocks
from gen_research.registry import METRICS

LEARNING_RATE = 0.5
EPOCHS = 50
BATCH_SIZE = 10_000
ORIGIN_DISTANCE_FACTOR = (1 - 0.1) ** 2  # the reference's (1 - ORIGIN_DIST_PROP) ** 2
LOG_VARIANCE_RANGE = (-40.0, 20.0)
MAX_GENERATED = 10_000  # the reference's GEN_SIZE
CACHE_ENTRIES = 2**27  # train x generated squared distances kept in memory (1 GiB of float64); beyond: per batch


def squared_distances(x: Tensor, centres: Tensor) -> Tensor:
    """||x_i - c_j||^2, float64, built from memory-bounded blocks."""
    if not x.shape[0]:
        return x.new_zeros(0, centres.shape[0], dtype=torch.float64)
    return torch.cat([d.square() for _, d in distance_blocks(x, centres)])


def component_log_likelihoods(sq_dists: Tensor, log_variances: Tensor, dim: int) -> Tensor:
    """log N(x_i | c_j, exp(log_variances_j) I) for every pair, from squared distances [n, m]."""
    return -0.5 * sq_dists / log_variances.exp() - 0.5 * dim * log_variances - 0.5 * dim * math.log(2 * math.pi)


def mixture_nlls(x: Tensor, centres: Tensor, log_variances: Tensor) -> Tensor:
    """-log p(x) / D for every row of x under the equal-weight mixture (step 2 of the module doc)."""
    dim, out = x.shape[1], []
    for _, d in distance_blocks(x, centres):
        lls = component_log_likelihoods(d.square(), log_variances.double(), dim) - math.log(centres.shape[0])
        out.append(-torch.logsumexp(lls, dim=1) / dim)
    return torch.cat(out)


def fit_log_variances(centres: Tensor, x: Tensor, generator: torch.Generator) -> Tensor:
    """Per-centre log-variances maximising the likelihood of x (step 3 of the module doc); x in canonical order."""
    dim, count = x.shape[1], centres.shape[0]
    x = x.double()[torch.randperm(x.shape[0], generator=generator).to(x.device)]
    centres = centres.double()
    cached = squared_distances(x, centres) if x.shape[0] * count <= CACHE_ENTRIES else None
    nearest = cached.min(dim=0).values if cached is not None else torch.stack(
        [squared_distances(x[s : s + BATCH_SIZE], centres).min(dim=0).values for s in range(0, x.shape[0], BATCH_SIZE)]
    ).min(dim=0).values
    origin_dists = ORIGIN_DISTANCE_FACTOR * squared_distances(x, x.mean(dim=0, keepdim=True))
    with autograd_enabled():  # clones: tensors made under inference_mode cannot be saved for backward
        x, origin_dists = x.clone(), origin_dists.clone()
        cached = cached.clone() if cached is not None else None
        log_variances = ((nearest + 1e-3) / dim).log().clone().requires_grad_(True)
        origin_log_variance = torch.zeros((), dtype=torch.float64, device=x.device, requires_grad=True)
        optimizer = torch.optim.Adam([log_variances, origin_log_variance], lr=LEARNING_RATE)
        for _ in range(EPOCHS):
            for start in range(0, x.shape[0], BATCH_SIZE):
                batch = x[start : start + BATCH_SIZE]
                dists = cached[start : start + BATCH_SIZE] if cached is not None else squared_distances(batch, centres)
                optimizer.zero_grad()
                pairwise = component_log_likelihoods(dists, log_variances, dim) - math.log(count)
                origin = component_log_likelihoods(origin_dists[start : start + BATCH_SIZE], origin_log_variance, dim)
                loss = -torch.logsumexp(torch.cat([pairwise, origin], dim=1), dim=1).mean() / dim
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    log_variances.clamp_(*LOG_VARIANCE_RANGE)
    return log_variances.detach()


def feature_likelihood_divergence(train: Tensor, test: Tensor, generated: Tensor, seed: int = 0) -> dict[str, float]:
    """``fld``, ``fld_gap`` and the three NLLs behind them (see the module doc), seeded and order-invariant."""
    train, test, generated = (canonical_rows(t).double() for t in (train, test, generated))
    generator = torch.Generator().manual_seed(seed)
    mean, std = test.mean(dim=0), test.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    train, test, generated = ((t - mean) / std for t in (train, test, generated))
    if generated.shape[0] > MAX_GENERATED:
        generated = generated[torch.randperm(generated.shape[0], generator=generator)[:MAX_GENERATED].to(generated.device)]

    log_variances = fit_log_variances(generated, train, generator)
    test_nll = float(mixture_nlls(test, generated, log_variances).mean())
    train_nll = float(mixture_nlls(train, generated, log_variances).mean())

    shuffled = train[torch.randperm(train.shape[0], generator=generator).to(train.device)]
    split = min(generated.shape[0], train.shape[0] // 2)
    baseline_variances = fit_log_variances(shuffled[:split], shuffled[split:], generator)
    baseline_nll = float(mixture_nlls(test, shuffled[:split], baseline_variances).mean())
    return {"fld": 100 * (test_nll - baseline_nll), "fld_gap": 100 * (train_nll - test_nll),
            "test_nll": test_nll, "train_nll": train_nll, "baseline_nll": baseline_nll}


class FeatureLikelihood(StoredFeaturesWithTrain):
    """Training, test and generated features (gathered across processes); compute -> fld and fld_gap."""

    def __init__(self, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed

    def compute(self) -> dict[str, float]:
        train, real, fake = self.three_sets("fld", heldout="test (reference)")
        values = feature_likelihood_divergence(train, real, fake, self.seed)
        if values["fld_gap"] < -1000:
            warnings.warn(f"fld_gap = {values['fld_gap']:.0f}: the generated samples are likely copies of "
                          "training images", stacklevel=2)
        return values


class FLD(Spec):
    """Feature likelihood divergence (Jiralerspong et al. 2023): a Gaussian mixture on the generated features, fitted
    to the training features, scores the test features (``fld``) and the train-test likelihood gap (``fld_gap``)."""

    name = "fld"
    needs_train: ClassVar[bool] = True

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        return FeatureLikelihood(seed=options.seed)

    def update_train(self, metric: Metric, outputs: dict[str, Tensor]) -> None:
        metric.update(outputs[self.needs], train=True)

    def compute(self, metric: Metric) -> dict[str, float]:
        values = metric.compute()
        return {"fld": float(values["fld"]), "fld_gap": float(values["fld_gap"])}


METRICS.add("fld", FLD, "feature likelihood divergence (Jiralerspong et al. 2023): test NLL under a MoG on the fakes, "
            "fitted to training data, vs a train-set baseline, x100 (lower is better)")
METRICS.add("fld_gap", FLD, "FLD generalization gap: 100 (train NLL - test NLL) under the fakes' MoG; "
            "strongly negative = copying training images (~0 = generalises)")
