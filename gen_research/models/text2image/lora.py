"""LoRA adapters on a diffusers UNet through peft, as diffusers' examples/text_to_image/train_text_to_image_lora.py does:
``LoraConfig(r, lora_alpha, init_lora_weights="gaussian", target_modules)`` injected by ``unet.add_adapter``, saved with
``convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))`` and ``StableDiffusionPipeline.save_lora_weights``
so that diffusers' ``pipeline.load_lora_weights(folder)`` loads the adapters.

peft and its diffusers glue are imported inside the functions: every module under gen_research/models/ is imported at
start-up by the registry discovery, and only LoRA runs need peft.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor, nn

from gen_research.errors import GenResearchError
from gen_research.models.common import check_number

# diffusers' train_text_to_image_lora.py: the attention projections of every transformer block
DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
ADAPTER_NAME = "default"
_KEY = "model.init_args.lora"
_ADAPTABLE = (nn.Linear, nn.Conv2d, nn.Conv1d, nn.Embedding)  # layer types peft's LoRA wraps


def _short_name(name: str) -> str:
    """A module's name as a target: its last part, with the parent's when the last is an index ("to_out.0")."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of target modules (tuners_utils.check_target_module_exists): the full name, or a suffix
    after a dot."""
    return name == target or name.endswith("." + target)


def check_target_modules(unet: nn.Module, target_modules: Sequence[str], owner: str = "text2image") -> None:
    """Every target names at least one layer peft can adapt, else one line naming the YAML key and names that exist
    (peft itself accepts a list where only some targets match, and silently adapts fewer layers)."""
    if isinstance(target_modules, str) or not target_modules:
        raise GenResearchError(f"{owner}: {_KEY}.target_modules={target_modules!r} must be a non-empty list of module names, "
                               f"e.g. {list(DEFAULT_TARGET_MODULES)}")
    layers = [(name, module) for name, module in unet.named_modules() if isinstance(module, _ADAPTABLE)]
    known = list(dict.fromkeys(_short_name(name) for name, _ in layers))
    for target in target_modules:
        if not any(_matches(name, str(target)) for name, _ in layers):
            examples = [name for name in known if name in DEFAULT_TARGET_MODULES] + [name for name in known if name not in DEFAULT_TARGET_MODULES]
            raise GenResearchError(f"{owner}: {_KEY}.target_modules names {target!r}, which is no Linear/Conv layer of the UNet; "
                                   f"use names such as {', '.join(examples[:10])}")


def add_lora(unet: nn.Module, rank: int = 4, alpha: float | None = None,
             target_modules: Sequence[str] = DEFAULT_TARGET_MODULES, dropout: float = 0.0,
             owner: str = "text2image") -> list[nn.Parameter]:
    """Freeze ``unet`` and add LoRA adapters (delta W = alpha / rank * B A) to ``target_modules``; return the trainable
    (LoRA) parameters.

    ``alpha`` None is ``rank`` (scale 1), as the diffusers script sets ``lora_alpha=args.rank``. Gaussian init
    (A ~ N(0, 1/rank), B = 0) leaves the UNet's output unchanged at the start; A is drawn from the global RNG
    (seeded by Lightning's seed_everything).
    """
    from peft import LoraConfig

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise GenResearchError(f"{owner}: {_KEY}.rank={rank!r} must be a positive integer; set {_KEY}.rank to e.g. 4")
    if alpha is not None:
        check_number(owner, "lora.alpha", alpha, low=0.0, low_inclusive=False, hint=f"the rank ({rank}) or null")
    check_number(owner, "lora.dropout", dropout, low=0.0, high=1.0, high_inclusive=False, hint="0.0 (diffusers' script)")
    target_modules = list(target_modules)
    check_target_modules(unet, target_modules, owner)
    unet.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=float(alpha) if alpha is not None else rank, lora_dropout=float(dropout),
                        init_lora_weights="gaussian", target_modules=target_modules)
    unet.add_adapter(config, adapter_name=ADAPTER_NAME)
    return [parameter for parameter in unet.parameters() if parameter.requires_grad]


def has_lora(unet: nn.Module) -> bool:
    """Whether ``unet`` carries peft adapters."""
    return bool(getattr(unet, "_hf_peft_config_loaded", False)) and ADAPTER_NAME in getattr(unet, "peft_config", {})


def lora_state_dict(unet: nn.Module) -> dict[str, Tensor]:
    """The adapters' weights in diffusers' format (``...to_q.lora_A.weight`` -> ``...to_q.lora.down.weight``), as
    train_text_to_image_lora.py saves them."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    if not has_lora(unet):
        raise ValueError("the UNet has no LoRA adapters (call add_lora first)")
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME))


def save_lora(unet: nn.Module, folder: str | Path) -> Path:
    """Write ``folder``/pytorch_lora_weights.safetensors, loadable by ``pipeline.load_lora_weights(folder)``.

    The adapter's LoraConfig (rank, alpha, targets) is stored in the file's metadata, as diffusers' training_utils
    ``_collate_lora_metadata`` does: without it a loader infers the rank from the shapes and takes alpha = rank, so an
    alpha other than the rank would be lost.
    """
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    metadata = unet.peft_config[ADAPTER_NAME].to_dict()
    StableDiffusionPipeline.save_lora_weights(save_directory=folder, unet_lora_layers=lora_state_dict(unet),
                                              unet_lora_adapter_metadata=metadata, safe_serialization=True)
    return folder / LORA_WEIGHTS_FILE


def merged_copy(unet: nn.Module) -> Any:
    """A copy of ``unet`` with its LoRA deltas merged into the base weights and the adapters removed: a plain
    UNet2DConditionModel for a full Stable Diffusion export (``unet.fuse_lora`` + ``unload_lora``); ``unet`` is left
    as it was."""
    if not has_lora(unet):
        raise ValueError("the UNet has no LoRA adapters (call add_lora first)")
    merged = copy.deepcopy(unet)
    merged.fuse_lora(lora_scale=1.0)
    merged.unload_lora()
    return merged


__all__ = ["DEFAULT_TARGET_MODULES", "LORA_WEIGHTS_FILE", "add_lora", "check_target_modules", "has_lora", "lora_state_dict",
           "merged_copy", "save_lora"]
