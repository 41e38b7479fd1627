"""Trainer presets: the YAML files in ``configs/trainer/`` (precision, strategy, devices, loggers).

An experiment picks one in its ``defaults:`` (``trainer/cpu``) and another can be layered on the
command line (``--config configs/trainer/ddp-bf16.yaml``). They are registered here so that
``python -m gen_research list presets`` shows them with the description on their first line.
"""

from __future__ import annotations

from pathlib import Path

from gen_research.registry import PRESETS

# configs/ lives at the top of the repository (an editable install keeps it next to the package).
PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "trainer"


def _description(path: Path) -> str:
    first = path.read_text().splitlines()[:1]
    return first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""


for preset_file in sorted(PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []:
    PRESETS.add(preset_file.stem, preset_file, _description(preset_file))
