"""An experiment's model and data module built as ``fit`` builds them (jsonargparse on the composed YAML), with no
trainer: for the benchmarks' hand-written loops and in-process measurements."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from harness import REPO


def experiment_config(experiment: str, model_args: dict[str, Any] | None = None, data_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """experiments/<experiment>.yaml composed (defaults merged, short names resolved), init_args overridden."""
    from gen_research.config.files import load_experiment
    from gen_research.registry import load_builtins

    load_builtins()
    config = copy.deepcopy(load_experiment(REPO / "experiments" / f"{experiment}.yaml"))
    config["model"].setdefault("init_args", {}).update(model_args or {})
    config["data"].setdefault("init_args", {}).update(data_args or {})
    return config


def build(experiment: str, model_args: dict[str, Any] | None = None, data_args: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(model, datamodule) of the experiment, freshly initialised (seeded by the caller)."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule, LightningModule

    config = experiment_config(experiment, model_args, data_args)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningModule, "model")
    parser.add_subclass_arguments(LightningDataModule, "data")
    built = parser.instantiate_classes(parser.parse_object({"model": config["model"], "data": config["data"]}))
    return built.model, built.data


def experiment_path(experiment: str) -> Path:
    return REPO / "experiments" / f"{experiment}.yaml"
