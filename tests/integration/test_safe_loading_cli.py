"""End to end: a crafted checkpoint is refused by every command that loads one (exit 2, one line, its code never
runs); every family's checkpoint loads with weights_only=True, including through Lightning; class paths outside
the allowed modules stop a run before anything is imported, and `imports:` / $GEN_RESEARCH_IMPORTS allow them."""


import pytest
import torch
from PIL import Image

from gen_research.registry import IMPORTS_ENV
from gen_research.files.safe_load import load_plain
from tests.payloads import write_payload_checkpoint

from .helpers import REPO, TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration
TINY = str(TEST_CONFIGS / "tiny_vae.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]


@pytest.fixture
def payload(workdir):
    marker = workdir / "code-ran.marker"
    return str(write_payload_checkpoint(workdir / "crafted.ckpt", marker)), marker


def image_folder(folder, count=6):
    folder.mkdir()
    for i in range(count):
        Image.fromarray(((torch.rand(8, 8) * 255).to(torch.uint8)).numpy(), mode="L").save(folder / f"{i}.png")
    return str(folder)


def refused_in_one_line(capsys, code, path):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and path in err[0] and "could execute code" in err[0], err


def test_every_command_refuses_a_crafted_checkpoint_without_running_it(payload, workdir, capsys):
    path, marker = payload
    commands = [
        ["fit", "--config", TINY, *QUIET, f"--ckpt_path={path}"],
        ["test", "--config", TINY, "--trainer.logger=false", f"--ckpt_path={path}"],
        ["validate", "--config", TINY, "--trainer.logger=false", f"--ckpt_path={path}"],
        ["predict", "--config", TINY, "--trainer.logger=false", f"--ckpt_path={path}"],
        ["sample", "--config", TINY, "--ckpt_path", path, "--num-images", "2"],
        ["export", "--config", str(TEST_CONFIGS / "tiny_ddpm.yaml"), "--ckpt_path", path, "--out", str(workdir / "pipeline")],
        ["evaluate", "--config", TINY, "--ckpt_path", path, "--metrics", "fid"],
        ["evaluate", "--real", image_folder(workdir / "real"), "--fake", image_folder(workdir / "fake"), "--metrics", "fid",
         "--features", "classifier", "--feature-weights", path],
    ]
    for command in commands:
        refused_in_one_line(capsys, run_in_process(*command), path)
        assert not marker.exists(), command
    assert not (workdir / "runs").exists() or not any((workdir / "runs").rglob("*")), "a refused command left a run folder"


def test_lightning_loading_cannot_be_switched_to_unpickling(workdir, capsys):
    assert run_in_process("fit", "--config", TINY, *QUIET, "--weights_only=false") == 2
    assert "--weights_only=false would let a checkpoint run code" in capsys.readouterr().err
    assert not (workdir / "runs").exists()


FAMILIES = {  # every family with the callbacks whose state goes into checkpoints
    "vae": [TINY, "--trainer.logger=[{class_path: csv}]"],  # EMA + sample grid (in the file)
    "ddpm": [str(TEST_CONFIGS / "tiny_ddpm.yaml"), "--trainer.callbacks+=ema", "--trainer.callbacks+=sample_grid",
             '--trainer.callbacks+={"class_path": "evaluation", "init_args": {"metrics": "fid", "num_samples": 40, "batch_size": 40, "cache_dir": "cache"}}'],
    "classifier": [str(REPO / "experiments" / "classifier_mnist5k.yaml"), "--data=digits", "--model.init_args.channels=[8,16]", "--trainer.logger=false"],
    "noisy_classifier": [str(TEST_CONFIGS / "tiny_noisy_classifier.yaml")],
    "ae": [str(TEST_CONFIGS / "tiny_ae_anomaly.yaml")],
}


def test_every_familys_checkpoints_are_plain_and_lightning_loads_them_weights_only(workdir, monkeypatch):
    for name, args in FAMILIES.items():
        assert run_in_process("fit", "--config", *args, *QUIET, f"--name={name}") == 0, name
        files = sorted((workdir / "runs" / name).glob("*/checkpoints/*.ckpt"))
        assert len(files) >= 2, files  # last and best
        for path in files:
            assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
            assert load_plain(path)["global_step"] == 2
    # Lightning's own loads (resume, test) ask torch for weights_only=True too.
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real_load(*a, **k))
    last = str(next((workdir / "runs" / "vae").glob("*/checkpoints/last.ckpt")))
    assert run_in_process("test", "--config", TINY, "--trainer.logger=false", f"--ckpt_path={last}") == 0
    assert run_in_process("fit", "--config", TINY, *QUIET[:1], "--trainer.max_epochs=2", "--trainer.limit_train_batches=2",
                          "--trainer.limit_val_batches=1", "--name=vae", f"--ckpt_path={last}") == 0
    assert len(calls) >= 4 and all(flag is True for flag in calls), calls


def test_imports_in_the_experiment_let_a_user_callback_run(workdir, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.delenv(IMPORTS_ENV, raising=False)
    (workdir / "user_callbacks_sl.py").write_text(
        "from lightning.pytorch import Callback\n\nclass CountSteps(Callback):\n"
        "    def on_train_end(self, trainer, pl_module):\n        open('steps.txt', 'w').write(str(trainer.global_step))\n"
    )
    callback = '--trainer.callbacks+={"class_path": "user_callbacks_sl.CountSteps"}'
    assert run_in_process("fit", "--config", TINY, *QUIET, "--trainer.logger=false", callback) == 2
    assert "imports: [user_callbacks_sl]" in capsys.readouterr().err and not (workdir / "runs").exists()
    (workdir / "exp.yaml").write_text(f"defaults: [{TINY}]\nimports: [user_callbacks_sl]\n")
    assert run_in_process("fit", "--config", str(workdir / "exp.yaml"), *QUIET, "--trainer.logger=false", callback) == 0
    assert (workdir / "steps.txt").read_text() == "2"
    saved = next((workdir / "runs" / "exp").glob("*/config.yaml")).read_text()
    assert "imports:\n- user_callbacks_sl" in saved  # the run's config.yaml runs again as it is


def test_the_environment_variable_allows_a_module(workdir, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(workdir))
    (workdir / "env_allowed_sl.py").write_text("open('imported.marker', 'w').close()\nfrom lightning.pytorch import Callback\n\nclass Cb(Callback):\n    pass\n")
    args = ["fit", "--config", TINY, '--trainer.callbacks+={"class_path": "env_allowed_sl.Cb"}', "--print_config"]
    monkeypatch.setenv(IMPORTS_ENV, "")
    assert run_in_process(*args) == 2
    assert "env_allowed_sl" in capsys.readouterr().err and not (workdir / "imported.marker").exists()
    monkeypatch.setenv(IMPORTS_ENV, "tests,env_allowed_sl")
    assert run_in_process(*args) == 0
    printed = capsys.readouterr().out
    assert "class_path: env_allowed_sl.Cb" in printed and "weights_only: true" in printed
    assert (workdir / "imported.marker").exists()  # jsonargparse imported it: allowed
