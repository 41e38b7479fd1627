"""Stable Diffusion folders in and out: read a local ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` folder
(what ``save_pretrained`` writes: model_index.json, unet/, vae/, scheduler/, text_encoder/, tokenizer/, and for SDXL
text_encoder_2/, tokenizer_2/), wrap its VAE as our first stage, and assemble a diffusers pipeline from our modules for
export. Loading is offline (``local_files_only``): nothing is ever fetched from the Hugging Face hub.

What an exported pipeline does that our sampler must do too (diffusers 0.42 pipeline_stable_diffusion.py and
pipeline_stable_diffusion_xl.py, checked by tests/models/test_sd_format.py):

- start noise ``randn_tensor(shape, generator)`` times ``init_noise_sigma`` (prepare_latents), the scheduler's own
  ``set_timesteps`` (SD 1.5: "leading" spacing with ``steps_offset`` 1), ``eta`` 0;
- guidance ``uncond + g * (cond - uncond)`` with the negative prompt's embedding as uncond (batched [uncond, cond]);
- prompt embeddings: SD: ``text_encoder(ids)[0]`` (last hidden state, final layer norm applied), ids padded to
  ``tokenizer.model_max_length`` with no attention mask (unless the text config sets ``use_attention_mask``); SDXL:
  ``hidden_states[-2]`` (the penultimate layer, no final layer norm) of both encoders concatenated on the feature axis,
  the pooled embedding is text_encoder_2's ``text_embeds``, and ``time_ids = original_size + crops_coords_top_left +
  target_size`` (6 numbers, (h, w) order; the same for the negative prompt unless negative sizes are given);
- images ``vae.decode(z / vae.config.scaling_factor)``, then ``(x / 2 + 0.5).clamp(0, 1)``.

StableDiffusionPipeline's constructor silently rewrites a scheduler config with ``steps_offset`` != 1 or
``clip_sample`` true (it sets 1 and false, in place); :func:`stable_diffusion_pipeline` refuses a scheduler where that
changes the samples (clip_sample, or an offset under "leading" spacing) rather than export a pipeline that samples
differently from the model ("trailing" / "linspace" spacing ignore the offset).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from gen_research.errors import GenResearchError

HOW_TO_GET = ("make one on a machine with internet: StableDiffusionPipeline.from_pretrained(NAME).save_pretrained(DIR) "
              "(StableDiffusionXLPipeline for SDXL) and copy DIR here")
# subfolder -> the file save_pretrained writes there
_CONFIG_FILES = {"unet": "config.json", "vae": "config.json", "scheduler": "scheduler_config.json",
                 "text_encoder": "config.json", "tokenizer": "tokenizer_config.json",
                 "text_encoder_2": "config.json", "tokenizer_2": "tokenizer_config.json"}


def plain_config(config: Any) -> dict[str, Any]:
    """A diffusers FrozenDict as a plain JSON-like dict (no private keys, tuples as lists): what hyperparameters
    and YAML can hold."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in dict(config).items()
            if not key.startswith("_")}


