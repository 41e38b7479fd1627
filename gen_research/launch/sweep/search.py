"""Which parameter values each run gets: grid and random as W&B defines them, bayes with Optuna's TPE.

A search hands out ``(index, assignment)`` pairs and is told each run's metric. ``Shard(i, K)`` splits one
sweep over K independent workers (a SLURM array): grid points i, i+K, i+2K, ...; random and bayes runs
i, i+K, ... of ``count`` with a seed per shard. Indices are global, so shards never name two runs alike.
Bayes shards can share one Optuna study through a journal file, so each learns from all finished runs.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError
from gen_research.launch.sweep.spec import Parameter, SweepFile, value_key

OPTUNA_PRIMITIVES = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``total`` (``--shard index/total``)."""

    index: int = 0
    total: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if text is None:
            return cls()
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
            raise GenResearchError(f"--shard {text!r} is not i/K with 0 <= i < K, e.g. --shard 0/4 (SLURM: $SLURM_ARRAY_TASK_ID/4)")
        return cls(int(match.group(1)), int(match.group(2)))

    def indices(self, count: int) -> list[int]:
        """The global run indices below ``count`` that belong to this shard."""
        return list(range(self.index, count, self.total))

    @property
    def suffix(self) -> str:
        return f"shard-{self.index}-of-{self.total}" if self.total > 1 else ""


def grid_points(sweep: SweepFile) -> list[dict[str, Any]]:
    """The Cartesian product in W&B's order: parameters sorted by name, the last one varying fastest."""
    names = [p.name for p in sweep.parameters]
    seen: set[tuple[str, ...]] = set()
    points = []
    for values in itertools.product(*(p.grid_values() for p in sweep.parameters)):
        key = tuple(value_key(v) for v in values)
        if key not in seen:
            seen.add(key)
            points.append(dict(zip(names, values)))
    return points


class GridSearch:
    """Every grid point (the first ``count`` if given), this shard's share of them."""

    def __init__(self, sweep: SweepFile, count: int | None, shard: Shard) -> None:
        points = grid_points(sweep)
        self.grid_size = len(points)
        points = points[:count] if count else points
        self._queue = [(i, points[i]) for i in shard.indices(len(points))]
        self.total = len(self._queue)

    def propose(self) -> tuple[int, dict[str, Any]] | None:
        return self._queue.pop(0) if self._queue else None

    def report(self, index: int, value: float | None) -> None:
        """Grid search does not learn from results."""


class RandomSearch:
    """Each parameter drawn from its W&B distribution (``Parameter.quantile`` of a uniform draw), seeded."""

    def __init__(self, sweep: SweepFile, count: int, shard: Shard, seed: int) -> None:
        self.parameters = sweep.parameters
        self._indices = shard.indices(count)
        self.total = len(self._indices)
        self._rng = random.Random(seed + shard.index)

    def _uniform(self) -> float:
        u = 0.0
        while u == 0.0:  # quantiles need u in (0, 1)
            u = self._rng.random()
        return u

    def propose(self) -> tuple[int, dict[str, Any]] | None:
        if not self._indices:
            return None
        return self._indices.pop(0), {p.name: p.quantile(self._uniform()) for p in self.parameters}

    def report(self, index: int, value: float | None) -> None:
        """Random search does not learn from results."""


def suggest(trial: Any, parameter: Parameter) -> Any:
    """A W&B distribution as an Optuna suggestion (same support and prior as far as Optuna can express it)."""
    s, kind, name = parameter.settings, parameter.distribution, parameter.name
    if kind == "constant":
        return s["value"]
    if kind in ("categorical", "categorical_w_probabilities"):
        values = s["values"]
        if all(isinstance(v, OPTUNA_PRIMITIVES) for v in values) and len({value_key(v) for v in values}) == len(values):
            return trial.suggest_categorical(name, values)
        return values[trial.suggest_categorical(name, list(range(len(values))))]  # lists/dicts: by position
    if kind == "int_uniform":
        return trial.suggest_int(name, s["min"], s["max"])
    if kind in ("uniform", "q_uniform"):
        value = trial.suggest_float(name, s["min"], s["max"])
    elif kind in ("log_uniform_values", "inv_log_uniform_values", "q_log_uniform_values"):
        value = trial.suggest_float(name, s["min"], s["max"], log=True)  # W&B's inverse variant has the same support
    elif kind in ("log_uniform", "q_log_uniform"):
        value = trial.suggest_float(name, math.exp(s["min"]), math.exp(s["max"]), log=True)
    elif kind == "inv_log_uniform":
        value = trial.suggest_float(name, math.exp(-s["max"]), math.exp(-s["min"]), log=True)
    else:  # normal, log-normal, beta (unbounded or shaped priors): TPE over the quantile, mapped through W&B's ppf
        return parameter.quantile(trial.suggest_float(f"{name}:quantile", 1e-6, 1 - 1e-6))
    q = s.get("q")
    return (round(value / q) * q if not isinstance(q, int) else int(round(value / q) * q)) if kind.startswith("q_") else value


class BayesSearch:
    """Optuna's TPE sampler (seeded per shard); minimize or maximize from the sweep's metric goal."""

    def __init__(self, sweep: SweepFile, count: int, shard: Shard, seed: int, journal: Path | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = None
        if journal is not None:  # a file every shard can append to (Optuna's journal locks it)
            from optuna.storages import JournalStorage

            try:
                from optuna.storages.journal import JournalFileBackend
            except ImportError:  # optuna < 4 named it JournalFileStorage
                from optuna.storages import JournalFileStorage as JournalFileBackend
            storage = JournalStorage(JournalFileBackend(str(journal)))
        self.study = optuna.create_study(
            study_name=sweep.name, storage=storage, load_if_exists=True,
            direction=sweep.goal, sampler=optuna.samplers.TPESampler(seed=seed + shard.index),
        )
        self.parameters = sweep.parameters
        self._indices = shard.indices(count)
        self.total = len(self._indices)
        self._trials: dict[int, Any] = {}

    def propose(self) -> tuple[int, dict[str, Any]] | None:
        if not self._indices:
            return None
        index, trial = self._indices.pop(0), self.study.ask()
        trial.set_user_attr("run_index", index)
        self._trials[index] = trial
        return index, {p.name: suggest(trial, p) for p in self.parameters}

    def report(self, index: int, value: float | None) -> None:
        import optuna

        trial = self._trials.pop(index)
        if value is None or math.isnan(value):
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)


def make_search(sweep: SweepFile, count: int | None, shard: Shard, seed: int, journal: Path | None = None):
    """The search the sweep file's ``method`` asks for."""
    if sweep.method == "grid":
        return GridSearch(sweep, count, shard)
    if count is None:
        raise GenResearchError(f"a {sweep.method} sweep never ends by itself: pass --count N (or set run_cap: N in {sweep.path})")
    if sweep.method == "random":
        return RandomSearch(sweep, count, shard, seed)
    return BayesSearch(sweep, count, shard, seed, journal)
