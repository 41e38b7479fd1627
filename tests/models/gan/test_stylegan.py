"""StyleGAN2: network shapes, the StyleSpace contract (to_w, truncation towards w_avg with a cutoff, synthesize with
const/random noise), style mixing's crossover, modulated convolution, w_avg and pl_mean tracking, lazy path length
with its optimizer adjustment, one training iteration, and determinism by seed."""

import math

import lightning.pytorch as L
import pytest
import torch

from gen_research.data.embedded import Digits
from gen_research.errors import GenResearchError
from gen_research.models.contract import Generates, LatentPrior, StyleSpace, can, check_sampling_options
from gen_research.models.gan.stylegan import StyleGAN, draw_crossover, mix_styles
from gen_research.models.gan.stylegan_networks import MinibatchStdLayer, modulated_conv2d

TINY = dict(image_shape=(1, 16, 16), latent_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)
DIGITS = dict(TINY, image_shape=(1, 8, 8))


def tiny(**settings):
    torch.manual_seed(0)
    return StyleGAN(**{**TINY, **settings})


def fit(model, steps):
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu")
    trainer.fit(model, datamodule=Digits(batch_size=8))
    return trainer


def optimizer_steps(trainer):
    return [int(next(iter(o.state.values()))["step"]) if o.state else 0 for o in trainer.optimizers]


def with_noise(model):
    for name, parameter in model.generator.named_parameters():
        if name.endswith("noise_strength"):
            parameter.data.fill_(1.0)  # noise starts at strength 0 (NVlabs): make it visible
    return model


@pytest.mark.parametrize("shape, num_ws", [((1, 16, 16), 6), ((3, 16, 16), 6), ((3, 4, 4), 2), ((1, 32, 32), 8)])
def test_network_shapes_and_style_count(shape, num_ws):
    model = tiny(image_shape=shape).eval()
    z = torch.randn(4, 16)
    images = model.generator(z)
    assert images.shape == (4, *shape) and model.discriminator(images).shape == (4, 1)
    assert model.num_ws == num_ws and model.to_w(z).shape == (4, num_ws, 16)  # 2 log2(res) - 2, as NVlabs
    assert can(model, StyleSpace) and can(model, Generates) and can(model, LatentPrior)


def test_conditional_model_embeds_the_class_in_both_networks():
    model = tiny(num_classes=10, class_conditional=True).eval()
    z = torch.randn(2, 16)
    three, four = model.to_w(z, torch.tensor([3, 3])), model.to_w(z, torch.tensor([4, 4]))
    assert model.BATCH_FIELDS == ("image", "label") and not torch.equal(three, four)
    images = model.synthesize(three)
    assert not torch.equal(model.discriminator(images, torch.tensor([3, 3])), model.discriminator(images, torch.tensor([4, 4])))


def test_truncation_towards_w_avg_on_all_layers_or_only_the_cutoff():
    model = tiny().eval()
    model.generator.mapping.w_avg.copy_(torch.randn(16))
    w_avg, z = model.generator.mapping.w_avg, torch.randn(5, 16)
    assert torch.equal(model.to_w(z, truncation_psi=0.0), w_avg.expand(5, model.num_ws, 16))
    free, cut = model.to_w(z), model.to_w(z, truncation_psi=0.0, truncation_cutoff=2)
    assert torch.equal(cut[:, :2], w_avg.expand(5, 2, 16)) and torch.equal(cut[:, 2:], free[:, 2:])
    torch.testing.assert_close(model.to_w(z, truncation_psi=0.5), w_avg + 0.5 * (free - w_avg))
    samples = model.sample(4, generator=torch.Generator().manual_seed(0), truncation_psi=0.0, noise_mode="const")
    assert samples.std(0).max() == 0  # psi 0: every sample is synthesize(w_avg)


def test_sampling_options_are_declared_and_checked():
    model = tiny().eval()
    assert [o.name for o in model.SAMPLING_OPTIONS] == ["truncation_psi", "truncation_cutoff", "noise_mode"]
    assert check_sampling_options(model, {"truncation_psi": "0.5", "truncation_cutoff": "3"}) == {"truncation_psi": 0.5, "truncation_cutoff": 3}
    with pytest.raises(GenResearchError, match="--truncation-cutoff 7: this model has 6 styles"):
        check_sampling_options(model, {"truncation_cutoff": 7})
    with pytest.raises(GenResearchError, match="choose one of random, const, none"):
        check_sampling_options(model, {"noise_mode": "fixed"})
    a = model.sample(3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, model.sample(3, generator=torch.Generator().manual_seed(2))) and a.abs().max() <= 1


