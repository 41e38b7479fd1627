"""MOS with its t interval and 2AFC rates with Wilson intervals, against scipy, published values and hand sums."""

import math

import pytest
from scipy import stats as scipy_stats

from gen_research.rating.stats import format_table, mean_opinion_score, summarize, t_interval, wilson_interval
from tests.rating.helpers import plan_of


def test_t_interval_by_hand_and_against_scipy():
    # [2, 4, 4, 4, 5]: mean 3.8, s = sqrt(4.8 / 4), t(0.975, 4) = 2.7764451 -> 3.8 +- 1.3601748
    low, high = t_interval([2, 4, 4, 4, 5])
    assert low == pytest.approx(3.8 - 2.7764451052 * math.sqrt(1.2) / math.sqrt(5), abs=1e-9)
    assert (low, high) == pytest.approx((2.4398252, 5.1601748), abs=1e-6)
    ratings = [1, 2, 3, 4, 5, 5, 4, 3, 5, 2, 1]
    sem = scipy_stats.sem(ratings)
    assert t_interval(ratings) == pytest.approx(scipy_stats.t.interval(0.95, len(ratings) - 1, loc=sum(ratings) / 11, scale=sem))
    assert t_interval([3]) is None and t_interval([]) is None
    assert t_interval([4, 4, 4]) == (4.0, 4.0)


def test_mean_opinion_score_record():
    assert mean_opinion_score([2, 4, 4, 4, 5]) == {"mos": 3.8, "ci95": pytest.approx([2.4398252, 5.1601748]), "ratings": 5}
    assert mean_opinion_score([5]) == {"mos": 5.0, "ci95": None, "ratings": 1}


@pytest.mark.parametrize("successes, trials, expected", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson score)
    (81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)), (1, 29, (0.0061, 0.1718)),
    (29, 29, (0.8830, 1.0)), (5, 10, (0.2366, 0.7634)),
])
def test_wilson_interval_published_values(successes, trials, expected):
    assert wilson_interval(successes, trials) == pytest.approx(expected, abs=6e-5)


@pytest.mark.parametrize("successes, trials", [(3, 17), (40, 50), (1, 2)])
def test_wilson_bounds_invert_the_score_test(successes, trials):
    """Each bound p solves |k/n - p| = z sqrt(p (1 - p) / n): Wilson's definition, independent of the closed form."""
    z = scipy_stats.norm.ppf(0.975)
    for p in wilson_interval(successes, trials):
        assert abs(successes / trials - p) == pytest.approx(z * math.sqrt(p * (1 - p) / trials), rel=1e-9)
    assert wilson_interval(0, 0) is None


def _answers(plan, value_of):
    return {t["id"]: value_of(t) for t in plan["trials"]}


def test_summarize_mos_by_set(folders):
    plan = plan_of(folders, mode="mos", num_trials=9)
    rating_of_set = {0: 5, 1: 2, 2: 3}  # real rated 5, a/samples 2, b/samples 3 (plus one 1 below)
    answers = _answers(plan, lambda t: {"rating": rating_of_set[t["images"][0]["set"]]})
    odd = next(t["id"] for t in plan["trials"] if t["images"][0]["set"] == 1)
    answers[odd] = {"rating": 1}
    results = summarize(plan, answers)
    assert results["answered"] == results["total"] == 9 and results["complete"]
    assert results["mos"]["real"] == {"mos": 5.0, "ci95": [5.0, 5.0], "ratings": 3}
    assert results["mos"]["a/samples"]["mos"] == pytest.approx(5 / 3)
    assert results["mos"]["a/samples"]["ci95"] == pytest.approx(list(t_interval([1, 2, 2])))
    table = format_table(results)
    assert "a/samples  1.67" in table and "9 of 9 trials answered" in table


def test_summarize_fool_rate_and_preference(folders):
    plan = plan_of(folders, mode="2afc", num_trials=10)
    left = summarize(plan, _answers(plan, lambda t: {"choice": 0}))  # always the left image
    for condition, name in ((0, "a/samples"), (1, "b/samples")):
        trials = [t for t in plan["trials"] if t["condition"] == condition]
        fooled = sum(t["images"][0]["set"] != 0 for t in trials)  # the fake was on the left
        assert left["fool_rate"][name]["fool_rate"] == fooled / len(trials) == 2 / 5
        assert left["fool_rate"][name]["ci95"] == pytest.approx(list(wilson_interval(fooled, len(trials))))
    assert "40.0%" in format_table(left)
    partial = summarize(plan, {plan["trials"][0]["id"]: {"choice": 1}})
    assert partial["answered"] == 1 and not partial["complete"]
    assert sum(r["trials"] for r in partial["fool_rate"].values()) == 1
    models = plan_of(folders, mode="2afc", pairs="models", num_trials=6)
    picked_a = summarize(models, _answers(models, lambda t: {"choice": [i["set"] for i in t["images"]].index(1)}))
    assert picked_a["preference"] == [{"a": "a/samples", "b": "b/samples", "preference_a": 1.0, "chosen": 6, "trials": 6,
                                       "ci95": pytest.approx(list(wilson_interval(6, 6)))}]
