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


def test_third_party_families_register_through_an_entry_point(monkeypatch, tmp_path):
    """An installed package declaring a `gen_research.families` entry point is imported by load_builtins, so its
    decorators register its family: no list to edit."""
    import importlib.metadata
    import sys

    from gen_research import registry

    (tmp_path / "thirdparty_family_t.py").write_text(
        "import lightning.pytorch as L\nfrom gen_research.registry import MODELS\n\n"
        "@MODELS.register('thirdparty_t', 'a third-party family')\nclass ThirdParty(L.LightningModule):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint(name="thirdparty", value="thirdparty_family_t", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None, **kw: [point] if group == registry.ENTRY_POINT_GROUP else [])
    try:
        registry.load_builtins()
        assert "thirdparty_family_t" in sys.modules and MODELS.get("thirdparty_t").__name__ == "ThirdParty"
    finally:
        MODELS._entries.pop("thirdparty_t", None)
        registry._imported_user_modules.discard("thirdparty_family_t")
        sys.modules.pop("thirdparty_family_t", None)


def test_every_family_folder_is_discovered():
    from pathlib import Path

    import gen_research.models

    load_builtins()
    folders = {p.name for p in Path(gen_research.models.__file__).parent.iterdir() if (p / "__init__.py").exists()}
    modules = {entry.obj.__module__.split(".")[2] for entry in MODELS if entry.obj.__module__.startswith("gen_research.models.")}
    assert folders == modules and {"autoencoder", "classifier", "diffusion", "gan"} <= folders  # nothing lists them: models/__init__.py is empty
