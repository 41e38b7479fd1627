"""Stable Diffusion folders: reading them, the VAE as a first stage, and (the key check) our sampling loop giving the
same images as diffusers' StableDiffusionPipeline / StableDiffusionXLPipeline on the same tiny components."""

import shutil

import pytest
import torch
from sd_tiny import IMAGE_SIZE, LATENT_SIZE, MAX_TOKENS, SD15_SCHEDULER, TEXT_WIDTH, TIME_EMBED_DIM, ddim_scheduler, make_tiny_sd_folder

from gen_research.errors import GenResearchError
from gen_research.models.text2image.sd_format import DiffusersVAEStage, read_sd_folder, stable_diffusion_pipeline
from gen_research.sampling.diffusion import sample

STEPS, GUIDANCE = 5, 3.0


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return make_tiny_sd_folder(tmp_path_factory.mktemp("sd") / "tiny_sd")


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return make_tiny_sd_folder(tmp_path_factory.mktemp("sdxl") / "tiny_sdxl", sdxl=True)


def _text_parts(folder, encoder="text_encoder", tokenizer="tokenizer", with_projection=False):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return (model_class.from_pretrained(folder / encoder, local_files_only=True).eval(),
            CLIPTokenizer.from_pretrained(folder / tokenizer, local_files_only=True))


def _ids(tokenizer, prompts):
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def test_read_sd_folder_reads_the_parts_and_loads_weights(sd_folder, sdxl_folder):
    from diffusers import UNet2DConditionModel

    sd = read_sd_folder(sd_folder)
    assert (sd.is_sdxl, sd.text_encoders) == (False, ("text_encoder",))
    assert sd.unet_config["cross_attention_dim"] == TEXT_WIDTH and sd.unet_config["sample_size"] == LATENT_SIZE
    assert sd.vae_config["latent_channels"] == 4 and sd.vae_config["scaling_factor"] == pytest.approx(0.18215)
    assert sd.scheduler_config["_class_name"] == "PNDMScheduler" and sd.scheduler_config["steps_offset"] == 1
    unet = sd.load_unet()
    saved = UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    for name, tensor in saved.state_dict().items():
        assert torch.equal(unet.state_dict()[name], tensor), name
    assert type(sd.load_scheduler()).__name__ == "PNDMScheduler"
    assert sd.load_scheduler(type(ddim_scheduler())).config.beta_schedule == "scaled_linear"
    xl = read_sd_folder(sdxl_folder)
    assert (xl.is_sdxl, xl.text_encoders) == (True, ("text_encoder", "text_encoder_2"))
    assert xl.unet_config["addition_embed_type"] == "text_time"


