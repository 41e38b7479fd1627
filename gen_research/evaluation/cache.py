"""On-disk cache of reference (real-image) extractor outputs, keyed by everything that changes them.

A file is reused only when every key part is identical: dataset, split, number of images,
preprocessing/resize, the extractor's ``cache_key()`` (name, weights sha256, input handling) and a
fingerprint of every reference image (see :func:`gen_research.evaluation.sources.dataset_fingerprint`). The file
name is a readable prefix (extractor + dataset) plus the sha256 of the canonical JSON of all key parts; a
``.json`` sidecar lists the parts for humans.

A file is trusted only when its format version is this code's and the sha256 of its tensors (names, dtypes,
shapes and bytes, stored in the file) matches: a flipped bit or a file of another version is reported in one
warning naming the file and recomputed (then rewritten), never used, never an error. Writes are atomic
(:mod:`gen_research.files.atomic`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sysconfig
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gen_research.files.digest import hash_tensor
from gen_research.files.atomic import atomic_write_text, atomic_write_with
from gen_research.errors import GenResearchError

CACHE_ENV = "GEN_RESEARCH_CACHE"
DEFAULT_ROOT = "~/.cache/gen_research/reference"
FORMAT_VERSION = "2"  # 2: whole-set fingerprint in the key, content checksum in the file


def canonical_key(key_parts: dict[str, Any]) -> dict[str, str]:
    """Key parts as a plain str -> str dict (values stringified), so equal keys always hash equally."""
    if not isinstance(key_parts, dict) or not key_parts:
        raise ValueError("key_parts must be a non-empty dict")
    return {str(k): str(v) for k, v in key_parts.items()}


def key_digest(key_parts: dict[str, Any]) -> str:
    text = json.dumps(canonical_key(key_parts), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def outputs_digest(outputs: dict[str, Tensor]) -> str:
    """sha256 of a set of tensors: each name, dtype, shape and the raw bytes of its values, in name order."""
    digest = hashlib.sha256()
    for name in sorted(outputs):
        digest.update(f"{name}|".encode())
        hash_tensor(digest, outputs[name])
    return digest.hexdigest()


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit] or "x"


def _forbidden_roots() -> list[Path]:
    """Installed-code folders a cache must never write into."""
    roots = {Path(__file__).resolve().parents[1]}  # the gen_research package itself
    for name in ("purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(Path(path).resolve())
    return sorted(roots)


class ReferenceCache:
    """Reference outputs (``{"features": [N, D], "logits": [N, K]}``) stored under ``root``.

    ``root``: the argument, else ``$GEN_RESEARCH_CACHE``, else ``~/.cache/gen_research/reference``.
    A root inside site-packages or inside the installed gen_research package is refused.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        chosen = root if root is not None else (os.environ.get(CACHE_ENV) or DEFAULT_ROOT)
        self.root = Path(chosen).expanduser().resolve()
        parts = set(self.root.parts)
        inside = next((r for r in _forbidden_roots() if self.root == r or r in self.root.parents), None)
        if inside is not None or parts & {"site-packages", "dist-packages"}:
            where = inside or "site-packages"
            raise GenResearchError(
                f"reference cache folder {self.root} is inside installed code ({where}); "
                f"set {CACHE_ENV} to a folder of your own, e.g. {Path(DEFAULT_ROOT).expanduser()}"
            )
        self._warned: set[str] = set()

    # ---- naming -------------------------------------------------------------------------------------
    def path_for(self, key_parts: dict[str, Any]) -> Path:
        parts = canonical_key(key_parts)
        prefix = "_".join(_slug(parts[k]) for k in ("extractor", "dataset") if k in parts) or "reference"
        return self.root / f"{prefix}_{key_digest(parts)}.pt"

    @staticmethod
    def sidecar_for(path: Path) -> Path:
        return path.with_suffix(".json")

    # ---- reading ------------------------------------------------------------------------------------
    def load(self, key_parts: dict[str, Any]) -> dict[str, Tensor] | None:
        """The stored outputs for exactly these key parts, or None (missing, unreadable, another format version
        or a checksum mismatch: the caller recomputes and saves over the file)."""
        path = self.path_for(key_parts)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict):
                raise ValueError("not a reference cache file")
            if str(payload.get("format")) != FORMAT_VERSION:
                self._warn(f"reference cache file {path} has format version {payload.get('format')!r}, this version reads "
                           f"{FORMAT_VERSION!r}; recomputing")
                return None
            if payload.get("key_parts") != canonical_key(key_parts):
                raise ValueError("key parts stored in the file differ from its name")
            outputs = payload["outputs"]
            if not isinstance(outputs, dict) or not outputs or not all(
                isinstance(k, str) and isinstance(v, Tensor) for k, v in outputs.items()
            ):
                raise ValueError("no tensors")
            if len({len(v) for v in outputs.values()}) != 1:
                raise ValueError("outputs of different lengths")
            if payload.get("sha256") != outputs_digest(outputs):
                self._warn(f"reference cache file {path} is damaged (sha256 of its statistics does not match the one "
                           "stored when it was written); recomputing")
                return None
        except Exception as error:  # truncated / foreign / tampered file: recompute rather than crash
            self._warn(f"ignoring unreadable reference cache file {path} ({type(error).__name__}: {error}); recomputing")
            return None
        return outputs

    def _warn(self, message: str) -> None:
        """One warning per damaged file and cache object (the same file is read once per set and evaluation)."""
        if message not in self._warned:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            self._warned.add(message)

    # ---- writing ------------------------------------------------------------------------------------
    def save(self, key_parts: dict[str, Any], outputs: dict[str, Tensor]) -> Path:
        """Store ``outputs`` with their sha256 (atomically: temp file in the same folder, fsync, rename) and a JSON
        sidecar; replaces a damaged or outdated file of the same key."""
        parts = canonical_key(key_parts)
        if not outputs or not all(isinstance(v, Tensor) for v in outputs.values()):
            raise ValueError("outputs must be a non-empty dict of tensors")
        path = self.path_for(parts)
        stored = {str(k): v.detach().cpu().contiguous() for k, v in outputs.items()}
        checksum = outputs_digest(stored)
        payload = {"format": FORMAT_VERSION, "key_parts": parts, "outputs": stored, "sha256": checksum}
        atomic_write_with(path, lambda handle: torch.save(payload, handle))
        sidecar = {
            "file": path.name,
            "format": FORMAT_VERSION,
            "key_sha256": key_digest(parts),
            "key_parts": parts,
            "outputs": {k: list(v.shape) for k, v in stored.items()},
            "outputs_sha256": checksum,
        }
        atomic_write_text(self.sidecar_for(path), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        return path


__all__ = ["CACHE_ENV", "DEFAULT_ROOT", "FORMAT_VERSION", "ReferenceCache", "canonical_key", "key_digest", "outputs_digest"]
