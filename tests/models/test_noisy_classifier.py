"""Noisy classifier (shapes, training on 8x8 digits) and classifier guidance (sign, scale 0, prediction type)."""

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.diffusion import NoisyClassifier
from gen_research.registry import MODELS
from gen_research.sampling.guidance import classifier_guidance

SMALL = dict(image_shape=(1, 8, 8), num_classes=10, channels=[16, 32], feature_dim=32, time_embed_dim=16,
             num_train_timesteps=100)


def test_registered_shapes_and_log_prob():
    assert MODELS.get("noisy_classifier") is NoisyClassifier
    model = NoisyClassifier(**SMALL).eval()
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    t = torch.tensor([0, 10, 50, 99, 3])
    logits = model(x, t)
    assert logits.shape == (5, 10)
    assert model(x, 7).shape == (5, 10)  # scalar t broadcasts
    labels = torch.tensor([0, 1, 2, 3, 4])
    lp = model.log_prob(x, t, labels)
    assert lp.shape == (5,) and (lp <= 0).all()
    assert torch.allclose(lp, torch.log_softmax(logits, 1)[torch.arange(5), labels])
    with pytest.raises(GenResearchError, match="labels"):
        NoisyClassifier(image_shape=(1, 8, 8), num_classes=None)


def test_loss_decreases_on_digits(digits):
    x, y = digits
    torch.manual_seed(0)
    model = NoisyClassifier(**SMALL, lr=3e-3)
    opt = model.configure_optimizers()["optimizer"]
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731  same t and noise for before/after
    with torch.no_grad():
        before = model.compute_losses(x, y, generator=gen())["loss"].item()
    for _ in range(20):
        idx = torch.randint(0, len(x), (64,))
        loss = model.compute_losses(x[idx], y[idx])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.compute_losses(x, y, generator=gen())["loss"].item()
    assert after < before - 0.1, (before, after)


def test_eval_losses_are_seeded(digits):
    x, y = digits
    model = NoisyClassifier(**SMALL).eval()
    state = torch.get_rng_state()
    a = model.compute_losses(x[:32], y[:32], generator=torch.Generator().manual_seed(3))
    b = model.compute_losses(x[:32], y[:32], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a["loss"], b["loss"]) and torch.equal(torch.get_rng_state(), state)


class StubClassifier:
    """log p(y | x) = -||x - mu_y||^2, so grad_x log p = 2 (mu_y - x) points towards mu_y."""

    def __init__(self, mu: torch.Tensor) -> None:
        self.mu = mu

    def log_prob(self, x_t, t, labels):
        return -(x_t - self.mu[labels]).pow(2).flatten(1).sum(1)


def test_classifier_guidance_sign():
    torch.manual_seed(0)
    mu = torch.randn(3, 1, 4, 4)
    labels = torch.tensor([0, 2, 1, 2])
    x = torch.randn(4, 1, 4, 4)
    abars = torch.linspace(0.99, 0.05, 100)
    t = torch.tensor(40)
    zeros = lambda x, t: torch.zeros_like(x)  # noqa: E731
    scale = 0.3
    guided = classifier_guidance(zeros, StubClassifier(mu), labels, scale, abars)
    with torch.no_grad():  # the gradient must work inside a no_grad sampling loop
        eps = guided(x, t)
    abar = abars[40]
    grad = 2 * (mu[labels] - x)
    assert torch.allclose(eps, -scale * (1 - abar).sqrt() * grad, atol=1e-6)

    def x0(e):
        return (x - (1 - abar).sqrt() * e) / abar.sqrt()

    dist = lambda z: (z - mu[labels]).flatten(1).norm(dim=1)  # noqa: E731
    assert (dist(x0(eps)) < dist(x0(torch.zeros_like(x)))).all()
    # per-sample timesteps broadcast per image
    tt = torch.tensor([0, 10, 40, 99])
    eps_b = guided(x, tt)
    assert torch.allclose(eps_b, -scale * (1 - abars[tt]).sqrt()[:, None, None, None] * grad, atol=1e-6)


def test_classifier_guidance_scale_zero_and_prediction_type():
    mu = torch.randn(2, 1, 4, 4)
    x = torch.randn(3, 1, 4, 4)
    base = lambda x, t: x * 0.5 + 1  # noqa: E731
    labels = torch.tensor([0, 1, 0])
    abars = torch.linspace(0.99, 0.05, 10)
    out = classifier_guidance(base, StubClassifier(mu), labels, 0.0, abars)(x, torch.tensor(3))
    assert torch.equal(out, base(x, None))
    for bad in ("sample", "v_prediction"):
        with pytest.raises(GenResearchError, match="epsilon"):
            classifier_guidance(base, StubClassifier(mu), labels, 1.0, abars, prediction_type=bad)


def test_guidance_with_noisy_classifier_runs_under_no_grad():
    model = NoisyClassifier(**SMALL).eval()
    x = torch.randn(2, 1, 8, 8)
    labels = torch.tensor([3, 7])
    guided = classifier_guidance(lambda x, t: torch.zeros_like(x), model, labels, 2.0, model.alphas_cumprod)
    with torch.no_grad():
        eps = guided(x, torch.tensor(50))
    assert eps.shape == x.shape and eps.abs().sum() > 0 and not eps.requires_grad


def test_guidance_under_inference_mode():
    mu = torch.randn(2, 1, 4, 4)
    labels = torch.tensor([1, 0])
    abars = torch.linspace(0.99, 0.05, 10)
    guided = classifier_guidance(lambda x, t: torch.zeros_like(x), StubClassifier(mu), labels, 1.0, abars)
    x = torch.randn(2, 1, 4, 4)
    expected = guided(x, torch.tensor(4))
    with torch.inference_mode():
        got = guided(x.clone(), torch.tensor(4))
    assert torch.allclose(got, expected)
