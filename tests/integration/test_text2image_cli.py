"""text2image end to end through the CLI: one ``fit`` of tests/configs/tiny_text2image.yaml trains its first stage, its
local CLIP and the diffusion model; ``sample --prompt / --prompts-file``, ``export`` to a StableDiffusionPipeline
folder that diffusers samples (with no gen_research import) to our images, a LoRA fine-tune of that export whose
adapters diffusers' ``load_lora_weights`` applies, a mid-epoch resume that skips the batches already seen, and the
one-line errors of bad prompts and sizes."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from .helpers import CRASH, EVERY_STEP, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, only_run_dir, run_in_process

pytestmark = pytest.mark.integration
TINY = str(TEST_CONFIGS / "tiny_text2image.yaml")
LORA = str(TEST_CONFIGS / "tiny_text2image_lora.yaml")
PROMPTS = ["a large thin red one on a black background", "a small thick blue seven at the top left on a wooden background"]

DIFFUSERS_SAMPLE = """
import sys, numpy, torch
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], local_files_only=True)
if len(sys.argv) > 3:
    pipe.load_lora_weights(sys.argv[3])
out = pipe(prompt=%r, negative_prompt=["a green two"] * 2, guidance_scale=3.0, num_inference_steps=4,
           generator=torch.Generator().manual_seed(11), output_type="np", height=16, width=16)
