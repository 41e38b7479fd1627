"""nnd / nnd_accuracy: ~0 and chance for one distribution, log 2 and 1 when separated, close to the exact
Jensen-Shannon divergence and Bayes accuracy of shifted Gaussians, monotone, deterministic, batch/process invariant."""

import math

import pytest
import torch
from scipy import integrate, stats

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.evaluator import Evaluator
from gen_research.evaluation.specs.critic import MIN_SAMPLES
from tests.evaluation.specs.helpers import run_ddp, run_spec


def gaussian(n, seed, d=8, shift=0.0):
    """Unit Gaussians in d dimensions, shifted by ``shift`` standard deviations along the first axis only."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    x[:, 0] += shift
    return x


def exact_jsd(shift: float) -> float:
    """JSD (nats) of N(0, I) and N(shift e_1, I): the other axes are identical, so the 1-d integral."""
    p, q = stats.norm(0, 1), stats.norm(shift, 1)

    def integrand(x):
        px, qx = p.pdf(x), q.pdf(x)
        m = 0.5 * (px + qx)
        return 0.5 * px * math.log(px / m) + 0.5 * qx * math.log(qx / m)

    return integrate.quad(integrand, -12, 12 + shift, limit=200)[0]


def nnd(real, fake, **options):
    return run_spec("nnd", real, fake, options=EvalOptions(**options))


def test_one_distribution_gives_zero_and_chance():
    # Over 20 seeds at this size nnd ranged -0.049..+0.004 and the accuracy 0.46..0.54: the critic picks up chance
    # patterns of its early-stopping rows that the held-out rows do not share, so the noise is mostly negative.
    # The upper bound 0.02 is below the JSD of Gaussians 0.5 std apart (0.030).
    for seed in range(3):
        result = nnd(gaussian(400, 10 * seed), gaussian(400, 10 * seed + 1), seed=seed)
        assert -0.06 < result["nnd"] < 0.02
        assert result["nnd_accuracy"] == pytest.approx(0.5, abs=0.07)  # 400 held-out rows: binomial std 0.025


def test_unequal_set_sizes_are_balanced():
    # An unweighted critic would learn the 3:1 prior: constant D = 0.75 scores log 2 - 0.837 = -0.144 here.
    result = nnd(gaussian(600, 1), gaussian(200, 2), seed=0)
    assert -0.06 < result["nnd"] < 0.02
    assert result["nnd_accuracy"] == pytest.approx(0.5, abs=0.07)


def test_separated_distributions_give_log_2_and_full_accuracy():
    result = nnd(gaussian(300, 3), gaussian(300, 4, shift=8.0))
    assert exact_jsd(8.0) == pytest.approx(math.log(2), abs=1e-3)
    assert math.log(2) - 0.03 < result["nnd"] <= math.log(2)
    assert result["nnd_accuracy"] > 0.99


@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_close_to_the_exact_jsd_and_bayes_accuracy(shift):
    # nnd estimates a lower bound on the JSD; the Bayes classifier (threshold at shift / 2) bounds the accuracy.
    result = nnd(gaussian(1000, 5), gaussian(1000, 6, shift=shift))
    jsd, bayes = exact_jsd(shift), stats.norm.cdf(shift / 2)
    assert jsd - 0.05 < result["nnd"] < jsd + 0.02  # held-out noise with 500 rows per class: ~0.01
    assert bayes - 0.05 < result["nnd_accuracy"] < bayes + 0.03  # binomial std ~0.015


def test_larger_shift_gives_larger_divergence():
    # From 0.75 std (JSD 0.066) up: at 500 rows per set a 0.5 std shift (JSD 0.030) is at the critic's noise floor.
    values = [nnd(gaussian(500, 7), gaussian(500, 8, shift=s)) for s in (0.0, 0.75, 1.5, 3.0, 6.0)]
    divergences = [v["nnd"] for v in values]
    accuracies = [v["nnd_accuracy"] for v in values]
    assert divergences == sorted(divergences) and len(set(divergences)) == len(divergences)
    assert accuracies == sorted(accuracies)


def test_deterministic_seeded_and_global_rng_untouched():
    real, fake = gaussian(200, 9), gaussian(200, 10, shift=1.0)
    state = torch.get_rng_state()
    first, again = nnd(real, fake, seed=3), nnd(real, fake, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert first == again
    assert nnd(real, fake, seed=4) != first  # the seed drives the split, the initialisation and the shuffles


def test_row_order_and_batch_size_do_not_matter():
    real, fake = gaussian(240, 11), gaussian(180, 12, shift=1.0)
    base = run_spec("nnd", real, fake, batch=64)
    assert run_spec("nnd", real, fake, batch=7) == base
    shuffled = torch.randperm(240, generator=torch.Generator().manual_seed(0))
    assert run_spec("nnd", real[shuffled], fake.flip(0), batch=50) == base  # canonical order before the seeded split


def test_two_processes_match_one():
    real, fake = gaussian(240, 13), gaussian(180, 14, shift=1.0)
    single = run_spec("nnd", real, fake)
    ranks = run_ddp([("nnd", {"real": real, "fake": fake})])
    for (result,) in ranks:
        assert set(result) == set(single)
        for key in single:
            assert result[key] == pytest.approx(single[key], rel=1e-6, abs=1e-9), key


class ToyExtractor(FeatureExtractor):
    name, num_features = "toy", 8

    def forward(self, images):
        return {"features": images.flatten(1)}


def test_evaluator_keys_name_the_critic_and_run_under_inference_mode():
    real, fake = gaussian(100, 15), gaussian(100, 16, shift=2.0)
    results = {}
    for names in (["nnd"], ["nnd", "nnd_accuracy"]):
        evaluator = Evaluator(ToyExtractor(), names)
        with torch.inference_mode():  # as in Lightning's validation loop
            evaluator.add_outputs({"features": real}, "real")
            evaluator.add_outputs({"features": fake}, "fake")
            results[len(names)] = evaluator.compute()
    assert set(results[1]) == {"nnd/critic-mlp2x256-toy"}
    assert set(results[2]) == {"nnd/critic-mlp2x256-toy", "nnd_accuracy/critic-mlp2x256-toy"}
    assert results[2]["nnd/critic-mlp2x256-toy"] == results[1]["nnd/critic-mlp2x256-toy"] == run_spec("nnd", real, fake)["nnd"]


def test_too_few_samples_and_bad_epochs_are_one_line_errors():
    with pytest.raises(GenResearchError, match=f"nnd needs at least {MIN_SAMPLES} real and {MIN_SAMPLES} generated images"):
        nnd(gaussian(MIN_SAMPLES, 17), gaussian(MIN_SAMPLES - 1, 18))
    assert set(nnd(gaussian(MIN_SAMPLES, 17), gaussian(MIN_SAMPLES, 18))) == {"nnd", "nnd_accuracy"}
    with pytest.raises(GenResearchError, match="critic_epochs must be a positive integer"):
        nnd(gaussian(50, 19), gaussian(50, 20), critic_epochs=0)
