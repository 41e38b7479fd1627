"""cafd (class-aware Frechet distance) and cfid (conditional Frechet distance): Frechet distances that know the classes.

``cafd``, Liu, Wei, Lu & Zhou 2018, "An Improved Evaluation Framework for Generative Adversarial Networks"
(arXiv 1803.07474). Each set's features are a Gaussian mixture with one component per class of the extractor's
classifier, each image weighing into class k by its posterior w_k = softmax(logits)_k (soft assignment: no labels
needed, but the extractor must have logits). Per class and set: W = sum w, mu = sum w f / W and the unbiased
reliability-weighted covariance (sum w f f^T - W mu mu^T) / (W - sum w^2 / W) (numpy's ``np.cov(aweights=w)``; with
one-hot posteriors it is the plain (n - 1) covariance, so cafd then equals intra_fid). ``cafd`` = mean over classes
of FD(real component k, generated component k) (torchmetrics' ``_compute_fid``); a class with fewer than 2 effective
images (W^2 / sum w^2) in either set is left out, as intra_fid leaves it out. The paper pairs it with the KL
divergence of the class proportions (mode dropping); it is reported apart, never added: ``cafd_kl`` =
KL(p_real || p_gen), p(k) = mean posterior of class k (infinite when the generated set has no mass on a real class).

``cfid``, Soloveitchik, Diskin, Morin & Wiesel 2021, "Conditional Frechet Inception Distance" (arXiv 2103.11521):
E_y[W2^2] between the Gaussian conditionals p(x | y) of the reals and of the generated images, x the image features,
y the condition's embedding. One key ``cfid`` whatever the condition: for a class-conditional model y is the one-hot
class (a real image's true class, a sample's conditioning class: ``outputs["labels"]``); for an image-to-image model
y is the extractor's features of the SOURCE image (``outputs["condition_features"]``: a paired target with its
source, a translation with its source; paired data only). With per-set joint Gaussians of [y, x] (unbiased
covariances), A = S_xy S_yy^+ (pseudo-inverse: one-hot classes make S_yy singular), S_x|y = S_xx - A S_yx:

    cfid = ||mu_x - mu_x^ - A^ (mu_y - mu_y^)||^2 + Tr[(A - A^) S_yy (A - A^)^T]
           + Tr[S_x|y + S_x^|y - 2 (S_x|y^1/2 S_x^|y S_x|y^1/2)^1/2]

(^: generated; the expectation over y uses the reals' condition distribution). When both sets have the same
condition statistics (a translator's sources are the same images) this is exactly the authors' formula
(github.com/Michael-Soloveitchik/CFID, Metrics/metrics.py: ||m_y - m_y^||^2 + Tr[(C_yx - C_y^x) C_xx^-1 (C_xy - C_xy^)]
+ Tr[C_y|x + C_y^|x] - 2 Tr[(C_y|x^1/2 C_y^|x C_y|x^1/2)^1/2], their x the condition) with their covariance estimator
swapped for the unbiased one; for classes whose frequencies differ between the sets, each set is regressed on its own
conditions. Conditions are zero-padded to max(feature dim, classes) dims so one state holds either kind.

Both keep float64 sum states (summed across processes): independent of the batch size and the number of processes.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.image.fid import _compute_fid

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import Spec
from gen_research.registry import METRICS

_MAX_STATE_BYTES = 2**33  # 8 GiB of float64 sums: a D x D covariance per class must fit


def _check_state_size(metric_name: str, matrices: int, dim: int, hint: str) -> None:
    needed = 2 * matrices * dim * dim * 8  # real and generated
    if needed > _MAX_STATE_BYTES:
        raise GenResearchError(f"metric '{metric_name}' keeps {matrices} covariance(s) of {dim} x {dim} per set "
                               f"({needed / 2**30:.0f} GiB); {hint}")


class _ClassMixtureStats(Metric):
    """Per class and set: sum of posterior weights, of their squares, weighted feature sums and outer products."""

    full_state_update = False

    def __init__(self, num_classes: int, num_features: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        for kind in ("real", "fake"):
            self.add_state(f"{kind}_weight", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_weight_sq", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_sum", torch.zeros(num_classes, num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_outer", torch.zeros(num_classes, num_features, num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: Tensor, logits: Tensor, real: bool) -> None:
        if logits.shape[1] != self.num_classes:
            raise GenResearchError(f"cafd: the extractor gave {logits.shape[1]} logits, expected {self.num_classes}")
        kind = "real" if real else "fake"
        features = features.double()
        weights = torch.softmax(logits.double(), dim=1)  # [N, K]
        getattr(self, f"{kind}_weight").add_(weights.sum(0))
        getattr(self, f"{kind}_weight_sq").add_(weights.square().sum(0))
        getattr(self, f"{kind}_sum").add_(weights.T @ features)
        outer = getattr(self, f"{kind}_outer")
        for k in range(self.num_classes):  # one D x D product per class (no [K, N, D] temporary)
            outer[k].add_((features * weights[:, k : k + 1]).T @ features)
        getattr(self, f"{kind}_count").add_(features.shape[0])

    def _component(self, kind: str, k: int) -> tuple[Tensor, Tensor] | None:
        weight, weight_sq = getattr(self, f"{kind}_weight")[k], getattr(self, f"{kind}_weight_sq")[k]
        if weight <= 0 or weight * weight / weight_sq < 2:  # fewer than 2 effective images
            return None
        mean = getattr(self, f"{kind}_sum")[k] / weight
        cov = (getattr(self, f"{kind}_outer")[k] - weight * torch.outer(mean, mean)) / (weight - weight_sq / weight)
        return mean, cov

    def compute(self) -> dict[str, Tensor]:
        if self.real_count < 1 or self.fake_count < 1:
            raise GenResearchError("cafd needs real and generated images; got "
                                   f"{int(self.real_count)} real and {int(self.fake_count)} generated")
        scores = torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
        for k in range(self.num_classes):
            real, fake = self._component("real", k), self._component("fake", k)
            if real is not None and fake is not None:
                scores[k] = float(_compute_fid(real[0], real[1], fake[0], fake[1]))
        p_real, p_fake = self.real_weight / self.real_count, self.fake_weight / self.fake_count
        terms = torch.where(p_real > 0, p_real * (p_real.log() - p_fake.log()), torch.zeros_like(p_real))
        return {"scores": scores, "kl": terms.sum()}


class CAFD(Spec):
    """Class-aware Frechet distance (Liu et al. 2018): mean over the classifier's classes of the FD of the per-class
    Gaussian components (posterior-weighted); ``cafd_kl``: KL of the class proportions (see the module docstring)."""

    name = "cafd"
    needs = "features"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        if not extractor.num_logits:
            raise GenResearchError(f"metric 'cafd' weighs features by class posteriors: it needs an extractor with class logits "
                                   f"(classifier); '{extractor.name}' has none")
        _check_state_size("cafd", extractor.num_logits, extractor.num_features,
                          "use an extractor whose classifier has few classes (a domain classifier, as the paper does)")
        return _ClassMixtureStats(int(extractor.num_logits), extractor.num_features)

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        if "logits" not in outputs:
            raise GenResearchError("metric 'cafd' needs the extractor's class logits beside its features")
        metric.update(outputs["features"], outputs["logits"], real=real)

    def compute(self, metric: Metric) -> dict[str, float]:
        values = metric.compute()
        scores = values["scores"]
        valid = scores[~torch.isnan(scores)]
        if not len(valid):
            raise GenResearchError("cafd: no class has 2 or more (posterior-weighted) real and generated images; evaluate more images")
        return {"cafd": float(valid.mean()), "cafd_kl": float(values["kl"])}


class _JointGaussian(Metric):
    """Sums and outer-product sums of the joint vectors [condition y (zero-padded), features x] of each set, float64,
    and how many rows of each set were conditioned on classes and how many on source images."""

    full_state_update = False

    def __init__(self, condition_dim: int, num_features: int) -> None:
        super().__init__()
        self.condition_dim = condition_dim
        joint = condition_dim + num_features
        for kind in ("real", "fake"):
            self.add_state(f"{kind}_sum", torch.zeros(joint, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_outer", torch.zeros(joint, joint, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_by_class", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_by_source", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, conditions: Tensor, features: Tensor, by_class: bool, real: bool) -> None:
        kind = "real" if real else "fake"
        padded = torch.zeros(len(features), self.condition_dim, dtype=torch.float64, device=features.device)
        padded[:, : conditions.shape[1]] = conditions.double()
        joint = torch.cat([padded, features.double()], dim=1)
        getattr(self, f"{kind}_sum").add_(joint.sum(0))
        getattr(self, f"{kind}_outer").add_(joint.T @ joint)
        getattr(self, f"{kind}_by_class" if by_class else f"{kind}_by_source").add_(len(features))

    def _moments(self, kind: str) -> tuple[Tensor, Tensor]:
        n = getattr(self, f"{kind}_by_class") + getattr(self, f"{kind}_by_source")
        mean = getattr(self, f"{kind}_sum") / n
        return mean, (getattr(self, f"{kind}_outer") - n * torch.outer(mean, mean)) / (n - 1)

    def check_conditions(self) -> None:
        kinds = {}
        for kind in ("real", "fake"):
            by_class, by_source = float(getattr(self, f"{kind}_by_class")), float(getattr(self, f"{kind}_by_source"))
            if by_class + by_source < 2:
                raise GenResearchError(f"cfid needs at least 2 real and 2 generated images; got {int(by_class + by_source)} {kind}")
            if by_class and by_source:
                raise GenResearchError(f"cfid: some {kind} images were conditioned on classes and others on source images; use one")
            kinds[kind] = "classes" if by_class else "source images"
        if kinds["real"] != kinds["fake"]:
            raise GenResearchError(f"cfid: the reals were conditioned on {kinds['real']} and the generated images on "
                                   f"{kinds['fake']}; both need the same kind of condition")

    def compute(self) -> Tensor:
        self.check_conditions()
        c = self.condition_dim
        (mu, cov), (mu_hat, cov_hat) = self._moments("real"), self._moments("fake")

        def regression(cov: Tensor) -> tuple[Tensor, Tensor]:
            """(A = S_xy S_yy^+, S_x|y = S_xx - A S_yx) of one set."""
            s_yy, s_xy, s_xx = cov[:c, :c], cov[c:, :c], cov[c:, c:]
            tolerance = 10 * cov.shape[0] * torch.finfo(torch.float64).eps  # tf.linalg.pinv's default, as the authors'
            a = s_xy @ torch.linalg.pinv(s_yy, rtol=tolerance, hermitian=True)
            s_x_given_y = s_xx - a @ s_xy.T
            return a, (s_x_given_y + s_x_given_y.T) / 2

        a, s_x_given_y = regression(cov)
        a_hat, s_hat_given_y = regression(cov_hat)
        mean_gap = mu[c:] - mu_hat[c:] - a_hat @ (mu[:c] - mu_hat[:c])
        slope_gap = a - a_hat
        zero = torch.zeros(len(mean_gap), dtype=torch.float64, device=mean_gap.device)
        return (mean_gap.square().sum() + torch.trace(slope_gap @ cov[:c, :c] @ slope_gap.T)
                + _compute_fid(zero, s_x_given_y, zero, s_hat_given_y))


def _no_condition_error() -> GenResearchError:
    return GenResearchError("metric 'cfid' needs the condition of every image: its class (a class-conditional model, or "
                            "--real/--fake folders with one subfolder per class) or, for a translator on paired data, its "
                            "source image (evaluate the checkpoint: --config EXP --ckpt_path CKPT; folders carry no sources)")


class CFID(Spec):
    """Conditional Frechet distance (Soloveitchik et al. 2021) given the class or the source image (see the module
    docstring). ``needs_labels``: classes ride on the labels path (as intra_fid's); ``needs_conditions``: a translator's
    feeder adds its source images' features, which then take the place of the classes."""

    name = "cfid"
    needs = "features"
    needs_labels: ClassVar[bool] = True
    needs_conditions: ClassVar[bool] = True

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        condition_dim = max(extractor.num_features, int(options.num_classes or extractor.num_logits or 0))
        _check_state_size("cfid", 1, condition_dim + extractor.num_features, "use an extractor with fewer features")
        return _JointGaussian(condition_dim, extractor.num_features)

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        if outputs.get("condition_features") is not None:
            metric.update(outputs["condition_features"], outputs["features"], by_class=False, real=real)
            return
        labels = outputs.get("labels")
        if labels is None:
            raise _no_condition_error()
        labels = labels.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= metric.condition_dim):
            raise GenResearchError(f"cfid: class labels must lie in 0..{metric.condition_dim - 1}, got {int(labels.min())}.."
                                   f"{int(labels.max())}; set num_classes to the data's number of classes")
        one_hot = torch.nn.functional.one_hot(labels, metric.condition_dim)
        metric.update(one_hot, outputs["features"], by_class=True, real=real)

    def compute(self, metric: Metric) -> dict[str, float]:
        return {"cfid": float(metric.compute())}


METRICS.add("cafd", CAFD, "class-aware Frechet distance: per-class FD of posterior-weighted Gaussian components, averaged (needs logits)")
METRICS.add("cafd_kl", CAFD, "cafd's companion: KL(p_real || p_gen) of the class proportions, mean classifier posteriors (mode dropping)")
METRICS.add("cfid", CFID, "conditional FID: Frechet distance of p(features | condition), given the class or a translator's source image")
