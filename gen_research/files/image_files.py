"""Listing image files in folders: plain os/pathlib, no torch, so light commands (``rate``) start at once."""

from __future__ import annotations

import os
from pathlib import Path

from gen_research.errors import GenResearchError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


def _visible(name: str) -> bool:
    return not name.startswith(".")  # skip .ipynb_checkpoints, .DS_Store and the like


def find_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursively), sorted so the file order never depends on the OS."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        found += [os.path.join(dirpath, f) for f in filenames if _visible(f) and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def folder_images(folder: str, what: str) -> list[str]:
    """The images of a folder given as option ``what`` (e.g. ``--real``), or a one-line error."""
    if not Path(folder).is_dir():
        raise GenResearchError(f"{what} folder not found: {folder}; pass an existing folder of images")
    paths = find_images(folder)
    if not paths:
        raise GenResearchError(f"{what} folder {folder} holds no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    return paths


__all__ = ["IMAGE_EXTENSIONS", "find_images", "folder_images"]
