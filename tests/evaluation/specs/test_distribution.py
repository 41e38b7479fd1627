"""fid, kid, is, mifid against the reference formulas (scipy, torch-fidelity) on seeded synthetic features."""

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import FakeExtractor, run_spec


def features(n=1000, d=32, shift=0.0, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale + shift


REAL = features(seed=0)
FAKE = features(n=800, shift=0.3, scale=1.2, seed=1)


def scipy_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().numpy(), b.double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_scipy_formula():
    got = run_spec("fid", REAL, FAKE)["fid"]
    assert got == pytest.approx(scipy_fid(REAL, FAKE), rel=1e-5)
    assert got > 1.0


def test_fid_of_reals_against_themselves_is_zero():
    assert abs(run_spec("fid", REAL, REAL)["fid"]) < 1e-6 * run_spec("fid", REAL, FAKE)["fid"]


def test_fid_grows_with_noise():
    noise = features(n=1000, seed=7)
    values = [run_spec("fid", REAL, features(seed=3) + s * noise)["fid"] for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_kid_matches_torch_fidelity_without_sampling():
    n = 600
    real, fake = REAL[:n], FAKE[:n]
    ref = kid_features_to_metric(real.double(), fake.double(), kid_subsets=1, kid_subset_size=n, verbose=False)
    got = run_spec("kid", real, fake, options=EvalOptions(kid_subsets=1, kid_subset_size=n))
    assert got["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-5)
    assert got["kid"] > 0.01
    assert got["kid_std"] == 0.0


def test_kid_subsets_are_seeded_and_leave_the_global_rng_alone():
    options = EvalOptions(kid_subsets=20, kid_subset_size=200, seed=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = run_spec("kid", REAL, FAKE, options=options)
    assert torch.equal(torch.get_rng_state(), state)
    b = run_spec("kid", REAL, FAKE, options=options)
    c = run_spec("kid", REAL, FAKE, options=EvalOptions(kid_subsets=20, kid_subset_size=200, seed=4))
    assert a == b
    assert a["kid"] != c["kid"]
    assert a["kid_std"] > 0
    # The subset mean estimates the full-set KID.
    full = run_spec("kid", REAL[:800], FAKE, options=EvalOptions(kid_subsets=1, kid_subset_size=800))["kid"]
    assert a["kid"] == pytest.approx(full, rel=0.2)


def test_kid_with_fewer_images_than_subset_size_uses_them_all_and_says_so():
    with pytest.warns(UserWarning, match="subsets of 200 instead of kid_subset_size=1000"):
        got = run_spec("kid", REAL[:300], FAKE[:200], options=EvalOptions(kid_subsets=5, kid_subset_size=1000))
    assert got["kid"] > 0 and np.isfinite(got["kid_std"])


def logits(n=1000, k=10, seed=5):
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(n, k, generator=g)


def test_is_matches_torch_fidelity():
    lg = logits()
    ref = isc_features_to_metric(lg, splits=1, shuffle=False)
    got = run_spec("is", fake=lg, logits=True, options=EvalOptions(is_splits=1))
    assert got["is"] == pytest.approx(ref["inception_score_mean"], rel=1e-5)
    assert got["is_std"] == 0.0
    assert 1.0 < got["is"] < 10.0


def test_is_splits_are_seeded():
    lg = logits()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = run_spec("is", fake=lg, logits=True, options=EvalOptions(is_splits=10, seed=1))
    assert torch.equal(torch.get_rng_state(), state)
    assert a == run_spec("is", fake=lg, logits=True, options=EvalOptions(is_splits=10, seed=1))
    assert a["is_std"] > 0


def test_is_without_logits_is_a_user_error():
    with pytest.raises(GenResearchError, match="metric 'is' needs an extractor with class logits.*'dino' has none"):
        METRICS.get("is")().build(FakeExtractor(32, None, name="dino"), EvalOptions())


def test_mifid_is_fid_when_nothing_is_memorized_and_larger_when_copied():
    fid = run_spec("fid", REAL, FAKE)["fid"]
    assert run_spec("mifid", REAL, FAKE)["mifid"] == pytest.approx(fid, rel=1e-5)
    copies = REAL[:800] + 1e-3 * features(n=800, seed=9)
    assert run_spec("mifid", REAL, copies)["mifid"] > 10 * run_spec("fid", REAL, copies)["fid"]