def test_crossover_draw_and_mixing_keep_coarse_styles_from_the_first_latent():
    draws = [draw_crossover(6, 1.0, torch.Generator().manual_seed(seed)) for seed in range(200)]
    assert set(draws) == {1, 2, 3, 4, 5}  # uniform in [1, num_ws) when mixing
    assert all(draw_crossover(6, 0.0, torch.Generator().manual_seed(seed)) == 6 for seed in range(20))  # no mixing
    mixed = [draw_crossover(6, 0.9, torch.Generator().manual_seed(seed)) for seed in range(400)]
    assert 0.85 < sum(d < 6 for d in mixed) / 400 < 0.95
    first, second = torch.zeros(2, 6, 4), torch.ones(2, 6, 4)
    assert mix_styles(first, second, 2)[:, :, 0].tolist() == [[0, 0, 1, 1, 1, 1]] * 2


def test_training_styles_mix_a_second_latent_from_the_global_rng_crossover():
    model = tiny().eval()
    z = torch.randn(3, 16)
    torch.manual_seed(7)
    styles = model.training_styles(z, None)
    torch.manual_seed(7)
    crossover = draw_crossover(model.num_ws, 0.9)
    expected = mix_styles(model.to_w(z), model.to_w(torch.randn_like(z)), crossover)
    assert torch.equal(styles, expected) and crossover < model.num_ws  # this seed mixes


def test_modulated_conv_demodulates_to_unit_variance_and_matches_a_hand_computed_case():
    weight, styles = torch.tensor([[[[2.0]], [[1.0]]]]), torch.tensor([[3.0, 4.0]])  # 1 output, 2 inputs, 1x1
    x = torch.tensor([[[[1.0]], [[2.0]]]])
    norm = math.sqrt((2 * 3) ** 2 + (1 * 4) ** 2)
    expected = (2 * 3 * 1.0 + 1 * 4 * 2.0) / norm
    for fused in (True, False):
        assert modulated_conv2d(x, weight, styles, fused=fused).item() == pytest.approx(expected, rel=1e-6)
    assert modulated_conv2d(x, weight, styles, demodulate=False).item() == pytest.approx(2 * 3 + 1 * 4 * 2)
    torch.manual_seed(0)
    x, weight, styles = torch.randn(8, 64, 16, 16), torch.randn(32, 64, 3, 3), torch.randn(8, 64) + 1.0
    fused, plain = modulated_conv2d(x, weight, styles), modulated_conv2d(x, weight, styles, fused=False)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)
    assert 0.85 < fused.std().item() < 1.15


def test_minibatch_std_appends_the_group_deviation():
    x = torch.arange(8.0).reshape(4, 1, 1, 2)  # groups of 2, strided: images (0, 2) and (1, 3)
    y = MinibatchStdLayer(group_size=2)(x)
    assert y.shape == (4, 2, 1, 2) and torch.allclose(y[:, 1], torch.full((4, 1, 2), 2.0), atol=1e-3)  # |a - b| / 2 = 2


def test_noise_modes_const_is_deterministic_random_differs():
    model = with_noise(tiny()).eval()
    ws = model.to_w(torch.randn(2, 16))
    const = model.synthesize(ws, noise_mode="const")
    assert torch.equal(const, model.synthesize(ws, noise_mode="const"))
    one, again = (model.synthesize(ws, "random", torch.Generator().manual_seed(1)) for _ in range(2))
    other = model.synthesize(ws, "random", torch.Generator().manual_seed(2))
    assert torch.equal(one, again) and not torch.equal(one, other) and not torch.equal(one, const)
    assert not torch.equal(model.synthesize(ws, noise_mode="none"), const)
    z = torch.randn(2, 16)
    torch.testing.assert_close(model.decode(z), model.synthesize(model.to_w(z), "const"))
    torch.testing.assert_close(model.decode(z, truncation_psi=0.5, truncation_cutoff=2), model.synthesize(model.to_w(z, None, 0.5, 2), "const"))


