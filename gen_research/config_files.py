"""Experiment YAML files: composition with ``defaults:``, registry short names, and argv expansion.

An experiment file may list reusable pieces that it builds on; its own keys override theirs::

    defaults: [model/vae, data/mnist5k, trainer/cpu]   # looked up next to the file, then in configs/
    model:
      init_args: {beta: 4.0}

Each ``--config FILE`` on the command line is expanded here (pieces merged, short names such as
``class_path: vae`` turned into import paths) and handed to LightningCLI as a YAML string, so the
usual LightningCLI rules apply afterwards: later ``--config`` files and ``--key=value`` overrides win.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gen_research.errors import GenResearchError
from gen_research.registry import CALLBACKS, DATA, LOGGERS, MODELS, Registry, all_class_registries, resolve_class_path

CONFIG_FLAGS = ("--config", "-c")

# Which registry a class_path under a given top-level key is looked up in (for "did you mean" hints).
_REGISTRY_FOR_KEY: dict[str, tuple[Registry, ...]] = {
    "model": (MODELS,),
    "data": (DATA,),
    "trainer.callbacks": (CALLBACKS,),
    "trainer.logger": (LOGGERS,),
}


def read_yaml(path: Path) -> dict[str, Any]:
    """Load one YAML mapping, turning every way it can be wrong into a one-line error."""
    if not path.is_file():
        raise GenResearchError(f"config file not found: {path}; check the path given to --config")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise GenResearchError(f"malformed YAML in {path}{where}: {error.problem}; fix the file's syntax") from None
    except yaml.YAMLError as error:
        raise GenResearchError(f"malformed YAML in {path}: {error}; fix the file's syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GenResearchError(f"{path} must hold a mapping of keys (model:, data:, trainer: ...), not {type(data).__name__}")
    return data


def find_piece(entry: str, including_file: Path) -> Path:
    """Resolve a ``defaults`` entry: next to the including file first, then in the nearest ``configs/`` above it."""
    names = [entry] if entry.endswith((".yaml", ".yml")) else [entry + ".yaml", entry + ".yml", entry]
    search_dirs = [including_file.parent] + [parent / "configs" for parent in including_file.resolve().parents]
    for directory in search_dirs:
        for name in names:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    raise GenResearchError(
        f"defaults entry {entry!r} in {including_file} not found next to it or in a configs/ folder above it; "
        "fix the name (e.g. model/vae) or the path"
    )


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two config mappings. Lists are replaced; a changed class_path replaces the whole node."""
    if "class_path" in override and base.get("class_path") not in (None, override["class_path"]):
        return dict(override)
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_experiment(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a config file with its ``defaults`` pieces merged in and short names resolved."""
    resolved_path = path.resolve()
    if resolved_path in _chain:
        raise GenResearchError(f"defaults of {path} include themselves in a loop; remove the cycle")
    data = read_yaml(path)
    defaults = data.pop("defaults", None) or []
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise GenResearchError(f"'defaults' in {path} must be a list of config pieces, e.g. [model/vae, data/mnist5k]")
    merged: dict[str, Any] = {}
    for entry in defaults:
        merged = merge(merged, load_experiment(find_piece(entry, path), _chain + (resolved_path,)))
    return resolve_short_names(merge(merged, resolve_short_names(data)))


def resolve_short_names(node: Any, key_path: str = "") -> Any:
    """Replace registered short names in every ``class_path`` with full import paths."""
    if isinstance(node, list):
        return [resolve_short_names(item, key_path) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        child_path = f"{key_path}.{key}" if key_path else key
        if key == "class_path" and isinstance(value, str):
            out[key] = resolve_class_path(value, _REGISTRY_FOR_KEY.get(key_path, all_class_registries()))
        else:
            out[key] = resolve_short_names(value, child_path)
    return out


def _resolve_flag_value(flag: str, value: str) -> str:
    """``--model vae``, ``--data.class_path=mnist5k``, ``--trainer.callbacks+=ema``,
    ``--trainer.logger=[{class_path: csv}]``: short names become import paths."""
    key = flag.lstrip("-").removesuffix("+").removesuffix(".class_path")
    if key not in _REGISTRY_FOR_KEY or value.strip().lower() in ("true", "false", "null", "none", "~", ""):
        return value  # e.g. --trainer.logger=false
    if value.lstrip().startswith(("{", "[")):  # YAML/JSON given inline
        try:
            node = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise GenResearchError(f"{flag}: value is not valid YAML ({error.problem if hasattr(error, 'problem') else error})") from None
        items = node if isinstance(node, list) else [node]
        resolved = [resolve_short_names(item, key) if isinstance(item, dict) else item for item in items]
        return json.dumps(resolved if isinstance(node, list) else resolved[0])
    return resolve_class_path(value, _REGISTRY_FOR_KEY[key])


def expand_argv(argv: list[str]) -> tuple[list[str], str | None]:
    """Expand ``--config`` files into YAML strings and short names in class flags.

    Returns the new argv and the experiment name (stem of the last config file given by the user).
    """
    out: list[str] = []
    experiment_name = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, has_inline, inline_value = arg.partition("=")
        is_config = flag in CONFIG_FLAGS
        takes_value = is_config or flag.lstrip("-").removesuffix("+").removesuffix(".class_path") in _REGISTRY_FOR_KEY
        if not (flag.startswith("-") and takes_value):
            out.append(arg)
            i += 1
            continue
        if has_inline:
            value = inline_value
        elif i + 1 < len(argv):
            value = argv[i + 1]
            i += 1
        else:
            out.append(arg)
            i += 1
            continue
        if is_config:
            path = Path(value)
            experiment_name = path.stem
            out += ["--config", yaml.safe_dump(load_experiment(path), sort_keys=False)]
        else:
            out.append(f"{flag}={_resolve_flag_value(flag, value)}")
        i += 1
    return out, experiment_name
