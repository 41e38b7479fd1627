"""vendi / vendi_real: equal to the vendi-score package, known answers, batch-size and process-count invariance."""

import math

import numpy as np
import pytest
import torch
from sklearn import preprocessing
from vendi_score import vendi as reference

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from tests.evaluation.specs.helpers import run_ddp, run_spec

ORDERS = [1.0, 2.0, 0.5, math.inf]


def features(n, d, seed, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float() + shift


def package_vendi(x: torch.Tensor, q: float, dual: bool) -> float:
    """The vendi-score package on the same float32 features (as float64): score_dual (d x d) or score_K (n x n)."""
    array = x.double().numpy()
    package_q = "inf" if math.isinf(q) else q
    if dual:
        return float(reference.score_dual(array, q=package_q))
    unit = preprocessing.normalize(array, axis=1)
    return float(reference.score_K(unit @ unit.T, q=package_q))


def vendi(fake, q=1.0, batch=64):
    return run_spec("vendi", fake=fake, options=EvalOptions(vendi_q=q), batch=batch)["vendi"]


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize(("n", "d"), [(300, 12), (40, 64)])  # n > d (the package's dual form) and n < d (n x n K)
def test_equals_the_vendi_score_package(q, n, d):
    x = features(n, d, seed=n + d, shift=0.3)  # shifted: the cosine similarities are not all ~0
    ours = vendi(x, q)
    assert ours == pytest.approx(package_vendi(x, q, dual=n > d), rel=1e-8)
    # The other form has |n - d| extra eigenvalues that are 0 but come out as rounding noise (~1e-17); the package
    # sums the positive ones, which orders q < 1 feel (lambda^0.5 ~ 3e-9 each), so there it agrees less closely.
    assert ours == pytest.approx(package_vendi(x, q, dual=n <= d), rel=1e-8 if q >= 1 else 1e-6)
    assert 1.0 <= ours <= min(n, d) + 1e-9


def test_shannon_also_matches_score_x():
    x = features(200, 10, seed=3, shift=0.5)
    assert vendi(x, 1.0) == pytest.approx(float(reference.score_X(x.double().numpy())), rel=1e-8)


@pytest.mark.parametrize("q", [0.0, *ORDERS])
def test_identical_samples_score_one(q):
    x = features(1, 20, seed=4).repeat(50, 1) * torch.linspace(0.5, 2.0, 50)[:, None]  # one direction, any length
    assert vendi(x, q) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("q", [0.0, *ORDERS])
def test_orthogonal_samples_score_n(q):
    basis, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    x = (basis[:, :24].T * torch.linspace(0.1, 3.0, 24, dtype=torch.float64)[:, None]).float()  # 24 orthogonal rows
    assert vendi(x, q) == pytest.approx(24.0, rel=1e-5)


def test_copies_of_orthogonal_samples_count_once():
    eye = torch.eye(16)[:5]
    x = eye.repeat(7, 1)  # 5 distinct directions, 7 copies each
    assert vendi(x, 1.0) == pytest.approx(5.0, rel=1e-9)
    assert vendi(x, 2.0) == pytest.approx(5.0, rel=1e-9)


def test_more_spread_is_more_diverse():
    tight, wide = features(400, 8, 6) * 0.1 + 1.0, features(400, 8, 6) * 1.0 + 1.0
    assert vendi(tight) < vendi(wide)


def test_vendi_real_scores_the_reference_set():
    real, fake = features(250, 16, 7), features(150, 16, 8, shift=1.0)
    both = run_spec("vendi_real", real=real, fake=fake, options=EvalOptions(vendi_q=2.0))
    assert set(both) == {"vendi_real"}
    assert both["vendi_real"] == pytest.approx(package_vendi(real, 2.0, dual=True), rel=1e-8)
    assert run_spec("vendi", real=real, fake=fake)["vendi"] == pytest.approx(package_vendi(fake, 1.0, dual=True), rel=1e-8)


def test_batch_size_and_processes_do_not_matter():
    real, fake = features(301, 16, 9), features(257, 16, 10, shift=0.4)
    single = [run_spec("vendi", fake=fake, batch=b) for b in (7, 64)] + [run_spec("vendi_real", real=real, fake=fake)]
    assert single[0]["vendi"] == pytest.approx(single[1]["vendi"], rel=1e-10)
    ranks = run_ddp([("vendi", {"fake": fake}), ("vendi_real", {"real": real, "fake": fake})])
    for rank in ranks:
        assert rank[0]["vendi"] == pytest.approx(single[0]["vendi"], rel=1e-10)
        assert rank[1]["vendi_real"] == pytest.approx(single[2]["vendi_real"], rel=1e-10)


def test_bad_order_and_empty_set_are_one_line_errors():
    x = features(10, 4, 11)
    with pytest.raises(GenResearchError, match="vendi_q must be a number >= 0"):
        vendi(x, -1.0)
    with pytest.raises(GenResearchError, match="vendi_real got no reference"):
        run_spec("vendi_real", fake=x)
    assert np.isfinite(vendi(x, 1.0))
