"""Tiny Stable Diffusion (and SDXL) pipelines with random weights, made offline, for tests.

The real classes at toy sizes (as diffusers' own pipeline tests build them): a UNet2DConditionModel on 8x8x4 latents,
an AutoencoderKL with factor 2 (16x16x3 images), CLIPTextModel(s) of width 32 and a CLIPTokenizer whose vocab.json and
merges.txt are written here in CLIP's format (nothing can be downloaded). ``make_tiny_sd_folder(path)`` saves a
``StableDiffusionPipeline`` folder (``sdxl=True``: a ``StableDiffusionXLPipeline`` one) exactly as
``save_pretrained`` writes a published model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel

from gen_research.models.clip.tokenizer import bytes_to_unicode  # GPT-2 / CLIP's byte -> printable character table

TEXT_WIDTH = 32
MAX_TOKENS = 16
IMAGE_SIZE = 16
LATENT_SIZE = 8
TIME_EMBED_DIM = 8  # SDXL addition_time_embed_dim at toy size (SDXL: 256)
# SD 1.5's scheduler/scheduler_config.json (a PNDMScheduler), less its class name
SD15_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                  "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True,
                  "prediction_type": "epsilon"}
WORDS = ["a", "red", "green", "blue", "one", "two", "seven", "small", "large", "thick", "digit", "on", "the", "wooden"]


def write_tiny_clip_tokenizer(folder: Path, max_length: int = MAX_TOKENS):
    """A CLIPTokenizer folder in CLIP's format: the byte alphabet, its "</w>" (end of word) variants, merges spelling
    WORDS whole, then <|startoftext|> and <|endoftext|> last (as CLIP's 49408-token vocabulary ends)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in WORDS:  # merge left to right: "r e", "re d</w>"
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pair = f"{symbols[0]} {symbols[1]}"
            if pair not in merges:
                merges.append(pair)
                tokens.append(symbols[0] + symbols[1])
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=max_length)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_text_encoder(tokenizer, with_projection: bool = False, seed: int = 0):
    """A 2-layer CLIPTextModel (SDXL's second encoder: CLIPTextModelWithProjection) whose special ids are the tokenizer's
    (the pooled output is taken at the first <|endoftext|>)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, projection_dim=TEXT_WIDTH,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def tiny_unet(sdxl: bool = False, seed: int = 0) -> UNet2DConditionModel:
    """SD's UNet at toy size; SDXL: cross-attention on both encoders' hidden states concatenated, and the "text_time"
    added embedding of the pooled text embedding + 6 size/crop numbers (each a TIME_EMBED_DIM Fourier embedding)."""
    torch.manual_seed(seed)
    extra = {}
    if sdxl:
        extra = {"addition_embed_type": "text_time", "addition_time_embed_dim": TIME_EMBED_DIM,
                 "projection_class_embeddings_input_dim": TEXT_WIDTH + 6 * TIME_EMBED_DIM}
    return UNet2DConditionModel(sample_size=LATENT_SIZE, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=TEXT_WIDTH * (2 if sdxl else 1), attention_head_dim=8, norm_num_groups=8,
                                **extra).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """Factor-2 AutoencoderKL (2 blocks) for 16x16 RGB images, SD 1.5's scaling_factor."""
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                         norm_num_groups=8, sample_size=IMAGE_SIZE, scaling_factor=0.18215).eval()


def tiny_components(folder: Path, sdxl: bool = False) -> dict:
    """The pipeline's components (the tokenizer files are written under ``folder``/tokenizer_src)."""
    tokenizer = write_tiny_clip_tokenizer(Path(folder) / "tokenizer_src")
    parts = {"unet": tiny_unet(sdxl), "vae": tiny_vae(), "text_encoder": tiny_text_encoder(tokenizer), "tokenizer": tokenizer,
             "scheduler": PNDMScheduler.from_config(SD15_SCHEDULER)}
    if sdxl:
        parts.update(text_encoder_2=tiny_text_encoder(tokenizer, with_projection=True, seed=1), tokenizer_2=tokenizer)
    return parts


def ddim_scheduler(config: dict | None = None) -> DDIMScheduler:
    """DDIM with SD 1.5's schedule (what both sides of the sampling-equality tests use)."""
    return DDIMScheduler.from_config(config or SD15_SCHEDULER)


def make_tiny_sd_folder(path: str | Path, sdxl: bool = False) -> Path:
    """Save a tiny random StableDiffusionPipeline (``sdxl``: StableDiffusionXLPipeline) folder at ``path``."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    path = Path(path)
    parts = tiny_components(path.parent / f"{path.name}_src", sdxl)
    if sdxl:
        pipeline = StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=False, add_watermarker=False)
    else:
        pipeline = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(path)
    return path
