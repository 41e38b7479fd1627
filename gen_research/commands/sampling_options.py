"""The command-line side of the families' declared sampling options (gen_research/models/contract.py), shared by
``sample`` and ``evaluate``: one flag per declared option, grouped by the families declaring it, checked alone
before anything is loaded and against the loaded model's own declaration afterwards."""

from __future__ import annotations

import argparse
from typing import Any


def register_experiment_families(argv: list[str]) -> None:
    """Import the modules the ``--config`` experiment lists in ``imports:`` before the parser is built, so a family
    registered there (a third-party or test family) has its options on the command line. A config that cannot be
    read is left for the command to report once parsing is done."""
    from pathlib import Path

    from gen_research.config.files import load_experiment
    from gen_research.errors import GenResearchError

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config and Path(known.config).is_file():
        try:
            load_experiment(Path(known.config))
        except GenResearchError:
            pass


def add_family_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> list[str]:
    """Add every registered family's declared options (except ``exclude``) to ``parser``; returns their names."""
    from gen_research.registry import load_names
    from gen_research.registry_index import family_options

    load_names()  # every family's declarations, third-party ones included (built-ins from the index: no import)
    groups: dict[tuple[str, ...], Any] = {}
    names = []
    for option, families in family_options():
        if option.name in exclude:
            continue
        key = tuple(families)
        if key not in groups:
            groups[key] = parser.add_argument_group(f"options of {', '.join(families)} (declared by the family)")
        groups[key].add_argument(option.flag, dest=option.name, type=str if option.type is bool else option.type, help=option.help)
        names.append(option.name)
    return names


def check_given_values(args: argparse.Namespace, names: list[str]) -> None:
    """Each given value alone (type, range, choices), before a checkpoint is read."""
    from gen_research.registry_index import family_options

    for option, _ in family_options():
        if option.name in names and getattr(args, option.name) is not None:
            option.check(getattr(args, option.name))


def sampling_plan(model: Any, args: argparse.Namespace, names: list[str], context: Any) -> Any:
    """The given options checked against the loaded model's declaration and rules, then prepared by the family."""
    from gen_research.models.contract import ModelFamily, SamplingPlan, check_sampling_options

    options = check_sampling_options(model, {name: getattr(args, name) for name in names}, context)
    return model.prepare_sampling(options, context) if isinstance(model, ModelFamily) else SamplingPlan(options=options)


__all__ = ["add_family_options", "check_given_values", "register_experiment_families", "sampling_plan"]
