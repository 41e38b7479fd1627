"""A frozen first stage inside a second-stage model (``ldm``, ``vq_prior``).

Training starts from the first stage's checkpoint (``first_stage_ckpt``, e.g. the final checkpoint of the stage the
two-stage experiment trained first). Its architecture (class path and init args) is stored in the second stage's
hyperparameters as ``first_stage`` and its weights in the second stage's own state_dict, so a second-stage checkpoint
is self-contained: ``sample``, ``evaluate`` and ``export`` rebuild the first stage from it, with no need for the first
stage's checkpoint file to still exist (a moved or retrained first stage can never be silently swapped in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from gen_research.errors import GenResearchError
from gen_research.models.common import own_hyperparameters
from gen_research.models.contract import CAPABILITIES, can


def first_stage_spec(ckpt_path: str | Path, owner: str) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of the model a checkpoint holds (its saved hyperparameters)."""
    from gen_research.training.run_folder import read_checkpoint

    hyper = dict(read_checkpoint(Path(ckpt_path)).get("hyper_parameters") or {})
    class_path = hyper.pop("_class_path", None)
    hyper.pop("_instantiator", None)
    if not class_path:
        raise GenResearchError(f"{owner}: model.init_args.first_stage_ckpt={ckpt_path} holds no model class (not a gen_research checkpoint); "
                               "pass the final checkpoint of a first-stage run (e.g. runs/autoencoder_kl_mnist5k/<run>/checkpoints/last.ckpt)")
    return {"class_path": class_path, "init_args": hyper}


def _first_stage_class(class_path: str, owner: str) -> type:
    """The registered model family a checkpoint names. Only registered families (gen_research's own, and those a user
    registered through an entry point or an experiment's ``imports:``) are looked up: a checkpoint never makes us import
    an arbitrary module (docs/security.md)."""
    from gen_research.registry import MODELS

    for entry in MODELS:
        if entry.class_path == class_path:
            return entry.obj
    raise GenResearchError(f"{owner}: the first stage's class {class_path} is not a registered model family "
                           "(python -m gen_research list models); train the first stage with a registered family")


def build_first_stage(owner: str, first_stage_ckpt: str | None, first_stage: dict[str, Any] | None,
                      capability: type) -> tuple[nn.Module, dict[str, Any]]:
    """(frozen first stage in eval mode, its spec to store as the ``first_stage`` hyperparameter).

    With ``first_stage_ckpt`` the weights come from that checkpoint (EMA weights when EMA was on: they are what the
    checkpoint's state_dict holds). Without it, ``first_stage`` (a spec saved in a second-stage checkpoint) builds the
    architecture and the caller's checkpoint load fills the weights. ``capability`` (FirstStage or Quantizes) is what
    the second stage needs; another model is refused in one line."""
    if first_stage_ckpt:
        spec = first_stage_spec(first_stage_ckpt, owner)
        cls = _first_stage_class(spec["class_path"], owner)
        try:
            with own_hyperparameters():
                module = cls.load_from_checkpoint(first_stage_ckpt, map_location="cpu", weights_only=True)
        except (RuntimeError, TypeError, KeyError, ValueError) as error:
            raise GenResearchError(f"{owner}: cannot load first stage {first_stage_ckpt}: {str(error).splitlines()[0]}") from None
    elif first_stage:
        spec = {"class_path": first_stage["class_path"], "init_args": dict(first_stage.get("init_args") or {})}
        cls = _first_stage_class(spec["class_path"], owner)
        with own_hyperparameters():
            module = cls(**spec["init_args"])
    else:
        raise GenResearchError(f"{owner}: set model.init_args.first_stage_ckpt to a first-stage checkpoint (or fit the two-stage experiment, "
                               "which trains the first stage and sets it)")
    if not can(module, capability):
        raise GenResearchError(f"{owner}: the first stage {spec['class_path'].rpartition('.')[2]} cannot {CAPABILITIES[capability]}; "
                               "pass a checkpoint of a model that can")
    module.eval()
    module.requires_grad_(False)
    return module, spec


class FrozenFirstStage:
    """Mixin (list it before LightningModule) keeping ``self.first_stage`` frozen and in eval mode: Lightning's
    ``train()`` at every epoch start would otherwise switch its dropout and batch norm back to training."""

    first_stage: nn.Module

    def train(self, mode: bool = True) -> Any:
        result = super().train(mode)  # type: ignore[misc]
        if getattr(self, "first_stage", None) is not None:
            self.first_stage.eval()
        return result


__all__ = ["FrozenFirstStage", "build_first_stage", "first_stage_spec"]
