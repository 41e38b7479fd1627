"""The test-only adversarial family (tests/families/tiny_gan.py) through the CLI, with no edit outside its file:
fit with two optimizers and an EMA of the generator (exact resume included), the default checkpoint callback
without val/loss, its declared sampling option in ``sample``, ``evaluate`` of its checkpoint, and the evaluation
and sample-grid callbacks during its fit."""

import json

import pytest
import torch

from .helpers import CRASH, EVERY_STEP, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, last_checkpoint, only_run_dir, run_in_process

pytestmark = pytest.mark.integration
GAN = ["--config", str(TEST_CONFIGS / "tiny_gan.yaml")]
CONDITIONAL = ["--config", str(TEST_CONFIGS / "tiny_gan_conditional.yaml")]



def test_fit_crash_mid_epoch_and_resume_matches_an_uninterrupted_run(workdir):
    assert run_in_process("fit", *GAN, EVERY_STEP, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *GAN, EVERY_STEP, "--name=split", CRASH.format(7))  # in the second epoch
    assert last_checkpoint(workdir, "split")["global_step"] == 7
    assert run_in_process("fit", *GAN, EVERY_STEP, "--name=split", "--ckpt_path=last") == 0
    full, resumed = last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split")
    assert full["global_step"] == 10  # 2 epochs of 5 batches: one step a batch, not one per optimizer step
    assert len(full["optimizer_states"]) == 2 and len(full["lr_schedulers"]) == 2
    assert [state["state"][0]["step"].item() for state in full["optimizer_states"]] == [10, 10]
    assert int(full["averaging_state"]["n_averaged"]) == 10
    # The EMA averages the generator only: the discriminator's checkpointed weights are its training weights.
    discriminator = [k for k in full["state_dict"] if k.startswith("discriminator.")]
    assert discriminator and all(torch.equal(full["state_dict"][k], full["current_model_state"][k]) for k in discriminator)
    assert any(not torch.equal(full["state_dict"][k], full["current_model_state"][k]) for k in full["state_dict"] if k.startswith("generator."))
    assert_same_training_state(full, resumed)  # both optimizers and schedulers, EMA, counters, RNG


