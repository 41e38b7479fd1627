"""Crafted files for the safe-loading tests: unpickling them runs code (it creates a marker file)."""

from pathlib import Path

import torch


class CreatesFile:
    """Pickles as a call ``open(path, "w")``: whoever unpickles it with weights_only=False creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_payload_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a Lightning checkpoint, plus one object whose unpickling creates ``marker``."""
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 1, "epoch": 0, "hyper_parameters": {}, "x": CreatesFile(marker)}, path)
    return path
