"""Pictures of the curves metrics draw (``Evaluator.curves``): one PNG per curve, never overwriting a file.

A curve is a dict of plain values: ``x`` (a list), ``y`` ({series name: list of the same length}), ``xlabel``,
``ylabel``, ``title``, and what its metric adds. A curve with ``extrapolated`` (fid_infinity's ``fid_vs_n``: FID
against 1/N, ``n`` the subset sizes) is drawn as measured points, the fitted line down to 1/N = 0 and its intercept
marked; any other as lines of each ``y`` series against ``x`` (e.g. alpha_precision_curve).

Plots use matplotlib's object API (``Figure`` + the Agg canvas, as ``sampler_grid/report.py``), never ``pyplot``: no
global backend switch, no display needed. Each file is written whole (gen_research.files.atomic).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError
from gen_research.files.atomic import atomic_open


def curve_file_name(key: str) -> str:
    """``fid_vs_n/classifier-mnist5k`` -> ``fid_vs_n-classifier-mnist5k.png`` (only letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-") + ".png"


def _check_curve(key: str, curve: Any) -> None:
    if not isinstance(curve, dict) or not isinstance(curve.get("x"), (list, tuple)) or not isinstance(curve.get("y"), dict):
        raise GenResearchError(f"curve {key!r} needs an 'x' list and a 'y' dict of series; got {type(curve).__name__}")
    for name, values in curve["y"].items():
        if len(values) != len(curve["x"]):
            raise GenResearchError(f"curve {key!r}: series {name!r} has {len(values)} values for {len(curve['x'])} x values")


def _draw_extrapolation(axis: Any, curve: dict[str, Any]) -> None:
    """Measured points, the fitted line over [0, max x] and the intercept (the extrapolated value) marked."""
    x, measured = curve["x"], next(iter(curve["y"].values()))
    intercept = float(curve["extrapolated"])
    axis.plot(x, measured, "o", label=f"{next(iter(curve['y']))} at N images")
    if "slope" in curve:
        slope = float(curve["slope"])
    else:  # from the "fit" series: a straight line through its end points
        fit = curve["y"].get("fit", measured)
        slope = (fit[-1] - fit[0]) / (x[-1] - x[0]) if x[-1] != x[0] else 0.0
    right = max(x)
    axis.plot([0.0, right], [intercept, intercept + slope * right], "-", color="tab:orange", label="least-squares fit")
    axis.plot([0.0], [intercept], "*", markersize=14, color="tab:red", label=f"extrapolated to 1/N = 0: {intercept:.4g}")
    axis.set_xlim(left=-0.02 * right)
    if curve.get("n"):
        for x_value, y_value, n in list(zip(x, measured, curve["n"]))[:: max(1, len(x) // 5)]:
            axis.annotate(f"N={int(n)}", (x_value, y_value), textcoords="offset points", xytext=(4, 6), fontsize="x-small")


def _draw(curve: dict[str, Any], key: str, handle: Any) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.2), layout="constrained")
    axis = figure.subplots()
    if "extrapolated" in curve:
        _draw_extrapolation(axis, curve)
    else:
        for name, values in curve["y"].items():
            axis.plot(curve["x"], values, marker="o" if len(values) <= 30 else None, markersize=3, label=str(name))
    axis.set_xlabel(str(curve.get("xlabel", "x")))
    axis.set_ylabel(str(curve.get("ylabel", "y")))
    axis.set_title(str(curve.get("title", key)), fontsize="small")
    figure.suptitle(key, fontsize="x-small")  # the curve's key names the extractor, as the metric keys do
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    figure.savefig(handle, format="png", dpi=110)


def plot_curves(curves: dict[str, dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """One PNG per curve under ``out_dir`` (created if missing), named after its key (:func:`curve_file_name`);
    returns the paths written. Refuses, before writing anything, when one of the files already exists."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GenResearchError(f"plots folder {out} is a file; pass a folder")
    targets = {}
    for key, curve in curves.items():
        _check_curve(key, curve)
        targets[key] = out / curve_file_name(key)
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing:
        raise GenResearchError(f"plot {existing[0]} already exists; pass a new or empty plots folder (nothing is overwritten)")
    if len(set(targets.values())) < len(targets):
        raise GenResearchError("two curves map to the same plot file name; give them distinct keys")
    out.mkdir(parents=True, exist_ok=True)
    for key, path in targets.items():
        with atomic_open(path, "wb") as handle:
            _draw(curves[key], key, handle)
    return list(targets.values())


__all__ = ["curve_file_name", "plot_curves"]
