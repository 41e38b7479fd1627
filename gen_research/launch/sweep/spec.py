"""A W&B sweep file, read and checked: method, metric, parameters (W&B's distributions) and command.

Everything here follows W&B's sweep-config schema and sweep engine (github.com/wandb/sweeps,
``config/schema.json`` and ``params.py``), so a file that runs here also runs under ``wandb agent``:
a distribution may be named or left to be inferred (``value`` -> constant, ``values`` -> categorical,
integer ``min``/``max`` -> int_uniform, otherwise uniform), and each distribution's quantile function
(``Parameter.quantile``) is W&B's ``ppf``. Every way the file can be wrong is a one-line GenResearchError.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import yaml

from gen_research.errors import GenResearchError

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
# W&B's parameter-name pattern: dotted names such as model.init_args.beta are allowed.
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# The W&B agent's command macros that make sense locally (${args_json_file} needs the agent's files).
MACROS = ("env", "interpreter", "program", "args", "args_no_hyphens", "args_no_boolean_flags", "args_no_equals",
          "args_json", "args_append_hydra", "args_override_hydra")
EXAMPLE_COMMAND = "command: [${env}, python, -m, gen_research, fit, --config, experiments/vae_mnist5k.yaml, ${args}]"

# distribution -> (required settings, optional settings with W&B's defaults)
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("value",), {}),
    "categorical": (("values",), {}),
    "categorical_w_probabilities": (("values", "probabilities"), {}),
    "int_uniform": (("min", "max"), {}),
    "uniform": (("min", "max"), {}),
    "q_uniform": (("min", "max"), {"q": 1.0}),
    "log_uniform": (("min", "max"), {}),  # min/max are exponents: e^min .. e^max
    "log_uniform_values": (("min", "max"), {}),
    "inv_log_uniform": (("min", "max"), {}),
    "inv_log_uniform_values": (("min", "max"), {}),
    "q_log_uniform": (("min", "max"), {"q": 1.0}),
    "q_log_uniform_values": (("min", "max"), {"q": 1.0}),
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "beta": ((), {"a": 1.0, "b": 1.0}),
    "q_beta": ((), {"a": 1.0, "b": 1.0, "q": 1.0}),
}
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")  # what W&B's grid search accepts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _quantize(value: float, q: float) -> float | int:
    """W&B's ``np.round(x / q) * q``: an integer when q is an integer."""
    rounded = round(value / q) * q
    return int(rounded) if isinstance(q, int) else float(rounded)


def value_key(value: Any) -> str:
    """Identity of a value for de-duplication, as W&B's grid does (3.0 and 3 are the same point)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=True)


@dataclass(frozen=True)
class Parameter:
    """One swept parameter: a flat dotted config key and its W&B distribution with defaults filled in."""

    name: str
    distribution: str
    settings: dict[str, Any] = field(hash=False)

    @property
    def is_constant(self) -> bool:
        return self.distribution == "constant"

    def quantile(self, u: float) -> Any:
        """The value at probability ``u`` in (0, 1): W&B's ``HyperParameter.ppf`` (random search draws u uniformly)."""
        s, kind = self.settings, self.distribution
        if kind == "constant":
            return s["value"]
        if kind == "categorical":
            values = s["values"]
            return values[min(max(math.ceil(u * len(values)) - 1, 0), len(values) - 1)]
        if kind == "categorical_w_probabilities":
            cumulative = 0.0
            for value, probability in zip(s["values"], s["probabilities"]):
                cumulative += probability
                if u < cumulative:
                    return value
            return s["values"][-1]
        if kind == "int_uniform":
            return min(max(s["min"] + math.ceil(u * (s["max"] - s["min"] + 1)) - 1, s["min"]), s["max"])
        if kind in ("uniform", "q_uniform"):
            value = s["min"] + u * (s["max"] - s["min"])
        elif kind in ("log_uniform", "q_log_uniform"):
            value = math.exp(s["min"] + u * (s["max"] - s["min"]))
        elif kind in ("log_uniform_values", "q_log_uniform_values"):
            low, high = math.log(s["min"]), math.log(s["max"])
            value = math.exp(low + u * (high - low))
        elif kind == "inv_log_uniform":
            value = math.exp(-(s["min"] + (1 - u) * (s["max"] - s["min"])))
        elif kind == "inv_log_uniform_values":
            low, high = -math.log(s["max"]), -math.log(s["min"])
            value = math.exp(-(low + (1 - u) * (high - low)))
        elif kind in ("normal", "q_normal", "log_normal", "q_log_normal"):
            value = s["mu"] + s["sigma"] * NormalDist().inv_cdf(u)
            value = math.exp(value) if "log" in kind else value
        else:  # beta, q_beta
            from scipy.stats import beta

            value = float(beta.ppf(u, s["a"], s["b"]))
        return _quantize(value, s["q"]) if kind.startswith("q_") else float(value)

    def grid_values(self) -> list[Any]:
        """The values a grid search visits, in W&B's order: int_uniform min..max, q_uniform arange(min, max, q)."""
        s, kind = self.settings, self.distribution
        if kind == "constant":
            values = [s["value"]]
        elif kind == "categorical":
            values = list(s["values"])
        elif kind == "int_uniform":
            values = list(range(s["min"], s["max"] + 1))
        elif kind == "q_uniform":  # numpy.arange semantics: max itself is excluded
            steps = math.ceil((s["max"] - s["min"]) / s["q"])
            values = [s["min"] + i * s["q"] for i in range(steps)]
        else:
            raise GenResearchError(f"parameter {self.name}: a {kind} distribution cannot be part of a grid")
        unique: dict[str, Any] = {}
        for value in values:
            unique.setdefault(value_key(value), value)
        return list(unique.values())

    def probe_values(self) -> list[Any]:
        """Values worth checking against the experiment before running: every category, else both ends."""
        if self.distribution in ("constant", "categorical", "categorical_w_probabilities"):
            return self.grid_values() if self.distribution != "categorical_w_probabilities" else list(self.settings["values"])
        if self.distribution == "int_uniform":
            return [self.settings["min"], self.settings["max"]]
        return [self.quantile(0.001), self.quantile(0.999)]


