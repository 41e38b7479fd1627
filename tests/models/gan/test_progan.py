"""ProGAN: the networks at every level and fade-in alpha, equalized learning rate, minibatch stddev against a
hand-computed toy, the growth schedule, one training iteration, growth in a short fit (with Adam restarting at each
phase change), full-resolution samples, determinism by seed, and one-line errors for bad settings."""

import math

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F

from gen_research.data.embedded import Digits
from gen_research.errors import GenResearchError
from gen_research.models.contract import Generates, can
from gen_research.models.gan.progan import ProGAN, growth_phase, growth_state
from gen_research.models.gan.progan_networks import EqualizedConv2d, EqualizedLinear, minibatch_stddev, progan_channels

TINY = dict(image_shape=(1, 16, 16), latent_dim=8, base_channels=8, max_channels=8)


def fit(model, steps, resize=None, callbacks=()):
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu", callbacks=list(callbacks))
    trainer.fit(model, datamodule=Digits(batch_size=16, resize=resize))
    return trainer


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_shapes_at_every_level_and_alpha(level, alpha):
    torch.manual_seed(0)
    model = ProGAN(**{**TINY, "image_shape": (3, 16, 16)})
    model.set_growth(level, alpha)
    images = model.generator(torch.randn(6, 8))
    side = 4 * 2**level
    assert images.shape == (6, 3, side, side) and model.discriminator(images).shape == (6,)
    assert model.sample(6).shape == (6, 3, 16, 16)  # full resolution at every phase
    with pytest.raises(ValueError, match=f"takes {side}x{side} images"):
        model.discriminator(torch.zeros(2, 3, 2 * side, 2 * side))


def test_fade_in_blends_the_previous_resolution_by_alpha():
    torch.manual_seed(0)
    model = ProGAN(**TINY)
    z, x = torch.randn(4, 8), torch.randn(4, 1, 8, 8)
    outputs, scores = {}, {}
    for level, alpha in ((0, 1.0), (1, 0.0), (1, 0.25), (1, 1.0)):
        model.set_growth(level, alpha)
        outputs[level, alpha] = model.generator(z)
        scores[level, alpha] = model.discriminator(x if level else F.avg_pool2d(x, 2))
    low = F.interpolate(outputs[0, 1.0], scale_factor=2, mode="nearest")
    torch.testing.assert_close(outputs[1, 0.0], low)  # alpha 0: the 4x4 output, upsampled
    torch.testing.assert_close(outputs[1, 0.25], torch.lerp(low, outputs[1, 1.0], 0.25))
    torch.testing.assert_close(scores[1, 0.0], scores[0, 1.0])  # alpha 0: D judges the pooled image at 4x4
    assert not torch.allclose(scores[1, 1.0], scores[0, 1.0])


def test_equalized_learning_rate_scales_by_he_constant():
    torch.manual_seed(0)
    conv, dense = EqualizedConv2d(3, 512, 3), EqualizedLinear(100, 4096, gain=1.0)
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(27)) and dense.scale == pytest.approx(1 / 10)
    assert abs(float(conv.weight.detach().std()) - 1.0) < 0.02 and float(conv.bias.abs().max()) == 0.0  # N(0, 1) stored
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1))
    assert float(dense(torch.randn(256, 100)).std()) == pytest.approx(1.0, abs=0.05)  # unit gain keeps the scale


def test_minibatch_stddev_matches_a_hand_computed_toy():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 4.0], [1.0, 1.0]]).view(4, 1, 1, 2)
    out = minibatch_stddev(x, group_size=2)  # groups {0, 2} and {1, 3} (image i in group i % 2, as the reference)
    assert out.shape == (4, 2, 1, 2) and torch.equal(out[:, :1], x)
    # group {0, 2}: stds |0-2|/2 = 1 and |0-4|/2 = 2, mean 1.5; group {1, 3}: sqrt(0 + 1e-8) = 1e-4
    torch.testing.assert_close(out[:, 1, 0, 0], torch.tensor([1.5, 1e-4, 1.5, 1e-4]))
    assert minibatch_stddev(torch.randn(5, 3, 2, 2), group_size=4).shape == (5, 4, 2, 2)  # 5 images: groups of 1 (5 is prime)


def test_channel_widths_follow_the_paper():
    assert [progan_channels(s, 512, 512) for s in (4, 8, 16, 32, 64, 128, 256, 1024)] == [512, 512, 512, 512, 256, 128, 64, 16]
    assert [progan_channels(s, 16, 32) for s in (4, 32, 64)] == [32, 16, 8]


def test_growth_schedule():
    schedule = [growth_state(seen, 100, 40, max_level=2) for seen in (0, 99, 100, 110, 130, 139, 140, 239, 240, 260, 280, 10**9)]
    assert schedule == [(0, 1.0), (0, 1.0), (1, 0.0), (1, 0.25), (1, 0.75), (1, 0.975), (1, 1.0), (1, 1.0), (2, 0.0), (2, 0.5), (2, 1.0), (2, 1.0)]
    assert [growth_phase(*state) for state in schedule] == [0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4]
    assert growth_state(50, 0, 100, max_level=3) == (1, 0.5) and growth_state(250, 100, 0, max_level=3) == (2, 1.0)
    assert growth_state(10**9, 1, 1, max_level=0) == (0, 1.0)


