"""``text2image``: Stable-Diffusion-style text-to-image latent diffusion (Rombach et al. 2022; diffusers'
examples/text_to_image/train_text_to_image.py and train_text_to_image_sdxl.py).

A diffusers ``UNet2DConditionModel`` cross-attends to a frozen CLIP text encoder's hidden states, in the latent space
of a frozen first stage (``autoencoder_kl``, or a Stable Diffusion folder's VAE through ``init_from``). Everything
the ``ldm``/``ddpm`` families do applies (epsilon / v-prediction, min-SNR weighting, noise offset, every sampler,
EMA, img2img and inpainting), plus:

- classifier-free guidance on prompts with a negative prompt (captions are dropped to "" by the data module);
- SD2: ``concat_conditioning: depth`` (a depth map as an extra input channel) and ``low_res`` (the upscaler: the
  low-resolution image, noise-augmented to a noise level given as the UNet's class label);
- SDXL: two text encoders (penultimate hidden states concatenated, the second's pooled embedding), micro-conditioning
  on original size and crop coordinates (``micro_conditioning``), a refiner trained on the low noise levels
  (``max_train_timestep``) that takes over the end of a base model's ``sample`` call;
- ``init_from`` a local Stable Diffusion folder (UNet, VAE, text encoder(s), noise schedule), fine-tuned fully or
  with LoRA adapters (``lora``, through peft); ``export`` writes a StableDiffusion(XL)Pipeline folder.

The checkpoint is self-contained: the UNet's config, the first stage's and the text encoders' specs are hyperparameters
and all weights are in the state_dict (``sample``/``export`` need none of the files it was built from).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.models.common import check_number
from gen_research.models.ldm.ldm import LatentDiffusion
from gen_research.models.text2image import conditioning as C
from gen_research.models.text2image.sampling import TextToImageSampling
from gen_research.models.text2image.sd_format import DiffusersVAEStage, plain_config, read_sd_folder
from gen_research.registry import MODELS

SD_VAE_CLASS = "diffusers.AutoencoderKL"  # the first-stage spec of a Stable Diffusion folder's VAE
TOKENIZERS_KEY = "text2image_tokenizers"  # the checkpoint's copy of the tokenizer files (kept out of the hyperparameters)


@MODELS.register("text2image", "text-to-image latent diffusion (SD-style: CLIP text encoder, cross-attention UNet, CFG on prompts; SD2 depth/upscaler, SDXL)")
class TextToImage(TextToImageSampling, LatentDiffusion):
    """Latent diffusion conditioned on prompts (see the module docstring); every ``ddpm``/``ldm`` option applies."""

    owner = "text2image"
    BATCH_FIELDS: ClassVar[tuple[str, ...]] = ("image", "caption")

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int | None = None,
        first_stage_ckpt: str | None = None,
        first_stage: dict[str, Any] | None = None,
        text_encoder: str | None = None,
        text_encoder_2: str | None = None,
        text_encoder_specs: list[dict[str, Any]] | None = None,
        text_hidden_layer: int | None = None,
        init_from: str | None = None,
        unet_config: dict[str, Any] | None = None,
        block_out_channels: list[int] = (64, 128),
        layers_per_block: int = 1,
        attention_levels: list[int] = (0, 1),
        attention_heads: int = 8,
        concat_conditioning: Literal["depth", "low_res"] | None = None,
        max_noise_level: int = 350,
        micro_conditioning: bool = False,
        time_embed_dim: int = 32,
        max_train_timestep: int | None = None,
        lora: dict[str, Any] | None = None,
        latent_scale: float | None = None,
        guidance_scale: float = 5.0,
        sampler: str = "dpm-solver++",
        sampling_steps: int = 20,
        **ddpm_options: Any,
    ) -> None:
        """``text_encoder``: a ``clip`` checkpoint, a CLIP / CLIPTextModel folder or a Stable Diffusion folder
        (gen_research/models/clip/text_encoders.py); ``text_encoder_2`` a second one (SDXL); ``text_encoder_specs`` is
        filled in from them and stored. ``text_hidden_layer``: -1 (the last hidden state, SD 1.x) or -2 (the
        penultimate, SDXL); default -2 with two encoders, else -1. ``init_from``: a local Stable Diffusion folder whose
        UNet, VAE, text encoder(s) and noise schedule this model starts from. ``unet_config``: a diffusers
        UNet2DConditionModel config (filled in and stored; built from block_out_channels ... when not given).
        ``lora``: ``{rank, alpha, target_modules, dropout}`` trains LoRA adapters of the UNet only (peft).
        ``max_train_timestep``: train on noise levels below it only (an SDXL refiner: 200)."""
        self._init_folder = None
        schedule: dict[str, Any] = {}
        self._init_image_shape = tuple(image_shape)
        if init_from:
            self._init_folder = read_sd_folder(init_from)
            schedule = _schedule_options(self._init_folder.scheduler_config)
            ddpm_options.update(schedule)
            text_encoder = text_encoder or init_from
            if self._init_folder.is_sdxl:
                text_encoder_2 = text_encoder_2 or init_from
            unet_config = unet_config or _init_unet_config(dict(self._init_folder.unet_config), concat_conditioning, image_shape)
        self._encoders = _load_encoders(text_encoder, text_encoder_2, text_encoder_specs, self._init_folder)
        hidden_layer = text_hidden_layer if text_hidden_layer is not None else (-2 if len(self._encoders) > 1 else -1)
        if hidden_layer not in (-1, -2):
            raise GenResearchError(f"text2image: model.init_args.text_hidden_layer={hidden_layer} must be -1 (last, SD 1.x) or -2 (penultimate, SDXL)")
        self._prompt_encoders = C.PromptEncoders(self._encoders, hidden_layer)
        if concat_conditioning not in (None, "depth", "low_res"):
            raise GenResearchError(f"text2image: model.init_args.concat_conditioning={concat_conditioning!r}; use null, depth or low_res")
        check_number("text2image", "max_noise_level", max_noise_level, low=1, hint="350 (SD x4 upscaler)")
        check_number("text2image", "attention_heads", attention_heads, low=1, hint="8 (SD 1.x)")
        # build_unet reads these attributes, not self.hparams: under LightningCLI the hyperparameters hold the YAML's
        # values (unet_config null), not the folder's config this call resolved.
        self._unet_config = dict(unet_config) if unet_config else None
        if unet_config is not None:
            block_out_channels = list(unet_config["block_out_channels"])
            sdxl_unet = unet_config.get("addition_embed_type") == "text_time"
            if sdxl_unet != bool(micro_conditioning):
                raise GenResearchError(f"text2image: the UNet {'is' if sdxl_unet else 'is not'} SDXL's (micro-conditioned on sizes and crops); "
                                       f"set model.init_args.micro_conditioning: {str(sdxl_unet).lower()}")
        super().__init__(image_shape=image_shape, num_classes=num_classes, first_stage_ckpt=first_stage_ckpt, first_stage=first_stage,
                         latent_scale=latent_scale, block_out_channels=block_out_channels, layers_per_block=layers_per_block,
                         attention_levels=attention_levels, guidance_scale=guidance_scale, sampler=sampler, sampling_steps=sampling_steps,
                         **ddpm_options)
        if tuple(self.sample_shape) != tuple(self.latent_shape):
            factor = 2 ** (len(block_out_channels) - 1)
            raise GenResearchError(f"text2image: the first stage's {self.latent_shape[1]}x{self.latent_shape[2]} latents are not divisible by the UNet's "
                                   f"{factor}; use images whose latent sides are multiples of {factor} (Stable Diffusion pipelines do not pad)")
        if max_train_timestep is not None:
            check_number("text2image", "max_train_timestep", max_train_timestep, low=1, high=self.hparams.num_train_timesteps, hint="200 (SDXL's refiner)")
        hp = self.hparams
        # Under LightningCLI the hyperparameters are the YAML's values, not this call's: write back what init_from
        # replaced (a checkpoint rebuilt with the YAML's epsilon would sample a v-prediction model wrongly).
        hp.update(schedule)
        hp.text_encoder_specs = [encoder.spec(with_tokenizer=False) for encoder in self._encoders]  # tokenizers: in checkpoints
        hp.text_hidden_layer = hidden_layer
        hp.unet_config = plain_config(self.unet.config)
        hp.text_encoder = hp.text_encoder_2 = hp.init_from = None  # the specs and the state_dict replace the files
        hp.first_stage_ckpt = None
        self.text_encoders = nn.ModuleList([encoder.model for encoder in self._encoders])
        self.text_encoders.requires_grad_(False)
        self.text_encoders.eval()
        fields = ["image", "caption"] + (["depth"] if concat_conditioning == "depth" else []) + (
            ["original_size", "crop_coords"] if micro_conditioning else [])
        self.BATCH_FIELDS = tuple(fields)
        if concat_conditioning == "low_res":  # SD x4 upscaler's low_res_scheduler
            self.low_res_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02)
        if self._init_folder is not None:
            self.unet.load_state_dict(_widened_input(self._init_folder.load_unet().state_dict(), self.unet))
            if latent_scale is None:  # the published VAE's scaling_factor (SD 1.x: 0.18215), not a re-measured one
                self.latent_scale = float(self.first_stage.scaling_factor)
            rank_zero_info(f"text2image: UNet, VAE and text encoder(s) initialised from {init_from}")
        if lora:
            from gen_research.models.text2image.lora import add_lora

            add_lora(self.unet, **_lora_options(lora))
        self._init_folder = None

    # ---- building ---------------------------------------------------------------------------------
    def load_first_stage(self, first_stage_ckpt: str | None, first_stage: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        """Our first stage (a checkpoint or a stored spec), or a Stable Diffusion folder's VAE (init_from)."""
        if self._init_folder is not None and not first_stage_ckpt:
            image_shape = tuple(self._init_image_shape)
            stage = self._init_folder.load_vae(image_shape)
            spec = {"class_path": SD_VAE_CLASS, "init_args": {"config": dict(stage.config), "image_shape": list(image_shape)}}
            return stage.eval().requires_grad_(False), spec
        if first_stage and first_stage.get("class_path") == SD_VAE_CLASS:
            args = first_stage["init_args"]
            stage = DiffusersVAEStage(dict(args["config"]), tuple(args["image_shape"]))
            return stage.eval().requires_grad_(False), first_stage
        return super().load_first_stage(first_stage_ckpt, first_stage)

    def build_unet(self, shape: tuple[int, int, int], down: tuple[str, ...], up: tuple[str, ...]) -> nn.Module:
        hp = self.hparams
        if self._unet_config:
            return UNet2DConditionModel.from_config(self._unet_config)
        c, h, w = shape
        extra = {"depth": 1, "low_res": int(self._init_image_shape[0])}.get(hp.concat_conditioning, 0)
        levels = len(hp.block_out_channels)
        down = tuple("CrossAttnDownBlock2D" if i in hp.attention_levels else "DownBlock2D" for i in range(levels))
        up = tuple("CrossAttnUpBlock2D" if i in hp.attention_levels else "UpBlock2D" for i in reversed(range(levels)))
        micro = {}
        if hp.micro_conditioning:  # SDXL: pooled text embedding + 6 Fourier-embedded size/crop numbers join the time embedding
            micro = {"addition_embed_type": "text_time", "addition_time_embed_dim": hp.time_embed_dim,
                     "projection_class_embeddings_input_dim": self._prompt_encoders.pooled_size + 6 * hp.time_embed_dim}
        return UNet2DConditionModel(
            sample_size=(h, w), in_channels=c + extra, out_channels=c, block_out_channels=tuple(hp.block_out_channels),
            layers_per_block=hp.layers_per_block, down_block_types=down, up_block_types=up, dropout=hp.dropout,
            norm_num_groups=min(32, math.gcd(*hp.block_out_channels)), cross_attention_dim=self._prompt_encoders.hidden_size,
            attention_head_dim=hp.attention_heads,  # diffusers' SD 1.x naming: the number of heads
            num_class_embeds=hp.max_noise_level + 1 if hp.concat_conditioning == "low_res" else None, **micro)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> "TextToImage":  # type: ignore[override]
        for key in ("text_encoder", "text_encoder_2", "init_from"):
            kwargs.setdefault(key, None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[TOKENIZERS_KEY] = [encoder.tokenizer_files() for encoder in self._encoders]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        from gen_research.models.clip.text_encoders import tokenizer_from_files

        saved = checkpoint.get(TOKENIZERS_KEY)
        if saved is None and any(encoder.tokenizer is None for encoder in self._encoders):
            raise GenResearchError(f"text2image: the checkpoint holds no tokenizer ({TOKENIZERS_KEY}); it was not written by text2image's fit")
        for encoder, files in zip(self._encoders, saved or []):
            if encoder.tokenizer is None:
                encoder.tokenizer = tokenizer_from_files(files)

    def train(self, mode: bool = True) -> Any:
        result = super().train(mode)
        if getattr(self, "text_encoders", None) is not None:  # frozen: dropout stays off
            self.text_encoders.eval()
        return result

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW on the trainable parameters only (the UNet, or its LoRA adapters): the frozen encoders get no state."""
        from gen_research.training.optimizers import IMPLEMENTATION_HPARAM, build_adamw, spec_from_hparams

        optimizer, scheduler = build_adamw([p for p in self.parameters() if p.requires_grad], spec_from_hparams(self.hparams), self,
                                           key=f"model.init_args.{IMPLEMENTATION_HPARAM}")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- conditioning -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: C.Condition | None = None) -> torch.Tensor:  # type: ignore[override]
        """The UNet's prediction for noisy latents ``x`` at ``t`` given a condition of :meth:`condition`."""
        if cond is None:
            raise GenResearchError("text2image: the UNet needs a prompt condition")
        if cond.get("concat") is not None:
            x = torch.cat([x, cond["concat"].to(x.dtype)], dim=1)
        added = {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]} if self.hparams.micro_conditioning else None
        return self.unet(x, t, encoder_hidden_states=cond["hidden"].to(x.dtype), class_labels=cond.get("noise_level"),
                         added_cond_kwargs=added).sample

    def condition(self, prompts: list[str], size: tuple[int, int], original_size: torch.Tensor | None = None,
                  crop_coords: torch.Tensor | None = None, depth: torch.Tensor | None = None, low_res: torch.Tensor | None = None,
                  noise_level: torch.Tensor | None = None, generator: torch.Generator | None = None) -> C.Condition:
        """Everything the UNet is conditioned on for images of ``size`` (h, w) pixels: the prompts' embeddings, and per
        the model's options SDXL's time ids, a depth map or a noised low-resolution image at the latent grid."""
        hp = self.hparams
        cond = self._prompt_encoders.encode(prompts, self.device)
        n = len(prompts)
        grid = (size[0] // self.latent_factor, size[1] // self.latent_factor)
        if hp.micro_conditioning:
            original = original_size if original_size is not None else torch.tensor([size], device=self.device).expand(n, 2)
            crops = crop_coords if crop_coords is not None else torch.zeros((n, 2), dtype=torch.long, device=self.device)
            cond["time_ids"] = C.time_ids(original.to(self.device), crops.to(self.device), size)
        if hp.concat_conditioning == "depth":
            if depth is None:
                raise GenResearchError("text2image: this model is depth-conditioned; pass depth maps (sample --depth SPLIT|FOLDER, or a data module with depth: true)")
            cond["concat"] = C.depth_condition(depth.to(self.device), grid)
        elif hp.concat_conditioning == "low_res":
            if low_res is None:
                raise GenResearchError("text2image: this model is an upscaler; pass low-resolution images (sample --low-res SPLIT|FOLDER)")
            low = C.low_resolution(low_res.to(self.device), grid)
            cond["noise_level"] = noise_level.to(self.device).long()
            cond["concat"] = C.noised_low_resolution(low, cond["noise_level"], self.low_res_scheduler, generator)
        if not hp.micro_conditioning:
            cond["pooled"] = None
        return cond

    def batch_condition(self, batch: dict[str, Any], generator: torch.Generator | None) -> C.Condition:
        images = batch["image"]
        n = len(images)
        noise_level = None
        if self.hparams.concat_conditioning == "low_res":  # SD x4: a uniform noise level in training
            gen = {"generator": generator} if generator is not None else {}
            noise_level = torch.randint(0, self.hparams.max_noise_level + 1, (n,), device=images.device, **gen)
        return self.condition(list(batch["caption"]), tuple(images.shape[-2:]), batch.get("original_size"), batch.get("crop_coords"),
                              batch.get("depth"), images if noise_level is not None else None, noise_level, generator)

    def training_condition(self, labels: Any, batch_size: int, device: torch.device, generator: torch.Generator | None) -> Any:
        return labels  # the condition was built from the batch (captions dropped to "" by the data module)

    def draw_timesteps(self, batch_size: int, device: torch.device, generator: torch.Generator | None,
                       high: int | None = None) -> torch.Tensor:
        return super().draw_timesteps(batch_size, device, generator, high or self.hparams.max_train_timestep)  # a refiner: t < 200

    # ---- steps ------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch["image"], self.batch_condition(batch, None))
        size = len(batch["image"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=size)
        return losses["loss"]

    def _eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        generator = self.eval_generator()
        metrics = self.compute_losses(batch["image"], self.batch_condition(batch, generator), generator=generator)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, prog_bar=stage == "val", on_epoch=True, sync_dist=True,
                      batch_size=len(batch["image"]))
        return metrics

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.cache_latents:
            raise GenResearchError("text2image: cache_latents is not supported (captions and micro-conditioning travel with the images); set it to false")
        super().setup(stage)



def _load_encoders(source: str | None, source_2: str | None, specs: list[dict[str, Any]] | None, folder: Any) -> list[Any]:
    from gen_research.models.clip.text_encoders import load_text_encoder, text_encoder_from_spec

    if source:
        sd = folder is not None and str(source) == str(folder.folder)
        encoders = [load_text_encoder(source, subfolder="text_encoder") if sd else load_text_encoder(source)]
        if source_2:
            sd2 = folder is not None and str(source_2) == str(folder.folder)
            encoders.append(load_text_encoder(source_2, subfolder="text_encoder_2", with_projection=True) if sd2
                            else load_text_encoder(source_2, with_projection=True))
        return encoders
    if specs:
        return [text_encoder_from_spec(spec) for spec in specs]
    raise GenResearchError("text2image: set model.init_args.text_encoder to a clip checkpoint, a CLIP folder or a Stable Diffusion folder "
                           "(or init_from a Stable Diffusion folder); a two-stage experiment's stages: can train the local CLIP first")


def _init_unet_config(config: dict[str, Any], concat: str | None, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """A Stable Diffusion folder's UNet config, widened for concat conditioning: SD 1.x / 2.x txt2img UNets take the 4
    latent channels only; a depth channel is added to the input convolution (its new weights start at zero, as
    diffusers' InstructPix2Pix and depth fine-tuning scripts do, so training starts from the folder's model). An
    upscaler needs the folder's noise-level embedding (stable-diffusion-x4-upscaler has one); a txt2img UNet has none."""
    if concat is None:
        return config
    extra = {"depth": 1, "low_res": int(image_shape[0])}[concat]
    latent = int(config["out_channels"])
    if int(config["in_channels"]) == latent + extra:
        return config  # a folder trained so (stable-diffusion-2-depth, stable-diffusion-x4-upscaler)
    if concat == "low_res":
        raise GenResearchError("init_from: the folder's UNet is no upscaler (it takes no low-resolution image and noise level); "
                               "start an upscaler from stable-diffusion-x4-upscaler or train one from scratch (no init_from)")
    if int(config["in_channels"]) != latent:
        raise GenResearchError(f"init_from: the folder's UNet takes {config['in_channels']} input channels; depth conditioning needs {latent} or {latent + 1}")
    return {**config, "in_channels": latent + extra}


def _widened_input(state: dict[str, Any], unet: nn.Module) -> dict[str, Any]:
    """The folder's weights for ``unet``; a conv_in widened for a depth channel keeps the folder's weights and zeros."""
    weight = state["conv_in.weight"]
    wanted = unet.conv_in.weight  # type: ignore[attr-defined]
    if weight.shape != wanted.shape:
        widened = torch.zeros_like(wanted)
        widened[:, : weight.shape[1]] = weight
        state = {**state, "conv_in.weight": widened}
    return state


def _schedule_options(config: dict[str, Any]) -> dict[str, Any]:
    """ddpm options of a Stable Diffusion folder's scheduler config (SD 1.5: scaled_linear 0.00085-0.012, epsilon)."""
    schedules = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
    schedule = config.get("beta_schedule", "scaled_linear")
    if schedule not in schedules:
        raise GenResearchError(f"init_from: the folder's scheduler has beta_schedule {schedule!r}; gen_research trains linear, scaled_linear or cosine")
    return {"num_train_timesteps": int(config.get("num_train_timesteps", 1000)), "noise_schedule": schedules[schedule],
            "beta_start": float(config.get("beta_start", 0.00085)), "beta_end": float(config.get("beta_end", 0.012)),
            "prediction_type": config.get("prediction_type", "epsilon")}


def _lora_options(lora: dict[str, Any]) -> dict[str, Any]:
    known = {"rank", "alpha", "target_modules", "dropout"}
    if unknown := set(lora) - known:
        raise GenResearchError(f"text2image: model.init_args.lora has unknown keys {sorted(unknown)}; it takes {', '.join(sorted(known))}")
    return dict(lora)


__all__ = ["TextToImage"]