def test_read_sd_folder_names_the_missing_part_in_one_line(sd_folder, sdxl_folder, tmp_path):
    with pytest.raises(GenResearchError, match=r"model\.init_args\.init_from=.*is not a folder"):
        read_sd_folder(tmp_path / "nowhere")
    broken = tmp_path / "no_index"
    shutil.copytree(sd_folder, broken)
    (broken / "model_index.json").unlink()
    with pytest.raises(GenResearchError, match=r"has no model_index\.json.*save_pretrained\(DIR\)") as no_index:
        read_sd_folder(broken)
    no_unet = tmp_path / "no_unet"
    shutil.copytree(sd_folder, no_unet)
    shutil.rmtree(no_unet / "unet")
    with pytest.raises(GenResearchError, match=r"has no unet/config\.json.*StableDiffusionPipeline\.from_pretrained") as missing:
        read_sd_folder(no_unet, key="model.init_args.sd_folder")
    assert "model.init_args.sd_folder" in str(missing.value)
    no_second = tmp_path / "no_text_encoder_2"
    shutil.copytree(sdxl_folder, no_second)
    shutil.rmtree(no_second / "text_encoder_2")
    with pytest.raises(GenResearchError, match=r"has no text_encoder_2/config\.json"):
        read_sd_folder(no_second)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(sd_folder, no_weights)
    for weights in (no_weights / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(GenResearchError, match=r"cannot load unet/"):
        read_sd_folder(no_weights).load_unet()
    for error in (no_index.value, missing.value):
        assert "\n" not in str(error)


def test_vae_stage_is_the_autoencoder_kl(sd_folder):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(sd_folder / "vae").eval()
    stage = read_sd_folder(sd_folder).load_vae((3, IMAGE_SIZE, IMAGE_SIZE))
    assert stage.latent_shape == (4, LATENT_SIZE, LATENT_SIZE) and stage.image_shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert stage.scaling_factor == pytest.approx(0.18215) and stage.diffusers_autoencoder() is stage.autoencoder
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        mean, std = stage.encode_moments(images)
        posterior = vae.encode(images).latent_dist
        torch.testing.assert_close(mean, posterior.mean)
        torch.testing.assert_close(std, posterior.std)
        assert mean.shape == (2, 4, LATENT_SIZE, LATENT_SIZE) and bool((std > 0).all())
        z = 3 * torch.randn(2, 4, LATENT_SIZE, LATENT_SIZE, generator=torch.Generator().manual_seed(1))
        decoded = stage.decode_latents(z)
        torch.testing.assert_close(decoded, vae.decode(z).sample.clamp(-1, 1))
    assert decoded.abs().max() <= 1.0
    rebuilt = DiffusersVAEStage(stage.config, (3, 32, 24))  # hyperparameters -> architecture, weights from a state_dict
    rebuilt.load_state_dict(stage.state_dict())
    assert rebuilt.latent_shape == (4, 16, 12)
    with pytest.raises(GenResearchError, match=r"multiples of 2, not \(3, 15, 16\)"):
        DiffusersVAEStage(stage.config, (3, 15, 16))
    with pytest.raises(GenResearchError, match=r"3-channel images"):
        DiffusersVAEStage(stage.config, (1, 16, 16))


def _decode(vae, z, latent_scale):
    return (vae.decode(z / latent_scale).sample / 2 + 0.5).clamp(0, 1)


def test_our_sampling_loop_equals_stable_diffusion_pipeline(sd_folder):
    from diffusers import StableDiffusionPipeline

    sd = read_sd_folder(sd_folder)
    unet, vae = sd.load_unet(), sd.load_vae((3, IMAGE_SIZE, IMAGE_SIZE)).diffusers_autoencoder()
    text_encoder, tokenizer = _text_parts(sd_folder)
    latent_scale = 0.7  # not the folder's 0.18215: the pipeline must divide by ours
    pipeline = stable_diffusion_pipeline(unet, vae, text_encoder, tokenizer, ddim_scheduler(), latent_scale)
    assert isinstance(pipeline, StableDiffusionPipeline) and pipeline.unet is unet and pipeline.vae is vae
    assert pipeline.vae.config.scaling_factor == latent_scale and pipeline.safety_checker is None
    with torch.no_grad():
        theirs = pipeline(prompt=["a red one"], negative_prompt=[""], guidance_scale=GUIDANCE, num_inference_steps=STEPS,
                          generator=torch.Generator().manual_seed(0), output_type="pt", height=IMAGE_SIZE, width=IMAGE_SIZE).images
        cond = text_encoder(_ids(tokenizer, ["a red one"]))[0]
        uncond = text_encoder(_ids(tokenizer, [""]))[0]
        assert cond.shape == (1, MAX_TOKENS, TEXT_WIDTH)

        def denoise(x, t):
            out = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([cond, uncond])).sample
            conditional, unconditional = out.chunk(2)
            return unconditional + GUIDANCE * (conditional - unconditional)

        z = sample(denoise, ddim_scheduler(), (1, 4, LATENT_SIZE, LATENT_SIZE), STEPS, torch.Generator().manual_seed(0), "cpu",
                   clip=False)
        ours = _decode(vae, z, latent_scale)
    assert theirs.shape == ours.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert (theirs - ours).abs().max() < 1e-4
    assert theirs.std() > 0.01  # an image, not a constant
    # the exported folder reloads with no gen_research code and samples the same
    export = sd_folder.parent / "exported"
    pipeline.save_pretrained(export)
    reloaded = StableDiffusionPipeline.from_pretrained(export, local_files_only=True)
    assert type(reloaded.scheduler).__name__ == "DDIMScheduler" and reloaded.vae.config.scaling_factor == latent_scale
    with torch.no_grad():
        again = reloaded(prompt=["a red one"], negative_prompt=[""], guidance_scale=GUIDANCE, num_inference_steps=STEPS,
                         generator=torch.Generator().manual_seed(0), output_type="pt", height=IMAGE_SIZE, width=IMAGE_SIZE).images
    assert (again - ours).abs().max() < 1e-4


def test_export_refuses_a_scheduler_the_pipeline_would_rewrite(sd_folder):
    text_encoder, tokenizer = _text_parts(sd_folder)
    sd = read_sd_folder(sd_folder)
    vae = sd.load_vae((3, IMAGE_SIZE, IMAGE_SIZE)).diffusers_autoencoder()
    for change in ({"steps_offset": 0}, {"clip_sample": True}, {"clip_sample": True, "timestep_spacing": "trailing"}):
        scheduler = ddim_scheduler({**SD15_SCHEDULER, **change})
        with pytest.raises(ValueError, match="forces steps_offset=1 and clip_sample=False"):
            stable_diffusion_pipeline(sd.load_unet(), vae, text_encoder, tokenizer, scheduler, 0.18215)
        assert scheduler.config == ddim_scheduler({**SD15_SCHEDULER, **change}).config  # refused, left as it was
    # "trailing" spacing (ddpm's default here) ignores the offset: accepted, as a copy with steps_offset 1
    trailing = ddim_scheduler({**SD15_SCHEDULER, "steps_offset": 0, "timestep_spacing": "trailing"})
    pipeline = stable_diffusion_pipeline(sd.load_unet(), vae, text_encoder, tokenizer, trailing, 0.18215)
    assert pipeline.scheduler.config.steps_offset == 1 and trailing.config.steps_offset == 0
    trailing.set_timesteps(STEPS)
    pipeline.scheduler.set_timesteps(STEPS)
    assert pipeline.scheduler.timesteps.tolist() == trailing.timesteps.tolist() == [999, 799, 599, 399, 199]
    # why: diffusers' constructor rewrites the scheduler in place, so the export's timesteps would not be ours
    from diffusers import StableDiffusionPipeline

    scheduler = ddim_scheduler({**SD15_SCHEDULER, "steps_offset": 0})
    scheduler.set_timesteps(STEPS)
    ours = scheduler.timesteps.tolist()
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=sd.load_unet(), scheduler=scheduler,
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    scheduler.set_timesteps(STEPS)
    assert (ours, scheduler.timesteps.tolist()) == ([800, 600, 400, 200, 0], [801, 601, 401, 201, 1])


