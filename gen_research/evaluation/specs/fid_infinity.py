"""fid_infinity: FID extrapolated to infinitely many generated images (Chong & Forsyth 2020, "Effectively Unbiased FID
and Inception Score and where to find them", CVPR; code: github.com/mchong6/FID_IS_infinity, ``score_infinity.py``).

FID is biased upward at finite N, and the bias is linear in 1/N: FID(N) = FID_inf + slope / N. We compute FID of the
full reference set (its mean and covariance computed once) against random subsets of N generated images at
``options.fid_infinity_points`` values of N, evenly spaced in 1/N from 1/N_min to 1/N_gen, N_min =
``fid_infinity_min_fraction`` * N_gen (the paper: 15 points from 5k to 50k; the authors' code spaces the N evenly in
N, ``np.linspace(5000, num_im, 15)``, we space them evenly along the fit's own axis 1/N), and fit FID against 1/N by
ordinary least squares with an intercept, as the authors do (``sklearn.linear_model.LinearRegression``).

Keys: ``fid_infinity`` (the intercept, the FID at 1/N = 0) and ``fid_infinity_slope`` (the bias per unit of 1/N); the
second is reported only when asked for by name (``--metrics fid_infinity,fid_infinity_slope``): the Evaluator reports
the keys a spec returns that were requested, and ``fid_infinity_slope`` is registered as a name of the same spec.
After compute the spec holds the bias-vs-N curve in ``curves["fid_vs_n"]`` (plain floats; plotted by
:func:`gen_research.evaluation.plots.plot_curves`).

Each FID is torchmetrics' formula (``_compute_fid``) on float64 means and unbiased covariances, with the reference's
matrix square root computed once (Tr((S S_ref)^1/2) = Tr((S_ref^1/2 S S_ref^1/2)^1/2), a symmetric eigenproblem per N).
Subsets are drawn without replacement (as the authors' shuffle-and-take), a fresh draw for each N, from a
``torch.Generator`` seeded with ``options.seed`` (the global RNG is untouched), over the generated features put in a
canonical row order first (a DDP gather orders rows by rank), so one process and several give the same number.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import Spec, canonical_order, state_cat
from gen_research.registry import METRICS


def subset_sizes(num_generated: int, points: int, min_fraction: float) -> list[int]:
    """``points`` subset sizes evenly spaced in 1/N from 1/N_min to 1/num_generated (rounded, ascending 1/N)."""
    if points < 2:
        raise GenResearchError(f"fid_infinity needs at least 2 points for its fit; got fid_infinity_points={points}")
    if not 0 < min_fraction <= 1:
        raise GenResearchError(f"fid_infinity_min_fraction must lie in (0, 1], got {min_fraction}")
    smallest = int(round(min_fraction * num_generated))
    if smallest < 2:
        raise GenResearchError(f"fid_infinity: its smallest subset, fid_infinity_min_fraction x {num_generated} generated images, "
                               f"has {smallest} image(s); evaluate more images (FID needs 2) or raise the fraction")
    inverse = np.linspace(1.0 / num_generated, 1.0 / smallest, points)
    sizes = [min(num_generated, int(round(1.0 / x))) for x in inverse]
    if len(set(sizes)) < 2:
        raise GenResearchError(f"fid_infinity: {num_generated} generated images give a single subset size; evaluate more images")
    return sizes


def frechet_to_reference(mean: Tensor, cov: Tensor, ref_mean: Tensor, ref_root: Tensor, ref_trace: Tensor) -> float:
    """torchmetrics' ``_compute_fid`` with the reference's square root R = S_ref^1/2 computed once:
    Tr((S S_ref)^1/2) = Tr((R S R)^1/2), a symmetric eigenvalue problem per subset instead of a general one."""
    inner = ref_root @ cov @ ref_root
    root_trace = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return float((mean - ref_mean).square().sum() + cov.trace() + ref_trace - 2 * root_trace)


def fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line y = intercept + slope x (as LinearRegression().fit)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x_mean, y_mean = xs.mean(), ys.mean()
    slope = float(((xs - x_mean) * (ys - y_mean)).sum() / ((xs - x_mean) ** 2).sum())
    return float(y_mean - slope * x_mean), slope


class _FIDCurve(Metric):
    """Reference sums (float64, summed across processes) and every generated feature row (gathered)."""

    full_state_update = False

    def __init__(self, num_features: int, points: int, min_fraction: float, seed: int) -> None:
        super().__init__()
        self.points, self.min_fraction, self.seed = points, min_fraction, seed
        self.add_state("real_sum", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("real_outer", torch.zeros(num_features, num_features, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("real_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, real: bool) -> None:
        if real:
            features = features.double()
            self.real_sum.add_(features.sum(0))
            self.real_outer.add_(features.T @ features)
            self.real_count.add_(features.shape[0])
        else:
            self.fake_features.append(features.detach().float())

    def compute(self) -> dict[str, list[float]]:
        n_real = float(self.real_count)
        fake = state_cat(self, "fake_features")
        if n_real < 2 or fake.shape[0] < 2:
            raise GenResearchError(f"fid_infinity needs at least 2 real and 2 generated images; got {int(n_real)} and {fake.shape[0]}")
        real_mean = self.real_sum / n_real
        real_cov = (self.real_outer - n_real * torch.outer(real_mean, real_mean)) / (n_real - 1)
        sizes = subset_sizes(fake.shape[0], self.points, self.min_fraction)
        fake = fake[canonical_order(fake)].double()
        values, vectors = torch.linalg.eigh(real_cov)
        real_root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
        generator = torch.Generator().manual_seed(self.seed)
        fids = []
        for size in sizes:
            rows = fake[torch.randperm(fake.shape[0], generator=generator)[:size].to(fake.device)]
            cov = torch.cov(rows.T).reshape(len(real_mean), -1)
            fids.append(frechet_to_reference(rows.mean(0), cov, real_mean, real_root, real_cov.trace()))
        return {"n": [float(s) for s in sizes], "fid": fids}


class FIDInfinity(Spec):
    """FID extrapolated to N = infinity from FIDs of generated subsets (Chong & Forsyth 2020); see the module docstring."""

    name = "fid_infinity"

    def __init__(self) -> None:
        self.curves: dict[str, dict] = {}

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        subset_sizes(10**6, options.fid_infinity_points, options.fid_infinity_min_fraction)  # bad options fail before any image
        return _FIDCurve(extractor.num_features, options.fid_infinity_points, options.fid_infinity_min_fraction, options.seed)

    def compute(self, metric: Metric) -> dict[str, float]:
        points = metric.compute()
        inverse = [1.0 / n for n in points["n"]]
        intercept, slope = fit_line(inverse, points["fid"])
        self.curves = {"fid_vs_n": {
            "x": inverse, "y": {"FID": points["fid"], "fit": [intercept + slope * x for x in inverse]},
            "xlabel": "1 / N", "ylabel": "FID", "n": points["n"], "extrapolated": intercept, "slope": slope,
            "title": f"FID vs 1/N: FID_inf = {intercept:.4g} (FID = FID_inf + {slope:.4g} / N)",
        }}
        return {"fid_infinity": intercept, "fid_infinity_slope": slope}


METRICS.add("fid_infinity", FIDInfinity, "FID_inf: FID of generated subsets fitted linearly in 1/N and extrapolated to 1/N = 0 (Chong & Forsyth 2020)")
METRICS.add("fid_infinity_slope", FIDInfinity, "fid_infinity's companion: the slope of FID against 1/N (the finite-sample bias)")
