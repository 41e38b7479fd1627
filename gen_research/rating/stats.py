"""Results of a rating session: Mean Opinion Scores and forced-choice rates, each with a 95% confidence interval.

- MOS (ITU-T P.800 / P.1401): the mean of the 1..5 ratings of a set, with the two-sided 95% Student t interval
  ``mean +- t(0.975, n - 1) * s / sqrt(n)`` (s: the sample standard deviation, ddof = 1), i.e.
  ``scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=s / sqrt(n))``. It treats the ratings as independent
  draws (one rater, or raters pooled); with a single rating there is no interval (``null``). It is not clipped to
  1..5: with few ratings it reaches past the scale, which says to collect more.
- 2AFC (two-alternative forced choice): a proportion k / n with the 95% Wilson score interval (Wilson 1927)
  ``(k + z^2/2) / (n + z^2)  +-  z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4)``, z = 1.959964 (the 0.975 normal
  quantile): the p with ``|k/n - p| <= z sqrt(p (1 - p) / n)``. It stays inside [0, 1] and is sensible at k = 0 or n.
  Real vs generated: the *fool rate* of a fake set = how often its image was picked as the real one (50% = the rater
  cannot tell them apart; HYPE, Zhou et al. 2019, reports the same rate). Model A vs model B: the *preference rate*
  of A = how often A's image was picked.
"""

from __future__ import annotations

import math
from typing import Any

Z_95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)
T_INTERVAL = "95% Student t interval over the ratings: mean +- t(0.975, n-1) * s / sqrt(n)"
WILSON_INTERVAL = "95% Wilson score interval"


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The two-sided Student t interval of the mean (None for fewer than two values)."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / trials`` (None for no trials)."""
    if trials == 0:
        return None
    centre = (successes + z * z / 2) / (trials + z * z)
    half = z / (trials + z * z) * math.sqrt(successes * (trials - successes) / trials + z * z / 4)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_opinion_score(ratings: list[int]) -> dict[str, Any]:
    n = len(ratings)
    interval = t_interval([float(r) for r in ratings])
    return {"mos": math.fsum(ratings) / n if n else None, "ci95": list(interval) if interval else None, "ratings": n}


def proportion(successes: int, trials: int, name: str) -> dict[str, Any]:
    interval = wilson_interval(successes, trials)
    return {name: successes / trials if trials else None, "ci95": list(interval) if interval else None,
            "chosen": successes, "trials": trials}


def summarize(plan: dict[str, Any], answers: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The results of ``answers`` (trial id -> answer record, as AnswerStore keeps them) under ``plan``."""
    sets = plan["sets"]
    trials = {trial["id"]: trial for trial in plan["trials"]}
    per_condition: list[list[Any]] = [[] for _ in plan["conditions"]]
    for trial_id, answer in answers.items():
        trial = trials[trial_id]
        if plan["mode"] == "mos":
            per_condition[trial["condition"]].append(answer["rating"])
        else:  # did the rater pick the condition's second-named image: the fake (pairs real) or model B (pairs models)
            second = plan["conditions"][trial["condition"]][1]
            per_condition[trial["condition"]].append(trial["images"][answer["choice"]]["set"] == second)
    results: dict[str, Any] = {"mode": plan["mode"], "pairs": plan["pairs"], "answered": len(answers),
                               "total": len(plan["trials"]), "complete": len(answers) == len(plan["trials"]),
                               "folders": {s["name"]: s["folder"] for s in sets}}
    if plan["mode"] == "mos":
        results["interval"] = T_INTERVAL
        results["mos"] = {sets[group[0]]["name"]: mean_opinion_score(values)
                          for group, values in zip(plan["conditions"], per_condition)}
    elif plan["pairs"] == "real":
        results["interval"] = WILSON_INTERVAL
        results["fool_rate"] = {sets[group[1]]["name"]: proportion(sum(values), len(values), "fool_rate")
                                for group, values in zip(plan["conditions"], per_condition)}
    else:
        results["interval"] = WILSON_INTERVAL
        results["preference"] = [
            {"a": sets[a]["name"], "b": sets[b]["name"], **proportion(len(values) - sum(values), len(values), "preference_a")}
            for (a, b), values in zip(plan["conditions"], per_condition)]
    return results


def _number(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.2f}"


def _interval(interval: list[float] | None, percent: bool = False) -> str:
    return "-" if interval is None else f"[{_number(interval[0], percent)}, {_number(interval[1], percent)}]"


def format_table(results: dict[str, Any]) -> str:
    """The results as a small text table (what the command prints)."""
    if results["mode"] == "mos":
        header, rows = ("set", "MOS", "95% CI (t)", "ratings"), [
            (name, _number(r["mos"]), _interval(r["ci95"]), str(r["ratings"])) for name, r in results["mos"].items()]
    elif results["pairs"] == "real":
        header, rows = ("fake set", "fool rate", "95% CI (Wilson)", "trials"), [
            (name, _number(r["fool_rate"], True), _interval(r["ci95"], True), str(r["trials"]))
            for name, r in results["fool_rate"].items()]
    else:
        header, rows = ("A vs B", "A preferred", "95% CI (Wilson)", "trials"), [
            (f"{r['a']} vs {r['b']}", _number(r["preference_a"], True), _interval(r["ci95"], True), str(r["trials"]))
            for r in results["preference"]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.append(f"{results['answered']} of {results['total']} trials answered")
    return "\n".join(lines)
