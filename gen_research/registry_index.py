"""The index of built-in registered names, so that ``list``, ``sample --help`` and the one-line config errors answer
in well under 2 seconds instead of importing torch, lightning and every family first (about 10 s on 2 cores).

``registry_index.json`` (next to this file) holds, for gen_research's own registries, each entry's name, module,
qualified name and description, the samplers each family declares (``list samplers``) and every family's sampling
options (``sample --help``), with a fingerprint of the source it was built from: every ``.py`` file of the packages
that register something. It is used only when the fingerprint matches the installed source, so an edited checkout
is never described wrongly; it is then merely slower until the index is rebuilt with::

    python -m gen_research.registry_index          # rebuild (tests/test_registry_index.py fails while it is stale)

Third-party families (entry points) and ``$GEN_RESEARCH_IMPORTS`` modules are not indexed: they are imported as
before (gen_research/registry.py: load_names).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
INDEX_PATH = PACKAGE / "registry_index.json"
REBUILD = "python -m gen_research.registry_index"
# Where registrations, family declarations and the docstrings they describe themselves with live.
INDEXED_PACKAGES = ("models", "data", "evaluation", "training", "sampling")
INDEXED_FILES = ("registry.py",)
NO_INDEX_ENV = "GEN_RESEARCH_NO_INDEX"
NOT_INDEXED_KINDS = ("presets",)  # YAML files in configs/trainer/, registered without importing anything heavy


def source_fingerprint() -> str:
    """sha256 of the paths and contents of every file the index describes."""
    files = [PACKAGE / name for name in INDEXED_FILES]
    for package in INDEXED_PACKAGES:
        files += sorted((PACKAGE / package).rglob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_index() -> dict[str, Any]:
    """Import the built-in packages and describe what they registered. Run it in a fresh process (``main`` does):
    anything registered before (a test's family, an imported third-party one) would be indexed too."""
    from gen_research.models.contract import declared_options, family_classes, sampler_table
    from gen_research.registry import REGISTRIES, import_builtin_packages

    import_builtin_packages()
    registries = {
        kind: [{"name": e.name, "module": e.obj.__module__, "qualname": e.obj.__qualname__, "description": e.description}
               for e in registry]
        for kind, registry in REGISTRIES.items() if kind not in NOT_INDEXED_KINDS
    }
    options = {name: [option_record(o) for o in declared_options(cls)] for name, cls in family_classes()}
    return {
        "fingerprint": source_fingerprint(),
        "registries": registries,
        "samplers": [list(row) for row in sampler_table()],
        "sampling_options": {name: records for name, records in options.items() if records},
    }


def option_record(option: Any) -> dict[str, Any]:
    """A SamplingOption as JSON (its type by name)."""
    from dataclasses import asdict

    record = asdict(option)
    record["type"] = option.type.__name__
    record["choices"] = list(option.choices) if option.choices is not None else None
    return record


def read_index() -> dict[str, Any] | None:
    """The index when it describes the installed source, else None (also when ``$GEN_RESEARCH_NO_INDEX`` is set:
    the registries are then filled by importing, as the index's tests compare)."""
    if os.environ.get(NO_INDEX_ENV):
        return None
    try:
        index = json.loads(INDEX_PATH.read_text())
    except (OSError, ValueError):
        return None
    return index if index.get("fingerprint") == source_fingerprint() else None


_loaded: dict[str, Any] | None = None


def fill_from_index() -> bool:
    """Add the indexed built-in entries to the registries (not imported until used); False without a matching index."""
    global _loaded
    index = _loaded or read_index()
    if index is None:
        return False
    from gen_research.config import presets  # noqa: F401  (registers configs/trainer/*.yaml; imports nothing heavy)
    from gen_research.registry import REGISTRIES

    for kind, entries in index["registries"].items():
        for entry in entries:
            REGISTRIES[kind].add_indexed(entry["name"], entry["module"], entry["qualname"], entry["description"])
    _loaded = index
    return True


def sampler_rows() -> list[tuple[str, str, str]]:
    """(family, sampler, description) of every registered family (``list samplers``), importing no indexed one."""
    from gen_research.registry import MODELS

    rows = []
    for entry in MODELS:
        if entry.imported or _loaded is None:
            rows += [(entry.name, name, text) for name, text in getattr(entry.obj, "SAMPLERS", {}).items()]
        else:
            rows += [tuple(row) for row in _loaded["samplers"] if row[0] == entry.name]
    return rows


def family_options() -> list[tuple[Any, list[str]]]:
    """Each sampling option once (the first declaration, families in name order) with the families declaring it:
    ``sample --help``; as gen_research.models.contract.options_of_all_families, importing no indexed family."""
    from gen_research.models.sampling_option import TYPES, SamplingOption
    from gen_research.registry import MODELS

    seen: dict[str, tuple[Any, list[str]]] = {}
    for entry in MODELS:
        if entry.imported or _loaded is None:
            options = tuple(getattr(entry.obj, "SAMPLING_OPTIONS", ()))
        else:
            options = tuple(SamplingOption(**{**r, "type": TYPES[r["type"]], "choices": tuple(r["choices"]) if r["choices"] is not None else None})
                            for r in _loaded["sampling_options"].get(entry.name, ()))
        for option in options:
            seen.setdefault(option.name, (option, []))[1].append(entry.name)
    return list(seen.values())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    index = build_index()
    text = json.dumps(index, indent=1, sort_keys=True) + "\n"
    if "--check" in args:
        fresh = INDEX_PATH.is_file() and INDEX_PATH.read_text() == text
        print("registry index is up to date" if fresh else f"registry index is stale: run {REBUILD}")
        return 0 if fresh else 1
    INDEX_PATH.write_text(text)
    counts = ", ".join(f"{len(v)} {k}" for k, v in index["registries"].items())
    print(f"wrote {INDEX_PATH} ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
