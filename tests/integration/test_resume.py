"""Exact resume from every stopping point: crash right after an epoch-end (validation) checkpoint, a run that
finished max_epochs or max_steps continued with a larger budget, a run stopped by max_time, for the VAE (EMA,
sample grids, evaluation callback) and the DDPM with EMA. Each ends bit-identical to the uninterrupted run.
(The mid-epoch crash is in test_fit.py; SIGKILL at random moments in test_fault_injection.py.)"""

import pytest

from .helpers import CRASH, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, last_checkpoint, only_run_dir, run_in_process

pytestmark = pytest.mark.integration
EVALUATION = ('--trainer.callbacks+={"class_path": "evaluation", "init_args": {"metrics": "fid,precision,recall", '
              '"num_samples": 40, "batch_size": 20, "cache_dir": "cache"}}')
# The VAE (EMA 0.9, sample grids, evaluation on pixels), 2 epochs of 5 batches. A constant schedule after warm-up:
# the cosine length follows the budget, so a run continued with a larger budget cannot match one that had it
# from the start (nets/schedules.py WarmupCosineLR says so when it happens).
VAE = ["--config", str(TEST_CONFIGS / "tiny_vae.yaml"), "--trainer.enable_progress_bar=false", "--trainer.logger=false",
       "--model.init_args.lr_schedule=constant", EVALUATION]
DDPM = ["--config", str(TEST_CONFIGS / "tiny_ddpm.yaml"), "--trainer.max_epochs=2",
        '--trainer.callbacks+={"class_path": "ema", "init_args": {"decay": 0.8}}',
        '--trainer.callbacks+={"class_path": "sample_grid", "init_args": {"num_samples": 4}}',
        '--trainer.callbacks+={"class_path": "evaluation", "init_args": {"metrics": "fid", "num_samples": 20, "batch_size": 10, "cache_dir": "cache"}}']



@pytest.fixture(scope="module")
def vae_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae_reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        assert run_in_process("fit", *VAE, "--name=full") == 0
    return last_checkpoint(root, "full")


def test_crash_right_after_an_epoch_end_validation_checkpoint(workdir, vae_reference):
    # 5 batches an epoch: the crash comes before step 6, so last.ckpt is the one written after epoch 0's validation.
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *VAE, "--name=split", CRASH.format(5))
    assert last_checkpoint(workdir, "split")["global_step"] == 5
    assert run_in_process("fit", *VAE, "--name=split", "--ckpt_path=last") == 0
    assert_same_training_state(vae_reference, last_checkpoint(workdir, "split"))


def test_finished_max_epochs_run_continued_with_a_larger_budget(workdir, vae_reference):
    assert run_in_process("fit", *VAE, "--name=split", "--trainer.max_epochs=1") == 0
    assert run_in_process("fit", *VAE, "--name=split", "--ckpt_path=last") == 0
    assert_same_training_state(vae_reference, last_checkpoint(workdir, "split"))


def test_finished_max_steps_run_continued_with_a_larger_budget(workdir, vae_reference):
    assert run_in_process("fit", *VAE, "--name=split", "--trainer.max_steps=7") == 0  # stops mid-epoch 1
    assert last_checkpoint(workdir, "split")["global_step"] == 7
    assert run_in_process("fit", *VAE, "--name=split", "--ckpt_path=last") == 0
    assert_same_training_state(vae_reference, last_checkpoint(workdir, "split"))


def test_run_stopped_by_max_time_continued(workdir, vae_reference):
    # Lightning's Timer stops the run at the end of step 3: the step where a test callback sleeps past the budget.
    sleep = '--trainer.callbacks+={"class_path": "tests.integration.helpers.SleepAtStep", "init_args": {"step": 3, "seconds": 2.5}}'
    assert run_in_process("fit", *VAE, "--name=split", "--trainer.max_time=00:00:00:02", sleep) == 0
    assert last_checkpoint(workdir, "split")["global_step"] == 3
    assert run_in_process("fit", *VAE, "--name=split", "--ckpt_path=last") == 0  # the same run without a time limit
    assert_same_training_state(vae_reference, last_checkpoint(workdir, "split"))


def test_ddpm_with_ema_grids_and_evaluation_crash_after_the_epoch_end_checkpoint(workdir):
    assert run_in_process("fit", *DDPM, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *DDPM, "--name=split", CRASH.format(3))  # 3 batches an epoch
    assert last_checkpoint(workdir, "split")["global_step"] == 3
    assert run_in_process("fit", *DDPM, "--name=split", "--ckpt_path=last") == 0
    full, resumed = last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split")
    assert full["global_step"] == 6
    assert_same_training_state(full, resumed)


def test_crash_after_the_final_step_checkpoint_before_training_ended(workdir):
    # A checkpoint every step: the crash comes after the step-10 checkpoint, in the last epoch's end. The resumed
    # run only finishes that epoch; its last.ckpt records the finished run as the uninterrupted one does.
    steps = [*VAE, "--checkpoint.every_n_train_steps=1", "--checkpoint.monitor=null"]
    crash = '--trainer.callbacks+={"class_path": "tests.integration.helpers.CrashBeforeValidation", "init_args": {"step": 10}}'
    assert run_in_process("fit", *steps, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *steps, "--name=split", crash)
    assert last_checkpoint(workdir, "split")["global_step"] == 10
    assert run_in_process("fit", *steps, "--name=split", "--ckpt_path=last") == 0
    assert_same_training_state(last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split"))