numpy.save(sys.argv[2], out.images)
assert not any(name.startswith("gen_research") for name in sys.modules)
""" % (PROMPTS,)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("text2image")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        assert run_in_process("fit", "--config", TINY) == 0
    return root


def stage_checkpoint(root, stage):
    return str(only_run_dir(root, f"tiny_text2image.{stage}") / "checkpoints" / "last.ckpt")


def checkpoint(root):
    return str(only_run_dir(root, "tiny_text2image") / "checkpoints" / "last.ckpt")


def diffusers_images(*args, cwd):
    result = subprocess.run([sys.executable, "-c", DIFFUSERS_SAMPLE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return np.load(args[1])


def our_images(config, ckpt):
    from gen_research.commands.loading import load_model_and_data

    model, _, _ = load_model_and_data(config, ckpt)
    images = model.eval().sample(2, prompts=PROMPTS, negative_prompt="a green two", guidance_scale=3.0, steps=4, sampler="dpm-solver++",
                                 generator=torch.Generator().manual_seed(11))
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def test_one_fit_trains_three_stages_into_a_self_contained_checkpoint(trained):
    for stage in ("tiny_autoencoder_kl_captions", "tiny_clip"):
        assert (only_run_dir(trained, f"tiny_text2image.{stage}") / "fit-finished.json").is_file()
    saved = torch.load(checkpoint(trained), weights_only=True)
    hyper = saved["hyper_parameters"]
    assert hyper["text_encoder"] is None and hyper["first_stage_ckpt"] is None  # no file is needed to rebuild it
    assert hyper["text_encoder_specs"][0]["max_length"] == 32 and hyper["first_stage"]["class_path"].endswith("KLAutoencoder")
    # the tokenizer travels in the checkpoint, not in the hyperparameters (a published one is 1.5 MB: W&B's config)
    assert "tokenizer_files" not in hyper["text_encoder_specs"][0] and "vocab.json" in saved["text2image_tokenizers"][0]
    assert any(key.startswith("text_encoders.0.") for key in saved["state_dict"])


def test_sample_with_prompts_is_deterministic_and_reads_a_prompts_file(trained, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
    common = ["sample", "--config", TINY, "--ckpt_path", checkpoint(trained), "--num-images", "3", "--seed", "2"]
    for out in ("a", "b"):
        assert run_in_process(*common, "--prompt", PROMPTS[0], "--negative-prompt", "a green two", "--guidance-scale", "4", "--out", out) == 0
    for index in range(3):
        assert np.array_equal(np.asarray(Image.open(trained / "a" / f"{index:05d}.png")), np.asarray(Image.open(trained / "b" / f"{index:05d}.png")))
    (trained / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    assert run_in_process(*common, "--prompts-file", "prompts.txt", "--out", "c") == 0
    assert not np.array_equal(np.asarray(Image.open(trained / "a" / "00000.png")), np.asarray(Image.open(trained / "c" / "00001.png")))


def test_export_is_a_stable_diffusion_folder_diffusers_samples_to_our_images(trained, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
    assert run_in_process("export", "--config", TINY, "--ckpt_path", checkpoint(trained), "--out", "pipe") == 0
    for part in ("tokenizer", "text_encoder", "unet", "vae", "scheduler"):
        assert (trained / "pipe" / part).is_dir(), part
    theirs = diffusers_images(trained / "pipe", trained / "theirs.npy", cwd=trained)
    assert np.abs(our_images(TINY, checkpoint(trained)) - theirs).max() < 1e-4


def test_lora_fine_tune_of_the_export_is_applied_by_load_lora_weights(trained, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
    if not (trained / "pipe").is_dir():
        assert run_in_process("export", "--config", TINY, "--ckpt_path", checkpoint(trained), "--out", "pipe") == 0
    assert run_in_process("fit", "--config", LORA, f"--model.init_args.init_from={trained / 'pipe'}") == 0
    lora_ckpt = str(only_run_dir(trained, "tiny_text2image_lora") / "checkpoints" / "last.ckpt")
    saved = torch.load(lora_ckpt, weights_only=True)["state_dict"]
    base = torch.load(checkpoint(trained), weights_only=True)["state_dict"]
    frozen = [k for k in saved if k.startswith("unet.") and "lora" not in k]
    assert frozen and all(torch.equal(saved[k], base[k.replace(".base_layer", "")]) for k in frozen)  # only adapters trained
    assert run_in_process("export", "--config", LORA, "--ckpt_path", lora_ckpt, "--out", "lora_pipe") == 0
    assert (trained / "lora_pipe" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    merged = diffusers_images(trained / "lora_pipe", trained / "merged.npy", cwd=trained)
    adapted = diffusers_images(trained / "pipe", trained / "adapted.npy", trained / "lora_pipe" / "lora", cwd=trained)
    plain = np.load(trained / "theirs.npy") if (trained / "theirs.npy").is_file() else diffusers_images(trained / "pipe", trained / "theirs.npy", cwd=trained)
    assert np.abs(merged - adapted).max() < 1e-3  # the base + load_lora_weights == the merged export
    assert np.abs(merged - plain).max() > 1e-3  # and the adapters changed the model


def test_a_resumed_run_skips_the_batches_it_saw_and_ends_with_the_same_weights(trained, workdir):
    stages = [f"--model.init_args.first_stage_ckpt={stage_checkpoint(trained, 'tiny_autoencoder_kl_captions')}",
              f"--model.init_args.text_encoder={stage_checkpoint(trained, 'tiny_clip')}"]
    assert run_in_process("fit", "--config", TINY, *stages, "--name=full", EVERY_STEP) == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", "--config", TINY, *stages, "--name=split", EVERY_STEP, CRASH.format(4))  # mid-epoch: 1 of epoch 2's 3 batches done
    assert run_in_process("fit", "--config", TINY, *stages, "--name=split", EVERY_STEP, "--ckpt_path=last") == 0
    full = torch.load(only_run_dir(workdir, "full") / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(only_run_dir(workdir, "split") / "checkpoints" / "last.ckpt", weights_only=False)
    assert_same_training_state(full, resumed)


@pytest.mark.parametrize("flags, message", [
    (["--height", "10"], "--height 10: must be a multiple of 4"),
    (["--class", "1"], "--class needs a class-conditional model"),
    (["--depth", "val"], "--depth applies to a text2image model trained with concat_conditioning: depth"),
    (["--prompt", " ".join(["seven"] * 40)], "tokens, more than the text encoder's 32"),
    (["--classifier-ckpt", "x.ckpt"], "--classifier-ckpt does not apply to TextToImage"),
])
def test_bad_prompts_and_sizes_are_one_line_errors(trained, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(trained)
    monkeypatch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
    code = run_in_process("sample", "--config", TINY, "--ckpt_path", checkpoint(trained), "--num-images", "2", "--out", "never", *flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (trained / "never").exists()