def test_sdxl_pipeline_inputs_match_our_reproduction(sdxl_folder):
    from diffusers import StableDiffusionXLPipeline

    xl = read_sd_folder(sdxl_folder)
    unet, vae = xl.load_unet(), xl.load_vae((3, IMAGE_SIZE, IMAGE_SIZE)).diffusers_autoencoder()
    text_encoder, tokenizer = _text_parts(sdxl_folder)
    text_encoder_2, tokenizer_2 = _text_parts(sdxl_folder, "text_encoder_2", "tokenizer_2", with_projection=True)
    latent_scale = 0.13025  # SDXL's
    pipeline = stable_diffusion_pipeline(unet, vae, text_encoder, tokenizer, ddim_scheduler(), latent_scale,
                                         text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
    assert isinstance(pipeline, StableDiffusionXLPipeline) and pipeline.config.force_zeros_for_empty_prompt is False
    export = sdxl_folder.parent / "exported_xl"
    pipeline.save_pretrained(export)
    reloaded = StableDiffusionXLPipeline.from_pretrained(export, local_files_only=True)
    assert reloaded.config.force_zeros_for_empty_prompt is False and reloaded.watermark is None
    captured = []
    hook = reloaded.unet.register_forward_pre_hook(lambda module, args, kwargs: captured.append((args, kwargs)), with_kwargs=True)
    sizes = {"original_size": (24, 20), "crops_coords_top_left": (2, 3), "target_size": (IMAGE_SIZE, IMAGE_SIZE)}
    with torch.no_grad():
        theirs = reloaded(prompt=["a red one"], negative_prompt=[""], guidance_scale=GUIDANCE, num_inference_steps=STEPS,
                          generator=torch.Generator().manual_seed(0), output_type="pt", height=IMAGE_SIZE, width=IMAGE_SIZE,
                          **sizes).images
    hook.remove()
    assert len(captured) == STEPS

    def embed(prompts):  # both encoders' penultimate hidden states concatenated; the pooled one is encoder 2's text_embeds
        first = text_encoder(_ids(tokenizer, prompts), output_hidden_states=True)
        second = text_encoder_2(_ids(tokenizer_2, prompts), output_hidden_states=True)
        return torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1), second.text_embeds

    with torch.no_grad():
        (cond, cond_pooled), (uncond, uncond_pooled) = embed(["a red one"]), embed([""])
        time_ids = torch.tensor([[24, 20, 2, 3, IMAGE_SIZE, IMAGE_SIZE]], dtype=torch.float32)  # original + crop + target
        added = {"text_embeds": torch.cat([cond_pooled, uncond_pooled]), "time_ids": time_ids.repeat(2, 1)}
        assert cond.shape == (1, MAX_TOKENS, 2 * TEXT_WIDTH) and cond_pooled.shape == (1, TEXT_WIDTH)
        # the pipeline's first UNet call: batch [uncond, cond] (ours is [cond, uncond])
        args, kwargs = captured[0]
        torch.testing.assert_close(kwargs["encoder_hidden_states"], torch.cat([uncond, cond]))
        torch.testing.assert_close(kwargs["added_cond_kwargs"]["text_embeds"], torch.cat([uncond_pooled, cond_pooled]))
        torch.testing.assert_close(kwargs["added_cond_kwargs"]["time_ids"], time_ids.repeat(2, 1))
        assert TEXT_WIDTH + 6 * TIME_EMBED_DIM == reloaded.unet.add_embedding.linear_1.in_features

        def denoise(x, t):
            out = reloaded.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([cond, uncond]), added_cond_kwargs=added).sample
            conditional, unconditional = out.chunk(2)
            return unconditional + GUIDANCE * (conditional - unconditional)

        z = sample(denoise, ddim_scheduler(), (1, 4, LATENT_SIZE, LATENT_SIZE), STEPS, torch.Generator().manual_seed(0), "cpu",
                   clip=False)
        ours = _decode(reloaded.vae, z, latent_scale)
    assert (theirs - ours).abs().max() < 1e-4
