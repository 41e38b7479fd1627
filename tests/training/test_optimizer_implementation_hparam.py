"""``model.init_args.optimizer_implementation``: every one-network family takes the AdamW kernel choice
(gen_research/training/optimizers.py) as a hyperparameter, checks it in its constructor, and builds its optimizer
with it; checkpoints written before the key existed still load (as ``auto``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning
import pytest
import torch
import yaml
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningArgumentParser

from gen_research.errors import GenResearchError
from gen_research.training.optimizers import IMPLEMENTATION_HPARAM, IMPLEMENTATIONS, optimizer_implementation

REPO = Path(__file__).resolve().parents[2]


def _ddpm(**kwargs):
    from gen_research.models.diffusion import DDPM

    return DDPM(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100, sampling_steps=3, **kwargs)


def _noisy_classifier(**kwargs):
    from gen_research.models.diffusion.noisy_classifier import NoisyClassifier

    return NoisyClassifier(image_shape=(1, 8, 8), num_classes=3, channels=[8, 16], feature_dim=8, time_embed_dim=8,
                           num_train_timesteps=100, **kwargs)


def _classifier(**kwargs):
    from gen_research.models.classifier.model import Classifier

    return Classifier(image_shape=(1, 8, 8), num_classes=3, channels=[8, 16], feature_dim=8, **kwargs)


def _autoencoder(name):
    def build(**kwargs):
        from gen_research.models import autoencoder

        cls = {"ae": autoencoder.Autoencoder, "dae": autoencoder.DenoisingAutoencoder, "vae": autoencoder.VAE}[name]
        return cls(image_shape=(1, 8, 8), channels=[8, 16], latent_dim=4, **kwargs)

    return build


def _vqvae(**kwargs):
    from gen_research.models.vqvae.vqvae import VQVAE

    return VQVAE(image_shape=(1, 8, 8), channels=8, codebook_size=8, embedding_dim=4, **kwargs)


FAMILIES = {
    "ddpm": _ddpm,
    "noisy_classifier": _noisy_classifier,
    "classifier": _classifier,
    "ae": _autoencoder("ae"),
    "dae": _autoencoder("dae"),
    "vae": _autoencoder("vae"),
    "vqvae": _vqvae,
}


def _implementation(model) -> str:
    return optimizer_implementation(model.configure_optimizers()["optimizer"])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_constructor_argument_picks_the_kernel(family):
    build = FAMILIES[family]
    model = build(optimizer_implementation="foreach")
    assert model.hparams[IMPLEMENTATION_HPARAM] == "foreach"  # saved, so spec_from_hparams and checkpoints see it
    assert _implementation(model) == "foreach"
    default = build()
    assert default.hparams[IMPLEMENTATION_HPARAM] == "auto"
    assert _implementation(default) == _implementation(build(optimizer_implementation="auto"))


@pytest.mark.parametrize("family", ["ddpm", "dae", "classifier"])
@pytest.mark.parametrize("value", ["fuzed", "FUSED", None, 1])
def test_a_bad_value_is_a_one_line_error_naming_the_key(family, value):
    with pytest.raises(GenResearchError) as error:
        FAMILIES[family](optimizer_implementation=value)
    message = str(error.value)
    assert "\n" not in message
    assert f"model.init_args.optimizer_implementation={value!r} must be one of {', '.join(IMPLEMENTATIONS)}" in message


def test_yaml_reaches_the_model_through_the_cli_parser(tmp_path):
    """An experiment file (``defaults: [configs/model/vae.yaml]`` and the override), composed as the CLI composes it and parsed
    with LightningCLI's parser for the model section: the value is in the model's hyperparameters and optimizer."""
    from gen_research.config.files import load_experiment
    from gen_research.registry import load_builtins

    load_builtins()

    def parse(value):
        experiment = tmp_path / f"vae_{value}.yaml"
        experiment.write_text(yaml.safe_dump({"defaults": [str(REPO / "configs" / "model" / "vae.yaml")], "model": {"init_args": {
            "image_shape": [1, 8, 8], "channels": [8, 16], "latent_dim": 4, "lr_schedule": "constant", IMPLEMENTATION_HPARAM: value}}}))
        parser = LightningArgumentParser(exit_on_error=False)
        parser.add_lightning_class_args(LightningModule, "model", subclass_mode=True)
        return parser.instantiate_classes(parser.parse_object({"model": load_experiment(experiment)["model"]})).model

    model = parse("foreach")
    assert model.hparams[IMPLEMENTATION_HPARAM] == "foreach" and _implementation(model) == "foreach"
    with pytest.raises(argparse.ArgumentError, match="optimizer_implementation"):  # the Literal: refused while parsing
        parse("fuzed")


def test_a_checkpoint_written_before_the_key_existed_loads_as_auto(tmp_path):
    from gen_research.models.autoencoder import VAE

    model = FAMILIES["vae"](optimizer_implementation="for_loop")
    hparams = {key: value for key, value in model.hparams.items() if key != IMPLEMENTATION_HPARAM}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": lightning.__version__}, path)
    loaded = VAE.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert loaded.hparams[IMPLEMENTATION_HPARAM] == "auto"
    assert _implementation(loaded) == _implementation(FAMILIES["vae"]())
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
