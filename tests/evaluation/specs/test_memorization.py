"""memorization: copies of the training set are flagged, fresh samples are not."""

import math

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.evaluation.specs.memorization import authenticity
from gen_research.evaluation.base import EvalOptions
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import run_spec

KEYS = {"nn_distance", "copy_fraction", "data_copying_zu", "authenticity"}


def sample(n, seed, d=16):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


TRAIN, HELDOUT = sample(1000, 0), sample(600, 1)


def test_copies_of_the_training_set_are_flagged():
    copies = TRAIN[:600] + 1e-3 * sample(600, 2)
    got = run_spec("memorization", real=HELDOUT, fake=copies, train=TRAIN)
    assert set(got) == KEYS
    assert got["nn_distance"] < 0.01
    assert got["copy_fraction"] > 0.99
    # Z_U per cell is at least -sqrt(3 m n / (m + n + 1)) (about -6.7 for ~30 samples of each kind per cell).
    assert got["data_copying_zu"] < -5
    assert got["authenticity"] == 0.0  # each copy is far closer to its original than the original's neighbour


def test_fresh_samples_are_not_flagged():
    got = run_spec("memorization", real=HELDOUT, fake=sample(600, 3), train=TRAIN)
    assert got["nn_distance"] == pytest.approx(1.0, abs=0.05)
    assert got["copy_fraction"] < 0.12
    assert abs(got["data_copying_zu"]) < 2.0


def test_partial_copying_lies_in_between():
    mixed = torch.cat([TRAIN[:150] + 1e-3 * sample(150, 4), sample(450, 5)])
    got = run_spec("memorization", real=HELDOUT, fake=mixed, train=TRAIN)
    assert 0.2 < got["copy_fraction"] < 0.4
    assert 0.6 < got["nn_distance"] < 0.85
    assert -5 < got["data_copying_zu"] < -1
    fresh = run_spec("memorization", real=HELDOUT, fake=sample(450, 5), train=TRAIN)["authenticity"]
    assert got["authenticity"] == pytest.approx(0.75 * fresh, abs=1e-12)  # the same fresh 450; the 150 copies: 0


def test_seeded_and_needs_training_features():
    a = run_spec("memorization", real=HELDOUT, fake=sample(600, 3), train=TRAIN, options=EvalOptions(seed=1))
    assert a == run_spec("memorization", real=HELDOUT, fake=sample(600, 3), train=TRAIN, options=EvalOptions(seed=1))
    assert all(math.isfinite(v) for v in a.values())
    spec = METRICS.get("memorization")
    assert spec.needs_train and not getattr(METRICS.get("fid"), "needs_train")
    with pytest.raises(GenResearchError, match="training"):
        run_spec("memorization", real=HELDOUT, fake=sample(600, 3))


def circle(n, seed):
    angle = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 * math.pi
    return torch.stack([angle.cos(), angle.sin()], dim=1).float()


def test_authenticity_hand_computed():
    # training 0 1 3 (nearest other: 1 1 2). 0.4 -> 0 (0.4 <= 1, copy), 2.5 -> 3 (0.5 <= 2, copy), 1.9 -> 1
    # (0.9 <= 1, copy), -1.5 -> 0 (1.5 > 1, authentic), 5.5 -> 3 (2.5 > 2, authentic): 2 of 5.
    train = torch.tensor([[0.0], [1.0], [3.0]])
    fake = torch.tensor([[0.4], [2.5], [1.9], [-1.5], [5.5]])
    assert float(authenticity(train, fake)) == pytest.approx(2 / 5)
    assert float(authenticity(train, torch.tensor([[1.0], [3.0]]))) == 0.0  # exact copies
    duplicated = torch.tensor([[0.0], [0.0], [3.0]])  # a copy of a duplicated image ties at 0: still a copy
    assert float(authenticity(duplicated, torch.tensor([[0.0]]))) == 0.0
    got = run_spec("authenticity", real=torch.tensor([[0.2], [2.0]]), fake=fake, train=train)
    assert got["authenticity"] == pytest.approx(2 / 5)


def test_authenticity_of_fresh_uniform_points_on_a_circle_is_one_third():
    """Chord distance is monotone in arc length, so on the circle: a fresh point falls in a gap of length S (chosen
    with probability S) at distance u ~ U(0, S/2) from its nearest training point t*, whose nearest other training
    point is min(S, S') away, S' the gap on t*'s other side; u < S always, so it is a copy iff u < S'.
    P(copy) = n E[min(S_1, 2 S_2)] with uniform spacings S = E / sum(E), E iid Exp(1), independent of the sum:
    = E[min(E_1, 2 E_2)] = 1 / (1 + 1/2) = 2/3 for any n >= 3, so the expected authenticity is exactly 1/3."""
    got = run_spec("authenticity", real=circle(100, 1), fake=circle(6000, 2), train=circle(3000, 3))
    assert got["authenticity"] == pytest.approx(1 / 3, abs=0.03)


def test_authenticity_far_from_the_data_is_one():
    got = run_spec("authenticity", real=HELDOUT, fake=sample(300, 6) + 20.0, train=TRAIN)
    assert got["authenticity"] == 1.0


def test_authenticity_is_a_name_of_memorization():
    assert METRICS.get("authenticity") is METRICS.get("memorization")