class DiffusersVAEStage(nn.Module):
    """A FirstStage (gen_research/models/contract.py) over a diffusers AutoencoderKL, e.g. a Stable Diffusion folder's
    vae/: ``encode_moments`` is the posterior's (mean, std), ``decode_latents`` decodes unscaled latents.

    The architecture comes from ``config`` (the vae/config.json), so a checkpoint that stores the config rebuilds it
    and its state_dict fills the weights. ``scaling_factor`` (SD 1.x/2.x 0.18215, SDXL 0.13025) is the config's: the
    factor SD multiplies latents by before diffusion; this stage itself works on unscaled latents.
    """

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        self.config = plain_config(config)
        self.autoencoder = AutoencoderKL.from_config(self.config)
        channels, height, width = (int(v) for v in image_shape)
        factor = 2 ** (len(self.autoencoder.config.block_out_channels) - 1)
        if channels != self.autoencoder.config.in_channels or height % factor or width % factor or min(height, width) < factor:
            raise GenResearchError(
                f"the VAE takes {self.autoencoder.config.in_channels}-channel images with height and width multiples of "
                f"{factor}, not {tuple(image_shape)}; set the data's image size (and channels) to fit, e.g. "
                f"{self.autoencoder.config.in_channels}x{8 * factor}x{8 * factor}")
        self.image_shape = (channels, height, width)
        self.latent_shape = (int(self.autoencoder.config.latent_channels), height // factor, width // factor)
        self.scaling_factor = float(self.autoencoder.config.scaling_factor)

    def encode_moments(self, images: Tensor) -> tuple[Tensor, Tensor]:
        distribution = self.autoencoder.encode(images).latent_dist
        return distribution.mean, distribution.std

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.autoencoder.decode(z).sample.clamp(-1.0, 1.0)

    def diffusers_autoencoder(self) -> Any:
        return self.autoencoder.eval()


@dataclass
class SDFolder:
    """A local Stable Diffusion folder, its parts' configs read (weights are loaded on demand)."""

    folder: Path
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    scheduler_config: dict[str, Any]
    is_sdxl: bool
    # the text encoder subfolders present: ("text_encoder",), SDXL ("text_encoder", "text_encoder_2"), an SDXL
    # refiner ("text_encoder_2",) (model_index.json lists its text_encoder as null)
    text_encoders: tuple[str, ...] = field(default=("text_encoder",))

    def load_unet(self) -> Any:
        """The folder's UNet2DConditionModel (float32, weights from unet/)."""
        from diffusers import UNet2DConditionModel

        return _load(lambda: UNet2DConditionModel.from_pretrained(self.folder, subfolder="unet", local_files_only=True),
                     self.folder, "unet")

    def load_vae(self, image_shape: tuple[int, int, int]) -> DiffusersVAEStage:
        """The folder's AutoencoderKL as a first stage for images of ``image_shape`` (C, H, W)."""
        from diffusers import AutoencoderKL

        vae = _load(lambda: AutoencoderKL.from_pretrained(self.folder, subfolder="vae", local_files_only=True),
                    self.folder, "vae")
        stage = DiffusersVAEStage(dict(vae.config), image_shape)
        stage.autoencoder.load_state_dict(vae.state_dict())
        return stage.eval()

    def load_scheduler(self, scheduler_class: Any = None) -> Any:
        """The folder's scheduler (``scheduler_class``: another diffusers scheduler built from its config)."""
        if scheduler_class is not None:
            return scheduler_class.from_config(self.scheduler_config)
        import diffusers

        name = self.scheduler_config.get("_class_name", "PNDMScheduler")
        return getattr(diffusers, name).from_config(self.scheduler_config)


def _load(load: Any, folder: Path, part: str) -> Any:
    """Run a from_pretrained; a missing or broken weights file becomes one line naming the part."""
    try:
        return load()
    except (OSError, ValueError, EnvironmentError) as error:
        raise GenResearchError(f"cannot load {part}/ of the Stable Diffusion folder {folder}: {str(error).splitlines()[0]}; "
                               f"{HOW_TO_GET}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise GenResearchError(f"cannot read {path}: {str(error).splitlines()[0]}; {HOW_TO_GET}") from None


def read_sd_folder(folder: str | Path, key: str = "model.init_args.init_from") -> SDFolder:
    """Check a local Stable Diffusion folder and read its configs.

    Required: model_index.json, unet/, vae/, scheduler/, and the text encoders with their tokenizers that
    model_index.json does not list as null (SD: text_encoder/, tokenizer/; SDXL: also text_encoder_2/, tokenizer_2/).
    Anything missing is a one-line error naming the part, ``key`` (the YAML key that named the folder) and how to make
    such a folder.
    """
    folder = Path(folder).expanduser()
    where = f"{key}={folder}"
    if not folder.is_dir():
        raise GenResearchError(f"{where} is not a folder; set {key} to a local Stable Diffusion folder ({HOW_TO_GET})")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise GenResearchError(f"{where} has no model_index.json, so it is no diffusers pipeline folder; {HOW_TO_GET}")
    index = _read_json(index_file)
    class_name = str(index.get("_class_name", ""))
    is_sdxl = "XL" in class_name or "text_encoder_2" in index
    listed = {name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)
              and value and value[0] is not None}
    text_parts = ["text_encoder", "tokenizer"] + (["text_encoder_2", "tokenizer_2"] if is_sdxl else [])
    # a part model_index.json lists as [null, null] is absent by design (the SDXL refiner has no text_encoder)
    required = ["unet", "vae", "scheduler"] + [part for part in text_parts if part in listed or part not in index]
    for part in required:
        config_file = folder / part / _CONFIG_FILES[part]
        if not config_file.is_file():
            raise GenResearchError(f"{where} has no {part}/{_CONFIG_FILES[part]} (its {part} is missing); "
                                   f"point {key} at a complete folder, or {HOW_TO_GET}")
    unet_config = _read_json(folder / "unet" / "config.json")
    if is_sdxl and unet_config.get("addition_embed_type") != "text_time":
        raise GenResearchError(f"{where} is an SDXL pipeline but its unet has no 'text_time' added embedding; {HOW_TO_GET}")
    return SDFolder(folder=folder, unet_config=unet_config, vae_config=_read_json(folder / "vae" / "config.json"),
                    scheduler_config=_read_json(folder / "scheduler" / "scheduler_config.json"), is_sdxl=is_sdxl,
                    text_encoders=tuple(part for part in ("text_encoder", "text_encoder_2") if part in required))


def _pipeline_scheduler(scheduler: Any) -> Any:
    """``scheduler`` as StableDiffusionPipeline.__init__ leaves it: that constructor (and so from_pretrained) rewrites
    ``steps_offset`` to 1 and ``clip_sample`` to False in place. Where that changes the timesteps or the steps (the
    offset is added under "leading" spacing only), refuse; otherwise return a copy with steps_offset 1."""
    config = dict(scheduler.config)
    offset, clip_sample = config.get("steps_offset", 1), config.get("clip_sample", False)
    spacing = config.get("timestep_spacing", "leading")
    if clip_sample or (offset != 1 and spacing == "leading"):
        raise ValueError(f"the scheduler has steps_offset={offset}, clip_sample={clip_sample}, timestep_spacing={spacing!r}; "
                         "StableDiffusionPipeline forces steps_offset=1 and clip_sample=False, which would change its samples")
    if offset != 1:  # unused outside "leading" spacing: the same timesteps, and no rewrite of the caller's scheduler
        return type(scheduler).from_config({**config, "steps_offset": 1})
    return scheduler


def stable_diffusion_pipeline(unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any, latent_scale: float,
                              text_encoder_2: Any = None, tokenizer_2: Any = None) -> Any:
    """A StableDiffusionPipeline (StableDiffusionXLPipeline when ``text_encoder_2`` is given) over these very modules
    (not copies; each is put in eval mode), ready for ``save_pretrained``. A UNet with LoRA adapters is the exception:
    the pipeline gets a copy with the adapters merged in (lora.merged_copy), a plain UNet2DConditionModel.

    The VAE's config ``scaling_factor`` is set to ``latent_scale`` (the pipeline decodes ``latents / scaling_factor``);
    no safety checker or feature extractor. SDXL: ``force_zeros_for_empty_prompt`` False (an absent negative prompt is
    the empty prompt's embedding, what CFG trained with, not zeros) and no watermarker (its package is optional and it
    changes pixels).
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if not (isinstance(latent_scale, (int, float)) and latent_scale > 0):
        raise ValueError(f"latent_scale must be a positive number, got {latent_scale!r}")
    scheduler = _pipeline_scheduler(scheduler)
    from gen_research.models.text2image.lora import has_lora, merged_copy

    if has_lora(unet):  # save_pretrained would write peft's base_layer/lora keys, which a plain UNet cannot load
        unet = merged_copy(unet)
    for module in (unet, vae, text_encoder, text_encoder_2):
        if module is not None:
            module.eval()
    vae.register_to_config(scaling_factor=float(latent_scale))
    if text_encoder_2 is not None:
        if tokenizer_2 is None:
            raise ValueError("an SDXL pipeline needs tokenizer_2 with text_encoder_2")
        return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                         tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                         force_zeros_for_empty_prompt=False, add_watermarker=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


__all__ = ["DiffusersVAEStage", "SDFolder", "plain_config", "read_sd_folder", "stable_diffusion_pipeline"]
