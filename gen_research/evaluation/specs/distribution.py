"""fid, kid, is, mifid: torchmetrics' own metrics, fed the evaluator's precomputed features via IdentityFeatures."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd
from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance
from torchmetrics.utilities.data import dim_zero_cat

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor, IdentityFeatures
from gen_research.evaluation.specs._common import Spec, nan_to_zero, quiet_buffer_warning, seeded, to_float
from gen_research.registry import METRICS


class FID(Spec):
    """Frechet distance between Gaussians fitted to real and generated features (torchmetrics, float64 sums)."""

    name = "fid"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        return FrechetInceptionDistance(feature=IdentityFeatures(extractor.num_features))

    def compute(self, metric: Metric) -> dict[str, float]:
        return {"fid": to_float(metric.compute())}


class _KernelInceptionDistance(KernelInceptionDistance):
    """torchmetrics' KID with two changes in compute (everything else, incl. poly_mmd, is torchmetrics')."""

    def compute(self) -> tuple[Tensor, Tensor]:
        real = dim_zero_cat(self.real_features).double()  # float64 kernels: MMD is a small difference of big sums
        fake = dim_zero_cat(self.fake_features).double()
        # torchmetrics raises when a set has fewer images than subset_size; we use min(n_real, n_fake) instead,
        # and say so: KID's subset size changes its variance, so KIDs are compared at equal subset sizes.
        size = min(self.subset_size, real.shape[0], fake.shape[0])
        if size < self.subset_size:
            warnings.warn(
                f"kid: only {size} images in the smaller set, so subsets of {size} instead of kid_subset_size="
                f"{self.subset_size}; compare KIDs only at equal subset sizes",
                stacklevel=2,
            )
        scores = []
        for _ in range(self.subsets):
            r = real[torch.randperm(real.shape[0])[:size].to(real.device)]
            f = fake[torch.randperm(fake.shape[0])[:size].to(fake.device)]
            scores.append(poly_mmd(r, f, self.degree, self.gamma, self.coef))
        kid = torch.stack(scores)
        return kid.mean(), kid.std(unbiased=False)


class KID(Spec):
    """Kernel Inception Distance: unbiased MMD^2, cubic polynomial kernel, mean/std over random subsets (torchmetrics)."""

    name = "kid"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        with quiet_buffer_warning():
            metric = _KernelInceptionDistance(
                feature=IdentityFeatures(extractor.num_features),
                subsets=options.kid_subsets,
                subset_size=options.kid_subset_size,
                degree=3,
                gamma=None,  # 1 / D
                coef=1.0,
            )
        metric.seed = options.seed
        return metric

    def compute(self, metric: Metric) -> dict[str, float]:
        with seeded(metric.seed):  # subset draws reproducible, global RNG untouched
            mean, std = metric.compute()
        return {"kid": to_float(mean), "kid_std": to_float(std)}


class IS(Spec):
    """Inception Score exp(E KL(p(y|x) || p(y))) of generated images' class logits, over splits (torchmetrics)."""

    name = "is"
    needs = "logits"
    needs_reals = False

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        if not extractor.num_logits:
            raise GenResearchError(
                f"metric 'is' needs an extractor with class logits (classifier, inception); '{extractor.name}' has none"
            )
        with quiet_buffer_warning():
            metric = InceptionScore(feature=IdentityFeatures(extractor.num_logits), splits=options.is_splits)
        metric.seed = options.seed
        return metric

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        if not real:  # only generated images are scored
            metric.update(outputs["logits"].double())  # float64 softmax / log (logits are small: N x K)

    def compute(self, metric: Metric) -> dict[str, float]:
        with seeded(metric.seed), warnings.catch_warnings():  # split shuffle reproducible, global RNG untouched
            warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # std of a single split
            mean, std = metric.compute()
        # torchmetrics' std is the unbiased one: undefined (nan) for a single split, reported as 0.
        return {"is": to_float(mean), "is_std": nan_to_zero(to_float(std))}


class MiFID(Spec):
    """Memorization-informed FID: FID divided by a penalty when fakes are cosine-close to reals (torchmetrics)."""

    name = "mifid"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        with quiet_buffer_warning():
            return MemorizationInformedFrechetInceptionDistance(feature=IdentityFeatures(extractor.num_features))

    def compute(self, metric: Metric) -> dict[str, float]:
        return {"mifid": to_float(metric.compute())}


METRICS.add("fid", FID, "Frechet Inception Distance between real and generated features (lower is better)")
METRICS.add("kid", KID, "Kernel Inception Distance, unbiased polynomial-kernel MMD^2 over subsets, with kid_std")
METRICS.add("is", IS, "Inception Score of generated images from class logits, with is_std (higher is better)")
METRICS.add("mifid", MiFID, "Memorization-informed FID: FID penalised when fakes sit close to the reals")
