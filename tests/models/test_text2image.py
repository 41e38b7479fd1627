"""text2image on tiny random Stable Diffusion parts (tests/models/sd_tiny.py): cross-attention conditioning, CFG with a
negative prompt, the SD folder round trip (init_from, export -> diffusers samples the same images), a self-contained
checkpoint, LoRA, SDXL micro-conditioning, the depth and upscaler conditioning, refiner hand-over, one-line errors."""

from __future__ import annotations

import math

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.text2image.text2image import SD_VAE_CLASS, TextToImage

from sd_tiny import IMAGE_SIZE, make_tiny_sd_folder, tiny_vae

SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return make_tiny_sd_folder(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return make_tiny_sd_folder(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl", sdxl=True)


def vae_spec() -> dict:
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(tiny_vae().config).items() if not k.startswith("_")}
    return {"class_path": SD_VAE_CLASS, "init_args": {"config": config, "image_shape": list(SHAPE)}}


def scratch(sd_folder, **options) -> TextToImage:
    """A text2image model built from scratch on the tiny SD folder's VAE (as a stored spec) and text encoder."""
    torch.manual_seed(0)
    options = {"block_out_channels": [16, 32], "attention_heads": 4, "latent_scale": 0.5, **options}
    return TextToImage(image_shape=SHAPE, first_stage=vae_spec(), text_encoder=str(sd_folder), **options).eval()


def batch(n: int = 4, captions=None) -> dict:
    generator = torch.Generator().manual_seed(1)
    captions = captions or ["a red one", "a blue two", "", "a small green seven"][:n]
    return {"image": torch.rand((n, *SHAPE), generator=generator) * 2 - 1, "caption": captions,
            "depth": torch.rand((n, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator) * 2 - 1,
            "original_size": torch.tensor([[24, 24]] * n), "crop_coords": torch.tensor([[2, 3]] * n)}


def test_cross_attention_conditions_the_prediction_on_the_prompt(sd_folder):
    model = scratch(sd_folder)
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([500, 500])
    red = model(x, t, model.condition(["a red one"] * 2, (IMAGE_SIZE, IMAGE_SIZE)))
    blue = model(x, t, model.condition(["a blue two"] * 2, (IMAGE_SIZE, IMAGE_SIZE)))
    assert not torch.allclose(red, blue, atol=1e-4)
    again = model(x, t, model.condition(["a red one"] * 2, (IMAGE_SIZE, IMAGE_SIZE)))
    assert torch.equal(red, again)


def test_guidance_with_a_negative_prompt_is_negative_plus_scale_times_the_difference(sd_folder):
    model = scratch(sd_folder)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor(300)
    denoise = model.prompt_denoiser(["a red one", "a blue two"], "a green seven", 3.0, (IMAGE_SIZE, IMAGE_SIZE))
    cond = model(x, t, model.condition(["a red one", "a blue two"], (IMAGE_SIZE, IMAGE_SIZE)))
    negative = model(x, t, model.condition(["a green seven"] * 2, (IMAGE_SIZE, IMAGE_SIZE)))
    torch.testing.assert_close(denoise(x, t), negative + 3.0 * (cond - negative), atol=1e-5, rtol=1e-5)


def test_a_training_step_updates_only_the_unet(sd_folder):
    model = scratch(sd_folder, prediction_type="v_prediction", loss_weighting="min_snr", noise_offset=0.05).train()
    losses = model.compute_losses(batch()["image"], model.batch_condition(batch(), None))
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is None for p in model.text_encoders.parameters())
    assert all(p.grad is None for p in model.first_stage.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.parameters())


def test_init_from_takes_the_folders_unet_vae_text_encoder_and_schedule(sd_folder):
    from diffusers import UNet2DConditionModel

    model = TextToImage(image_shape=SHAPE, init_from=str(sd_folder))
    theirs = UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    for key, value in theirs.state_dict().items():
        assert torch.equal(value, model.unet.state_dict()[key]), key
    assert model.latent_scale == pytest.approx(0.18215)
    assert model.hparams.beta_start == pytest.approx(0.00085) and model.hparams.noise_schedule == "scaled_linear"
    assert model.hparams.init_from is None and model.hparams.text_encoder is None  # the checkpoint needs no folder


def test_export_is_a_stable_diffusion_folder_that_samples_our_images(sd_folder, tmp_path):
    from diffusers import StableDiffusionPipeline

    model = TextToImage(image_shape=SHAPE, init_from=str(sd_folder)).eval()
    for sampler in ("ddim", "dpm-solver++"):
        out = tmp_path / sampler
        model.diffusers_pipeline(sampler).save_pretrained(out)
        pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
        prompts = ["a red one", "a blue two"]
        theirs = pipe(prompt=prompts, negative_prompt=["a green seven"] * 2, guidance_scale=3.0, num_inference_steps=6,
                      generator=torch.Generator().manual_seed(4), output_type="pt", height=IMAGE_SIZE, width=IMAGE_SIZE).images
        ours = model.sample(2, prompts=prompts, negative_prompt="a green seven", guidance_scale=3.0, steps=6, sampler=sampler,
                            generator=torch.Generator().manual_seed(4))
        assert (ours / 2 + 0.5).clamp(0, 1).sub(theirs).abs().max() < 1e-4, sampler


def test_the_checkpoint_rebuilds_without_the_folder(sd_folder, tmp_path):
    import lightning

    model = TextToImage(image_shape=SHAPE, init_from=str(sd_folder)).eval()
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                  "pytorch-lightning_version": lightning.__version__}
    model.on_save_checkpoint(checkpoint)
    path = tmp_path / "model.ckpt"
    torch.save(checkpoint, path)
    loaded = TextToImage.load_from_checkpoint(path, map_location="cpu", weights_only=False).eval()
    assert loaded.latent_scale == model.latent_scale
    a = model.sample(2, prompt="a red one", steps=3, generator=torch.Generator().manual_seed(0))
    b = loaded.sample(2, prompt="a red one", steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_lora_trains_only_the_adapters(sd_folder):
    model = TextToImage(image_shape=SHAPE, init_from=str(sd_folder), lora={"rank": 2, "alpha": 2})
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in name for name in trainable)
    optimizer = model.configure_optimizers()["optimizer"]
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