@dataclass
class SweepFile:
    """A checked sweep file. ``parameters`` is sorted by name, the order W&B's engine uses."""

    path: Path
    raw: dict[str, Any]
    method: str
    metric: str
    goal: str
    goal_is_default: bool
    parameters: list[Parameter]
    command: list[str]
    program: str | None
    run_cap: int | None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def experiment_configs(self) -> list[str]:
        """The ``--config`` files the command passes to fit."""
        found, tokens = [], self.command
        for i, token in enumerate(tokens):
            if token in ("--config", "-c") and i + 1 < len(tokens):
                found.append(tokens[i + 1])
            elif token.startswith("--config="):
                found.append(token.split("=", 1)[1])
        return found


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"did you mean {close[0]}? " if close else ""


def parse_parameter(name: str, spec: Any, where: str) -> Parameter:
    """Check one ``parameters`` entry the way W&B's schema does and fill in its defaults."""
    if not isinstance(name, str) or not PARAMETER_NAME.match(name):
        raise GenResearchError(f"{where}: parameter name {name!r} is not allowed; use a flat dotted config key such as model.init_args.beta")
    if not isinstance(spec, dict):
        raise GenResearchError(f"{where}: parameter {name} must be a mapping such as {{values: [1, 2]}} or {{min: 0.1, max: 1.0}}, not {spec!r}")
    if "parameters" in spec:
        raise GenResearchError(f"{where}: nested parameters under {name} are not supported; use flat dotted names such as {name}.init_args.lr")
    kind = spec.get("distribution")
    if kind is None:  # W&B infers the distribution from the keys given
        if "value" in spec:
            kind = "constant"
        elif "values" in spec:
            kind = "categorical_w_probabilities" if "probabilities" in spec else "categorical"
        elif "min" in spec and "max" in spec:
            kind = "int_uniform" if all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max")) else "uniform"
        else:
            raise GenResearchError(f"{where}: parameter {name} needs values: [...], value: X, or min/max (with an optional distribution)")
    if kind not in DISTRIBUTIONS:
        raise GenResearchError(f"{where}: parameter {name} has unknown distribution {kind!r}; {_suggest(str(kind), list(DISTRIBUTIONS))}choose from: {', '.join(DISTRIBUTIONS)}")
    required, optional = DISTRIBUTIONS[kind]
    allowed = set(required) | set(optional) | {"distribution"}
    for key in spec:
        if key not in allowed:
            raise GenResearchError(f"{where}: parameter {name} ({kind}) does not take {key!r}; {_suggest(str(key), sorted(allowed))}it takes: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in spec:
            raise GenResearchError(f"{where}: parameter {name} ({kind}) needs {key!r}")
    settings = {**optional, **{k: v for k, v in spec.items() if k != "distribution"}}
    _check_settings(name, kind, settings, where)
    return Parameter(name, kind, settings)


def _check_settings(name: str, kind: str, s: dict[str, Any], where: str) -> None:
    prefix = f"{where}: parameter {name} ({kind})"
    if "values" in s and (not isinstance(s["values"], list) or not s["values"]):
        raise GenResearchError(f"{prefix}: values must be a non-empty list")
    if kind == "categorical_w_probabilities":
        probabilities = s["probabilities"]
        if not isinstance(probabilities, list) or len(probabilities) != len(s["values"]) or not all(_is_number(p) and p >= 0 for p in probabilities):
            raise GenResearchError(f"{prefix}: probabilities must be one non-negative number per value")
        if not math.isclose(sum(probabilities), 1.0, abs_tol=1e-6):
            raise GenResearchError(f"{prefix}: probabilities sum to {sum(probabilities):g}, not 1")
    for key in ("min", "max", "q", "mu", "sigma", "a", "b"):
        if key in s and not _is_number(s[key]):
            raise GenResearchError(f"{prefix}: {key} must be a number, not {s[key]!r}")
    if kind == "int_uniform" and not all(isinstance(s[k], int) for k in ("min", "max")):
        raise GenResearchError(f"{prefix}: min and max must be integers")
    if "min" in s and s["min"] >= s["max"]:
        raise GenResearchError(f"{prefix}: min {s['min']} is not less than max {s['max']}")
    if kind.endswith("_values") and s["min"] <= 0:
        raise GenResearchError(f"{prefix}: min must be > 0 (these are the values themselves, not exponents)")
    if "q" in s and s["q"] <= 0:
        raise GenResearchError(f"{prefix}: q must be > 0")
    for key in ("sigma", "a", "b"):
        if key in s and s[key] < 0:
            raise GenResearchError(f"{prefix}: {key} must be >= 0")


def _parse_metric(raw: Any, where: str) -> tuple[str, str, bool]:
    if raw is None:
        raise GenResearchError(f"{where}: no metric; add e.g. metric: {{name: val/loss, goal: minimize}}")
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].strip():
        raise GenResearchError(f"{where}: metric must be a mapping with a name, e.g. metric: {{name: val/loss, goal: minimize}}")
    goal = raw.get("goal")
    if goal is not None and goal not in GOALS:
        raise GenResearchError(f"{where}: metric goal {goal!r} is not minimize or maximize")
    return raw["name"], goal or "minimize", goal is None  # W&B's default goal is minimize


