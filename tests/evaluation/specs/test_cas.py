"""CAS: a classifier trained on generated labelled images, tested on real ones (sklearn digits, 8x8)."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

import gen_research.evaluation.specs  # noqa: F401  (registration)
from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.registry import METRICS

from .helpers import FakeExtractor


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2.0 - 1.0  # [N, 1, 8, 8] in [-1, 1]
    return images, torch.tensor(data.target, dtype=torch.long)


@pytest.fixture(autouse=True)
def few_epochs(monkeypatch):
    monkeypatch.setenv("GEN_RESEARCH_CAS_EPOCHS", "10")


def run_cas(fake, fake_y, real, real_y, batch: int = 100, options: EvalOptions | None = None) -> float:
    spec = METRICS.get("cas")()
    metric = spec.build(FakeExtractor(16), options or EvalOptions())
    for images, labels, is_real in ((fake, fake_y, False), (real, real_y, True)):
        for start in range(0, len(images), batch):
            spec.update_images(metric, images[start : start + batch], labels[start : start + batch], None, real=is_real)
    return spec.compute(metric)["cas"]


def test_interface():
    spec = METRICS.get("cas")()
    assert spec.needs_images and spec.needs_labels and spec.needs_reals
    assert not spec.paired and not spec.needs_generator
    assert spec.feature_name(FakeExtractor(16)) == "small-convnet"


def test_true_labels_score_high(digits):
    x, y = digits
    assert run_cas(x[:900], y[:900], x[900:], y[900:]) > 0.85


def test_permuted_labels_score_low(digits):
    x, y = digits
    wrong = y[:900][torch.randperm(900, generator=torch.Generator().manual_seed(1))]
    assert run_cas(x[:900], wrong, x[900:], y[900:]) < 0.3


def test_seeded_deterministic_and_global_rng_untouched(digits):
    x, y = digits
    state = torch.get_rng_state()
    first = run_cas(x[:900], y[:900], x[900:], y[900:], options=EvalOptions(seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    assert run_cas(x[:900], y[:900], x[900:], y[900:], options=EvalOptions(seed=3)) == first


def test_batch_size_independent(digits):
    x, y = digits
    args = (x[:900], y[:900], x[900:], y[900:])
    assert run_cas(*args, batch=7) == run_cas(*args, batch=100)


def test_missing_labels_is_user_error(digits):
    x, _ = digits
    spec = METRICS.get("cas")()
    metric = spec.build(FakeExtractor(16), EvalOptions())
    with pytest.raises(GenResearchError, match="cas.*class"):
        spec.update_images(metric, x[:10], None, None, real=False)


def test_num_classes_from_options_checks_labels(digits):
    x, y = digits
    with pytest.raises(GenResearchError, match="0..4"):
        run_cas(x[:50], y[:50], x[50:80], y[50:80], options=EvalOptions(num_classes=5))
