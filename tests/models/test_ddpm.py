"""DDPM: every target x schedule trains a step, min-SNR weights match the formula, loss falls, validation is seeded."""

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.diffusion import DDPM, min_snr_weights
from gen_research.registry import MODELS

TINY = dict(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100)


def test_registered():
    from gen_research.models.contract import ExportsDiffusers, Generates, can

    model = DDPM(**TINY)
    assert MODELS.get("ddpm") is DDPM and can(model, Generates) and can(model, ExportsDiffusers)
    assert model.conditioning_classes is None and DDPM(**TINY, num_classes=10, class_conditional=True).conditioning_classes == 10


@pytest.mark.parametrize("schedule", ["linear", "cosine", "scaled_linear"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_forward_backward(prediction_type, schedule, digits):
    torch.manual_seed(0)
    model = DDPM(**TINY, noise_schedule=schedule, prediction_type=prediction_type, loss_weighting="min_snr")
    losses = model.compute_losses(digits[0][:4])
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_min_snr_weights_match_formula():
    model = DDPM(**TINY, noise_schedule="linear")
    t = torch.tensor([0, 10, 50, 99])
    a = model.noise_scheduler.alphas_cumprod[t].double()
    snr = a / (1 - a)
    torch.testing.assert_close(model.snr(t).double(), snr, rtol=1e-5, atol=0)
    g = 5.0
    clipped = torch.minimum(snr, torch.tensor(g, dtype=torch.float64))
    torch.testing.assert_close(min_snr_weights(snr, "epsilon", g), clipped / snr)
    torch.testing.assert_close(min_snr_weights(snr, "v_prediction", g), clipped / (snr + 1))
    torch.testing.assert_close(min_snr_weights(snr, "sample", g), clipped)
    # low-noise steps (snr > gamma) are down-weighted, high-noise steps keep weight 1 for epsilon
    w = min_snr_weights(snr, "epsilon", g)
    assert w[0] < 1 and w[-1] == 1


def test_min_snr_loss_is_weighted_mse():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    plain = DDPM(**TINY, loss_weighting="mse")
    weighted = DDPM(**TINY, loss_weighting="min_snr")
    weighted.load_state_dict(plain.state_dict())
    a = plain.compute_losses(x, generator=torch.Generator().manual_seed(3))
    b = weighted.compute_losses(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a["mse"], b["mse"])  # same t and noise from the same seed
    assert not torch.allclose(a["loss"], b["loss"])


def test_loss_decreases_on_digits(digits):
    torch.manual_seed(0)
    x = digits[0]
    model = DDPM(**TINY, lr=3e-3)
    opt = model.configure_optimizers()["optimizer"]
    fixed = lambda: model.compute_losses(x[:128], generator=torch.Generator().manual_seed(0))["loss"].item()  # noqa: E731
    with torch.no_grad():
        before = fixed()
    for _ in range(30):
        loss = model.compute_losses(x[torch.randint(0, len(x), (32,))])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = fixed()
    assert after < 0.7 * before, (before, after)


def test_validation_loss_is_seeded_and_leaves_global_rng(digits):
    model = DDPM(**TINY).eval()
    batch = (digits[0][:8], digits[1][:8])
    state = torch.get_rng_state()
    with torch.no_grad():
        model.on_validation_epoch_start()
        a = model.compute_losses(*batch, generator=model.eval_generator())["loss"]
        model.on_validation_epoch_start()
        b = model.compute_losses(*batch, generator=model.eval_generator())["loss"]
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())


def test_class_conditional_sample_with_labels(digits):
    torch.manual_seed(0)
    model = DDPM(**TINY, num_classes=10, class_conditional=True, attention_levels=[1]).eval()
    loss = model.compute_losses(digits[0][:4], digits[1][:4])["loss"]
    assert torch.isfinite(loss)
    assert model.unet.class_embedding.num_embeddings == 11  # 10 classes + the null label
    labels = torch.tensor([0, 3, 7])
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    a = model.sample(3, generator=gen(), labels=labels, steps=3, guidance_scale=2.0)
    b = model.sample(3, generator=gen(), labels=labels, steps=3, guidance_scale=2.0)
    assert a.shape == (3, 1, 8, 8) and torch.isfinite(a).all() and torch.equal(a, b)
    cycled = model.sample(3, generator=gen(), steps=3, guidance_scale=2.0)  # labels 0, 1, 2
    assert cycled.shape == (3, 1, 8, 8)


def test_config_errors():
    with pytest.raises(GenResearchError, match="not divisible"):
        DDPM(image_shape=(1, 28, 28), block_out_channels=[8, 8, 8, 8])
    with pytest.raises(GenResearchError, match="needs num_classes"):
        DDPM(**TINY, class_conditional=True)
    with pytest.raises(GenResearchError, match="did you mean ddim"):
        DDPM(**TINY, sampler="dimm")
    with pytest.raises(GenResearchError, match="unconditional model"):
        DDPM(**TINY).sample(2, labels=torch.tensor([0, 1]), steps=2)
