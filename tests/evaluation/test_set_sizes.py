"""Too-small sets are refused in one line before any feature is computed, for the metrics that need more images."""

import pytest

import gen_research.evaluation.specs  # noqa: F401  (registration)
from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.evaluation.set_sizes import NND_MIN_SAMPLES, check_set_sizes
from gen_research.evaluation.specs.critic import MIN_SAMPLES


def test_the_critic_minimum_is_the_metrics_own():
    assert NND_MIN_SAMPLES == MIN_SAMPLES


@pytest.mark.parametrize(("metric", "num_real", "num_fake", "message"), [
    ("nnd", 100, 39, "nnd trains a critic on half of each set"),
    ("nnd_accuracy", 39, 100, "at least 40 real and generated"),
    ("alpha_precision", 5, 100, "more than nearest_k=5 real"),
    ("beta_recall", 100, 1, "at least 2 generated"),
    ("cfid", 1, 100, "cfid needs at least 2 real and 2 generated"),
    ("cafd", 100, 1, "cafd needs at least 2"),
    ("fld", 100, 1, "fld needs at least 2"),
    ("fid_infinity", 100, 19, "smallest subset"),
])
def test_small_sets_are_refused(metric, num_real, num_fake, message):
    with pytest.raises(GenResearchError, match=message) as error:
        check_set_sizes([metric], EvalOptions(), num_real, num_fake)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("metric", ["nnd", "alpha_beta", "cfid", "cafd", "fld", "fid_infinity", "vendi"])
def test_enough_images_pass(metric):
    check_set_sizes([metric], EvalOptions(), 100, 100)
