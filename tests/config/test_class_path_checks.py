"""Class paths in experiment files and on the command line are limited to registered names, gen_research,
the field's libraries and the modules the user lists (``imports:``, $GEN_RESEARCH_IMPORTS); anything else is
refused in one line before any module is imported (docs/security.md)."""

import sys

import pytest
import yaml

from gen_research import registry

from gen_research.config.files import check_class_paths, expand_argv, load_experiment
from gen_research.errors import GenResearchError
from gen_research.registry import IMPORTS_ENV, load_builtins

REPO_TINY_VAE = "tests/configs/tiny_vae.yaml"


@pytest.fixture
def usermod(tmp_path, monkeypatch):
    """An importable module ``usermod_sl`` whose import creates a marker file; cwd = tmp_path."""
    load_builtins()
    marker = tmp_path / "imported.marker"
    (tmp_path / "usermod_sl.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom lightning.pytorch import Callback\n\nclass Cb(Callback):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(IMPORTS_ENV, raising=False)
    yield marker
    # Checking never imports; an experiment that lists the module in `imports:` does (its registered names resolve).
    sys.modules.pop("usermod_sl", None)
    registry._imported_user_modules.discard("usermod_sl")


def write(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def refused(argv, match="usermod_sl.Cb"):
    with pytest.raises(GenResearchError) as error:
        expand_argv(argv)
    message = str(error.value)
    assert "\n" not in message and match in message
    assert "imports: [usermod_sl]" in message and f"{IMPORTS_ENV}=usermod_sl" in message
    return message


CLI_FORMS = [
    ["--model=usermod_sl.Cb"],
    ["--model", "usermod_sl.Cb"],
    ["--model.class_path=usermod_sl.Cb"],
    ['--trainer.callbacks+={"class_path": "usermod_sl.Cb", "init_args": {}}'],
    ["--trainer.logger=[{class_path: usermod_sl.Cb}]"],
    ['--model.init_args.encoder={"class_path": "usermod_sl.Cb"}'],
    ["--model.init_args.encoder.class_path=usermod_sl.Cb"],
    ["--trainer.profiler=usermod_sl.Cb"],  # jsonargparse imports a dotted string given to a class-typed option
    ["--trainer.plugins", "usermod_sl.Cb"],
    ["--model.help=usermod_sl.Cb"],
]


@pytest.mark.parametrize("form", CLI_FORMS, ids=lambda form: form[0].split("=")[0])
def test_command_line_class_paths_outside_the_allowed_modules_are_refused(usermod, form):
    refused(form)
    assert not usermod.exists()


@pytest.mark.parametrize(
    "experiment",
    [
        {"model": {"class_path": "usermod_sl.Cb"}},
        {"model": {"class_path": "vae", "init_args": {"encoder": {"class_path": "usermod_sl.Cb", "init_args": {}}}}},
        {"trainer": {"callbacks": [{"class_path": "ema"}, {"class_path": "usermod_sl.Cb"}]}},
        {"trainer": {"profiler": "usermod_sl.Cb"}},
        {"trainer": {"callbacks": ["cb.yaml"]}},  # a config file jsonargparse would load for the option
    ],
    ids=["model", "nested-init-args", "callback", "plain-dotted-string", "config-file-value"],
)
def test_experiment_class_paths_outside_the_allowed_modules_are_refused(usermod, experiment):
    write(usermod.parent / "cb.yaml", {"class_path": "usermod_sl.Cb"})
    config = write(usermod.parent / "exp.yaml", experiment)
    refused(["--config", config])
    with pytest.raises(GenResearchError, match="usermod_sl.Cb"):  # sample/evaluate/export read experiments like this
        load_experiment(usermod.parent / "exp.yaml")
    assert not usermod.exists() and "usermod_sl" not in sys.modules  # refused without being imported


def test_a_callback_file_on_the_command_line_is_checked(usermod):
    write(usermod.parent / "cb.yaml", {"class_path": "usermod_sl.Cb"})
    refused(["--trainer.callbacks+=cb.yaml"])


def test_registered_names_gen_research_and_the_fields_libraries_are_allowed(usermod):
    argv, _ = expand_argv([
        "--model=vae", "--data=gen_research.data.datasets.Digits",
        '--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {"monitor": "val/loss"}}',
        "--trainer.callbacks+=ema", "--trainer.profiler=lightning.pytorch.profilers.SimpleProfiler",
        '--model.init_args.x={"class_path": "torch.nn.Identity"}', "--name=my.experiment", "--runs_root=runs.v2",
    ])
    assert "--model=gen_research.models.autoencoder.vae.VAE" in argv


def test_imports_in_the_experiment_allow_a_module_and_its_command_line_overrides(usermod):
    config = write(usermod.parent / "exp.yaml", {"imports": ["usermod_sl"], "trainer": {"callbacks": [{"class_path": "usermod_sl.Cb"}]}})
    argv, _ = expand_argv(["--config", config, "--trainer.callbacks+=usermod_sl.Cb"])
    assert yaml.safe_load(argv[1])["imports"] == ["usermod_sl"]  # kept: LightningCLI saves it in the run's config.yaml


def test_imports_compose_through_defaults_and_match_whole_module_names(usermod):
    (usermod.parent / "configs").mkdir()
    write(usermod.parent / "configs" / "piece.yaml", {"imports": ["usermod_sl"], "model": {"class_path": "usermod_sl.Cb"}})
    config = write(usermod.parent / "exp.yaml", {"defaults": ["piece"], "seed_everything": 1})
    assert load_experiment(usermod.parent / "exp.yaml")["model"]["class_path"] == "usermod_sl.Cb"
    write(usermod.parent / "exp.yaml", {"defaults": ["piece"], "imports": ["usermod"]})  # replaces the piece's; a prefix of the name only
    refused(["--config", config])


def test_the_environment_variable_and_imports_option_allow_a_module(usermod, monkeypatch):
    refused(["--model=usermod_sl.Cb"])
    expand_argv(["--model=usermod_sl.Cb", "--imports=[usermod_sl]"])
    monkeypatch.setenv(IMPORTS_ENV, "other_pkg, usermod_sl")
    expand_argv(["--model=usermod_sl.Cb"])


def test_malformed_import_lists_are_one_line_errors(usermod, monkeypatch):
    config = write(usermod.parent / "exp.yaml", {"imports": 3})
    with pytest.raises(GenResearchError, match="'imports' in .*exp.yaml must be a list of module names"):
        expand_argv(["--config", config])
    write(usermod.parent / "exp.yaml", {"imports": ["my package"]})
    with pytest.raises(GenResearchError, match="'my package' is not a module name"):
        expand_argv(["--config", config])
    monkeypatch.setenv(IMPORTS_ENV, "ok,bad-name")
    with pytest.raises(GenResearchError, match=rf"\${IMPORTS_ENV}: 'bad-name' is not a module name"):
        expand_argv(["--model=vae"])


def test_checkpoint_hyperparameters_are_checked_too(usermod):
    hparams = {"_class_path": "gen_research.models.autoencoder.vae.VAE", "_instantiator": "lightning.pytorch.cli.instantiate_module",
               "encoder": {"class_path": "usermod_sl.Cb"}}
    with pytest.raises(GenResearchError, match="usermod_sl.Cb.*hyper_parameters of x.ckpt"):
        check_class_paths(hparams, "in the hyper_parameters of x.ckpt", ())
    check_class_paths({k: v for k, v in hparams.items() if k != "encoder"}, "in x.ckpt", ())


def test_every_shipped_experiment_passes_the_check(monkeypatch):
    from pathlib import Path

    load_builtins()
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    monkeypatch.delenv(IMPORTS_ENV, raising=False)
    files = sorted((repo / "experiments").glob("*.yaml")) + sorted((repo / "tests" / "configs").glob("*.yaml"))
    assert len(files) > 10
    for path in files:
        load_experiment(path)
