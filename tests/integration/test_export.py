"""export: a diffusers pipeline folder that diffusers alone loads and samples, giving gen_research's own images."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from .helpers import TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration
TINY = str(TEST_CONFIGS / "tiny_ddpm.yaml")

# Runs in a fresh interpreter that never imports gen_research.
LOAD_AND_SAMPLE = """
import sys, numpy, torch
from diffusers import DiffusionPipeline
assert not any(name.startswith("gen_research") for name in sys.modules)
pipe = DiffusionPipeline.from_pretrained(sys.argv[1])
out = pipe(batch_size=4, generator=torch.Generator().manual_seed(11), num_inference_steps=5, eta=0.0, use_clipped_model_output=True, output_type="np")
numpy.save(sys.argv[2], out.images)
assert not any(name.startswith("gen_research") for name in sys.modules)
"""


def test_exported_pipeline_samples_what_gen_research_samples(workdir):
    assert run_in_process("fit", "--config", TINY) == 0
    ckpt = next((workdir / "runs" / "tiny_ddpm").glob("*/checkpoints/last.ckpt"))
    assert run_in_process("export", "--config", TINY, "--ckpt_path", str(ckpt), "--out", "pipe") == 0
    assert {p.name for p in (workdir / "pipe").iterdir()} >= {"model_index.json", "unet", "scheduler"}
    result = subprocess.run([sys.executable, "-c", LOAD_AND_SAMPLE, str(workdir / "pipe"), str(workdir / "diffusers.npy")],
                            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = np.load(workdir / "diffusers.npy")  # [N, H, W, C] in [0, 1]

    from gen_research.commands.loading import load_model_and_data

    model, _, _ = load_model_and_data(TINY, str(ckpt))
    with torch.no_grad():
        ours = model.eval().sample(4, generator=torch.Generator().manual_seed(11), sampler="ddim", steps=5, eta=0.0)
    ours = ((ours + 1) / 2).permute(0, 2, 3, 1).numpy()
    assert theirs.shape == ours.shape == (4, 8, 8, 1)
    assert np.abs(theirs - ours).max() < 1e-5


def test_export_refuses_non_diffusion_models_and_full_folders(workdir, capsys):
    vae = str(TEST_CONFIGS / "tiny_vae.yaml")
    assert run_in_process("fit", "--config", vae, "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.max_epochs=1") == 0
    ckpt = str(next((workdir / "runs" / "tiny_vae").glob("*/checkpoints/last.ckpt")))
    assert run_in_process("export", "--config", vae, "--ckpt_path", ckpt, "--out", "x") == 2
    assert "export needs a model that can be exported as a diffusers pipeline; VAE cannot" in capsys.readouterr().err
    (workdir / "full").mkdir()
    (workdir / "full" / "keep").write_text("x")
    assert run_in_process("export", "--config", vae, "--ckpt_path", ckpt, "--out", "full") == 2
    assert "is not empty" in capsys.readouterr().err