def test_one_iteration_changes_both_networks_and_counts_one_step():
    torch.manual_seed(0)
    model = ProGAN(**{**TINY, "image_shape": (1, 8, 8)})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = fit(model, 1)
    changed = {name for name in ("generator", "discriminator")
               if any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith(name + "."))}
    assert trainer.global_step == 1 and changed == {"generator", "discriminator"} and int(model.images_seen) == 16
    assert [group["lr"] for o in trainer.optimizers for group in o.param_groups] == [1e-3, 1e-3]
    assert [tuple(group["betas"]) for o in trainer.optimizers for group in o.param_groups] == [(0.0, 0.99)] * 2


def test_growth_advances_with_images_seen_and_adam_restarts_at_each_phase():
    class Record(L.Callback):
        states = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.states.append((int(module.growth_level), float(module.growth_alpha), tuple(module.generator(torch.zeros(1, 8)).shape[-2:])))

    torch.manual_seed(0)
    model = ProGAN(**TINY, images_per_phase=16, images_per_fade_in=32)
    trainer = fit(model, 8, resize=16, callbacks=[Record()])
    assert Record.states == [(0, 1.0, (4, 4)), (1, 0.0, (8, 8)), (1, 0.5, (8, 8)), (1, 1.0, (8, 8)),
                             (2, 0.0, (16, 16)), (2, 0.5, (16, 16)), (2, 1.0, (16, 16)), (2, 1.0, (16, 16))]
    discriminator_adam = trainer.optimizers[0]
    head = model.discriminator.head_out.weight
    assert int(discriminator_adam.state[head]["step"]) == 2  # restarted at batch 7 (the 16x16 stabilization)
    assert int(model.images_seen) == 8 * 16 and int(model.growth_phase) == 4


def test_sampling_is_full_resolution_deterministic_and_truncated():
    torch.manual_seed(0)
    model = ProGAN(**TINY).eval()
    torch.manual_seed(0)
    twin = ProGAN(**TINY).eval()
    assert can(model, Generates) and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    model.set_growth(1, 0.5)
    a = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert a.shape == (6, 1, 16, 16) and torch.equal(a, model.sample(6, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(a[..., ::2, ::2], a[..., 1::2, 1::2])  # an 8x8 output, upsampled (nearest)
    z = torch.randn(3, 8)
    torch.testing.assert_close(model.decode(z), F.interpolate(model.generator(z), scale_factor=2).clamp(-1, 1))
    mean = model.sample(6, generator=torch.Generator().manual_seed(1), truncation_psi=0.0)
    torch.testing.assert_close(mean, mean[:1].expand_as(mean))
    torch.testing.assert_close(model.decode(z, truncation_psi=0.0), mean[:3])  # decode takes the option too
    half = model.sample(6, generator=torch.Generator().manual_seed(1), truncation_psi=0.5)
    assert float(half.std(0).mean()) < float(a.std(0).mean())  # psi acts after the latent's pixel norm
    with pytest.raises(GenResearchError, match="unconditional"):
        model.sample(2, labels=torch.tensor([1, 2]))


def test_training_reals_are_pooled_and_blended_like_the_fakes():
    model = ProGAN(**TINY)
    images = torch.randn(2, 1, 16, 16)
    model.set_growth(1, 0.25)
    eight = F.avg_pool2d(images, 2)
    coarse = F.interpolate(F.avg_pool2d(eight, 2), scale_factor=2, mode="nearest")
    torch.testing.assert_close(model.training_reals({"image": images}), torch.lerp(coarse, eight, 0.25))
    model.set_growth(2, 1.0)
    assert torch.equal(model.training_reals({"image": images}), images)


def test_fits_are_deterministic_by_seed():
    states = []
    for _ in range(2):
        L.seed_everything(3)
        model = ProGAN(**{**TINY, "image_shape": (1, 8, 8)}, images_per_phase=16, images_per_fade_in=16)
        fit(model, 3)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("settings, message", [
    (dict(image_shape=(1, 28, 28)), "power-of-2 side >= 4, got 28x28: set data.init_args.resize .* to 32"),
    (dict(image_shape=(2, 16, 16)), "1 or 3 channels"),
    (dict(images_per_phase=-1), r"images_per_phase=-1 must be an integer >= 0"),
    (dict(images_per_phase=0, images_per_fade_in=0), "both 0"),
    (dict(minibatch_std_group=0), "minibatch_std_group=0"),
    (dict(drift_penalty=-1.0), r"drift_penalty=-1.0 must be in \[0, inf\)"),
    (dict(optimizers={"critic": {"lr": 1e-4}}), "optimizers.critic: no such network"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(GenResearchError, match=message):
        ProGAN(**{**TINY, **settings})


def test_drift_term_is_added_and_logged():
    torch.manual_seed(0)
    model = ProGAN(**{**TINY, "image_shape": (1, 8, 8)})
    model.set_growth(0, 1.0)
    real, fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    torch.manual_seed(1)
    terms = model.discriminator_step_loss(real, fake, None)
    expected_drift = model.discriminator(real).square().mean()
    torch.testing.assert_close(terms["drift"], expected_drift)
    torch.testing.assert_close(terms["total_d"], terms["loss_d"] + 10 * terms["gradient_penalty"] + 0.001 * expected_drift)
