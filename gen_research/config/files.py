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

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from gen_research.errors import GenResearchError
from gen_research.registry import (
    CALLBACKS,
    DATA,
    LOGGERS,
    MODELS,
    Registry,
    all_class_registries,
    check_class_path,
    is_allowed_class_path,
    module_names,
    resolve_class_path,
)

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
    data = resolve_relative_paths(read_yaml(path), path)  # paths in a file are relative to that file
    if isinstance(data.get(STAGES_KEY), dict):  # two-stage experiments (config/stages.py): stage files are relative too
        data[STAGES_KEY] = {option: _resolved(file, path.resolve().parent) if isinstance(file, str) else file
                            for option, file in data[STAGES_KEY].items()}
    if data.get(IMPORTS_KEY):  # the modules the user trusts: imported now, so the names they register resolve
        from gen_research.registry import import_user_modules

        import_user_modules(experiment_imports(data, path), f"'{IMPORTS_KEY}' in {path}")
    defaults = data.pop("defaults", None) or []
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise GenResearchError(f"'defaults' in {path} must be a list of config pieces, e.g. [model/vae, data/mnist5k]")
    merged: dict[str, Any] = {}
    for entry in defaults:
        merged = merge(merged, load_experiment(find_piece(entry, path), _chain + (resolved_path,)))
    config = resolve_short_names(merge(merged, resolve_short_names(data)))
    return config if _chain else check_experiment_class_paths(config, path)  # the composed file, before anything imports it


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
    imports: tuple[str, ...] = ()  # what the --config files allow, for the class paths of the overrides
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
            config = load_experiment(path)
            imports += experiment_imports(config, path)
            config.pop(STAGES_KEY, None)  # resolved before parsing (gen_research/config/stages.py); not a CLI option
            out += ["--config", yaml.safe_dump(config, sort_keys=False)]
        else:
            out.append(f"{flag}={_resolve_flag_value(flag, value)}")
        i += 1
    check_argument_class_paths(out, imports)
    return out, experiment_name


# ---- class paths a config may import (docs/security.md) ------------------------------------------------
# jsonargparse imports every class path it meets while parsing: in a class_path key, and in a plain dotted
# string given to a class-typed option (``--trainer.profiler=pkg.Cls``) or a config file it loads for one.
# All of them are checked here, before LightningCLI parses anything.
IMPORTS_KEY = "imports"
STAGES_KEY = "stages"  # option path -> the experiment that trains it first (gen_research/config/stages.py)
# Options that only ever hold plain strings: their values are never imported.
PLAIN_STRING_KEYS = frozenset({IMPORTS_KEY, STAGES_KEY, "name", "runs_root", "ckpt_path", "seed_everything", "trainer.default_root_dir"})
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_MAX_FILE_DEPTH = 4


def experiment_imports(config: dict[str, Any], path: Path | str) -> tuple[str, ...]:
    """The module prefixes an experiment allows with its top-level ``imports: [my_package, ...]``."""
    return module_names(config.get(IMPORTS_KEY) or [], f"'{IMPORTS_KEY}' in {path}")


def check_experiment_class_paths(config: dict[str, Any], path: Path | str) -> dict[str, Any]:
    """Refuse a composed experiment naming a class outside the allowed modules; returns it unchanged."""
    check_class_paths(config, f"in {path}", experiment_imports(config, path))
    return config


def check_class_paths(node: Any, where: str, imports: tuple[str, ...], key_path: str = "", _depth: int = 0) -> None:
    """Walk a config (nested init_args, lists, config files it names) and check every class path in it."""
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{key_path}.{key}" if key_path else str(key)
            if child in PLAIN_STRING_KEYS:
                continue
            if key == "class_path" and isinstance(value, str):
                if "." in value:  # a short name without a dot was resolved (or refused) by the registry already
                    check_class_path(value.strip(), f"{child} {where}", imports)
            else:
                check_class_paths(value, where, imports, child, _depth)
    elif isinstance(node, list):
        for item in node:
            check_class_paths(item, where, imports, key_path, _depth)
    elif isinstance(node, str):
        _check_string(node.strip(), where, imports, key_path, _depth)


