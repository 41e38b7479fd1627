"""What a grid evaluation leaves behind: a table (``sweep.csv``/``sweep.json`` for the sampler sweep, ``psi.csv``/
``psi.json`` for the truncation grid), plots, sample grids, a W&B run, a printed table. A :class:`TableLayout`
says which columns are the grid's settings and how the files and W&B keys are named; the rest is shared.

Plots use matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot``: no global backend switch,
no display needed, nothing left open between calls.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gen_research.files.atomic import atomic_open, atomic_write_text
from gen_research.evaluation.sampler_grid.grid import GridPoint

SETTING_COLUMNS = ("sampler", "steps", "guidance_scale", "eta", "nfe", "nfe_weighted", "sampling_seconds")
COLUMN_DOCS = {
    "sampler": "diffusion sampler (diffusers scheduler)",
    "steps": "sampling steps asked of the scheduler",
    "guidance_scale": "classifier-free guidance scale (1 = plain conditional; unconditional models: their default)",
    "eta": "DDIM eta (passed to every sampler; only ddim uses it)",
    "nfe": "calls of the denoising network in one sampling trajectory, counted by a forward hook; a classifier-free "
           "guidance step runs conditional and unconditional predictions as one doubled batch and counts as 1 call",
    "nfe_weighted": "network rows per sample in one trajectory: like nfe, but a doubled guidance batch counts 2 (the compute cost)",
    "sampling_seconds": "wall-clock seconds in model.sample for all images of the grid point (features and metrics excluded)",
    "<metric>/<extractor>": "the evaluate command's metrics, keyed by the feature extractor that produced them",
}
GUIDANCE_METRICS = ("fid", "precision", "recall", "is", "accuracy")  # panels of guidance.png, in this order
PSI_COLUMN_DOCS = {
    "truncation_psi": "truncation psi the samples were drawn with (z scaled towards its mean; 1 = off, the fair setting)",
    "<metric>/<extractor>": COLUMN_DOCS["<metric>/<extractor>"],
}


@dataclass(frozen=True)
class TableLayout:
    """How one kind of grid is written: ``<stem>.csv``/``<stem>.json``, its setting columns (first, in this order;
    every other key of a row is a metric) and docs, and its W&B key prefix and job type."""

    stem: str
    settings: tuple[str, ...]
    docs: dict[str, str]
    wandb_prefix: str
    job_type: str


SWEEP_LAYOUT = TableLayout("sweep", SETTING_COLUMNS, COLUMN_DOCS, "sampler_sweep", "sampler-sweep")
PSI_LAYOUT = TableLayout("psi", ("truncation_psi",), PSI_COLUMN_DOCS, "psi_grid", "psi-grid")
Plot = Callable[[list[dict[str, Any]], Path, str], "str | None"]  # (rows, path, subtitle) -> None, or why it was skipped


def save_sample_grid(images: Any, path: Path) -> np.ndarray:
    """The first samples of a grid point, ten a row; returns the uint8 grid (W&B wants 0..255, not floats)."""
    from gen_research.files.image_grid import save_grid

    return save_grid(images, path, nrow=min(10, len(images)))


def grid_summary(grid: list[GridPoint]) -> str:
    count = lambda values: len(dict.fromkeys(values))  # noqa: E731
    samplers, steps, scales = (count(getattr(p, a) for p in grid) for a in ("sampler", "steps", "guidance_scale"))
    return f"{samplers} sampler(s) x {steps} step count(s) x {scales} guidance scale(s) = {len(grid)} points"


def metric_columns(rows: list[dict[str, Any]], settings: Sequence[str] = SETTING_COLUMNS) -> list[str]:
    return sorted({key for row in rows for key in row} - set(settings))


def find_key(rows: list[dict[str, Any]], metric: str, settings: Sequence[str] = SETTING_COLUMNS) -> str | None:
    """The column of ``metric`` (``fid`` -> ``fid/classifier-mnist5k``), whatever the extractor; None if not computed."""
    return next((key for key in metric_columns(rows, settings) if key.split("/", 1)[0] == metric), None)


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_table(out: Path, rows: list[dict[str, Any]], context: dict[str, str], layout: TableLayout = SWEEP_LAYOUT,
                provenance: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """``<stem>.csv`` (one row per grid point) and ``<stem>.json`` (context, provenance (gen_research.evaluation.provenance),
    column docs, the same rows; nan -> null)."""
    columns = [*layout.settings, *metric_columns(rows, layout.settings)]
    csv_path, json_path = out / f"{layout.stem}.csv", out / f"{layout.stem}.json"
    with atomic_open(csv_path, "w", newline="", encoding="utf-8") as handle:  # all or nothing (gen_research.files.atomic)
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    payload = {"context": context, "provenance": provenance or {}, "columns": layout.docs,
               "rows": [{key: _json_value(row.get(key)) for key in columns} for row in rows]}
    atomic_write_text(json_path, json.dumps(payload, indent=2) + "\n")
    return csv_path, json_path


def _figure(panels: int) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * panels + 1.0, 3.6), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Any, path: Path, subtitle: str) -> None:
    if subtitle:  # how many samples: FID depends on it
        figure.suptitle(subtitle, fontsize="small")
    figure.savefig(path, dpi=110)


def plot_fid_vs_nfe(rows: list[dict[str, Any]], path: Path, subtitle: str = "") -> str | None:
    """FID against NFE (log scale), a line per sampler (per sampler and guidance scale when several). None = skipped."""
    key = find_key(rows, "fid")
    if key is None:
        return "fid_vs_nfe.png skipped: no fid in --metrics"
    several_scales = len({row["guidance_scale"] for row in rows}) > 1
    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        label = f"{row['sampler']}, w={row['guidance_scale']:g}" if several_scales else row["sampler"]
        lines[label].append((row["nfe"], row[key]))
    figure, (axis,) = _figure(1)
    for label, points in lines.items():
        points.sort()
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    nfes = sorted({row["nfe"] for row in rows})
    axis.set_xscale("log")
    axis.set_xticks(nfes, [str(n) for n in nfes])
    axis.minorticks_off()
    axis.set_xlabel("network evaluations per sample (NFE)")
    axis.set_ylabel(f"{key} (lower is better)")
    axis.set_title(f"{key} vs NFE")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    _save(figure, path, subtitle)
    return None


def plot_guidance(rows: list[dict[str, Any]], path: Path, subtitle: str = "") -> str | None:
    """FID, precision, recall, IS and accuracy (those computed) against guidance scale, a line per sampler and steps."""
    keys = [key for key in (find_key(rows, m) for m in GUIDANCE_METRICS) if key is not None]
    if not keys:
        return "guidance.png skipped: none of fid, precision, recall, is, accuracy in --metrics"
    scales = sorted({row["guidance_scale"] for row in rows})
    if len(scales) < 2:
        return "guidance.png skipped: one guidance scale only (pass e.g. --guidance-scales 1,2,4)"
    figure, axes = _figure(len(keys))
    for axis, key in zip(axes, keys):
        lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for row in rows:
            lines[f"{row['sampler']}, {row['steps']} steps"].append((row["guidance_scale"], row[key]))
        for label, points in lines.items():
            points.sort()
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        axis.set_xticks(scales, [f"{s:g}" for s in scales])
        axis.set_xlabel("guidance scale")
        axis.set_title(key)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    _save(figure, path, subtitle)
    return None


def plot_metrics_vs_psi(rows: list[dict[str, Any]], path: Path, subtitle: str = "") -> str | None:
    """FID (one panel) and precision/recall (another, 0..1) against truncation psi: the fidelity/diversity trade-off."""
    settings = PSI_LAYOUT.settings
    fid = find_key(rows, "fid", settings)
    rates = [key for key in (find_key(rows, m, settings) for m in ("precision", "recall")) if key is not None]
    if fid is None and not rates:
        return "metrics_vs_psi.png skipped: none of fid, precision, recall in --metrics"
    ordered = sorted(rows, key=lambda row: row["truncation_psi"])
    psis = [row["truncation_psi"] for row in ordered]
    figure, axes = _figure(int(fid is not None) + int(bool(rates)))
    panels = iter(axes)
    if fid is not None:
        axis = next(panels)
        axis.plot(psis, [row[fid] for row in ordered], marker="o")
        axis.set_ylabel(f"{fid} (lower is better)")
        axis.set_title(f"{fid} vs truncation psi")
    if rates:
        axis = next(panels)
        for key in rates:
            axis.plot(psis, [row[key] for row in ordered], marker="o", label=key)
        axis.set_ylim(-0.02, 1.02)
        axis.set_title("precision / recall vs truncation psi")
        axis.legend(fontsize="small")
    for axis in axes:
        axis.set_xticks(psis, [f"{psi:g}" for psi in psis])
        axis.set_xlabel("truncation psi (1 = off)")
        axis.grid(alpha=0.3)
    _save(figure, path, subtitle)
    return None


def log_to_wandb(out: Path, experiment: str, rows: list[dict[str, Any]], context: dict[str, str], plots: list[Path],
                 grids: dict[str, np.ndarray], layout: TableLayout = SWEEP_LAYOUT) -> str:
    """The table, plots and sample grids as one W&B run saved in ``out/wandb``; returns the mode it ran in.

    The mode is decided like the training logger's (``WANDB_MODE`` honoured, else online only with an API key
    and a reachable server, else offline: ``wandb sync out/wandb/offline-run-*`` uploads later).
    """
    from gen_research.training.loggers import choose_wandb_mode

    mode = choose_wandb_mode("auto")
    if mode == "disabled":
        return mode
    import wandb

    columns = [*layout.settings, *metric_columns(rows, layout.settings)]
    prefix = layout.wandb_prefix
    run = wandb.init(project="gen_research", dir=str(out), name=f"{experiment}/{out.name}", job_type=layout.job_type,
                     mode=mode, config=context, settings=wandb.Settings(console="off", silent=True))
    try:
        media: dict[str, Any] = {f"{prefix}/table": wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])}
        media.update({f"{prefix}/{path.stem}": wandb.Image(str(path)) for path in plots})
        media.update({f"{prefix}/samples/{slug}": wandb.Image(grid, caption=slug) for slug, grid in grids.items()})
        run.log(media)
    finally:
        run.finish()
    return mode


def format_value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict[str, Any]], context: dict[str, str], settings: Sequence[str] = SETTING_COLUMNS) -> None:
    """Context lines, then one line per grid point (the evaluate command's print style)."""
    for key, value in context.items():
        print(f"{key:>10}: {value}")
    columns = [*settings, *metric_columns(rows, settings)]
    cells = [[format_value(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    print("  ".join(f"{c:<{w}}" for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for line in cells:
        print("  ".join(f"{v:<{w}}" for v, w in zip(line, widths)))
    sys.stdout.flush()


def write_outputs(out: Path, rows: list[dict[str, Any]], context: dict[str, str], grids: dict[str, np.ndarray], experiment: str,
                  layout: TableLayout = SWEEP_LAYOUT, plot_files: Sequence[tuple[str, Plot]] | None = None,
                  provenance: dict[str, Any] | None = None) -> None:
    """Table files, plots (skipped with a printed note when their metrics are missing), W&B; prints table and paths.
    ``plot_files``: (file name, plot function) pairs; the sampler sweep's two plots by default."""
    csv_path, json_path = write_table(out, rows, context, layout, provenance)
    plots, notes = [], []
    if plot_files is None:
        plot_files = (("fid_vs_nfe.png", plot_fid_vs_nfe), ("guidance.png", plot_guidance))
    for name, plot in plot_files:
        note = plot(rows, out / name, context.get("generated", ""))
        if note is None:
            plots.append(out / name)
        else:
            notes.append(note)
    mode = log_to_wandb(out, experiment, rows, {**context, "provenance": provenance or {}}, plots, grids, layout)
    print_table(rows, context, layout.settings)
    for note in notes:
        print(f"note: {note}")
    print(f"Table: {csv_path} and {json_path}")
    if plots:
        print(f"Plots: {', '.join(str(p) for p in plots)}")
    print(f"Samples: {out / 'samples'} ({len(grids)} grids)")
    print("W&B: off (disabled)" if mode == "disabled" else f"W&B: {mode} run in {out / 'wandb'}")
    sys.stdout.flush()


__all__ = ["COLUMN_DOCS", "PSI_LAYOUT", "SETTING_COLUMNS", "SWEEP_LAYOUT", "TableLayout", "find_key", "log_to_wandb", "plot_fid_vs_nfe",
           "plot_guidance", "plot_metrics_vs_psi", "print_table", "save_sample_grid", "write_outputs", "write_table"]
