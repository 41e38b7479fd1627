"""Start a DDPM from a diffusers pipeline folder (``init_from: DIR``), e.g. one written by ``export``.

The folder's ``unet/`` weights are copied into the model's UNet, after checking that the architecture and
the noise schedule in ``scheduler/`` agree with the experiment's ``model.init_args``: a mismatch is a
one-line error naming the setting to change, never a silent partial load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffusers import UNet2DModel

from gen_research.errors import GenResearchError

# UNet config keys that must agree for the weights to mean the same thing
ARCHITECTURE_KEYS = ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
                     "up_block_types", "num_class_embeds", "attention_head_dim", "norm_num_groups")
# scheduler config keys that define the forward process the UNet was trained for
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _differences(ours: dict[str, Any], theirs: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [f"{key}: {_normalise(theirs.get(key))} there, {_normalise(ours.get(key))} here"
            for key in keys if key in theirs and _normalise(theirs.get(key)) != _normalise(ours.get(key))]


def load_pipeline_weights(unet: UNet2DModel, scheduler_config: dict[str, Any], folder: str | Path) -> None:
    """Copy ``folder``'s UNet weights into ``unet`` (same architecture and schedule, else GenResearchError)."""
    folder = Path(folder)
    unet_dir = folder / "unet" if (folder / "unet").is_dir() else folder
    if not (unet_dir / "config.json").is_file():
        raise GenResearchError(
            f"init_from {folder}: no unet/config.json there; pass a folder written by `python -m gen_research export` "
            "or diffusers' save_pretrained"
        )
    pretrained_config = json.loads((unet_dir / "config.json").read_text())
    if pretrained_config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise GenResearchError(f"init_from {folder}: the unet is a {pretrained_config['_class_name']}, ddpm uses UNet2DModel")
    if diffs := _differences(dict(unet.config), pretrained_config, ARCHITECTURE_KEYS):
        raise GenResearchError(f"init_from {folder}: UNet differs ({'; '.join(diffs)}); set model.init_args to match the pipeline")
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if scheduler_file.is_file():
        if diffs := _differences(dict(scheduler_config), json.loads(scheduler_file.read_text()), SCHEDULE_KEYS):
            raise GenResearchError(
                f"init_from {folder}: noise schedule differs ({'; '.join(diffs)}); set num_train_timesteps, "
                "noise_schedule and prediction_type to the pipeline's"
            )
    pretrained = UNet2DModel.from_pretrained(unet_dir, local_files_only=True)
    unet.load_state_dict(pretrained.state_dict())


__all__ = ["load_pipeline_weights"]
