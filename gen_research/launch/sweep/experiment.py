"""Check a sweep's parameters against its experiment before any run starts.

The sweep's own command line is parsed in this process by the same parser fit uses (``defaults:`` pieces,
registry short names, class signatures), with ``--print_config`` so that nothing is built or written.
First without parameters, giving the resolved config whose dotted keys a parameter must name; then with
sample values (every category, both ends of each distribution), so a value fit would reject fails now
instead of hours into the sweep.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import itertools
import os
from pathlib import Path
from typing import Any

import yaml

from gen_research.errors import GenResearchError
from gen_research.launch.sweep.command import build_command, fit_arguments
from gen_research.launch.sweep.spec import Parameter, SweepFile

MAX_VALUE_PROBES = 24  # each parse takes about 0.3 s


def resolved_config(fit_args: list[str]) -> dict[str, Any]:
    """The config ``fit`` would use for these arguments, as ``fit --print_config`` prints it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gen_research.config.files import expand_argv
    from gen_research.commands.lightning import GenResearchCLI
    from gen_research.registry import load_builtins

    load_builtins()
    expanded, _ = expand_argv(fit_args)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            GenResearchCLI(args=["fit", *expanded, "--print_config"])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise GenResearchError(f"fit rejects the sweep's command line (exit status {exit_.code}); run it by hand to see why") from None
        return yaml.safe_load(printed.getvalue()) or {}
    raise GenResearchError("fit --print_config printed nothing for the sweep's command; run the command by hand to see why")


def config_keys(node: Any, prefix: str = "", leaves_only: bool = False) -> list[str]:
    """Every dotted key of a nested config (inner nodes such as model.init_args too, unless ``leaves_only``)."""
    if not isinstance(node, dict):
        return []
    keys = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        inner = config_keys(value, dotted + ".", leaves_only)
        keys += ([] if leaves_only and inner else [dotted]) + inner
    return keys


def close_keys(name: str, keys: list[str]) -> list[str]:
    """The keys a misspelt or shortened parameter name most probably meant: whole-name matches, else same-leaf ones."""
    scores = {key: difflib.SequenceMatcher(None, name, key).ratio() for key in keys}
    best = max(scores.values(), default=0.0)
    if best >= 0.75:
        return sorted((key for key, score in scores.items() if score >= best - 0.02), key=lambda k: -scores[k])[:3]
    leaf = name.rsplit(".", 1)[-1]
    near = set(difflib.get_close_matches(leaf, [key.rsplit(".", 1)[-1] for key in keys], n=1, cutoff=0.75))
    return sorted(key for key in keys if key.rsplit(".", 1)[-1] in near)[:3]


def _experiment_label(sweep: SweepFile) -> str:
    return " + ".join(sweep.experiment_configs) or "the experiment"


def _check_config_files(sweep: SweepFile) -> None:
    for config in sweep.experiment_configs:
        if not Path(config).is_file():
            raise GenResearchError(
                f"{sweep.path}: the command's --config {config} is not found from {Path.cwd()}; "
                "run the sweep from the folder its paths are relative to (the repository root), as wandb agent would"
            )


def _probe_assignments(parameters: list[Parameter]) -> list[tuple[dict[str, Any], str | None]]:
    """All parameters at their first value, then one parameter changed at a time: (assignment, changed name)."""
    base = {p.name: p.probe_values()[0] for p in parameters}
    probes: list[tuple[dict[str, Any], str | None]] = [(base, None)]
    extra = ((p.name, value) for p in parameters for value in p.probe_values()[1:])
    for name, value in itertools.islice(extra, MAX_VALUE_PROBES):
        probes.append(({**base, name: value}, name))
    return probes


def check_against_experiment(sweep: SweepFile) -> dict[str, Any]:
    """Raise a one-line error for a parameter the experiment lacks or a value it rejects; return its config."""
    _check_config_files(sweep)
    base_args = fit_arguments(build_command(sweep, {}))
    try:
        config = resolved_config(base_args)
    except GenResearchError as error:
        raise GenResearchError(f"{sweep.path}: fit rejects the sweep's command line before any parameter is set: {error}") from None
    loggers = (config.get("trainer") or {}).get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    if not any(isinstance(logger, dict) and str(logger.get("class_path", "")).endswith("CSVLogger") for logger in loggers):
        raise GenResearchError(
            f"{sweep.path}: the sweep reads {sweep.metric} from each run's metrics.csv, but {_experiment_label(sweep)} "
            "has no csv logger; add {class_path: csv} to trainer.logger (the trainer/base.yaml preset has it)"
        )
    keys = config_keys(config)
    for parameter in sweep.parameters:
        if parameter.name not in keys:
            close = close_keys(parameter.name, config_keys(config, leaves_only=True))
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise GenResearchError(
                f"{sweep.path}: parameter {parameter.name} is not in the config of {_experiment_label(sweep)}; {hint}"
                f"see python -m gen_research fit --config {sweep.experiment_configs[-1]} --print_config"
            )
    for assignment, changed in _probe_assignments(sweep.parameters):
        try:
            resolved_config(fit_arguments(build_command(sweep, assignment)))
        except GenResearchError as error:
            names = [changed] if changed else [p.name for p in sweep.parameters]
            values = ", ".join(f"{name}={assignment[name]!r}" for name in names)
            raise GenResearchError(f"{sweep.path}: fit rejects {values}: {error}") from None
    return config