def test_default_checkpoint_callback_ranks_nothing_and_needs_no_val_loss(workdir):
    assert run_in_process("fit", *GAN, "--checkpoint.every_n_train_steps=3", "--trainer.max_epochs=1", "--name=gan") == 0
    run = only_run_dir(workdir, "gan")
    names = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    # No monitor: step checkpoints from the first step on (none held back waiting for a metric), no "best-" name.
    assert names == ["epoch000-step000003.ckpt", "last.ckpt"], names
    state = next(v for k, v in last_checkpoint(workdir, "gan")["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["monitor"] is None and not any(name.startswith("best-") for name in names)
    saved = (run / "config.yaml").read_text()
    assert "monitor: null" in saved


def test_conditional_variant_trains_on_labels_and_samples_a_class(workdir):
    assert run_in_process("fit", *CONDITIONAL, "--trainer.max_epochs=1") == 0
    checkpoint = last_checkpoint(workdir, "tiny_gan_conditional")
    assert checkpoint["hyper_parameters"]["class_conditional"] is True and checkpoint["hyper_parameters"]["num_classes"] == 10
    assert checkpoint["state_dict"]["generator.net.0.weight"].shape[1] == 16 + 10  # latent + one-hot label
    out = workdir / "class3"
    assert run_in_process("sample", *CONDITIONAL, "--ckpt_path=last", "--num-images=8", "--class=3", f"--out={out}") == 0
    assert len(list(out.glob("0*.png"))) == 8


def test_trainer_gradient_clipping_is_refused_in_one_line(workdir, capsys):
    assert run_in_process("fit", *GAN, "--trainer.gradient_clip_val=1.0", "--name=clip") != 0
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model.init_args.optimizers.<network>.gradient_clip_val" in message


def test_a_bad_optimizer_setting_names_its_key(workdir, capsys):
    bad = '--model.init_args.optimizers={"generator": {"lr": -1.0}, "discriminator": {"lr": 1.0e-3}}'
    assert run_in_process("fit", *GAN, bad, "--name=bad") != 0
    assert "model.init_args.optimizers.generator.lr=-1.0 must be" in capsys.readouterr().err


def test_an_unknown_ema_target_lists_the_submodules(workdir, capsys):
    ema = '--trainer.callbacks=[{"class_path": "ema", "init_args": {"target": "gen"}}]'
    assert run_in_process("fit", *GAN, ema, "--name=ema") != 0
    assert "its submodules are generator, discriminator" in capsys.readouterr().err


# ---- the commands the lead's contract rewrite serves ---------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan_trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        assert run_in_process("fit", *GAN, "--trainer.max_epochs=1") == 0
    return root


def test_sample_help_lists_the_declared_option(capsys):
    run_in_process("sample", "--help")
    out = capsys.readouterr().out
    assert "--truncation" in out and "scale of the latent noise" in out


def test_sample_with_the_declared_truncation(trained, monkeypatch):
    monkeypatch.chdir(trained)
    runs = {}
    for truncation in ("1.0", "0.5"):
        out = trained / f"t{truncation}"
        assert run_in_process("sample", *GAN, "--ckpt_path=last", "--num-images=6", "--seed=3",
                              f"--truncation={truncation}", f"--out={out}") == 0
        runs[truncation] = sorted(out.glob("0*.png"))
        assert len(runs[truncation]) == 6 and (out / "grid.png").is_file()
    assert runs["1.0"][0].read_bytes() != runs["0.5"][0].read_bytes()  # the option reached the model


def test_sample_refuses_truncation_out_of_its_declared_range(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    assert run_in_process("sample", *GAN, "--ckpt_path=last", "--truncation=0", f"--out={trained / 'zero'}") != 0
    assert "--truncation 0" in capsys.readouterr().err


def test_evaluate_a_gan_checkpoint(trained, monkeypatch):
    monkeypatch.chdir(trained)
    results = trained / "results.json"
    assert run_in_process("evaluate", *GAN, "--ckpt_path=last", "--metrics=fid,precision,recall",
                          "--features=pixels", "--num-images=64", "--batch-size=32", f"--json={results}") == 0
    numbers = json.loads(results.read_text())
    assert numbers.pop("provenance")["num_generated"] == 64  # what they were measured with, beside the numbers
    assert {"fid/pixels", "precision/pixels", "recall/pixels"} <= set(numbers)
    assert all(isinstance(v, float) for v in numbers.values()) and numbers["fid/pixels"] > 0


def test_evaluation_and_sample_grid_callbacks_during_fit(workdir):
    callbacks = [
        '--trainer.callbacks+={"class_path": "sample_grid", "init_args": {"num_samples": 16}}',
        '--trainer.callbacks+={"class_path": "evaluation", "init_args": {"metrics": "fid", "features": "pixels", '
        '"num_samples": 40, "batch_size": 20, "cache_dir": "cache"}}',
    ]
    # A user monitor on the family that declares none: the evaluation's FID ranks the checkpoints.
    assert run_in_process("fit", *GAN, *callbacks, "--checkpoint.monitor=fid/pixels", "--name=grid") == 0
    run = only_run_dir(workdir, "grid")
    assert sorted(p.name for p in (run / "samples").glob("*samples*.png"))  # one grid per validation
    state = next(v for k, v in last_checkpoint(workdir, "grid")["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["monitor"] == "fid/pixels" and float(state["best_model_score"]) > 0


def test_a_family_registered_by_imports_brings_its_options_to_a_fresh_process(tmp_path):
    """In a new process only the experiment's `imports:` registers the GAN: its --truncation must still be a known
    option of sample and evaluate (the failure is then about the missing checkpoint, not an unknown argument)."""
    from .helpers import REPO, run_subprocess

    missing = str(tmp_path / "none.ckpt")
    for command in ("sample", "evaluate"):
        result = run_subprocess(command, *GAN, f"--ckpt_path={missing}", "--truncation=0.5", cwd=REPO)
        assert result.returncode == 2 and "unrecognized arguments" not in result.stderr
        assert "none.ckpt" in result.stderr, result.stderr
