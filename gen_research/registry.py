"""Registries: short names for models, data, feature extractors, metrics, callbacks, loggers, presets.

A family registers itself with a decorator::

    @MODELS.register("vae")
    class VAE(AutoencoderBase): ...

and experiment YAMLs refer to it as ``class_path: vae`` (full import paths keep working). This module
imports nothing heavy; :func:`load_builtins` imports the packages whose decorators fill the registries.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from typing import Any, Callable, Iterator, TypeVar

from gen_research.errors import GenResearchError

T = TypeVar("T")


class Entry:
    """A registered name: the object, its description, and where it lives.

    An entry read from the index of built-ins (gen_research/registry_index.py) knows its module and qualified name
    but has not imported them: ``obj`` imports the module on first use, so listing names and resolving short names
    in a config cost no import of torch, lightning or a family."""

    __slots__ = ("name", "description", "_obj", "_module", "_qualname")

    def __init__(self, name: str, obj: Any, description: str, module: str | None = None, qualname: str | None = None) -> None:
        self.name, self.description, self._obj = name, description, obj
        self._module = module if module is not None else getattr(obj, "__module__", None)
        self._qualname = qualname if qualname is not None else getattr(obj, "__qualname__", None)

    @classmethod
    def indexed(cls, name: str, module: str, qualname: str, description: str) -> Entry:
        return cls(name, _NOT_IMPORTED, description, module, qualname)

    @property
    def imported(self) -> bool:
        return self._obj is not _NOT_IMPORTED

    @property
    def obj(self) -> Any:
        if self._obj is _NOT_IMPORTED:
            value: Any = importlib.import_module(self._module)
            for part in self._qualname.split("."):
                value = getattr(value, part)
            self._obj = value
        return self._obj

    @property
    def class_path(self) -> str:
        return f"{self._module}.{self._qualname}"


_NOT_IMPORTED = object()


def _first_doc_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


class Registry:
    """A name -> object table whose unknown-name errors list the closest registered names."""

    def __init__(self, kind: str, description: str) -> None:
        self.kind = kind
        self.description = description
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        """Decorator: register a class (or function) under ``name``; description defaults to its docstring."""

        def decorate(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorate

    def add(self, name: str, obj: Any, description: str | None = None) -> None:
        entry = Entry(name, obj, description or _first_doc_line(obj))
        existing = self._entries.get(name)
        if existing is not None:
            same = existing.obj is obj if existing.imported else existing.class_path == entry.class_path
            if not same:
                raise ValueError(f"{self.kind} name {name!r} is already registered to {existing.class_path}")
        self._entries[name] = entry

    def add_indexed(self, name: str, module: str, qualname: str, description: str) -> None:
        """A built-in entry from the index (gen_research/registry_index.py), imported when first used."""
        if name not in self._entries:
            self._entries[name] = Entry.indexed(name, module, qualname, description)

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise GenResearchError(self.unknown_name_message(name)) from None

    def unknown_name_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(self._entries))}"
        return f"unknown {self.kind} {name!r}; {hint} (python -m gen_research list {self.kind}s)"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def name_of(self, obj: Any) -> str | None:
        """The registered name of ``obj`` (a class or instance), if any."""
        cls = obj if isinstance(obj, type) else type(obj)
        path = f"{cls.__module__}.{cls.__qualname__}"
        return next((e.name for e in self._entries.values() if (e.obj is cls if e.imported else e.class_path == path)), None)


MODELS = Registry("model", "LightningModules, one per model family")
DATA = Registry("datamodule", "LightningDataModules yielding dict batches of named fields (image in [-1, 1], label, ...)")
FEATURES = Registry("feature", "feature extractors that metrics are computed on")
METRICS = Registry("metric", "evaluation metrics (torchmetrics Metric subclasses)")
CALLBACKS = Registry("callback", "Lightning callbacks: EMA, sample grids, evaluation")
LOGGERS = Registry("logger", "experiment loggers (W&B, CSV)")
PRESETS = Registry("preset", "trainer presets: precision, strategy, devices (configs/trainer/*.yaml)")

REGISTRIES: dict[str, Registry] = {r.kind + "s": r for r in (MODELS, DATA, FEATURES, METRICS, CALLBACKS, LOGGERS, PRESETS)}

# Packages whose import runs the @register decorators. Registry -> packages is the one allowed direction.
BUILTIN_PACKAGES = (
    "gen_research.sampling",
    "gen_research.evaluation.extractors",
    "gen_research.evaluation.specs",
    "gen_research.training.callbacks",
    "gen_research.training.loggers",
    "gen_research.config.presets",
)
# Discovered, not listed: every module of these packages is imported, so a new family is one new folder under
# models/ (and a new data module one new file under data/), with no list of imports to edit.
DISCOVERED_PACKAGES = ("gen_research.models", "gen_research.data")
# Third-party families: a package declares ``[project.entry-points."gen_research.families"] my_family = "my_pkg.models"``
# and installing it is enough (the entry point's module is imported; its decorators register its classes).
ENTRY_POINT_GROUP = "gen_research.families"
_imported_user_modules: set[str] = set()


def discover(package_name: str) -> list[str]:
    """Import every module and subpackage of ``package_name`` (recursively); returns their names."""
    import pkgutil

    package = importlib.import_module(package_name)
    names = [info.name for info in pkgutil.walk_packages(package.__path__, package_name + ".")]
    for name in names:
        importlib.import_module(name)
    return names


def load_builtins() -> None:
    """Fill every registry: the built-in packages, the discovered families and data modules, installed
    third-party families (entry points) and the modules named by ``$GEN_RESEARCH_IMPORTS``."""
    import_builtin_packages()
    import_third_party()


def import_builtin_packages() -> None:
    """Import gen_research's own registering packages (what the index of built-ins is built from)."""
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)
    for package in DISCOVERED_PACKAGES:
        discover(package)


