"""End-to-end fits through the CLI on a tiny VAE: run folder, W&B offline run, determinism, exact resume."""

import csv

import pytest
import torch
import yaml
from PIL import Image

from .helpers import TEST_CONFIGS, SimulatedCrash, load_state, only_run_dir, run_in_process, run_subprocess

pytestmark = pytest.mark.integration
TINY = str(TEST_CONFIGS / "tiny_vae.yaml")


def test_fit_writes_a_complete_run_folder_and_offline_wandb_run(tmp_path):
    result = run_subprocess("fit", "--config", TINY, cwd=tmp_path, env={"WANDB_MODE": "", "WANDB_API_KEY": "", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path, "tiny_vae")
    # The config actually used, loadable and complete.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["class_path"] == "gen_research.models.autoencoder.vae.VAE"
    assert "image_shape" not in config["model"]["init_args"]  # derived from the data at instantiation, not configured
    # The loggers' config is the resolved config (W&B and CSV get the same log_hyperparams call; CSV's is readable).
    logged = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert logged == {k: v for k, v in config.items() if k != "config"}
    assert config["trainer"]["default_root_dir"] == str(run_dir.relative_to(tmp_path))
    # Checkpoints: last and best by val/loss.
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    hparams = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]
    assert tuple(hparams["image_shape"]) == (1, 8, 8) and hparams["num_classes"] == 10  # linked from the datamodule
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
    # One grid of each kind per epoch, real images of the expected size.
    for epoch in (0, 1):
        for kind in ("samples", "reconstructions", "interpolations"):
            path = run_dir / "samples" / f"epoch{epoch:03d}-{kind}.png"
            assert path.is_file(), path
    samples = Image.open(run_dir / "samples" / "epoch001-samples.png")
    assert samples.size == (4 * 10 + 2, 4 * 10 + 2)  # 16 samples of 8x8 in a 4x4 grid with 2px padding
    # Metrics CSV with the VAE's validation numbers.
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    val_rows = [r for r in rows if r.get("val/elbo")]
    assert len(val_rows) == 2 and all(float(r["val/nll_iw"]) <= -float(r["val/elbo"]) + 1e-3 for r in val_rows)
    assert any(r.get("lr-AdamW") for r in rows)  # learning-rate monitor
    # Offline W&B run inside the run folder, with images stored as PNG.
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb"))
    media = list((offline[0] / "files" / "media" / "images").rglob("*.png"))
    assert media and max(Image.open(p).getextrema()[1] if Image.open(p).mode == "L" else max(e[1] for e in Image.open(p).getextrema()) for p in media) > 0
    # It ends by saying where everything is.
    assert f"Run folder: {run_dir.relative_to(tmp_path)}" in result.stdout
    assert "wandb sync" in result.stdout and "last checkpoint" in result.stdout


def test_same_seed_gives_identical_weights(workdir):
    for _ in range(2):
        assert run_in_process("fit", "--config", TINY, "--trainer.enable_progress_bar=false", "--trainer.logger=false") == 0
    first, second = sorted((workdir / "runs" / "tiny_vae").iterdir())
    a, b = (load_state(run / "checkpoints" / "last.ckpt") for run in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run_in_process("fit", "--config", TINY, "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--seed_everything=8") == 0
    third = sorted((workdir / "runs" / "tiny_vae").iterdir())[-1]
    c = load_state(third / "checkpoints" / "last.ckpt")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_interrupted_mid_epoch_and_resumed_run_ends_with_identical_weights(workdir):
    common = ["--config", TINY, "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--checkpoint.every_n_train_steps=1"]
    assert run_in_process("fit", *common, "--name=full") == 0
    # Crash after 7 optimizer steps, in the middle of the second epoch (5 batches an epoch); same config otherwise.
    crash = '--trainer.callbacks+={"class_path": "tests.integration.helpers.CrashAtStep", "init_args": {"step": 7}}'
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *common, "--name=split", crash)
    split_dir = only_run_dir(workdir, "split")
    assert torch.load(split_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 7
    assert run_in_process("fit", *common, "--name=split", "--ckpt_path=last") == 0
    assert only_run_dir(workdir, "split") == split_dir  # resumed into the same folder
    assert (split_dir / "config.yaml").is_file() and (split_dir / "config.resume-1.yaml").is_file()
    full = torch.load(only_run_dir(workdir, "full") / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(split_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == full["global_step"] == 10
    for key in ("state_dict", "current_model_state"):  # EMA weights and the raw training weights
        assert all(torch.equal(full[key][k], resumed[key][k]) for k in full[key]), key
    full_moments = full["optimizer_states"][0]["state"]
    resumed_moments = resumed["optimizer_states"][0]["state"]
    assert all(torch.equal(full_moments[i]["exp_avg"], resumed_moments[i]["exp_avg"]) for i in full_moments)
    assert full["lr_schedulers"][0]["last_epoch"] == resumed["lr_schedulers"][0]["last_epoch"]


def test_last_checkpoint_holds_the_final_step_when_training_stops_between_validations(workdir):
    # 5 batches an epoch, validated (and last.ckpt written) at step 5; max_steps 7 stops in the middle of epoch 2.
    # Lightning alone keeps the step-5 last.ckpt; sample/evaluate/export of "the last checkpoint" would miss 2 steps.
    common = ["--config", TINY, "--trainer.enable_progress_bar=false", "--trainer.logger=false"]
    assert run_in_process("fit", *common, "--trainer.max_steps=7") == 0
    last = torch.load(only_run_dir(workdir, "tiny_vae") / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 7
    # Written after the EMA weights were copied into the model at the end of training: still EMA as state_dict
    # and the raw training weights (not the average again) as current_model_state, so a resume continues correctly.
    ema, raw = last["state_dict"], last["current_model_state"]
    assert ema.keys() == raw.keys() and not all(torch.equal(ema[k], raw[k]) for k in ema)


def test_overrides_in_both_styles_reach_the_model(workdir, capsys):
    code = run_in_process("fit", "--config", TINY, "--model.init_args.beta", "4", "--model.latent_dim=3", "--print_config")
    assert code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["beta"] == 4.0 and printed["model"]["init_args"]["latent_dim"] == 3
    assert not (workdir / "runs").exists()  # printing the config writes nothing


def test_later_config_files_override_earlier_ones(workdir, capsys):
    override = workdir / "more.yaml"
    override.write_text("model:\n  init_args:\n    beta: 2.5\ntrainer:\n  max_epochs: 9\n")
    assert run_in_process("fit", "--config", TINY, "--config", str(override), "--print_config") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["beta"] == 2.5 and printed["trainer"]["max_epochs"] == 9
    assert printed["name"] == "more"  # named after the last config file unless --name is given
