"""DDP on CPU, the anomaly-detection test command, and `list`."""

import csv

import pytest
import torch

from .helpers import TEST_CONFIGS, only_run_dir, run_in_process, run_subprocess

pytestmark = pytest.mark.integration
TINY = str(TEST_CONFIGS / "tiny_vae.yaml")


def test_ddp_on_two_cpu_processes_trains_into_one_run_folder(tmp_path):
    evaluation = ('--trainer.callbacks+={"class_path": "evaluation", "init_args": {"metrics": "fid,precision,recall", '
                  '"num_samples": 101, "batch_size": 40, "cache_dir": "cache"}}')
    result = run_subprocess(
        "fit", "--config", TINY, "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.enable_progress_bar=false", "--trainer.logger=[{class_path: csv}]", "--trainer.limit_train_batches=3",
        evaluation, cwd=tmp_path, env={"WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path, "tiny_vae")  # both ranks agreed on one folder
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 6  # 2 epochs x 3 batches per rank, gradients averaged across ranks
    assert "gloo" in result.stderr + result.stdout or "distributed_backend=gloo" in result.stderr + result.stdout
    assert len(list((run_dir / "samples").glob("*.png"))) == 6  # grids from rank 0 only, one set per epoch
    # The evaluation callback ran on both ranks (51 + 50 samples, gathered) and logged once per epoch.
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("fid/pixels")]
    assert len(rows) == 2 and all(float(r["fid/pixels"]) > 0 and 0 <= float(r["recall/pixels"]) <= 1 for r in rows)


def test_anomaly_detection_auroc_for_the_held_out_class(workdir, capsys):
    config = str(TEST_CONFIGS / "tiny_ae_anomaly.yaml")
    assert run_in_process("fit", "--config", config) == 0
    ckpt = next((workdir / "runs" / "tiny_ae_anomaly").glob("*/checkpoints/last.ckpt"))
    capsys.readouterr()
    assert run_in_process("test", "--config", config, f"--ckpt_path={ckpt}", "--trainer.logger=false") == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if "test/auroc_holdout" in l)
    auroc = float(line.replace("│", " ").split()[-1])
    assert 0.75 < auroc <= 1.0, out  # zeros are reconstructed worse than the digits it was trained on


def test_list_prints_every_registry(capsys):
    assert run_in_process("list") == 0
    out = capsys.readouterr().out
    for heading in ("models:", "datamodules:", "samplers:", "callbacks:", "loggers:", "presets:"):
        assert heading in out
    assert "  vae " in out and "  mnist5k " in out and "  ddp-bf16 " in out
    assert run_in_process("list", "models") == 0
    only_models = capsys.readouterr().out
    assert "vae" in only_models and "mnist5k" not in only_models
    assert run_in_process("list", "modls") == 2


def test_validate_and_predict_a_checkpoint(workdir, capsys):
    tiny = str(TEST_CONFIGS / "tiny_vae.yaml")
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.logger=false"]
    assert run_in_process("fit", "--config", tiny, *quiet, "--trainer.max_epochs=1") == 0
    ckpt = next((workdir / "runs" / "tiny_vae").glob("*/checkpoints/last.ckpt"))
    capsys.readouterr()
    assert run_in_process("validate", "--config", tiny, *quiet, f"--ckpt_path={ckpt}") == 0
    assert "val/elbo" in capsys.readouterr().out
    assert run_in_process("predict", "--config", tiny, *quiet, f"--ckpt_path={ckpt}", "--trainer.limit_predict_batches=2") == 0
    predict_dir = next((workdir / "runs" / "tiny_vae").glob("*-predict"))
    predictions = torch.load(predict_dir / "predictions.pt")
    assert predictions["latents"].shape == (64, 4) and predictions["reconstructions"].shape == (64, 1, 8, 8)
    assert predictions["labels"].dtype == torch.int64 and (predictions["scores"] >= 0).all()
    assert len(list((workdir / "runs" / "tiny_vae").iterdir())) == 3  # fit, validate and predict: three folders
