"""The GAN family's training and sampling: one batch = one step with both networks changed, n_critic, lazy R1's
optimizer adjustment, truncation, conditional sampling, and one-line errors for bad settings."""

import lightning.pytorch as L
import pytest
import torch

from gen_research.data.embedded import Digits
from gen_research.errors import GenResearchError
from gen_research.models.contract import Generates, can, check_sampling_options
from gen_research.models.gan import CGAN, DCGAN, GAN

TINY = dict(image_shape=(1, 8, 8), latent_dim=8, base_channels=8)


def fit(model, steps, **trainer):
    data = Digits(batch_size=16)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu", **trainer)
    trainer.fit(model, datamodule=data)
    return trainer


def optimizer_steps(trainer):
    return [int(next(iter(o.state.values()))["step"]) if o.state else 0 for o in trainer.optimizers]


@pytest.mark.parametrize("cls, extra", [(GAN, dict(image_shape=(1, 8, 8), latent_dim=8, generator_hidden=[16], discriminator_hidden=[16])), (DCGAN, TINY)])
def test_one_iteration_changes_both_networks_and_counts_one_step(cls, extra):
    torch.manual_seed(0)
    model = cls(**extra)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = fit(model, 1)
    changed = {name for name in ("generator", "discriminator")
               if any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith(name + "."))}
    assert trainer.global_step == 1 and changed == {"generator", "discriminator"} and optimizer_steps(trainer) == [1, 1]


def test_n_critic_discriminator_steps_per_generator_step():
    torch.manual_seed(0)
    model = DCGAN(**TINY, loss="wasserstein", gradient_penalty=10.0, n_critic=3)
    trainer = fit(model, 6)
    assert trainer.global_step == 6 and optimizer_steps(trainer) == [6, 2]


def test_lazy_r1_adjusts_the_discriminator_optimizer_as_stylegan2():
    model = DCGAN(**TINY, r1_gamma=10.0, r1_interval=16)
    spec = model.optimizer_specs["discriminator"]
    assert spec.lr == pytest.approx(2e-4 * 16 / 17) and spec.betas[0] == pytest.approx(0.5 ** (16 / 17))
    assert model.optimizer_specs["generator"].lr == 2e-4  # only the regularized network
    torch.manual_seed(0)
    trainer = fit(model, 17)  # batches 0 and 16 add a separate R1 step to the discriminator
    assert trainer.global_step == 17 and optimizer_steps(trainer) == [17 + 2, 17]


def test_truncation_and_determinism():
    torch.manual_seed(0)
    model = DCGAN(**TINY).eval()
    assert can(model, Generates) and model.conditioning_classes is None
    a = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, model.sample(6, generator=torch.Generator().manual_seed(1))) and a.abs().max() <= 1
    mean = model.sample(6, generator=torch.Generator().manual_seed(1), **check_sampling_options(model, {"truncation_psi": 0.0}))
    torch.testing.assert_close(mean, mean[:1].expand_as(mean))  # psi 0: G(mean latent) for every sample
    with pytest.raises(GenResearchError, match=r"--truncation-psi 1.5: must be a finite number in \[0, 1\]"):
        check_sampling_options(model, {"truncation_psi": 1.5})


def test_conditional_sampling_cycles_classes_and_refuses_labels_when_unconditional():
    torch.manual_seed(0)
    model = CGAN(**TINY, num_classes=10).eval()
    assert model.conditioning_classes == 10 and model.BATCH_FIELDS == ("image", "label")
    by_class = model.sample(2, labels=torch.tensor([3, 3]), generator=torch.Generator().manual_seed(0))
    other = model.sample(2, labels=torch.tensor([4, 4]), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(by_class, other)  # the label reaches the generator
    with pytest.raises(GenResearchError, match="samples without classes"):
        DCGAN(**TINY).sample(2, labels=torch.tensor([1, 2]))


@pytest.mark.parametrize("settings, message", [
    (dict(loss="wasserstien"), "did you mean wasserstein"),
    (dict(n_critic=0), r"n_critic=0 must be in \[1, inf\)"),
    (dict(class_conditional=True), "class_conditional needs num_classes"),
    (dict(optimizers={"critic": {"lr": 1e-4}}), "optimizers.critic: no such network; the networks are discriminator, generator"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(GenResearchError, match=message):
        DCGAN(**TINY, **settings)


def test_a_gan_is_a_latent_prior_and_the_grid_draws_latent_walks(tmp_path):
    from gen_research.models.contract import LatentPrior
    from gen_research.training.callbacks.sample_grid import SampleGridLogger

    class FakeTrainer:
        current_epoch, global_step, loggers, default_root_dir = 0, 0, (), str(tmp_path)

    torch.manual_seed(0)
    model = DCGAN(**TINY).eval()
    assert can(model, LatentPrior)
    z = torch.randn(3, 8)
    torch.testing.assert_close(model.decode(z), model.generator(z).clamp(-1, 1))
    grid = SampleGridLogger(num_samples=4, interpolation_pairs=2, interpolation_steps=5)
    grid.log_grids(FakeTrainer(), model, torch.zeros(4, 1, 8, 8))
    assert sorted(p.name for p in grid.saved) == ["epoch000-latent_interpolations.png", "epoch000-samples.png"]


def test_r1_gamma_auto_is_nvlabs_heuristic_of_the_side_and_the_batch():
    torch.manual_seed(0)
    model = DCGAN(**TINY, r1_gamma="auto", r1_interval=4)
    assert model.optimizer_specs["discriminator"].lr == pytest.approx(2e-4 * 4 / 5)  # lazy R1 is on before gamma is known
    fit(model, 4)
    assert model.r1_gamma == pytest.approx(0.0002 * 8**2 / 16)  # side 8, batch 16
    with pytest.raises(GenResearchError, match="r1_gamma"):
        DCGAN(**TINY, r1_gamma="often")
