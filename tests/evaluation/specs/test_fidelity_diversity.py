"""precision / recall / density / coverage against the reference implementation (prdc.compute_prdc)."""

import pytest
import torch
from prdc import compute_prdc

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.evaluation.specs import _common
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import run_spec

KEYS = ("precision", "recall", "density", "coverage")


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(900, 24, generator=g)
    fake = torch.cat([torch.randn(500, 24, generator=g) * 0.8 + 0.4, torch.randn(200, 24, generator=g) * 2.0])
    return real, fake


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_reference(k):
    real, fake = data()
    ref = compute_prdc(real.double().numpy(), fake.double().numpy(), nearest_k=k)
    got = run_spec("prdc", real, fake, options=EvalOptions(nearest_k=k))
    assert set(got) == set(KEYS)
    for key in KEYS:
        assert got[key] == pytest.approx(float(ref[key]), rel=1e-5), key
    assert 0.3 < got["precision"] < 0.9 and 0.3 < got["coverage"] < 0.99  # a non-trivial case


def test_small_blocks_give_the_same_numbers(monkeypatch):
    real, fake = data(1)
    whole = run_spec("prdc", real, fake)
    monkeypatch.setattr(_common, "BLOCK_BYTES", 5000 * 8)  # blocks of a few rows
    assert run_spec("prdc", real, fake) == whole


def test_identical_sets_are_perfect():
    real, _ = data(2)
    got = run_spec("prdc", real, real.clone())
    assert got["precision"] == got["recall"] == got["coverage"] == 1.0
    assert got["density"] > 0.9


def test_all_five_names_share_one_class():
    assert len({METRICS.get(name) for name in ("prdc", *KEYS)}) == 1


def test_too_few_samples_is_a_user_error():
    real, fake = data()
    with pytest.raises(GenResearchError, match="nearest_k=5"):
        run_spec("prdc", real, fake[:4])
