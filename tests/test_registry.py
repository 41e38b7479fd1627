import pytest

from gen_research.errors import GenResearchError
from gen_research.registry import MODELS, REGISTRIES, Registry, load_builtins, resolve_class_path


class Dummy:
    """A dummy entry used only here."""


def test_register_and_lookup_with_docstring_description():
    registry = Registry("widget", "test widgets")
    registry.register("dummy")(Dummy)
    assert registry.get("dummy") is Dummy
    assert registry.entry("dummy").description == "A dummy entry used only here."
    assert registry.entry("dummy").class_path == f"{__name__}.Dummy"
    assert "dummy" in registry and registry.names() == ["dummy"]
    assert registry.name_of(Dummy()) == "dummy"


def test_registering_a_name_twice_for_another_object_fails():
    registry = Registry("widget", "test widgets")
    registry.add("dummy", Dummy)
    registry.add("dummy", Dummy)  # same object again is harmless (module re-import)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("dummy", object)


def test_unknown_name_lists_close_matches():
    registry = Registry("widget", "test widgets")
    for name in ("vae", "vqvae", "ddpm"):
        registry.add(name, type(name, (), {}))
    with pytest.raises(GenResearchError) as info:
        registry.get("vea")
    message = str(info.value)
    assert "unknown widget 'vea'" in message and "did you mean" in message and "vae" in message
    assert "\n" not in message


def test_builtins_fill_every_family_registry():
    load_builtins()
    assert {"ae", "dae", "vae"} <= set(MODELS.names())
    assert {"mnist5k", "digits", "image_folder", "mnist", "fashion_mnist", "cifar10", "celeba"} <= set(REGISTRIES["datamodules"].names())
    assert {"ema", "sample_grid", "rng_state"} <= set(REGISTRIES["callbacks"].names())
    assert {"wandb", "csv"} <= set(REGISTRIES["loggers"].names())
    assert {"cpu", "gpu-bf16", "ddp-bf16", "fsdp-bf16", "multinode-ddp"} <= set(REGISTRIES["presets"].names())
    assert "samplers" not in REGISTRIES  # what --sampler accepts is declared per family: gen_research/models/contract.py


def test_resolve_class_path_short_names_and_full_paths():
    load_builtins()
    assert resolve_class_path("vae") == "gen_research.models.autoencoder.vae.VAE"
    assert resolve_class_path("some.module.Class") == "some.module.Class"
    with pytest.raises(GenResearchError, match="did you mean vae"):
        resolve_class_path("vaee", (MODELS,))
