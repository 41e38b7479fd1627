"""fid_infinity: the bias of FID in 1/N extrapolated away; its points, its least-squares fit, its determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

import gen_research.evaluation.specs  # noqa: F401  (registration)
from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.evaluator import Evaluator
from gen_research.evaluation.specs.fid_infinity import fit_line, subset_sizes
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import FakeExtractor, run_ddp, run_spec


def gaussian(n: int, seed: int, d: int = 8, mean: float = 0.0, scale: float = 1.0) -> Tensor:
    return mean + scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def spec_and_values(real: Tensor, fake: Tensor, options: EvalOptions | None = None, batch: int = 500):
    spec = METRICS.get("fid_infinity")()
    metric = spec.build(FakeExtractor(real.shape[1]), options or EvalOptions())
    for is_real, data in ((True, real), (False, fake)):
        for start in range(0, len(data), batch):
            spec.update(metric, {"features": data[start : start + batch]}, real=is_real)
    return spec, spec.compute(metric)


def test_fid_is_biased_upward_at_small_n_and_fid_infinity_removes_most_of_the_bias():
    """Over 4 draws, FID at N = 2000 sits well above the FID of 200,000 samples (N ~ infinity), and FID_inf's mean
    sits on it: the bias is removed on average (each extrapolation has its own spread: it was closer in 3 of the 4)."""
    real = gaussian(20000, 0)
    at_n, extrapolated, large = [], [], []
    for seed in range(4):
        fake = gaussian(2000, 10 + seed, mean=0.1, scale=1.1)
        spec, values = spec_and_values(real, fake, EvalOptions(seed=seed))
        fids = spec.curves["fid_vs_n"]["y"]["FID"]
        assert fids[-1] > fids[0]  # N_min = 200 images: FID well above FID at N = 2000
        assert values["fid_infinity_slope"] > 0
        at_n.append(fids[0])
        extrapolated.append(values["fid_infinity"])
        large.append(run_spec("fid", real, gaussian(200000, 50 + seed, mean=0.1, scale=1.1), batch=20000)["fid"])
    bias_at_n = np.mean(at_n) - np.mean(large)
    bias_extrapolated = np.mean(extrapolated) - np.mean(large)
    assert bias_at_n > 0.02 and abs(bias_extrapolated) < 0.3 * bias_at_n
    closer = sum(abs(e - g) < abs(n - g) for e, n, g in zip(extrapolated, at_n, large))
    assert closer >= 3


def test_the_largest_point_is_the_plain_fid_and_the_points_are_evenly_spaced_in_inverse_n():
    real, fake = gaussian(600, 1).float(), gaussian(500, 2, mean=0.2).float()  # float32, as extractors give (and store)
    spec, values = spec_and_values(real, fake, EvalOptions(fid_infinity_points=6, fid_infinity_min_fraction=0.2))
    curve = spec.curves["fid_vs_n"]
    assert curve["n"] == [500.0, 278.0, 192.0, 147.0, 119.0, 100.0]  # 1/N = 0.002, 0.0036, ..., 0.01
    steps = np.diff(1 / np.array(curve["n"]))
    assert np.allclose(steps, steps[0], rtol=0.05)  # rounding N to integers moves 1/N a little
    assert curve["y"]["FID"][0] == pytest.approx(run_spec("fid", real, fake)["fid"], rel=1e-6)  # all 500: torchmetrics' FID
    # (1e-6: torchmetrics forms the covariance from sums, this from centred rows: rounding differs in the 9th digit)
    assert curve["extrapolated"] == values["fid_infinity"]
    assert curve["y"]["fit"] == pytest.approx([values["fid_infinity"] + values["fid_infinity_slope"] * x for x in curve["x"]])
    assert all(type(v) is float for v in curve["x"] + curve["y"]["FID"] + curve["n"])  # plain floats (JSON, W&B)
    assert subset_sizes(50000, 15, 0.1)[0] == 50000 and subset_sizes(50000, 15, 0.1)[-1] == 5000  # the paper's range


def test_the_fit_is_least_squares_in_inverse_n():
    x = [1 / n for n in (5000, 4000, 3000, 2000)]
    assert fit_line(x, [3.0 + 700.0 * v for v in x]) == pytest.approx((3.0, 700.0), rel=1e-12)  # points on a line: exact
    from sklearn.linear_model import LinearRegression

    noisy = [3.0 + 700.0 * v + e for v, e in zip(x, (0.01, -0.02, 0.015, 0.0))]
    reference = LinearRegression().fit(np.array(x).reshape(-1, 1), np.array(noisy))  # the authors' fit
    assert fit_line(x, noisy) == pytest.approx((reference.intercept_, reference.coef_[0]), rel=1e-10)


def test_deterministic_row_order_free_and_the_global_rng_untouched():
    real, fake = gaussian(400, 3), gaussian(300, 4, mean=0.1)
    state = torch.get_rng_state()
    first = spec_and_values(real, fake, EvalOptions(seed=7))[1]
    assert torch.equal(state, torch.get_rng_state())
    assert spec_and_values(real, fake, EvalOptions(seed=7))[1] == first
    shuffled = fake[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    assert spec_and_values(real, shuffled, EvalOptions(seed=7), batch=37)[1] == pytest.approx(first, rel=1e-10)
    assert spec_and_values(real, fake, EvalOptions(seed=8))[1]["fid_infinity"] != first["fid_infinity"]


def test_two_processes_match_one():
    real, fake = gaussian(401, 5).float(), gaussian(301, 6, mean=0.1).float()
    jobs = [("fid_infinity", {"real": real, "fake": fake, "options": EvalOptions(seed=3)})]
    one = run_spec("fid_infinity", real, fake, options=EvalOptions(seed=3), batch=50)
    ranks = run_ddp(jobs)
    assert ranks[0][0] == pytest.approx(one, rel=1e-9) and ranks[0] == ranks[1]


def test_one_line_errors_for_too_few_images_and_bad_options():
    with pytest.raises(GenResearchError, match="smallest subset"):
        spec_and_values(gaussian(50, 0), gaussian(10, 1))  # 0.1 x 10 images: 1, and FID takes 2
    with pytest.raises(GenResearchError, match="at least 2 points"):
        METRICS.get("fid_infinity")().build(FakeExtractor(4), EvalOptions(fid_infinity_points=1))
    with pytest.raises(GenResearchError, match="fid_infinity_min_fraction"):
        METRICS.get("fid_infinity")().build(FakeExtractor(4), EvalOptions(fid_infinity_min_fraction=1.5))


class _Flatten(FeatureExtractor):
    name, num_features = "flat", 4

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"features": images.flatten(1)}


def test_evaluator_keys_and_curves():
    images = torch.rand(200, 1, 2, 2, generator=torch.Generator().manual_seed(9)) * 2 - 1
    results = {}
    for names in ("fid_infinity", "fid_infinity,fid_infinity_slope"):
        evaluator = Evaluator(_Flatten(), names, EvalOptions(fid_infinity_points=5))
        evaluator.add_images(images, "real")
        evaluator.add_images(images[:150] * 0.8, "fake")
        results[names] = evaluator.compute()
        assert list(evaluator.curves) == ["fid_vs_n/flat"]
        assert evaluator.curves["fid_vs_n/flat"]["extrapolated"] == results[names]["fid_infinity/flat"]
    assert set(results["fid_infinity"]) == {"fid_infinity/flat"}
    assert set(results["fid_infinity,fid_infinity_slope"]) == {"fid_infinity/flat", "fid_infinity_slope/flat"}
