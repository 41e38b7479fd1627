"""Provenance: what a set of numbers was measured with, written beside the numbers, and checked before comparing.

Two FIDs are comparable only when the extractor (and its weights), the resize mode, the number of generated and
reference images, the reference set (and its content), the seed, the sampler settings and the metric options are
the same, and the libraries computing them agree. Every result records these (``evaluate --json`` under the key
``provenance``, ``sweep.json`` / ``psi.json``, the evaluation callback's logged hyperparameters), and
``evaluate --compare A.json B.json`` refuses, in one line naming the field, to put numbers side by side that
differ in any of them unless ``--force``.

What was evaluated (the checkpoint, the folder of samples) is recorded under ``subject`` and is, of course, not
compared; nor is the time it was written (``created``), nor the list of metrics computed beside (``metrics``), nor
the reference set's description (``reference.dataset``, ``reference.preprocessing``: a data module's settings or a
folder's path): its content fingerprint, split and size are compared, so the same images read by ``evaluate`` and
by the evaluation callback of a run agree.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError

FORMAT = 1
NOT_COMPARED = ("subject", "created", "metrics", "reference.dataset", "reference.preprocessing", "train_reference.dataset",
                "train_reference.preprocessing")
# The packages whose code computes or feeds the numbers (a version that is not installed is recorded as null).
LIBRARIES = ("gen_research", "torch", "torchvision", "torchmetrics", "torch-fidelity", "numpy", "scipy", "scikit-learn",
             "pillow", "transformers", "diffusers", "lightning")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _plain(value: Any) -> Any:
    """JSON-safe: tuples as lists, non-finite floats as strings, anything else unknown as its str()."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def build_provenance(extractor: Any, *, options: Any, metrics: list[str], num_generated: int | None, num_reference: int | None,
                     reference: dict[str, Any], sampling: dict[str, Any] | None = None, num_train: int | None = None,
                     train_reference: dict[str, Any] | None = None, subject: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of one evaluation.

    ``extractor``: the FeatureExtractor (its ``cache_key()`` names its weights hash, resize and input handling);
    ``options``: the EvalOptions (seed, KID subsets, k, ...); ``reference``: ``{"dataset", "split", "fingerprint"}`` of
    the real set; ``sampling``: the sampler settings the generated set was drawn with (sampler, steps, guidance,
    truncation; ``{}`` for folders, whose settings are unknown here); ``subject``: what was evaluated (not compared).
    """
    option_values = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    seed = option_values.pop("seed", None)
    record = {
        "format": FORMAT,
        "extractor": {"name": extractor.name, **extractor.cache_key()},
        "resize_mode": getattr(extractor, "resize_mode", None),
        "metrics": sorted(metrics),
        "num_generated": num_generated,
        "num_reference": num_reference,
        "reference": reference,
        "seed": seed,
        "sampling": dict(sorted((sampling or {}).items())),
        "metric_options": option_values,
        "versions": library_versions(),
        "subject": subject or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if num_train is not None or train_reference is not None:
        record["num_train"] = num_train
        record["train_reference"] = train_reference
    return _plain(record)


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, value in a, value in b) for every compared provenance field that differs (missing counts as differing)."""
    flat_a, flat_b = flatten(a), flatten(b)
    fields = sorted(set(flat_a) | set(flat_b))
    missing = object()
    out = []
    for name in fields:
        if any(name == skip or name.startswith(skip + ".") for skip in NOT_COMPARED):
            continue
        value_a, value_b = flat_a.get(name, missing), flat_b.get(name, missing)
        if value_a != value_b:
            out.append((name, None if value_a is missing else value_a, None if value_b is missing else value_b))
    return out


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def read_result(path: str) -> tuple[dict[str, float], dict[str, Any] | None]:
    """(metrics, provenance or None) of an ``evaluate --json`` file; one-line errors for anything else."""
    try:
        payload = json.loads(Path(path).read_text())
    except OSError as error:
        raise GenResearchError(f"cannot read {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise GenResearchError(f"{path} is not JSON ({error.msg} at line {error.lineno}); pass files written by evaluate --json") from None
    if not isinstance(payload, dict) or "rows" in payload:
        what = "a sampler-sweep or truncation-grid table (compare its rows in the file itself)" if isinstance(payload, dict) else "not a JSON object"
        raise GenResearchError(f"{path} is {what}; --compare takes files written by evaluate --json")
    provenance = payload.get("provenance")
    metrics = {k: v for k, v in payload.items() if k != "provenance" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return metrics, provenance if isinstance(provenance, dict) else None


def check_comparable(paths: list[str], records: list[dict[str, Any] | None], force: bool) -> list[str]:
    """Raise (one line, naming the field) unless every record agrees with the first, or ``force``; with ``force``,
    return the differences as printable warnings."""
    warnings = []
    for path, record in zip(paths, records):
        if record is None:
            line = f"{path} has no provenance (written before results recorded it, or not by evaluate --json)"
            if not force:
                raise GenResearchError(f"{line}: its numbers cannot be checked for comparability; pass --force to compare anyway")
            warnings.append(line)
    first_path, first = paths[0], records[0]
    for path, record in zip(paths[1:], records[1:]):
        if first is None or record is None:
            continue
        diffs = differences(first, record)
        if not diffs:
            continue
        shown = "; ".join(f"{name} ({_short(a)} vs {_short(b)})" for name, a, b in diffs[:3])
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        line = f"{first_path} and {path} differ in {shown}{more}"
        if not force:
            raise GenResearchError(f"{line}: their numbers are not comparable; pass --force to put them side by side anyway")
        warnings.append(line)
    return warnings


def compare_results(paths: list[str], force: bool = False) -> int:
    """``evaluate --compare``: print the metrics of several result files side by side, after the provenance check."""
    if len(paths) < 2:
        raise GenResearchError("--compare needs at least two result files (evaluate --json outputs)")
    loaded = [read_result(path) for path in paths]
    warnings = check_comparable(paths, [record for _, record in loaded], force)
    for line in warnings:
        print(f"warning (--force): {line}")
    keys = sorted(set().union(*(metrics for metrics, _ in loaded)))
    names = [Path(path).name for path in paths]
    width = max([len("metric")] + [len(k) for k in keys])
    columns = [max(12, len(name)) for name in names]
    print(f"{'metric':<{width}}  " + "  ".join(f"{name:>{w}}" for name, w in zip(names, columns)))
    print(f"{'-' * width}  " + "  ".join("-" * w for w in columns))
    for key in keys:
        cells = [f"{metrics[key]:.6g}" if key in metrics else "-" for metrics, _ in loaded]
        print(f"{key:<{width}}  " + "  ".join(f"{cell:>{w}}" for cell, w in zip(cells, columns)))
    first = loaded[0][1]
    if first is not None and not warnings:
        print(f"comparable: same extractor ({first['extractor']['name']}), {first.get('num_generated')} generated vs "
              f"{first.get('num_reference')} reference images, seed {first.get('seed')}, same sampling and library versions")
    return 0


__all__ = ["FORMAT", "build_provenance", "check_comparable", "compare_results", "differences", "flatten", "library_versions", "read_result"]
