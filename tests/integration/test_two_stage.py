"""Two-stage experiments end to end (gen_research/config/stages.py): one ``fit`` of tests/configs/tiny_two_stage.yaml
trains its stage (the tiny VAE) and then the refiner on it; later fits reuse the finished stage, resume an interrupted
one, retrain an edited one; either stage resumed ends with the weights of an uninterrupted two-stage run."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from gen_research.config import stages
from gen_research.config.stages import FIT_MARKER
from gen_research.models.autoencoder.vae import VAE

from .helpers import CRASH, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, run_in_process

pytestmark = pytest.mark.integration
TWO_STAGE = TEST_CONFIGS / "tiny_two_stage.yaml"
STAGE = "tiny_two_stage.tiny_two_stage_first"  # <experiment>.<stage file stem>
FIT = ["fit", "--config", str(TWO_STAGE)]


def only_run_dir(root: Path, experiment: str) -> Path:
    """The one run folder of an experiment (a SLURM job's invocation record beside it is a file, not a run)."""
    runs = sorted(path for path in (root / "runs" / experiment).iterdir() if path.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def _last(root: Path, experiment: str) -> dict:
    return torch.load(only_run_dir(root, experiment) / "checkpoints" / "last.ckpt", weights_only=True)


def _crash_the_vae_at(monkeypatch, step: int) -> None:
    """Stage 1 (the VAE) stops like a preempted run once ``step`` optimizer steps are done."""

    def crash(self, batch, batch_idx):
        if self.global_step >= step:
            raise SimulatedCrash(f"simulated crash of the stage at step {self.global_step}")

    monkeypatch.setattr(VAE, "on_train_batch_start", crash, raising=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted two-stage fit: its folder (runs/ under it)."""
    root = tmp_path_factory.mktemp("two_stage_reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        assert run_in_process(*FIT) == 0
    return root


def _copy_runs(reference: Path, workdir: Path) -> None:
    shutil.copytree(reference / "runs", workdir / "runs")  # copy2 keeps the modification times "latest" is read from


def test_fit_trains_the_stage_then_the_second_stage_on_its_final_checkpoint(reference):
    stage_run = only_run_dir(reference, STAGE)
    marker = json.loads((stage_run / FIT_MARKER).read_text())
    assert marker["checkpoint"] == "checkpoints/last.ckpt" and marker["global_step"] == 6  # 2 epochs of 3 batches
    assert marker["config_digest"].startswith("sha256:")
    second = _last(reference, "tiny_two_stage")
    stage_ckpt = stage_run / "checkpoints" / "last.ckpt"
    assert Path(second["hyper_parameters"]["first_stage_ckpt"]) == stage_ckpt.resolve()
    assert second["hyper_parameters"]["first_stage"]["class_path"] == "gen_research.models.autoencoder.vae.VAE"
    stage_weights = torch.load(stage_ckpt, weights_only=True)["state_dict"]
    frozen = {k.removeprefix("first_stage."): v for k, v in second["state_dict"].items() if k.startswith("first_stage.")}
    assert frozen.keys() == stage_weights.keys() and all(torch.equal(frozen[k], stage_weights[k]) for k in frozen)
    assert json.loads((only_run_dir(reference, "tiny_two_stage") / FIT_MARKER).read_text())["global_step"] == 4


def test_a_second_fit_reuses_the_finished_stage(workdir, reference, capsys):
    _copy_runs(reference, workdir)
    stage_run = only_run_dir(workdir, STAGE)
    assert run_in_process(*FIT, "--trainer.max_epochs=1") == 0
    assert only_run_dir(workdir, STAGE) == stage_run  # no new stage run
    assert f"reusing {(stage_run / 'checkpoints' / 'last.ckpt').resolve()}" in capsys.readouterr().out
    runs = sorted((workdir / "runs" / "tiny_two_stage").iterdir())
    assert len(runs) == 2
    newest = torch.load(runs[-1] / "checkpoints" / "last.ckpt", weights_only=True)
    assert Path(newest["hyper_parameters"]["first_stage_ckpt"]) == (stage_run / "checkpoints" / "last.ckpt").resolve()


def test_an_interrupted_stage_resumes_with_ckpt_path_last_then_the_second_stage_trains(workdir, reference, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        _crash_the_vae_at(patch, 4)  # 3 batches an epoch: last.ckpt is epoch 0's, at step 3
        with pytest.raises(SimulatedCrash):
            run_in_process(*FIT)
    stage_run = only_run_dir(workdir, STAGE)
    assert _last(workdir, STAGE)["global_step"] == 3 and not (stage_run / FIT_MARKER).exists()
    assert not (workdir / "runs" / "tiny_two_stage").exists() or not any((workdir / "runs" / "tiny_two_stage").iterdir())
    capsys.readouterr()
    assert run_in_process(*FIT, "--ckpt_path=last") == 0
    out = capsys.readouterr().out
    assert f"resuming {stage_run.relative_to(workdir)}" in out and "--ckpt_path last of tiny_two_stage is dropped" in out
    assert only_run_dir(workdir, STAGE) == stage_run and (stage_run / "config.resume-1.yaml").is_file()  # the same run, continued
    assert json.loads((stage_run / FIT_MARKER).read_text())["global_step"] == 6
    assert_same_training_state(_last(reference, STAGE), _last(workdir, STAGE))
    assert_same_training_state(_last(reference, "tiny_two_stage"), _last(workdir, "tiny_two_stage"))


def test_a_stage_without_its_marker_is_resumed_in_its_own_folder(workdir, reference):
    _copy_runs(reference, workdir)
    stage_run = only_run_dir(workdir, STAGE)
    (stage_run / FIT_MARKER).unlink()  # as if it had been stopped after its last checkpoint
    assert run_in_process(*FIT, "--ckpt_path=last", "--trainer.max_epochs=1") == 0
    assert only_run_dir(workdir, STAGE) == stage_run and (stage_run / FIT_MARKER).is_file()
    assert json.loads((stage_run / FIT_MARKER).read_text())["global_step"] == 6  # nothing left to train
    assert len(list((workdir / "runs" / "tiny_two_stage").iterdir())) == 2  # the second stage fitted anew


def test_an_interrupted_second_stage_resumes_and_ends_with_the_uninterrupted_weights(workdir, reference, capsys):
    shutil.copytree(reference / "runs" / STAGE, workdir / "runs" / STAGE)  # the finished stage, no second stage yet
    with pytest.raises(SimulatedCrash):
        run_in_process(*FIT, CRASH.format(2))  # 2 batches an epoch: last.ckpt is epoch 0's
    assert _last(workdir, "tiny_two_stage")["global_step"] == 2
    capsys.readouterr()
    assert run_in_process(*FIT, "--ckpt_path=last") == 0
    assert "reusing" in capsys.readouterr().out and only_run_dir(workdir, STAGE).name == only_run_dir(reference, STAGE).name
    assert_same_training_state(_last(reference, "tiny_two_stage"), _last(workdir, "tiny_two_stage"))


def test_a_slurm_job_requeued_in_either_stage_continues_it(workdir, reference, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    with monkeypatch.context() as patch:
        _crash_the_vae_at(patch, 4)
        with pytest.raises(SimulatedCrash):
            run_in_process(*FIT)  # preempted in stage 1
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(SimulatedCrash):
        run_in_process(*FIT, CRASH.format(2))  # the requeue finishes stage 1, then is preempted in stage 2
    assert only_run_dir(workdir, STAGE).name == "slurm-4242" and _last(workdir, "tiny_two_stage")["global_step"] == 2
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert run_in_process(*FIT) == 0
    assert only_run_dir(workdir, "tiny_two_stage").name == "slurm-4242"
    assert_same_training_state(_last(reference, STAGE), _last(workdir, STAGE))
    assert_same_training_state(_last(reference, "tiny_two_stage"), _last(workdir, "tiny_two_stage"))


def test_an_explicit_first_stage_checkpoint_skips_the_stage(workdir, reference):
    given = only_run_dir(reference, STAGE) / "checkpoints" / "last.ckpt"
    assert run_in_process(*FIT, f"--model.init_args.first_stage_ckpt={given}", "--trainer.max_epochs=1") == 0
    assert not (workdir / "runs" / STAGE).exists()
    assert _last(workdir, "tiny_two_stage")["hyper_parameters"]["first_stage_ckpt"] == str(given)


def test_an_edited_stage_file_is_trained_again(workdir, reference, capsys):
    stage, two = workdir / "stage.yaml", workdir / "two.yaml"
    stage.write_text(f"defaults: [{TEST_CONFIGS / 'tiny_two_stage_first.yaml'}]\n")  # composes to the reference's stage
    two.write_text(f"defaults: [{TWO_STAGE}]\nstages: {{model.init_args.first_stage_ckpt: stage.yaml}}\n")
    shutil.copytree(reference / "runs" / STAGE, workdir / "runs" / "two.stage")  # its finished run, as experiment two
    first = only_run_dir(workdir, "two.stage")
    assert stages.finished_stage(stages.read_stages(["--config", str(two)])[0][0],
                                 ["fit", "--config", str(stage), "--name=two.stage", "--runs_root=runs"], Path("runs"))[1] is not None
    stage.write_text(stage.read_text() + "trainer: {max_epochs: 1}\n")  # the edit
    assert run_in_process("fit", "--config", str(two), "--trainer.max_epochs=1") == 0
    assert f"its latest run {first.relative_to(workdir)} was fitted with another config" in capsys.readouterr().out
    stage_runs = sorted((workdir / "runs" / "two.stage").iterdir())
    assert len(stage_runs) == 2 and stage_runs[0] == first
    assert json.loads((stage_runs[1] / FIT_MARKER).read_text())["global_step"] == 3  # the edited budget: 1 epoch
    newest = torch.load(only_run_dir(workdir, "two") / "checkpoints" / "last.ckpt", weights_only=True)
    assert Path(newest["hyper_parameters"]["first_stage_ckpt"]) == (stage_runs[1] / "checkpoints" / "last.ckpt").resolve()


def test_validate_and_loading_use_the_finished_stage(workdir, reference):
    _copy_runs(reference, workdir)
    ckpt = only_run_dir(workdir, "tiny_two_stage") / "checkpoints" / "last.ckpt"
    assert run_in_process("validate", "--config", str(TWO_STAGE), "--ckpt_path=last") == 0
    from gen_research.commands.loading import load_model_and_data

    shutil.rmtree(workdir / "runs" / STAGE)  # the second stage's checkpoint holds the first stage
    model, _, _ = load_model_and_data(str(TWO_STAGE), str(ckpt))
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(value, saved[f"first_stage.{key}"]) for key, value in model.first_stage.state_dict().items())