def test_w_avg_moves_towards_the_batch_mean_only_in_training_forwards():
    model = tiny()
    start = torch.randn(16)
    model.generator.mapping.w_avg.copy_(start)
    z = torch.randn(8, 16)
    batch_mean = model.to_w(z)[:, 0].mean(0)
    model.eval()
    model.generator(z)
    assert torch.equal(model.generator.mapping.w_avg, start)  # eval forwards leave it
    model.train()
    model.to_w(z)
    assert torch.equal(model.generator.mapping.w_avg, start)  # the contract's to_w never updates it
    model.generator(z)
    torch.testing.assert_close(model.generator.mapping.w_avg, batch_mean + 0.995 * (start - batch_mean))


def test_path_length_penalty_tracks_pl_mean():
    model = with_noise(tiny(style_mixing_probability=0.0)).eval()
    z = torch.randn(4, 16)
    torch.manual_seed(3)  # the same noise draws as the penalty's: synthesis noise, then the image-space probe
    ws = model.to_w(z).detach().requires_grad_(True)
    images = model.generator.synthesis(ws)
    probe = torch.randn_like(images) / math.sqrt(16 * 16)
    (grads,) = torch.autograd.grad((images * probe).sum(), ws)
    lengths = grads.square().sum(2).mean(1).sqrt()
    model.pl_mean.fill_(0.5)
    torch.manual_seed(3)
    penalty = model.path_length_penalty(z, None)
    expected_mean = 0.5 + 0.01 * (lengths.mean() - 0.5)
    torch.testing.assert_close(model.pl_mean, expected_mean)
    torch.testing.assert_close(penalty, (lengths - expected_mean).square())


def test_lazy_path_length_adjusts_the_generator_optimizer_and_steps_every_interval():
    model = tiny(**DIGITS)
    g, d = model.optimizer_specs["generator"], model.optimizer_specs["discriminator"]
    assert g.lr == pytest.approx(0.0025 * 4 / 5) and g.betas == pytest.approx((0.0, 0.99 ** (4 / 5)))
    assert d.lr == pytest.approx(0.0025 * 16 / 17) and d.betas == pytest.approx((0.0, 0.99 ** (16 / 17)))
    off = tiny(**DIGITS, pl_weight=0.0, r1_gamma=0.0, optimizers={"generator": {"lr": 0.001}})
    assert off.optimizer_specs["generator"].lr == 0.001 and off.optimizer_specs["generator"].betas == (0.0, 0.99)
    trainer = fit(model, 5)  # path length at batches 0 and 4, R1 at batch 0
    assert trainer.global_step == 5 and optimizer_steps(trainer) == [5 + 1, 5 + 2]
    assert model.pl_mean.item() > 0 and model.images_seen.item() == 40


def test_one_iteration_changes_both_networks_and_counts_one_step():
    model = tiny(**DIGITS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = fit(model, 1)
    changed = {name for name in ("generator", "discriminator")
               if any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith(name + ".") and v.is_floating_point())}
    assert trainer.global_step == 1 and changed == {"generator", "discriminator"} and optimizer_steps(trainer) == [2, 2]
    assert not torch.equal(before["generator.mapping.w_avg"], model.generator.mapping.w_avg)
    assert not torch.equal(before["pl_mean"], model.pl_mean)


def test_training_is_deterministic_by_seed():
    states = []
    for _ in range(2):
        L.seed_everything(11)
        model = StyleGAN(**DIGITS)
        fit(model, 3)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("settings, message", [
    (dict(image_shape=(1, 12, 12)), r"image_shape \[1, 12, 12\] must be square with a power-of-2 side"),
    (dict(style_mixing_probability=1.5), r"style_mixing_probability=1.5 must be in \[0, 1\]"),
    (dict(mapping_layers=0), r"mapping_layers=0 must be in \[1, inf\)"),
    (dict(optimizers={"critic": {}}), "optimizers.critic: no such network"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(GenResearchError, match=message):
        tiny(**settings)


def test_ada_reaches_the_stylegan_discriminator_steps():
    model = tiny(**DIGITS, ada={"target": 0.6, "interval": 1, "kimg": 0.01})
    fit(model, 2)
    assert model.ada.p.item() > 0  # D is confident on the reals at the start: p rises from 0
