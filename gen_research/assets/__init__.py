"""Files shipped inside the package (package data in the wheel), named from YAML or the command line as
``package://NAME``, e.g. ``feature_weights: package://classifier-mnist5k.ckpt``.

They resolve to this folder wherever gen_research is installed (an editable checkout or a wheel), so a shipped
experiment that names one runs from any directory. The repository's ``assets/`` is a link to this folder.
"""

from __future__ import annotations

from pathlib import Path

from gen_research.errors import GenResearchError

PACKAGE_SCHEME = "package://"
ASSETS_DIR = Path(__file__).resolve().parent


def shipped_assets() -> list[str]:
    """Names of the files that ship with the package (what ``package://NAME`` can name)."""
    return sorted(p.name for p in ASSETS_DIR.iterdir() if p.is_file() and not p.name.startswith(("_", ".")) and p.suffix != ".py")


def resolve_asset(value: str | None) -> str | None:
    """``package://NAME`` -> the absolute path of the shipped file NAME; any other value is returned unchanged."""
    if value is None or not str(value).startswith(PACKAGE_SCHEME):
        return value
    name = str(value)[len(PACKAGE_SCHEME):].strip("/")
    path = ASSETS_DIR / name
    if not name or "/" in name or "\\" in name or not path.is_file():
        raise GenResearchError(f"{value}: no such file ships with gen_research; package:// names one of: {', '.join(shipped_assets())}")
    return str(path)


__all__ = ["ASSETS_DIR", "PACKAGE_SCHEME", "resolve_asset", "shipped_assets"]
