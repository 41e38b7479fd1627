"""fld / fld_gap (Jiralerspong et al. 2023): the mixture likelihood by hand, the fit against scipy, copying flagged."""

import math
import warnings
from functools import lru_cache

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.evaluation.specs import fld
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import run_ddp, run_spec

D = 4


def sample(n, seed, d=D, scale=1.0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * scale + shift


TRAIN, TEST = sample(300, 0), sample(150, 1)


@lru_cache(maxsize=None)
def fld_of(kind: str) -> dict:
    fakes = {"fresh": sample(150, 2), "copies": TRAIN.clone(), "shifted": sample(150, 3, shift=1.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fld.feature_likelihood_divergence(TRAIN, TEST, fakes[kind], seed=0)


def test_mixture_nll_by_hand():
    x = torch.tensor([[0.3], [2.0]], dtype=torch.float64)
    centres = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    log_variances = torch.tensor([math.log(0.5), math.log(2.0)], dtype=torch.float64)

    def normal(v, mu, var):
        return math.exp(-((v - mu) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)

    expected = [-math.log(0.5 * normal(v, 0, 0.5) + 0.5 * normal(v, 1, 2.0)) for v in (0.3, 2.0)]
    assert fld.mixture_nlls(x, centres, log_variances).tolist() == pytest.approx(expected, rel=1e-12)
    # In D dimensions an isotropic Gaussian is a product of D of them, and the NLL is divided by D.
    x2, c2 = torch.tensor([[0.3, -0.4]], dtype=torch.float64), torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    p = 0.5 * normal(0.3, 0, 0.5) * normal(-0.4, 0, 0.5) + 0.5 * normal(0.3, 1, 2.0) * normal(-0.4, 1, 2.0)
    assert float(fld.mixture_nlls(x2, c2, log_variances)) == pytest.approx(-math.log(p) / 2, rel=1e-12)


def test_fit_starts_at_the_nearest_point_and_reaches_the_objectives_minimum(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    centres = torch.randn(2, 3, generator=g, dtype=torch.float64) * 0.5
    sq = ((x[:, None] - centres[None]) ** 2).sum(-1).numpy()
    monkeypatch.setattr(fld, "EPOCHS", 0)
    start = fld.fit_log_variances(centres, x, torch.Generator().manual_seed(0))
    assert start.numpy() == pytest.approx(np.log((sq.min(0) + 1e-3) / 3), rel=1e-12)
    monkeypatch.setattr(fld, "EPOCHS", 50)
    fitted = fld.fit_log_variances(centres, x, torch.Generator().manual_seed(0)).numpy()

    # The reference's objective, minimised by scipy: equal-weight mixture + one unnormalised Gaussian at the mean.
    origin = (0.9 ** 2) * ((x - x.mean(0)) ** 2).sum(-1).numpy()

    def component(d, log_variance):
        return -0.5 * d / np.exp(log_variance) - 1.5 * log_variance - 1.5 * np.log(2 * np.pi)

    def loss(p):
        columns = np.concatenate([component(sq, p[None, :2]) - np.log(2), component(origin, p[2])[:, None]], axis=1)
        return -logsumexp(columns, axis=1).mean() / 3

    best = minimize(loss, np.zeros(3), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})
    assert fitted == pytest.approx(best.x[:2], abs=0.1)  # 50 Adam steps at lr 0.5 end near, not at, the optimum
    assert np.abs(fitted - start.numpy()).max() > 0.3  # and they did move


def test_fresh_samples_generalise():
    got = fld_of("fresh")
    # Train and test about equally likely under the fakes' mixture; the variances are fitted on the train set, so it
    # is slightly likelier (here 150 variances on 300 points: about -5 to -13 over seeds, -4 to -8 at 1000 points).
    assert -20 < got["fld_gap"] < 0
    assert abs(got["fld"]) < 5  # as good as a mixture on held-out training points
    assert got["test_nll"] == pytest.approx(got["baseline_nll"], abs=0.05)


def test_copies_of_the_training_set_are_flagged():
    copies, fresh = fld_of("copies"), fld_of("fresh")
    assert copies["fld_gap"] < -1000  # each training point sits on its own collapsed Gaussian
    assert copies["train_nll"] < fresh["train_nll"] - 5
    assert copies["fld"] > fresh["fld"] + 1000  # and the test set falls between the spikes
    with pytest.warns(UserWarning, match="copies of training images"):
        run_spec("fld", real=TEST, fake=TRAIN.clone(), train=TRAIN)


def test_a_shifted_model_has_a_larger_fld():
    assert fld_of("shifted")["fld"] > fld_of("fresh")["fld"] + 10


def test_spec_keys_seeding_and_the_global_rng():
    state = torch.random.get_rng_state()
    got = run_spec("fld", real=TEST, fake=sample(150, 2), train=TRAIN, options=EvalOptions(seed=0))
    assert torch.equal(state, torch.random.get_rng_state())
    assert got == {"fld": fld_of("fresh")["fld"], "fld_gap": fld_of("fresh")["fld_gap"]}
    assert METRICS.get("fld") is METRICS.get("fld_gap") and METRICS.get("fld").needs_train


def test_inference_mode_batches_and_processes_do_not_matter():
    fake = sample(150, 2)
    with torch.inference_mode():
        inside = run_spec("fld", real=TEST, fake=fake, train=TRAIN, batch=7)
    expected = {"fld": fld_of("fresh")["fld"], "fld_gap": fld_of("fresh")["fld_gap"]}
    assert inside == expected
    ranks = run_ddp([("fld", {"real": TEST, "fake": fake, "train": TRAIN})])
    assert ranks[0][0] == ranks[1][0] == expected  # canonical row order: bitwise the same


def test_needs_all_three_sets():
    with pytest.raises(GenResearchError, match="training"):
        run_spec("fld", real=TEST, fake=sample(150, 2))


def test_subsampled_generated_set_is_seeded_and_order_invariant(monkeypatch):
    monkeypatch.setattr(fld, "MAX_GENERATED", 100)  # the reference keeps at most 10,000 generated samples
    fake = sample(150, 2)
    got = fld.feature_likelihood_divergence(TRAIN, TEST, fake, seed=4)
    shuffled = fld.feature_likelihood_divergence(TRAIN[torch.randperm(300, generator=torch.Generator().manual_seed(1))], TEST.flip(0), fake.flip(0), seed=4)
    assert got == shuffled and got["fld"] != fld_of("fresh")["fld"]
    assert got != fld.feature_likelihood_divergence(TRAIN, TEST, fake, seed=5)