def import_third_party() -> None:
    """Import the installed third-party families (entry points) and the modules of ``$GEN_RESEARCH_IMPORTS``."""
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        import_user_modules((entry_point.value.partition(":")[0],), f"entry point {entry_point.name!r} ({ENTRY_POINT_GROUP})")
    import_user_modules(env_imports(), f"${IMPORTS_ENV}")


def load_names() -> None:
    """Fill every registry with names at once: from the index of built-ins (gen_research/registry_index.py) when it
    matches the installed source, each entry importing its module when first used; third-party families and
    ``$GEN_RESEARCH_IMPORTS`` are imported as by :func:`load_builtins`. Without a matching index this is
    :func:`load_builtins` (correct, only slower: about 10 s on a 2-core CPU instead of a fraction of a second)."""
    from gen_research.registry_index import fill_from_index

    if not fill_from_index():
        import_builtin_packages()
    import_third_party()


def import_user_modules(names: tuple[str, ...], where: str) -> None:
    """Import the modules a user trusts by listing them (an experiment's ``imports:``, $GEN_RESEARCH_IMPORTS, an entry
    point), so the families and data modules they register have short names. Only the module named is imported (a
    package's ``__init__`` imports what it registers). A name that is no module is left to the class-path check, which
    treats it as a prefix (docs/security.md)."""
    import importlib.util

    for name in names:
        if name in _imported_user_modules:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            importlib.import_module(name)
            _imported_user_modules.add(name)


def all_class_registries() -> tuple[Registry, ...]:
    return (MODELS, DATA, CALLBACKS, LOGGERS, FEATURES, METRICS)


def resolve_class_path(value: str, registries: tuple[Registry, ...] | None = None) -> str:
    """Turn a registered short name into its full import path; dotted paths pass through unchanged."""
    if "." in value:
        return value
    searched = registries or all_class_registries()
    for registry in searched:
        if value in registry:
            return registry.entry(value).class_path
    # Unknown: report against the most relevant registry (the first one searched).
    raise GenResearchError(searched[0].unknown_name_message(value))


# ---- which class paths a config may name ------------------------------------------------------------
# A class_path is imported (and so runs module code) when the config is parsed. Only these modules, the
# registered classes, and the modules the user lists (an experiment's ``imports:``, $GEN_RESEARCH_IMPORTS)
# may be named; see docs/security.md.
TRUSTED_MODULES = (
    "gen_research",
    "torch",
    "lightning",
    "lightning_fabric",
    "pytorch_lightning",
    "diffusers",
    "transformers",
    "torchmetrics",
)
IMPORTS_ENV = "GEN_RESEARCH_IMPORTS"
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def module_names(value: Any, where: str) -> tuple[str, ...]:
    """A list of module prefixes (``imports:`` or $GEN_RESEARCH_IMPORTS), checked to be dotted names."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise GenResearchError(f"{where} must be a list of module names, e.g. [my_package, other_package.models]")
    names = tuple(v.strip() for v in value if v.strip())
    bad = [name for name in names if not _MODULE_NAME.fullmatch(name)]
    if bad:
        raise GenResearchError(f"{where}: {bad[0]!r} is not a module name; list importable module prefixes such as my_package")
    return names


def env_imports() -> tuple[str, ...]:
    """The module prefixes allowed by ``$GEN_RESEARCH_IMPORTS`` (comma-separated)."""
    raw = os.environ.get(IMPORTS_ENV, "")
    return module_names(raw.split(","), f"${IMPORTS_ENV}") if raw.strip() else ()


def is_allowed_class_path(class_path: str, imports: tuple[str, ...] = ()) -> bool:
    """Registered classes, the trusted libraries and the listed modules (a prefix matches whole name parts)."""
    prefixes = TRUSTED_MODULES + env_imports() + tuple(imports)  # a malformed $GEN_RESEARCH_IMPORTS is reported always
    if any(entry.class_path == class_path for registry in all_class_registries() for entry in registry):
        return True
    return any(class_path == prefix or class_path.startswith(prefix + ".") for prefix in prefixes)


def check_class_path(class_path: str, where: str, imports: tuple[str, ...] = ()) -> None:
    """Refuse (one line) a class path outside the allowed modules, before anything imports it."""
    if is_allowed_class_path(class_path, imports):
        return
    package = class_path.split(".", 1)[0]
    raise GenResearchError(
        f"class path {class_path!r} ({where}) is not imported: only registered names, gen_research, torch, lightning, "
        f"diffusers, transformers, torchmetrics and listed modules are; if you trust {package}, add `imports: [{package}]` "
        f"to the experiment file or set {IMPORTS_ENV}={package} (docs/security.md)"
    )
