"""A resume keeps the checkpoint callback's bookkeeping whatever checkpoint cadence it runs with.

Lightning keys that state (``last.ckpt``'s path, the best-k ranking) by monitor, mode and cadence: a run crashed with
``--checkpoint.every_n_train_steps=1`` and resumed without it trained exactly, but wrote ``last-v1.ckpt`` beside the
crash's stale ``last.ckpt`` and ranked best checkpoints afresh (RunCheckpoint, guarantee 3)."""

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from gen_research.training.callbacks.checkpoint import RunCheckpoint

from .helpers import CRASH, EVERY_STEP, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, last_checkpoint, only_run_dir, run_in_process

pytestmark = pytest.mark.integration
TINY_DDPM = str(TEST_CONFIGS / "tiny_ddpm.yaml")
COMMON = ["--config", TINY_DDPM, "--trainer.max_epochs=2"]  # 3 batches an epoch: 6 optimizer steps


def test_resume_without_the_crashed_runs_step_checkpoints_ends_like_the_uninterrupted_run(workdir, recwarn):
    assert run_in_process("fit", *COMMON, "--name=full") == 0
    with pytest.raises(SimulatedCrash):  # after step 4, in the middle of the second epoch, with a checkpoint every step
        run_in_process("fit", *COMMON, "--name=split", EVERY_STEP, CRASH.format(4))
    assert last_checkpoint(workdir, "split")["global_step"] == 4
    recwarn.clear()
    assert run_in_process("fit", *COMMON, "--name=split", "--ckpt_path=last") == 0  # the default cadence: per epoch
    checkpoints = only_run_dir(workdir, "split") / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("last*.ckpt")) == ["last.ckpt"]  # no last-v1.ckpt beside a stale one
    full, resumed = last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split")
    assert full["global_step"] == resumed["global_step"] == 6
    assert_same_training_state(full, resumed)
    # The best-k ranking went on: save_top_k=1 leaves one best file (the crash's step-4 one was replaced or kept).
    (state,) = [v for k, v in resumed["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert len(list(checkpoints.glob("best-*.ckpt"))) == 1 and (checkpoints / Path(state["best_model_path"]).name).is_file()
    assert not [w for w in recwarn if "callbacks" in str(w.message) and "ckpt_path" in str(w.message)]


def saved_state(dirpath: Path, step: int) -> dict:
    """The bookkeeping a ModelCheckpoint of ``dirpath`` saved after ranking the checkpoint of ``step``."""
    best = str(dirpath / f"best-step{step}.ckpt")
    return {"monitor": "val/loss", "best_model_score": torch.tensor(0.5), "best_model_path": best, "current_score": torch.tensor(0.5),
            "dirpath": str(dirpath), "best_k_models": {best: torch.tensor(0.5)}, "kth_best_model_path": best,
            "kth_value": torch.tensor(0.5), "last_model_path": str(dirpath / "last.ckpt")}


def restore(callbacks: list, saved: dict[str, dict]) -> dict:
    """What Lightning does with a checkpoint's callback states on resume: every on_load_checkpoint, then each
    callback's load_state_dict with the state under its key (trainer/call.py)."""
    checkpoint = {"callbacks": dict(saved)}
    trainer = SimpleNamespace(callbacks=callbacks)
    for callback in callbacks:
        callback.on_load_checkpoint(trainer, None, checkpoint)
    for callback in callbacks:
        if callback.state_key in checkpoint["callbacks"]:
            callback.load_state_dict(checkpoint["callbacks"][callback.state_key])
    return checkpoint["callbacks"]


def checkpoint_callback(dirpath: Path, **cadence) -> RunCheckpoint:
    return RunCheckpoint(dirpath=dirpath, monitor="val/loss", mode="min", save_last=True, **cadence)


def test_a_state_saved_per_epoch_is_taken_over_by_a_resume_that_checkpoints_every_step(tmp_path):
    saved_by = checkpoint_callback(tmp_path)  # Lightning's default cadence: every epoch
    resumed = checkpoint_callback(tmp_path, every_n_train_steps=1)
    assert saved_by.state_key != resumed.state_key
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # taken over without a warning
        restore([resumed], {saved_by.state_key: saved_state(tmp_path, 3)})
    assert resumed.last_model_path == str(tmp_path / "last.ckpt")
    assert resumed.best_model_path == str(tmp_path / "best-step3.ckpt")
    assert list(resumed.best_k_models) == [str(tmp_path / "best-step3.ckpt")] and float(resumed.best_model_score) == 0.5


def test_a_state_of_another_monitor_or_folder_is_not_taken_over_and_the_warning_says_what_to_pass(tmp_path):
    other_monitor = RunCheckpoint(dirpath=tmp_path, monitor="val/fid", mode="min", every_n_train_steps=1)
    resumed = checkpoint_callback(tmp_path)
    with pytest.warns(UserWarning, match=r"not restored; to keep it, resume with the checkpoint.monitor, checkpoint.mode and "
                                         r"checkpoint.every_n_train_steps"):
        restore([resumed], {other_monitor.state_key: saved_state(tmp_path, 3)})
    assert resumed.last_model_path == "" and resumed.best_k_models == {}  # another ranking: nothing mixed in
    other_folder = checkpoint_callback(tmp_path / "elsewhere", every_n_train_steps=1)
    with pytest.warns(UserWarning, match="val/loss"):
        restore([resumed], {other_folder.state_key: saved_state(tmp_path / "elsewhere", 3)})
    assert resumed.last_model_path == ""


def test_a_state_another_callback_of_the_run_claims_stays_with_it_and_two_candidates_are_not_guessed(tmp_path):
    every_step = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", mode="min", every_n_train_steps=1)
    resumed = checkpoint_callback(tmp_path, every_n_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        states = restore([resumed, every_step], {every_step.state_key: saved_state(tmp_path, 4)})
    assert every_step.last_model_path == str(tmp_path / "last.ckpt") and resumed.last_model_path == ""
    assert list(states) == [every_step.state_key]
    per_epoch, every_two_steps = checkpoint_callback(tmp_path), checkpoint_callback(tmp_path, every_n_train_steps=2)
    ambiguous = {per_epoch.state_key: saved_state(tmp_path, 3), every_two_steps.state_key: saved_state(tmp_path, 4)}
    with pytest.warns(UserWarning, match="not restored"):
        restore([checkpoint_callback(tmp_path, every_n_train_steps=1)], ambiguous)
