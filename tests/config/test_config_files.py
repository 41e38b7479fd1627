from pathlib import Path

import pytest
import yaml

from gen_research.config.files import expand_argv, load_experiment, merge
from gen_research.errors import GenResearchError
from gen_research.registry import load_builtins

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _builtins():
    load_builtins()


def test_merge_replaces_lists_and_nodes_whose_class_changes():
    base = {"model": {"class_path": "a.A", "init_args": {"x": 1, "y": 2}}, "trainer": {"callbacks": [1, 2], "max_epochs": 3}}
    merged = merge(base, {"model": {"init_args": {"y": 5}}, "trainer": {"callbacks": [9]}})
    assert merged["model"] == {"class_path": "a.A", "init_args": {"x": 1, "y": 5}}
    assert merged["trainer"] == {"callbacks": [9], "max_epochs": 3}
    replaced = merge(base, {"model": {"class_path": "b.B", "init_args": {"z": 0}}})
    assert replaced["model"] == {"class_path": "b.B", "init_args": {"z": 0}}


def test_quickstart_composes_its_pieces_and_resolves_short_names():
    config = load_experiment(REPO / "experiments" / "quickstart.yaml")
    assert "defaults" not in config
    assert config["model"]["class_path"] == "gen_research.models.autoencoder.vae.VAE"
    assert config["data"]["class_path"].endswith("MNIST5k")
    assert config["trainer"]["accelerator"] == "cpu"  # from trainer/cpu
    assert [l["class_path"] for l in config["trainer"]["logger"]] == ["gen_research.training.loggers.WandbLogger", "gen_research.training.loggers.CSVLogger"]
    callbacks = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert callbacks[0] == "gen_research.training.callbacks.ema.EMA"


def test_experiment_keys_override_pieces(tmp_path):
    (tmp_path / "configs" / "model").mkdir(parents=True)
    (tmp_path / "configs" / "model" / "m.yaml").write_text("model:\n  class_path: vae\n  init_args: {beta: 1.0, latent_dim: 4}\n")
    exp = tmp_path / "experiments" / "e.yaml"
    exp.parent.mkdir()
    exp.write_text("defaults: [model/m]\nmodel:\n  init_args: {beta: 4.0}\n")
    config = load_experiment(exp)
    assert config["model"]["init_args"] == {"beta": 4.0, "latent_dim": 4}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model: [unclosed\n", "malformed YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("defaults: [nope/missing]\n", "defaults entry 'nope/missing'"),
        ("model:\n  class_path: vaee\n", "did you mean vae"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GenResearchError) as info:
        load_experiment(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  init_args:\n    beta: [1, 2\n")
    with pytest.raises(GenResearchError, match=r"bad.yaml at line \d+, column \d+"):
        load_experiment(path)


def test_expand_argv_inlines_configs_and_resolves_flag_names(tmp_path):
    path = tmp_path / "my_exp.yaml"
    path.write_text("model:\n  class_path: ae\n")
    argv, name = expand_argv(["--config", str(path), "--model.init_args.latent_dim", "3", "--data=digits", "--trainer.callbacks+=ema"])
    assert name == "my_exp"
    assert argv[0] == "--config" and yaml.safe_load(argv[1]) == {"model": {"class_path": "gen_research.models.autoencoder.ae.Autoencoder"}}
    assert argv[2:4] == ["--model.init_args.latent_dim", "3"]  # plain overrides pass through untouched
    assert argv[4].startswith("--data=gen_research.data.") and argv[4].endswith("Digits")
    assert argv[5] == "--trainer.callbacks+=gen_research.training.callbacks.ema.EMA"
    with pytest.raises(GenResearchError, match="unknown model 'vea'"):
        expand_argv(["--model=vea"])
