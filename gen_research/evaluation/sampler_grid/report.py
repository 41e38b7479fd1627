"""What the sampler sweep leaves behind: ``sweep.csv``, ``sweep.json``, plots, sample grids, a W&B run, a printed table.

Plots use matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot``: no global backend switch,
no display needed, nothing left open between calls.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
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


def save_sample_grid(images: Any, path: Path) -> np.ndarray:
    """The first samples of a grid point, ten a row; returns the uint8 grid (W&B wants 0..255, not floats)."""
    from gen_research.files.image_grid import save_grid

    return save_grid(images, path, nrow=min(10, len(images)))


def grid_summary(grid: list[GridPoint]) -> str:
    count = lambda values: len(dict.fromkeys(values))  # noqa: E731
    samplers, steps, scales = (count(getattr(p, a) for p in grid) for a in ("sampler", "steps", "guidance_scale"))
    return f"{samplers} sampler(s) x {steps} step count(s) x {scales} guidance scale(s) = {len(grid)} points"


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({key for row in rows for key in row} - set(SETTING_COLUMNS))


def find_key(rows: list[dict[str, Any]], metric: str) -> str | None:
    """The column of ``metric`` (``fid`` -> ``fid/classifier-mnist5k``), whatever the extractor; None if not computed."""
    return next((key for key in metric_columns(rows) if key.split("/", 1)[0] == metric), None)


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_table(out: Path, rows: list[dict[str, Any]], context: dict[str, str]) -> tuple[Path, Path]:
    """``sweep.csv`` (one row per grid point) and ``sweep.json`` (context, column docs, the same rows; nan -> null)."""
    columns = [*SETTING_COLUMNS, *metric_columns(rows)]
    csv_path, json_path = out / "sweep.csv", out / "sweep.json"
    with atomic_open(csv_path, "w", newline="", encoding="utf-8") as handle:  # all or nothing (gen_research.files.atomic)
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    payload = {"context": context, "columns": COLUMN_DOCS,
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


def log_to_wandb(out: Path, experiment: str, rows: list[dict[str, Any]], context: dict[str, str], plots: list[Path],
                 grids: dict[str, np.ndarray]) -> str:
    """The table, plots and sample grids as one W&B run saved in ``out/wandb``; returns the mode it ran in.

    The mode is decided like the training logger's (``WANDB_MODE`` honoured, else online only with an API key
    and a reachable server, else offline: ``wandb sync out/wandb/offline-run-*`` uploads later).
    """
    from gen_research.training.loggers import choose_wandb_mode

    mode = choose_wandb_mode("auto")
    if mode == "disabled":
        return mode
    import wandb

    columns = [*SETTING_COLUMNS, *metric_columns(rows)]
    run = wandb.init(project="gen_research", dir=str(out), name=f"{experiment}/{out.name}", job_type="sampler-sweep",
                     mode=mode, config=context, settings=wandb.Settings(console="off", silent=True))
    try:
        media: dict[str, Any] = {"sampler_sweep/table": wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])}
        media.update({f"sampler_sweep/{path.stem}": wandb.Image(str(path)) for path in plots})
        media.update({f"sampler_sweep/samples/{slug}": wandb.Image(grid, caption=slug) for slug, grid in grids.items()})
        run.log(media)
    finally:
        run.finish()
    return mode


def format_value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict[str, Any]], context: dict[str, str]) -> None:
    """Context lines, then one line per grid point (the evaluate command's print style)."""
    for key, value in context.items():
        print(f"{key:>10}: {value}")
    columns = [*SETTING_COLUMNS, *metric_columns(rows)]
    cells = [[format_value(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    print("  ".join(f"{c:<{w}}" for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for line in cells:
        print("  ".join(f"{v:<{w}}" for v, w in zip(line, widths)))
    sys.stdout.flush()


def write_outputs(out: Path, rows: list[dict[str, Any]], context: dict[str, str], grids: dict[str, np.ndarray], experiment: str) -> None:
    """Table files, plots (skipped with a printed note when their metrics are missing), W&B; prints table and paths."""
    csv_path, json_path = write_table(out, rows, context)
    plots, notes = [], []
    for name, plot in (("fid_vs_nfe.png", plot_fid_vs_nfe), ("guidance.png", plot_guidance)):
        note = plot(rows, out / name, context.get("generated", ""))
        if note is None:
            plots.append(out / name)
        else:
            notes.append(note)
    mode = log_to_wandb(out, experiment, rows, context, plots, grids)
    print_table(rows, context)
    for note in notes:
        print(f"note: {note}")
    print(f"Table: {csv_path} and {json_path}")
    if plots:
        print(f"Plots: {', '.join(str(p) for p in plots)}")
    print(f"Samples: {out / 'samples'} ({len(grids)} grids)")
    print("W&B: off (disabled)" if mode == "disabled" else f"W&B: {mode} run in {out / 'wandb'}")
    sys.stdout.flush()


__all__ = ["COLUMN_DOCS", "SETTING_COLUMNS", "find_key", "log_to_wandb", "plot_fid_vs_nfe", "plot_guidance", "print_table",
           "save_sample_grid", "write_outputs", "write_table"]
