"""Bad input ends in one line on stderr, exit status 2, and an untouched run folder."""

import pytest
import torch

from .helpers import TEST_CONFIGS, run_in_process, run_subprocess, snapshot

pytestmark = pytest.mark.integration
TINY = str(TEST_CONFIGS / "tiny_vae.yaml")
FAST = ["--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run (its folder must survive every bad command below unchanged)."""
    root = tmp_path_factory.mktemp("runs_home")
    result = run_subprocess("fit", "--config", TINY, *FAST, cwd=root, env={"WANDB_MODE": "disabled"})
    assert result.returncode == 0, result.stderr[-2000:]
    return root


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("gen_research: error: ")
    return err[0]


@pytest.fixture
def in_finished_run(finished_run, monkeypatch):
    monkeypatch.chdir(finished_run)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    before = snapshot(finished_run)
    yield finished_run
    assert snapshot(finished_run) == before, "a failed command changed files of an existing run"


def write(path, text):
    path.write_text(text)
    return str(path)


def test_malformed_yaml(in_finished_run, capsys, tmp_path):
    bad = write(tmp_path / "bad.yaml", "model:\n  init_args: {beta: 1\n")
    assert run_in_process("fit", "--config", TINY, "--config", bad) == 2
    line = one_line_error(capsys)  # reads stderr once: the message itself must name the file and the line
    assert "malformed YAML in " in line and "bad.yaml at line 3, column 1: expected ',' or '}'" in line and line.endswith("fix the file's syntax")


def test_unknown_key_suggests_the_closest(in_finished_run, capsys, tmp_path):
    bad = write(tmp_path / "typo.yaml", "model:\n  init_args:\n    latent_dimm: 3\n")
    assert run_in_process("fit", "--config", TINY, "--config", bad) == 2
    assert one_line_error(capsys).endswith("unknown option model.init_args.latent_dimm; did you mean model.init_args.latent_dim?")
    assert run_in_process("fit", "--config", TINY, "--trainer.max_epocs=3") == 2
    assert "did you mean trainer.max_epochs" in one_line_error(capsys)


def test_unknown_registry_name_suggests_the_closest(in_finished_run, capsys):
    assert run_in_process("fit", "--config", TINY, "--data=mnist5", *FAST) == 2
    assert "unknown datamodule 'mnist5'; did you mean mnist5k" in one_line_error(capsys)


def test_wrong_type(in_finished_run, capsys):
    assert run_in_process("fit", "--config", TINY, "--model.init_args.beta=lots") == 2
    assert "model.init_args.beta expects a value of type float, got 'lots'" in one_line_error(capsys)
    assert run_in_process("fit", "--config", TINY, "--trainer.max_epochs=many") == 2
    assert "trainer.max_epochs expects a value of type int" in one_line_error(capsys)


def test_missing_dataset_path(in_finished_run, capsys, tmp_path):
    assert run_in_process("fit", "--config", TINY, "--data=image_folder", f"--data.init_args.root={tmp_path / 'nowhere'}", *FAST) == 2
    line = one_line_error(capsys)
    assert "nowhere" in line and "data.init_args.root" in line
    assert run_in_process("fit", "--config", TINY, "--data=cifar10", f"--data.init_args.root={tmp_path / 'no_cifar'}", *FAST) == 2
    line = one_line_error(capsys)
    assert line.startswith("gen_research: error: cifar10:") and "no_cifar" in line
    assert not list((in_finished_run / "runs" / "tiny_vae").glob("*-1"))  # no half-made run folder is left behind


def test_missing_checkpoint(in_finished_run, capsys):
    assert run_in_process("fit", "--config", TINY, "--ckpt_path=runs/nope.ckpt") == 2
    assert "checkpoint not found: runs/nope.ckpt" in one_line_error(capsys)
    assert run_in_process("fit", "--config", TINY, "--name=never_ran", "--ckpt_path=last") == 2
    assert "--ckpt_path last: no checkpoint under runs/never_ran" in one_line_error(capsys)


def test_mismatched_checkpoint(in_finished_run, capsys):
    ckpt = next((in_finished_run / "runs" / "tiny_vae").glob("*/checkpoints/last.ckpt"))
    # Same family, other widths: shapes differ.
    assert run_in_process("fit", "--config", TINY, "--model.init_args.channels=[4, 8]", f"--ckpt_path={ckpt}") == 2
    assert "does not match the configured model" in one_line_error(capsys)
    # Another model class altogether.
    assert run_in_process("test", "--config", TINY, "--model=ae", f"--ckpt_path={ckpt}") == 2
    assert "was written by model gen_research.models.autoencoder.vae.VAE" in one_line_error(capsys)


def test_corrupt_checkpoint(in_finished_run, capsys, tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"\x00garbage")
    assert run_in_process("fit", "--config", TINY, f"--ckpt_path={broken}") == 2
    assert "cannot read checkpoint" in one_line_error(capsys)


def test_subprocess_exit_status_and_no_traceback(finished_run, tmp_path):
    bad = write(tmp_path / "typo.yaml", "trainer:\n  max_epochz: 1\n")
    before = snapshot(finished_run)
    result = run_subprocess("fit", "--config", TINY, "--config", bad, cwd=finished_run, env={"WANDB_MODE": "disabled"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "gen_research: error: unknown option trainer.max_epochz; did you mean trainer.max_epochs or trainer.min_epochs or trainer.max_steps?"
    assert "Traceback" not in result.stderr
    assert snapshot(finished_run) == before
