"""Frozen CLIP text encoders for text-to-image models, from whatever a user has locally.

``load_text_encoder(source)`` takes a ``clip`` family checkpoint (its text tower and tokenizer), a CLIP model folder
(``CLIPModel`` config.json with a text_config: OpenAI's CLIP and OpenCLIP models published in transformers format),
a ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` folder with its tokenizer files, or a Stable Diffusion pipeline
folder (``model_index.json``; ``subfolder`` text_encoder + tokenizer, or text_encoder_2 + tokenizer_2 for SDXL).
:meth:`TextEncoder.encode` tokenises and encodes prompts exactly as diffusers' pipelines do (padding to max_length,
truncation, no attention mask unless the config asks for one). A text-to-image checkpoint stores :meth:`TextEncoder.spec`
in its hyperparameters and the weights in its state_dict; :func:`text_encoder_from_spec` rebuilds the architecture.
Nothing is downloaded (``local_files_only``, ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.models.clip.tokenizer import clip_tokenizer_files, load_clip_tokenizer, write_tokenizer_files

TEXT_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
WHAT_TO_PASS = ("pass a clip checkpoint (.ckpt of the clip family), a CLIP model folder, a CLIPTextModel folder with its tokenizer "
                "files, or a Stable Diffusion pipeline folder (model_index.json)")


@dataclass
class TextEncoder:
    """One frozen CLIP text tower and its tokenizer.

    ``hidden_size`` is the width of the hidden states (the UNet's cross-attention dim); ``pooled_size`` the width of
    the pooled embedding: ``text_embeds`` of a model with a projection (SDXL's text_encoder_2), else ``pooler_output``."""

    tokenizer: Any
    model: torch.nn.Module
    max_length: int
    hidden_size: int
    pooled_size: int
    source: str

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def check_hidden_layer(self, hidden_layer: int) -> None:
        """-1 = last_hidden_state (final layer norm applied: SD 1.x/2.x), -k = hidden_states[-k] (SDXL: -2, not normed)."""
        if not (isinstance(hidden_layer, int) and -(self.num_layers + 1) <= hidden_layer <= -1):
            raise GenResearchError(f"hidden_layer={hidden_layer!r} must be an integer in -1..-{self.num_layers + 1} for the "
                                   f"{self.num_layers}-layer text encoder of {self.source} (-1: last layer, -2: penultimate as SDXL)")

    def tokenize(self, prompts: list[str]) -> dict[str, Tensor]:
        """Token ids (and attention mask) [B, max_length]: padded to max_length and truncated, as diffusers does."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise GenResearchError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        return self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt")

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device | str, hidden_layer: int = -1) -> tuple[Tensor, Tensor]:
        """(hidden [B, max_length, hidden_size], pooled [B, pooled_size]) of the prompts, as diffusers'
        StableDiffusionPipeline.encode_prompt (hidden_layer -1) and StableDiffusionXLPipeline.encode_prompt (-2) compute them."""
        self.check_hidden_layer(hidden_layer)
        tokens = self.tokenize(prompts)
        ids = tokens["input_ids"].to(device)
        # diffusers passes the mask only when the text encoder's config sets use_attention_mask (CLIP's does not).
        mask = tokens["attention_mask"].to(device) if getattr(self.model.config, "use_attention_mask", False) else None
        output = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden_layer != -1, return_dict=True)
        hidden = output.last_hidden_state if hidden_layer == -1 else output.hidden_states[hidden_layer]
        pooled = output.text_embeds if hasattr(output, "text_embeds") else output.pooler_output
        return hidden, pooled

    def spec(self, with_tokenizer: bool = True) -> dict[str, Any]:
        """Plain (JSON-able) description: the class, its config, max_length and (``with_tokenizer``) the tokenizer files'
        text. Without them (a published tokenizer is 1.5 MB of text: too much for hyperparameters and W&B's config) the
        owner keeps :meth:`tokenizer_files` elsewhere, e.g. in its checkpoint, and sets the tokenizer back with
        :func:`tokenizer_from_files`."""
        config = json.loads(json.dumps(self.model.config.to_dict(), default=str))
        spec = {"class_name": type(self.model).__name__, "config": config, "max_length": self.max_length, "source": self.source}
        if with_tokenizer:
            spec["tokenizer_files"] = self.tokenizer_files()
        return spec

    def tokenizer_files(self) -> dict[str, str]:
        return clip_tokenizer_files(self.tokenizer)


def frozen(model: torch.nn.Module, tokenizer: Any, source: str, max_length: int | None = None) -> TextEncoder:
    """A TextEncoder of a CLIP text model: eval mode, no gradients, sizes read from its config (``max_length`` from the
    tokenizer unless given: a spec without tokenizer files gets its tokenizer later)."""
    model.eval()
    model.requires_grad_(False)
    config = model.config
    limit = int(config.max_position_embeddings)
    max_length = int(tokenizer.model_max_length) if max_length is None else int(max_length)
    if max_length > limit:  # an unset model_max_length is 1e30: the positions bound it
        max_length = limit
    pooled = int(config.projection_dim) if hasattr(model, "text_projection") else int(config.hidden_size)
    return TextEncoder(tokenizer=tokenizer, model=model, max_length=max_length, hidden_size=int(config.hidden_size), pooled_size=pooled, source=source)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def text_tower(clip: Any, with_projection: bool) -> torch.nn.Module:
    """The text tower of a transformers CLIPModel as a CLIPTextModel(WithProjection) with the same weights."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig.from_dict({**clip.config.text_config.to_dict(), "projection_dim": int(clip.config.projection_dim)})
    model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)
    # transformers 5's CLIPTextModel is the text transformer itself; the WithProjection model wraps it as text_model.
    getattr(model, "text_model", model).load_state_dict(clip.text_model.state_dict())
    if with_projection:
        model.text_projection.load_state_dict(clip.text_projection.state_dict())
    return model


def _from_clip_checkpoint(path: Path, with_projection: bool) -> TextEncoder:
    from gen_research.models.clip.clip import CHECKPOINT_KEY, LocalCLIP
    from gen_research.models.common import own_hyperparameters
    from gen_research.training.run_folder import read_checkpoint

    checkpoint = read_checkpoint(path)
    class_path = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    ours = f"{LocalCLIP.__module__}.{LocalCLIP.__qualname__}"
    if (class_path is not None and class_path != ours) or CHECKPOINT_KEY not in checkpoint:
        family = class_path.rpartition(".")[2] if class_path else "another model"
        raise GenResearchError(f"{path} is a checkpoint of {family}, not of the clip family; pass a clip checkpoint "
                               "(fit experiments/clip_captions_mnist5k.yaml) or a CLIP folder")
    del checkpoint
    with own_hyperparameters():  # inside text2image's __init__ under LightningCLI
        clip = LocalCLIP.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return frozen(text_tower(clip.clip, with_projection), clip.tokenizer, f"clip checkpoint {path}")


def _text_model_folder(folder: Path, tokenizer_folder: Path, with_projection: bool, source: str) -> TextEncoder:
    """A CLIPTextModel / CLIPTextModelWithProjection folder (the class follows its config.json)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or ["CLIPTextModel"]
    projected = "CLIPTextModelWithProjection" in architectures
    if with_projection and not projected:
        raise GenResearchError(f"the text encoder at {folder} ({architectures[0]}) has no projection, so no pooled text_embeds; "
                               "pass a CLIPTextModelWithProjection folder (SDXL's text_encoder_2) or a CLIP model folder")
    cls = CLIPTextModelWithProjection if projected else CLIPTextModel
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise GenResearchError(f"cannot load a {cls.__name__} from {folder} ({_first_line(error)}); {WHAT_TO_PASS}") from None
    tokenizer = load_clip_tokenizer(tokenizer_folder, hint=f"saved next to the text encoder ({WHAT_TO_PASS})")
    return frozen(model, tokenizer, source)


def _clip_folder(folder: Path, with_projection: bool) -> TextEncoder:
    from transformers import CLIPModel

    try:
        clip = CLIPModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise GenResearchError(f"cannot load a CLIPModel from {folder} ({_first_line(error)}); {WHAT_TO_PASS}") from None
    tokenizer = load_clip_tokenizer(folder, hint="saved next to the CLIP model (CLIPTokenizer.from_pretrained(NAME).save_pretrained(FOLDER))")
    return frozen(text_tower(clip, with_projection), tokenizer, f"CLIP folder {folder}")


def load_text_encoder(source: str, subfolder: str = "text_encoder", with_projection: bool = False) -> TextEncoder:
    """The frozen text encoder ``source`` names (see the module docstring); ``subfolder`` picks a pipeline folder's
    encoder (text_encoder or text_encoder_2); ``with_projection`` keeps (or requires) the text projection, whose
    ``text_embeds`` are the pooled output."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never reach the Hub
    path = Path(str(source)).expanduser()
    if path.is_file():
        return _from_clip_checkpoint(path, with_projection)
    if not path.is_dir():
        raise GenResearchError(f"no text encoder at {path}: {WHAT_TO_PASS}")
    if (path / "model_index.json").is_file():
        encoder = path / subfolder
        tokenizer = path / subfolder.replace("text_encoder", "tokenizer")
        if not (encoder / "config.json").is_file():
            raise GenResearchError(f"the pipeline folder {path} has no {subfolder}/config.json; pass subfolder text_encoder "
                                   "(or text_encoder_2 for SDXL's second encoder), or another pipeline folder")
        return _text_model_folder(encoder, tokenizer, with_projection, f"{subfolder} of pipeline {path}")
    if not (path / "config.json").is_file():
        raise GenResearchError(f"{path} has no config.json or model_index.json: {WHAT_TO_PASS}")
    config = json.loads((path / "config.json").read_text())
    if "text_config" in config:
        return _clip_folder(path, with_projection)
    return _text_model_folder(path, path, with_projection, f"text encoder folder {path}")


def text_encoder_from_spec(spec: dict[str, Any]) -> TextEncoder:
    """The architecture :meth:`TextEncoder.spec` describes, with random weights (a checkpoint's state_dict fills
    them), and its tokenizer rebuilt from the files' text: no file is read."""
    import transformers
    from transformers import CLIPTextConfig

    name = spec.get("class_name")
    if name not in TEXT_CLASSES:
        raise GenResearchError(f"the text encoder spec names {name!r}; only {', '.join(TEXT_CLASSES)} are rebuilt")
    model = getattr(transformers, name)(CLIPTextConfig.from_dict(dict(spec["config"])))
    # Without tokenizer files the owner sets the tokenizer from its checkpoint (TextEncoder.spec(with_tokenizer=False)).
    tokenizer = tokenizer_from_files(spec["tokenizer_files"]) if "tokenizer_files" in spec else None
    return frozen(model, tokenizer, str(spec.get("source", "spec")), max_length=int(spec["max_length"]))


def tokenizer_from_files(files: dict[str, str]) -> Any:
    """A CLIP tokenizer rebuilt from its files' text (TextEncoder.tokenizer_files)."""
    with tempfile.TemporaryDirectory(prefix="clip-tokenizer-") as folder:
        return load_clip_tokenizer(write_tokenizer_files(files, Path(folder)), hint="(a damaged text encoder spec)")


__all__ = ["TEXT_CLASSES", "TextEncoder", "load_text_encoder", "text_encoder_from_spec", "text_tower", "tokenizer_from_files"]
