"""memorization: copies of the training set are flagged, fresh samples are not."""

import math

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import run_spec

KEYS = {"nn_distance", "copy_fraction", "data_copying_zu"}


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


def test_seeded_and_needs_training_features():
    a = run_spec("memorization", real=HELDOUT, fake=sample(600, 3), train=TRAIN, options=EvalOptions(seed=1))
    assert a == run_spec("memorization", real=HELDOUT, fake=sample(600, 3), train=TRAIN, options=EvalOptions(seed=1))
    assert all(math.isfinite(v) for v in a.values())
    spec = METRICS.get("memorization")
    assert spec.needs_train and not getattr(METRICS.get("fid"), "needs_train")
    with pytest.raises(GenResearchError, match="training"):
        run_spec("memorization", real=HELDOUT, fake=sample(600, 3))