def _parse_command(raw: Any, where: str) -> list[str]:
    if raw is None:
        raise GenResearchError(f"{where}: no command; add {EXAMPLE_COMMAND}")
    if not isinstance(raw, list) or not raw or not all(isinstance(t, (str, int, float)) for t in raw):
        raise GenResearchError(f"{where}: command must be a list of words, e.g. {EXAMPLE_COMMAND}")
    command = [str(token) for token in raw]
    if "${args}" not in command:
        raise GenResearchError(f"{where}: command lacks ${{args}}, so the swept parameters would never reach fit; e.g. {EXAMPLE_COMMAND}")
    for token in command:
        macro = re.fullmatch(r"\$\{(\w+)\}", token)
        if macro and macro.group(1) not in MACROS:
            raise GenResearchError(f"{where}: command macro {token} is not supported here; use ${{args}} (and ${{env}}, ${{interpreter}}, ${{program}})")
    runs_fit = any(command[i:i + 3] == ["-m", "gen_research", "fit"] for i in range(len(command)))
    has_config = any(t in ("--config", "-c") or t.startswith("--config=") for t in command)
    if not runs_fit or not has_config:
        raise GenResearchError(f"{where}: command must run `python -m gen_research fit --config EXPERIMENT ${{args}}`; e.g. {EXAMPLE_COMMAND}")
    return command


def load_sweep_file(path: Path) -> SweepFile:
    """Read and check a sweep file (structure only; experiment.py checks the parameters against the experiment)."""
    if not path.is_file():
        raise GenResearchError(f"sweep file not found: {path}; pass a W&B sweep YAML such as experiments/sweeps/vae_beta_grid.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise GenResearchError(f"malformed YAML in {path}{at}: {getattr(error, 'problem', None) or error}; fix the file's syntax") from None
    if not isinstance(raw, dict):
        raise GenResearchError(f"{path} must hold a W&B sweep config (method:, metric:, parameters:, command:), not {type(raw).__name__}")
    where = str(path)
    method = raw.get("method")
    if method not in METHODS:
        raise GenResearchError(f"{where}: unknown method {method!r}; {_suggest(str(method), METHODS)}use one of: {', '.join(METHODS)}")
    metric, goal, goal_is_default = _parse_metric(raw.get("metric"), where)
    parameters_raw = raw.get("parameters")
    if not isinstance(parameters_raw, dict) or not parameters_raw:
        raise GenResearchError(f"{where}: parameters must be a non-empty mapping, e.g. parameters: {{model.init_args.beta: {{values: [1, 4]}}}}")
    parameters = [parse_parameter(name, spec, where) for name, spec in sorted(parameters_raw.items(), key=lambda item: str(item[0]))]
    if method == "grid":
        for parameter in parameters:
            if parameter.distribution not in GRID_DISTRIBUTIONS:
                raise GenResearchError(f"{where}: grid search takes values/value/int_uniform/q_uniform parameters; {parameter.name} is {parameter.distribution}")
    command = _parse_command(raw.get("command"), where)
    program = raw.get("program")
    if "${program}" in command and not isinstance(program, str):
        raise GenResearchError(f"{where}: command uses ${{program}} but there is no program: key")
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 1):
        raise GenResearchError(f"{where}: run_cap must be a positive integer, not {run_cap!r}")
    return SweepFile(path, raw, method, metric, goal, goal_is_default, parameters, command, program, run_cap)