def test_sdxl_two_encoders_and_micro_conditioning_reach_the_unet(sdxl_folder):
    model = TextToImage(image_shape=SHAPE, init_from=str(sdxl_folder), micro_conditioning=True)
    seen = {}
    forward = model.unet.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return forward(*args, **kwargs)

    model.unet.forward = spy
    b = batch(2)
    model.compute_losses(b["image"], model.batch_condition(b, None))
    assert seen["encoder_hidden_states"].shape[-1] == model.unet.config.cross_attention_dim == 64  # 32 + 32, concatenated
    time_ids = seen["added_cond_kwargs"]["time_ids"]
    assert time_ids.tolist() == [[24, 24, 2, 3, IMAGE_SIZE, IMAGE_SIZE]] * 2  # original size, crop, target size
    assert seen["added_cond_kwargs"]["text_embeds"].shape == (2, 32)
    assert model.hparams.text_hidden_layer == -2


def test_depth_conditioning_adds_an_input_channel(sd_folder):
    model = scratch(sd_folder, concat_conditioning="depth")
    assert model.unet.config.in_channels == 5 and model.unet.config.out_channels == 4
    assert "depth" in model.BATCH_FIELDS
    b = batch(2)
    cond = model.batch_condition(b, None)
    assert cond["concat"].shape == (2, 1, 8, 8) and cond["concat"].amin() == -1 and cond["concat"].amax() == 1
    images = model.sample(2, prompt="a red one", steps=2, depth=b["depth"], generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, *SHAPE)
    with pytest.raises(GenResearchError, match="depth-conditioned"):
        model.sample(2, prompt="a red one", steps=2)


def test_the_upscaler_is_conditioned_on_the_noised_low_resolution_image(sd_folder):
    model = scratch(sd_folder, concat_conditioning="low_res", max_noise_level=100)
    assert model.unet.config.in_channels == 7 and model.unet.config.num_class_embeds == 101
    b = batch(2)
    cond = model.batch_condition(b, torch.Generator().manual_seed(0))
    assert cond["concat"].shape == (2, 3, 8, 8) and cond["noise_level"].shape == (2,)
    clean = model.condition(["a"] * 2, (IMAGE_SIZE, IMAGE_SIZE), low_res=b["image"], noise_level=torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(clean["concat"], torch.nn.functional.avg_pool2d(b["image"], 2), atol=0.05, rtol=0)  # level 0: nearly the image
    images = model.sample(2, prompt="a red one", steps=2, low_res=b["image"], noise_level=10, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, *SHAPE)


def test_a_refiner_takes_over_the_low_noise_steps(sd_folder):
    base = scratch(sd_folder)
    refiner = scratch(sd_folder, max_train_timestep=200)
    torch.manual_seed(3)
    for p in refiner.unet.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)  # another network than the base
    calls = []
    for name, model in (("base", base), ("refiner", refiner)):
        forward = model.unet.forward
        model.unet.forward = (lambda f, n: lambda x, t, **k: (calls.append((n, int(t))), f(x, t, **k))[1])(forward, name)
    base.sample(1, prompt="a red one", steps=10, sampler="ddim", refiner=refiner, refiner_start=0.8, generator=torch.Generator().manual_seed(0))
    assert {n for n, t in calls if t >= 200} == {"base"} and {n for n, t in calls if t < 200} == {"refiner"}
    assert refiner.draw_timesteps(1000, torch.device("cpu"), torch.Generator().manual_seed(0)).max() < 200


