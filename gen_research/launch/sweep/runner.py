"""Run a sweep's fits one after another and keep a leaderboard that survives a crash.

Each run is a subprocess (its own Lightning, W&B run and run folder), its output in ``<label>/fit.log``.
Its score is the last value of the sweep's metric in the run's ``metrics.csv``, like the W&B summary a
W&B sweep ranks by. A run that exits with an error, or never logs the metric, is recorded as failed and
the sweep goes on. ``leaderboard.csv`` is rewritten (atomically) after every run; shards of one sweep merge their
rows into it under a file lock.
"""

from __future__ import annotations

import csv
import math
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gen_research.files.atomic import atomic_open, file_lock
from gen_research.launch.sweep.spec import SweepFile

RUN_FOLDER_LINE = re.compile(r"^Run folder: (.+)$", re.MULTILINE)
LEADERBOARD = "leaderboard.csv"
FIXED_COLUMNS_AFTER = ("seconds", "run_folder", "note")


@dataclass
class RunRecord:
    """One run of the sweep, as the leaderboard shows it."""

    index: int
    label: str
    assignment: dict[str, Any]
    status: str = "running"
    value: float | None = None
    seconds: float = 0.0
    run_dir: str = ""
    note: str = ""
    log: Path | None = field(default=None, repr=False)


def read_metric(metrics_csv: Path, metric: str) -> tuple[float | None, str]:
    """The last logged value of ``metric`` in a Lightning metrics.csv, or None and why not."""
    if not metrics_csv.is_file():
        return None, f"no {metrics_csv.name} in the run folder (is the csv logger in trainer.logger?)"
    with metrics_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = reader.fieldnames or []
    values = [row[metric] for row in rows if row.get(metric) not in (None, "")]
    if not values:
        logged = sorted(c for c in columns if c not in ("epoch", "step") and any(row.get(c) for row in rows))
        return None, f"metric {metric} was never logged; logged: {', '.join(logged) or 'nothing'}"
    return float(values[-1]), ""


