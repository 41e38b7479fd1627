"""ldm end to end on a tiny trained first stage: the latent scale factor is measured once and kept on resume, the
latent cache is written once and reused, the checkpoint is self-contained, latent inpainting keeps the known pixels,
sample/evaluate work through the contract, and export loads and samples with diffusers alone."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from .helpers import CRASH, EVERY_STEP, TEST_CONFIGS, SimulatedCrash, last_checkpoint, only_run_dir, run_in_process

pytestmark = pytest.mark.integration
FIRST = str(TEST_CONFIGS / "tiny_autoencoder_kl.yaml")
TINY = str(TEST_CONFIGS / "tiny_ldm.yaml")

LOAD_AND_SAMPLE = """
import sys, numpy, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
out = pipe(batch_size=4, class_labels=[0, 1, 2, 3], guidance_scale=2.0, generator=torch.Generator().manual_seed(11),
           num_inference_steps=5, output_type="np")
numpy.save(sys.argv[2], out.images)
assert not any(name.startswith("gen_research") for name in sys.modules)
"""


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("first_stage")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        assert run_in_process("fit", "--config", FIRST, "--trainer.enable_progress_bar=false", "--trainer.logger=false") == 0
    return str(only_run_dir(root, "tiny_autoencoder_kl") / "checkpoints" / "last.ckpt")


def fit_ldm(first_stage, *extra):
    return run_in_process("fit", "--config", TINY, f"--model.init_args.first_stage_ckpt={first_stage}", *extra)


def test_scale_factor_is_measured_once_stored_and_kept_on_resume(workdir, first_stage, monkeypatch):
    monkeypatch.setenv("GEN_RESEARCH_CACHE", str(workdir / "cache"))
    assert fit_ldm(first_stage, "--name=full", "--trainer.max_epochs=2", EVERY_STEP) == 0
    full = last_checkpoint(workdir, "full")
    scale = full["ldm_latent_scale"]
    assert math.isfinite(scale) and scale > 0
    with pytest.raises(SimulatedCrash):
        fit_ldm(first_stage, "--name=split", "--trainer.max_epochs=2", EVERY_STEP, CRASH.format(4))
    assert last_checkpoint(workdir, "split")["ldm_latent_scale"] == scale  # the same first batch: the same factor
    assert fit_ldm(first_stage, "--name=split", "--trainer.max_epochs=2", EVERY_STEP, "--ckpt_path=last") == 0
    resumed = last_checkpoint(workdir, "split")
    assert resumed["ldm_latent_scale"] == scale
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_a_scale_factor_set_in_yaml_is_used(workdir, first_stage):
    assert fit_ldm(first_stage, "--model.init_args.latent_scale=0.5") == 0
    assert last_checkpoint(workdir, "tiny_ldm")["ldm_latent_scale"] == 0.5


def test_the_latent_cache_is_written_once_and_trains_as_the_encoder_does(workdir, first_stage, monkeypatch):
    monkeypatch.setenv("GEN_RESEARCH_CACHE", str(workdir / "cache"))
    assert fit_ldm(first_stage, "--name=cached", "--model.init_args.cache_latents=true") == 0
    files = list((workdir / "cache" / "latents").glob("latents-*.pt"))
    assert len(files) == 1
    written = files[0].stat().st_mtime_ns
    assert fit_ldm(first_stage, "--name=cached2", "--model.init_args.cache_latents=true") == 0
    assert files[0].stat().st_mtime_ns == written  # read, not rewritten
    cached = torch.load(files[0], weights_only=True)
    assert cached["mean"].shape[1:] == cached["std"].shape[1:] and (cached["std"] > 0).all()  # the posterior, not one sample
    assert fit_ldm(first_stage, "--name=plain") == 0
    # The same first batch: the same latent scale whether the posterior came from the cache or the encoder.
    assert last_checkpoint(workdir, "cached")["ldm_latent_scale"] == pytest.approx(last_checkpoint(workdir, "plain")["ldm_latent_scale"], rel=1e-5)


def test_latent_caching_refuses_augmenting_data(workdir, first_stage, capsys):
    assert fit_ldm(first_stage, "--model.init_args.cache_latents=true", "--data.init_args.random_flip=true") == 2
    assert "random flips and crops cannot apply" in capsys.readouterr().err


def test_checkpoint_is_self_contained_and_inpainting_keeps_the_known_pixels(workdir, first_stage, tmp_path):
    import shutil

    copy = tmp_path / "first.ckpt"
    shutil.copy(first_stage, copy)
    assert fit_ldm(str(copy)) == 0
    ckpt = str(only_run_dir(workdir, "tiny_ldm") / "checkpoints" / "last.ckpt")
    copy.unlink()  # the ldm checkpoint holds the first stage: its file is no longer needed

    from gen_research.commands.loading import load_model_and_data
    from gen_research.data.batch import as_fields

    model, datamodule, _ = load_model_and_data(TINY, ckpt)
    model.eval()
    datamodule.setup("fit")
    images = torch.stack([as_fields(datamodule.val_set[i])["image"] for i in range(4)])
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 0
    out = model.sample(4, generator=torch.Generator().manual_seed(0), init_images=images, known_mask=mask)
    assert torch.equal(out[..., :2, :], images[..., :2, :]) and torch.equal(out[..., 6:, :], images[..., 6:, :])
    assert not torch.equal(out[..., 2:6, 2:6], images[..., 2:6, 2:6])
    again = model.sample(4, generator=torch.Generator().manual_seed(0), init_images=images, known_mask=mask)
    assert torch.equal(out, again)
    img2img = model.sample(4, generator=torch.Generator().manual_seed(0), init_images=images, strength=0.6)
    assert img2img.shape == images.shape and img2img.abs().max() <= 1

    assert run_in_process("sample", "--config", TINY, "--ckpt_path", ckpt, "--num-images", "4", "--out", "inpainted",
                          "--input", "val", "--mask", "center", "--seed", "3") == 0
    assert run_in_process("sample", "--config", TINY, "--ckpt_path", ckpt, "--num-images", "4", "--out", "s",
                          "--guidance-scale", "3", "--class", "2", "--sampler", "dpm-solver++", "--steps", "4") == 0
    assert (workdir / "s" / "grid.png").is_file()


def test_latents_of_another_size_are_padded_for_the_unet_and_cropped_back(workdir, first_stage):
    from gen_research.models.ldm.ldm import padded_shape

    assert padded_shape((4, 7, 7), 2) == (4, 8, 8) and padded_shape((4, 8, 6), 4) == (4, 8, 8)
    assert run_in_process("fit", "--config", FIRST, "--name=crop6", "--data.init_args.center_crop=6", "--trainer.max_epochs=1") == 0
    stage = str(only_run_dir(workdir, "crop6") / "checkpoints" / "last.ckpt")
    assert run_in_process("fit", "--config", TINY, "--name=ldm6", f"--model.init_args.first_stage_ckpt={stage}", "--data.init_args.center_crop=6") == 0

    from gen_research.commands.loading import load_model_and_data

    model, _, _ = load_model_and_data(TINY, str(only_run_dir(workdir, "ldm6") / "checkpoints" / "last.ckpt"))
    assert model.latent_shape == (4, 3, 3) and model.sample_shape == (4, 4, 4)
    assert model.eval().sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 6, 6)


def test_first_stage_and_data_must_agree(workdir, first_stage, capsys):
    assert fit_ldm(first_stage, "--data.init_args.center_crop=6") == 2
    assert "the first stage was trained on (1, 8, 8) images" in capsys.readouterr().err


def test_evaluate_and_the_sampler_sweep_work_through_the_contract(workdir, first_stage):
    assert fit_ldm(first_stage) == 0
    ckpt = str(only_run_dir(workdir, "tiny_ldm") / "checkpoints" / "last.ckpt")
    assert run_in_process("evaluate", "--config", TINY, "--ckpt_path", ckpt, "--features", "pixels", "--metrics", "fid",
                          "--num-images", "20", "--batch-size", "10", "--cache-dir", "cache", "--json", "e.json") == 0
    assert (workdir / "e.json").is_file()
    assert run_in_process("evaluate", "--config", TINY, "--ckpt_path", ckpt, "--features", "pixels", "--metrics", "fid",
                          "--num-images", "20", "--batch-size", "10", "--cache-dir", "cache", "--out", "grid",
                          "--samplers", "ddim,dpm-solver++", "--steps", "3", "--guidance-scales", "1,2") == 0
    assert len((workdir / "grid" / "sweep.csv").read_text().strip().splitlines()) == 1 + 4


def test_exported_pipeline_loads_with_diffusers_alone_and_samples_what_gen_research_samples(workdir, first_stage):
    assert fit_ldm(first_stage) == 0
    ckpt = str(only_run_dir(workdir, "tiny_ldm") / "checkpoints" / "last.ckpt")
    assert run_in_process("export", "--config", TINY, "--ckpt_path", ckpt, "--out", "pipe") == 0
    assert {p.name for p in (workdir / "pipe").iterdir()} >= {"model_index.json", "unet", "vae", "scheduler", "pipeline_gen_research_ldm.py"}
    result = subprocess.run([sys.executable, "-c", LOAD_AND_SAMPLE, str(workdir / "pipe"), str(workdir / "diffusers.npy")],
                            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = np.load(workdir / "diffusers.npy")

    from gen_research.commands.loading import load_model_and_data

    model, _, _ = load_model_and_data(TINY, ckpt)
    ours = model.eval().sample(4, labels=torch.tensor([0, 1, 2, 3]), generator=torch.Generator().manual_seed(11), sampler="ddim", steps=5, guidance_scale=2.0)
    ours = ((ours + 1) / 2).permute(0, 2, 3, 1).numpy()
    assert theirs.shape == ours.shape == (4, 8, 8, 1)
    assert np.abs(theirs - ours).max() < 1e-5