def _check_string(text: str, where: str, imports: tuple[str, ...], key_path: str, depth: int) -> None:
    """A plain string jsonargparse may import: a dotted name whose top module exists, or a config file it loads."""
    if text.endswith(_CONFIG_SUFFIXES) and Path(text).is_file():
        if depth >= _MAX_FILE_DEPTH:
            raise GenResearchError(f"config files name each other more than {_MAX_FILE_DEPTH} deep ({text} {where}); inline them")
        try:
            nested = yaml.safe_load(Path(text).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return  # jsonargparse cannot load it as a config either
        check_class_paths(nested, f"in {text} ({key_path} {where})", imports, key_path, depth + 1)
    elif _DOTTED_NAME.fullmatch(text) and not Path(text).exists():
        if not is_allowed_class_path(text, imports) and _top_module_exists(text):
            check_class_path(text, f"{key_path or 'value'} {where}", imports)


def _top_module_exists(dotted: str) -> bool:
    """Whether the first part names an importable module; finding it runs no module code."""
    try:
        return importlib.util.find_spec(dotted.split(".", 1)[0]) is not None
    except (ImportError, ValueError):
        return True  # cannot tell: check it


def check_argument_class_paths(args: list[str], imports: tuple[str, ...]) -> None:
    """Check the class paths in ``--key=value`` / ``--key value`` overrides (``--config`` YAML is checked on load):
    ``--model=pkg.Cls``, ``--model.class_path=pkg.Cls``, ``--trainer.callbacks+={"class_path": ...}``, nested
    ``init_args``, ``--trainer.profiler=pkg.Cls``, a config file given as a value. ``--imports=[pkg]`` adds to ``imports``."""
    pairs = _flag_values(args)
    for key, value in pairs:
        if key == IMPORTS_KEY:
            imports = imports + module_names(_parse_inline(value), f"--{IMPORTS_KEY}")
    for key, value in pairs:
        if key in PLAIN_STRING_KEYS:
            continue
        where = f"in --{key}"
        if key == "class_path" or key.endswith(".class_path"):
            if "." in value:
                check_class_path(value.strip(), where, imports)
        else:
            check_class_paths(_parse_inline(value), where, imports, key)


def _flag_values(args: list[str]) -> list[tuple[str, str]]:
    """(key, value) of every option with a value, without the ``--config`` YAML strings."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            continue
        if arg in CONFIG_FLAGS:
            i += 1
            continue
        flag, has_value, value = arg.partition("=")
        if not has_value:
            if i >= len(args) or args[i].startswith("-"):
                continue
            value, i = args[i], i + 1
        pairs.append((flag.lstrip("-").removesuffix("+"), value))
    return pairs


def _parse_inline(value: str) -> Any:
    """Inline YAML/JSON (``{...}``, ``[...]``) as data; anything else stays a string."""
    if value.lstrip().startswith(("{", "[")):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


# ---- paths named in an experiment file -----------------------------------------------------------------
# A relative path written in a config file means the same file wherever the command is run: it is relative to
# the folder of the file that names it (a piece under configs/ resolves against its own folder). Which values
# are paths is decided by the key, not by guessing from the value: the keys in PATH_KEYS and keys ending in
# PATH_SUFFIXES (class_path excepted). Output locations (runs_root, save_dir, dirpath, cache_dir, default_root_dir) are not among
# them: runs are written where the user stands. Values given on the command line stay relative to the working
# directory, as in any shell command. ``package://NAME`` names a file shipped with gen_research
# (gen_research/assets/, e.g. package://classifier-mnist5k.ckpt) and is left for the loader to resolve.
PATH_KEYS = frozenset({"root", "folder", "feature_weights", "weights", "init_from", "ckpt_path"})
PATH_SUFFIXES = ("_path", "_file", "_ckpt", "_weights", "_folder")
OUTPUT_KEYS = frozenset({"runs_root", "save_dir", "dirpath", "cache_dir", "default_root_dir"})
NOT_PATH_KEYS = OUTPUT_KEYS | {"class_path"}  # class_path is an import path
_NOT_PATHS = frozenset({"last", "best", "hpc", "registry", ""})  # ckpt_path keywords


def is_path_key(key: str) -> bool:
    """Whether a config key holds an input path (resolved against the file that names it)."""
    return key not in NOT_PATH_KEYS and (key in PATH_KEYS or key.endswith(PATH_SUFFIXES))


def resolve_relative_paths(node: Any, config_file: Path) -> Any:
    """``node`` (one file's mapping) with the relative values of path keys made absolute against the file's folder."""
    base = config_file.resolve().parent
    if isinstance(node, list):
        return [resolve_relative_paths(item, config_file) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if isinstance(key, str) and is_path_key(key) and isinstance(value, str):
            out[key] = _resolved(value, base)
        else:
            out[key] = resolve_relative_paths(value, config_file)
    return out


def _resolved(value: str, base: Path) -> str:
    text = value.strip()
    if text in _NOT_PATHS or "://" in text or text.startswith(("~", "$")) or Path(text).is_absolute():
        return value  # keywords, package:// and URLs, home- or variable-relative and absolute paths are kept
    return os.path.normpath(base / text)

