"""The GPU experiment of the diffusion family on a real GPU: experiments/ddpm_cifar10.yaml (the paper's 35.7M UNet,
bf16-mixed, the DDP strategy) fits a few steps, evaluates, samples and exports. Skipped without CUDA (CI has none);
run it on a GPU machine with ``pytest tests/integration/test_gpu.py``."""

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from .helpers import REPO, only_run_dir, run_subprocess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
STEPS = 32  # 8 epochs of 4 batches (58 training images, batch 16)


def write_image_folder(root, per_class=32):
    """Two classes of random 32x32 RGB PNGs: CIFAR-10's shape, no download."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / label / f"{i}.png")


def test_ddpm_cifar10_experiment_fits_samples_and_exports_on_one_gpu(workdir):
    write_image_folder(workdir / "images")
    # The experiment as shipped, with the data swapped for the folder above, a few steps, one GPU, and the
    # evaluation callback on the pixels extractor (the Inception weights file is not on test machines).
    override = {
        "data": {"class_path": "image_folder", "init_args": {"root": str(workdir / "images"), "resize": 32, "center_crop": 32,
                                                              "num_workers": 0}},
        "checkpoint": {"monitor": "fid/pixels", "mode": "min"},
        "trainer": {
            "devices": 1, "max_steps": STEPS, "check_val_every_n_epoch": 1, "logger": [{"class_path": "csv"}],
            "callbacks": [
                {"class_path": "ema", "init_args": {"decay": 0.9999}},
                {"class_path": "sample_grid", "init_args": {"num_samples": 16}},
                {"class_path": "evaluation", "init_args": {"metrics": "fid", "features": "pixels", "feature_weights": None,
                                                           "num_samples": 32,
                                                           "split": "val", "every_n_epochs": 1}},
            ],
        },
    }
    (workdir / "gpu.yaml").write_text(yaml.safe_dump(override))
    experiment = str(REPO / "experiments" / "ddpm_cifar10.yaml")
    fit = run_subprocess("fit", "--config", experiment, "--config", "gpu.yaml", "--name", "ddpm_cifar10", cwd=workdir)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = only_run_dir(workdir, "ddpm_cifar10")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["precision"] == "bf16-mixed" and config["trainer"]["strategy"] == "ddp"
    assert config["trainer"]["accelerator"] == "gpu"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == STEPS
    weights = ckpt["state_dict"]
    assert sum(v.numel() for k, v in weights.items() if k.startswith("unet.")) > 35_000_000
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    with open(run / "metrics.csv") as handle:
        fids = [row["fid/pixels"] for row in csv.DictReader(handle) if row.get("fid/pixels")]
    assert fids and all(np.isfinite(float(f)) for f in fids)

    last, resolved = str(run / "checkpoints" / "last.ckpt"), str(run / "config.yaml")
    sample = run_subprocess("sample", "--config", resolved, "--ckpt_path", last, "--num-images", "8",
                            "--steps", "10", "--seed", "0", "--out", "samples", cwd=workdir)
    assert sample.returncode == 0, sample.stderr[-3000:]
    pngs = sorted((workdir / "samples").glob("0*.png"))
    assert len(pngs) == 8 and np.asarray(Image.open(pngs[0])).shape == (32, 32, 3)

    export = run_subprocess("export", "--config", resolved, "--ckpt_path", last, "--out", "pipeline",
                            cwd=workdir)
    assert export.returncode == 0, export.stderr[-3000:]
    unet_config = json.loads((workdir / "pipeline" / "unet" / "config.json").read_text())
    assert list(unet_config["block_out_channels"]) == [128, 256, 256, 256]
