"""Loading a trained model: the experiment file, its data module, and the checkpoint's weights (EMA weights when
EMA was on), checked to belong together. Used by every command that reads a checkpoint outside Lightning's
loops: ``sample``, ``evaluate`` (and its sampler grid) and ``export``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError


def load_model_and_data(config_path: str, ckpt_path: str) -> tuple[Any, Any, dict[str, Any]]:
    """The experiment's data module and its model with the checkpoint's weights (EMA weights when EMA was on)."""
    from argparse import ArgumentError

    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    from gen_research.config.files import check_class_paths, experiment_imports, load_experiment
    from gen_research.config.parser_errors import condense_parser_error
    from gen_research.training.run_folder import read_checkpoint, resolve_checkpoint_name

    config = load_experiment(Path(config_path))
    if "model" not in config or "data" not in config:
        raise GenResearchError(f"{config_path} must define model and data")
    ckpt_path = str(resolve_checkpoint_name(ckpt_path, Path(config.get("runs_root") or "runs"), config.get("name") or Path(config_path).stem))
    checkpoint = read_checkpoint(Path(ckpt_path))
    class_path = config["model"]["class_path"]
    saved_class = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if saved_class and saved_class != class_path:
        raise GenResearchError(f"checkpoint {ckpt_path} was written by model {saved_class}, but {config_path} builds {class_path}")
    # load_from_checkpoint parses the saved hyperparameters with jsonargparse: the same class-path rules apply.
    check_class_paths(checkpoint.get("hyper_parameters") or {}, f"in the hyper_parameters of {ckpt_path}", experiment_imports(config, config_path))
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    try:
        datamodule = parser.instantiate_classes(parser.parse_object({"data": config["data"]})).data
    except ArgumentError as error:
        raise GenResearchError(condense_parser_error(str(error), lambda section: [])) from None
    module_name, _, class_name = class_path.rpartition(".")
    model_class = getattr(importlib.import_module(module_name), class_name)
    try:
        model = model_class.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    except (RuntimeError, TypeError, KeyError, ValueError) as error:  # ValueError: Lightning refused the saved instantiator/class
        raise GenResearchError(f"cannot build {class_name} from {ckpt_path}: {str(error).splitlines()[0]}") from None
    return model, datamodule, config["data"]


__all__ = ["load_model_and_data"]
