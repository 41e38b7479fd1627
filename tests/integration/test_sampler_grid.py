"""The sampler sweep end to end: a tiny class-conditional DDPM on 8x8 digits, swept over 2 samplers x 2 step
counts x 2 guidance scales, with FID, precision/recall, IS and accuracy from a tiny digits classifier."""

import csv
import json
import math
import warnings

import pytest
from PIL import Image

from .helpers import TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration
CONFIG = str(TEST_CONFIGS / "tiny_cfg_ddpm.yaml")
METRIC_KEYS = {f"{m}/classifier-digits8" for m in ("fid", "precision", "recall", "is", "is_std", "accuracy")}


def train_digits_classifier(path):
    """A `classifier` checkpoint for 8x8 digits (the mnist5k one reads 28x28): features and logits for IS and accuracy."""
    import lightning.pytorch as L
    import torch
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from gen_research.data import collate_fields
    from gen_research.models.classifier import Classifier

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    y = torch.tensor(data.target, dtype=torch.int64)
    torch.manual_seed(0)
    model = Classifier(image_shape=(1, 8, 8), num_classes=10, channels=[16, 32], feature_dim=24, lr=3e-3, feature_name="classifier-digits8")
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, collate_fn=collate_fields))
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder, checkpoint of tiny_cfg_ddpm, digits classifier checkpoint), trained once for the module."""
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        assert run_in_process("fit", "--config", CONFIG) == 0
    ckpt = next((root / "runs" / "tiny_cfg_ddpm").glob("*/checkpoints/last.ckpt"))
    return root, ckpt, train_digits_classifier(root / "classifier-digits8.ckpt")


def sweep_args(trained, *extra):
    root, ckpt, classifier = trained
    return ["evaluate", "--config", CONFIG, "--ckpt_path", str(ckpt), "--samplers", "ddim,dpm-solver++", "--steps", "2,4",
            "--guidance-scales", "1,2", "--features", "classifier", "--feature-weights", str(classifier),
            "--metrics", "fid,precision,recall,is,accuracy", "--num-images", "32", "--batch-size", "32", "--is-splits", "2",
            "--cache-dir", str(root / "cache"), *extra]


def read_rows(out):
    with (out / "sweep.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_sweep_writes_table_plots_samples_and_a_wandb_run(trained, workdir, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert run_in_process(*sweep_args(trained)) == 0
    out, = (workdir / "runs" / "tiny_cfg_ddpm").glob("*-sampler-sweep")  # the default run folder
    printed = capsys.readouterr().out
    assert "fid/classifier-digits8" in printed and f"Table: {out.relative_to(workdir) / 'sweep.csv'}" in printed
    rows = read_rows(out)
    assert len(rows) == 8 and set(rows[0]) == {"sampler", "steps", "guidance_scale", "eta", "nfe", "nfe_weighted", "sampling_seconds"} | METRIC_KEYS
    assert [(r["sampler"], int(r["steps"]), float(r["guidance_scale"])) for r in rows] == [
        (s, n, w) for s in ("ddim", "dpm-solver++") for w in (1.0, 2.0) for n in (2, 4)]
    for row in rows:
        assert all(math.isfinite(float(row[key])) for key in METRIC_KEYS), row
        assert int(row["nfe"]) == int(row["steps"])  # one network call a step for both samplers
        assert float(row["nfe_weighted"]) == int(row["steps"]) * float(row["guidance_scale"])  # w=2: doubled batches
        assert 0 <= float(row["accuracy/classifier-digits8"]) <= 1  # (sampling_seconds is a wall-clock time: not asserted)
    payload = json.loads((out / "sweep.json").read_text())
    assert payload["rows"][3]["nfe"] == 4
    provenance = payload["provenance"]  # what every row was measured with; the grid's axes under sampling
    assert provenance["sampling"]["grid"]["sampler"] == ["ddim", "dpm-solver++"] and provenance["sampling"]["grid"]["steps"] == [2, 4]
    assert provenance["extractor"]["name"] == "classifier-digits8" and len(provenance["reference"]["fingerprint"]) == 32
    pngs = [out / "fid_vs_nfe.png", out / "guidance.png", *sorted((out / "samples").glob("*.png"))]
    assert len(pngs) == 10 and (out / "samples" / "dpm-solver++-4-w2.png") in pngs
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
    with Image.open(out / "samples" / "ddim-2-w1.png") as grid:
        assert grid.size == (10 * 10 + 2, 2 * 10 + 2)  # 20 samples of 8x8, ten a row, 2-pixel padding
    run_dir, = (out / "wandb").glob("offline-run-*")
    assert list(run_dir.glob("run-*.wandb"))
    logged = {p.name.split("_0_")[0] for p in (run_dir / "files" / "media").rglob("*.png")}
    assert {"fid_vs_nfe", "guidance", "ddim-2-w1"} <= logged

    again = workdir / "again"  # same command, same seed: same samples, same numbers (reference read from the cache)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert run_in_process(*sweep_args(trained, "--out", str(again))) == 0
    assert [{k: r[k] for k in METRIC_KEYS | {"nfe"}} for r in read_rows(again)] == [{k: r[k] for k in METRIC_KEYS | {"nfe"}} for r in rows]


def test_sweep_refuses_metrics_it_cannot_compare(trained, workdir, capsys):
    assert run_in_process(*sweep_args(trained, "--metrics", "fid,ssim")) == 2
    assert "metrics needing pairs (ssim, psnr, lpips) do not apply" in capsys.readouterr().err
    assert not (workdir / "runs").exists()  # refused before a run folder was made