def find_run_dir(log_text: str, label_dir: Path) -> Path | None:
    """The run folder fit printed at its end, else the newest folder with a config.yaml under the run's label."""
    printed = RUN_FOLDER_LINE.findall(log_text)
    if printed:
        return Path(printed[-1].strip())
    candidates = sorted((p.parent for p in label_dir.glob("*/config*.yaml")), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def last_error_line(log_text: str) -> str:
    """The line of a failed run's output most likely to say why (an error line, else the last line)."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"(Error|error:|Exception|Killed)", line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def ranked(records: list[dict[str, Any]], metric: str, goal: str) -> list[dict[str, Any]]:
    """Rows best first by the metric (finished runs), then the others; ``rank`` filled in for the finished ones."""
    def score(row: dict[str, Any]) -> float | None:
        try:
            value = float(row.get(metric, ""))
        except (TypeError, ValueError):
            return None
        return None if math.isnan(value) or row.get("status") != "finished" else value

    sign = -1.0 if goal == "maximize" else 1.0
    finished = sorted((r for r in records if score(r) is not None), key=lambda r: (sign * score(r), str(r["run"])))
    others = sorted((r for r in records if score(r) is None), key=lambda r: str(r["run"]))
    out = []
    for rank, row in enumerate(finished, start=1):
        out.append({**row, "rank": rank})
    out += [{**row, "rank": ""} for row in others]
    return out


def leaderboard_columns(sweep: SweepFile) -> list[str]:
    return ["rank", "run", "status", *(p.name for p in sweep.parameters), sweep.metric, *FIXED_COLUMNS_AFTER]


def record_row(record: RunRecord, sweep: SweepFile) -> dict[str, Any]:
    return {"run": record.label, "status": record.status, **record.assignment,
            sweep.metric: "" if record.value is None else record.value,
            "seconds": round(record.seconds, 1), "run_folder": record.run_dir, "note": record.note}


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write atomically (temp file beside it, fsync, rename): a reader, or another agent merging, never sees half a file."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def merge_leaderboard(path: Path, rows: list[dict[str, Any]], columns: list[str], metric: str, goal: str,
                      shard_pattern: str | None = None) -> None:
    """Merge ``rows`` into the leaderboard at ``path`` by run label (a run's new row replaces its old one, rows of
    other runs are kept) and re-rank. Read, merge and write happen under an exclusive lock on ``<path>.lock``, so
    agents (SLURM array shards) finishing at the same moment never overwrite each other's rows.

    ``shard_pattern``: the shards' own leaderboards (glob beside ``path``), read inside the lock too, so a shard
    killed between writing its own file and merging still gets its rows in at the next merge of any shard. Each
    shard writes its own file before it merges, so these files are never older than the merged rows.
    """
    with file_lock(path):
        merged = {str(row.get("run", "")): row for row in (read_csv(path) if path.is_file() else [])}
        for shard_file in sorted(path.parent.glob(shard_pattern)) if shard_pattern else []:
            merged.update({str(row.get("run", "")): row for row in read_csv(shard_file)})
        merged.update({str(row["run"]): row for row in rows})
        write_csv(path, ranked(list(merged.values()), metric, goal), columns)


class SweepRunner:
    """Runs what a search proposes; ``command_for(label, assignment)`` gives each run's command line."""

    def __init__(self, sweep: SweepFile, search: Any, sweep_dir: Path, command_for: Callable[[str, dict[str, Any]], list[str]],
                 environment_for: Callable[[str], dict[str, str]], shard_suffix: str = "", echo: Callable[[str], None] = print) -> None:
        self.sweep, self.search, self.sweep_dir = sweep, search, sweep_dir
        self.command_for, self.environment_for, self.echo = command_for, environment_for, echo
        self.shard_suffix = shard_suffix
        self.records: list[RunRecord] = []

    @property
    def leaderboard_path(self) -> Path:
        name = f"leaderboard-{self.shard_suffix}.csv" if self.shard_suffix else LEADERBOARD
        return self.sweep_dir / name

    def run(self) -> list[RunRecord]:
        done = 0
        while (proposal := self.search.propose()) is not None:
            index, assignment = proposal
            done += 1
            record = RunRecord(index, f"{self.sweep.name}-{index:03d}", assignment)
            self.records.append(record)
            values = " ".join(f"{name}={value}" for name, value in assignment.items())
            self.echo(f"[{done}/{self.search.total}] {record.label}: {values}")
            try:
                self._execute(record)
            except KeyboardInterrupt:
                record.status, record.note = "interrupted", "stopped by Ctrl-C"
                self.write_leaderboard()
                raise
            self.search.report(index, record.value if record.status == "finished" else None)
            self.write_leaderboard()
            score = f"{self.sweep.metric}={record.value:.6g}" if record.value is not None else record.note
            self.echo(f"    {record.status} in {record.seconds:.0f} s: {score}")
        return self.records

    def _execute(self, record: RunRecord) -> None:
        label_dir = self.sweep_dir / record.label
        label_dir.mkdir(parents=True, exist_ok=True)
        record.log = label_dir / "fit.log"
        command = self.command_for(record.label, record.assignment)
        self.echo(f"    log: {record.log}")
        started = time.monotonic()
        with record.log.open("w") as log:
            log.write("$ " + shlex.join(command) + "\n\n")
            log.flush()
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.environment_for(record.label))
            try:
                returncode = process.wait()
            except KeyboardInterrupt:  # the run got the same Ctrl-C; give it time to stop cleanly
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                record.seconds = time.monotonic() - started
                raise
        record.seconds = time.monotonic() - started
        log_text = record.log.read_text(errors="replace")
        run_dir = find_run_dir(log_text, label_dir)
        record.run_dir = str(run_dir) if run_dir else ""
        if returncode != 0:
            record.status, record.note = "failed", f"exit status {returncode}: {last_error_line(log_text)}"
            return
        if run_dir is None:
            record.status, record.note = "failed", "the run printed no run folder"
            return
        record.value, why = read_metric(run_dir / "metrics.csv", self.sweep.metric)
        record.status, record.note = ("finished", "") if record.value is not None else ("failed", why)

    def write_leaderboard(self) -> Path:
        """This process's leaderboard, and for shards the shared ``leaderboard.csv`` with this shard's rows merged in
        (under a lock: every shard's rows survive, whichever finishes when)."""
        columns = leaderboard_columns(self.sweep)
        rows = ranked([record_row(r, self.sweep) for r in self.records], self.sweep.metric, self.sweep.goal)
        write_csv(self.leaderboard_path, rows, columns)
        if self.shard_suffix:
            merge_leaderboard(self.sweep_dir / LEADERBOARD, rows, columns, self.sweep.metric, self.sweep.goal, "leaderboard-shard-*.csv")
        return self.sweep_dir / LEADERBOARD


def format_table(rows: list[dict[str, Any]], columns: list[str], rounded: tuple[str, ...] = ()) -> str:
    """A plain-text table of leaderboard rows; the ``rounded`` columns to 6 significant digits."""
    def cell(row: dict[str, Any], column: str) -> str:
        text = str(row.get(column, ""))
        try:
            return f"{float(text):.6g}" if column in rounded and text else text
        except ValueError:
            return text

    table = [[cell(row, c) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in table]
    return "\n".join(line.rstrip() for line in lines)