def test_bad_prompts_and_sizes_are_one_line_errors(sd_folder, tmp_path):
    model = scratch(sd_folder)
    with pytest.raises(GenResearchError, match="tokens, more than"):
        model.sample(1, prompt=" ".join(["red"] * 40), steps=2)
    with pytest.raises(GenResearchError, match="multiples of"):
        model.sample(1, prompt="a red one", steps=2, height=10)  # VAE factor 2 x UNet 2
    with pytest.raises(GenResearchError, match="prompts, not classes"):
        model.sample(1, labels=torch.tensor([1]), steps=2)
    with pytest.raises(GenResearchError, match="--prompt and --prompts-file"):
        model.check_sampling_options({"prompt": "a", "prompts_file": "p.txt"})
    with pytest.raises(GenResearchError, match="must be a multiple of 4"):
        model.check_sampling_options({"width": 18})
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n\n")
    from gen_research.models.text2image.sampling import read_prompts

    with pytest.raises(GenResearchError, match="has no prompts"):
        read_prompts(str(empty), 2, model._prompt_encoders)
    (tmp_path / "two.txt").write_text("a red one\n\na blue two\n")
    assert read_prompts(str(tmp_path / "two.txt"), 3, model._prompt_encoders) == ["a red one", "a blue two", "a red one"]
    with pytest.raises(GenResearchError, match="text_hidden_layer"):
        scratch(sd_folder, text_hidden_layer=-3)


def test_sampling_is_deterministic_given_a_seed_and_other_sizes_work(sd_folder):
    model = scratch(sd_folder)
    a = model.sample(2, prompt="a red one", steps=3, generator=torch.Generator().manual_seed(7))
    b = model.sample(2, prompt="a red one", steps=3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (2, *SHAPE)
    wide = model.sample(1, prompt="a red one", steps=2, height=16, width=32, generator=torch.Generator().manual_seed(7))
    assert wide.shape == (1, 3, 16, 32) and math.isfinite(float(wide.abs().max()))


def test_init_from_widens_the_input_for_depth_and_refuses_what_cannot_be_started_from(sd_folder, sdxl_folder):
    from diffusers import UNet2DConditionModel

    model = TextToImage(image_shape=SHAPE, init_from=str(sd_folder), concat_conditioning="depth")
    theirs = UNet2DConditionModel.from_pretrained(sd_folder / "unet").conv_in.weight
    widened = model.unet.conv_in.weight
    assert widened.shape[1] == 5 and torch.equal(widened[:, :4], theirs) and not widened[:, 4:].any()  # starts as the folder's model
    with pytest.raises(GenResearchError, match="no upscaler"):
        TextToImage(image_shape=SHAPE, init_from=str(sd_folder), concat_conditioning="low_res")
    with pytest.raises(GenResearchError, match="micro_conditioning: true"):
        TextToImage(image_shape=SHAPE, init_from=str(sdxl_folder))


def test_inpainting_and_img2img_with_a_prompt(sd_folder):
    model = scratch(sd_folder)
    images = batch(2)["image"]
    mask = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    mask[..., :, : IMAGE_SIZE // 2] = 1  # keep the left half
    out = model.sample(2, prompt="a red one", steps=3, init_images=images, known_mask=mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[..., : IMAGE_SIZE // 2], images[..., : IMAGE_SIZE // 2].clamp(-1, 1))  # the known pixels, exactly
    near = model.sample(2, prompt="a red one", steps=5, init_images=images, strength=0.2, generator=torch.Generator().manual_seed(0))
    far = model.sample(2, prompt="a red one", steps=5, init_images=images, strength=1.0, generator=torch.Generator().manual_seed(0))
    reconstruction = model.first_stage.decode_latents(model.first_stage.encode_moments(images)[0])
    assert (near - reconstruction).abs().mean() < (far - reconstruction).abs().mean()  # low strength stays near the input
