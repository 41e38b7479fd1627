"""The command line and environment of one sweep run, built the way the W&B agent builds them.

The agent replaces each ``${...}`` word of the sweep file's ``command`` (``${args}`` -> ``--name=value`` per
parameter, formatted with Python's ``str`` exactly as ``wandb.sdk.launch.sweeps.utils.create_sweep_command_args``
does) and ``${envvar:NAME}`` inside words. Locally ``python`` and ``${interpreter}`` become this interpreter,
so a run uses the same virtual environment as the sweep; ``${env}`` (``/usr/bin/env``) is then not needed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from gen_research.training.run_folder import RUN_DIR_ENV
from gen_research.launch.sweep.spec import SweepFile

ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")
INTERPRETER_WORDS = ("python", "python3", "${interpreter}")
# Read by a run (and visible in its environment) to know which sweep it belongs to.
SWEEP_DIR_ENV = "GEN_RESEARCH_SWEEP"
SWEEP_RUN_ENV = "GEN_RESEARCH_SWEEP_RUN"


def agent_flags(assignment: dict[str, Any]) -> dict[str, list[str]]:
    """Every argument format the W&B agent offers, for one run's parameter values."""
    flags = [f"--{name}={value}" for name, value in assignment.items()]
    return {
        "args": flags,
        "args_no_hyphens": [flag[2:] for flag in flags],
        "args_no_boolean_flags": [f"--{n}" if v is True else f"--{n}={v}" for n, v in assignment.items() if v is not False],
        "args_no_equals": [part for name, value in assignment.items() for part in (f"--{name}", str(value))],
        "args_json": [json.dumps(assignment)],
        "args_append_hydra": ["+" + flag[2:] for flag in flags],
        "args_override_hydra": ["++" + flag[2:] for flag in flags],
    }


def build_command(sweep: SweepFile, assignment: dict[str, Any], extra: list[str] = ()) -> list[str]:
    """The sweep file's command with the macros filled in, followed by ``extra`` (our --name/--runs_root)."""
    macros = {**agent_flags(assignment), "env": [], "program": [sweep.program] if sweep.program else []}
    command: list[str] = []
    for word in sweep.command:
        word = ENVVAR.sub(lambda m: os.environ.get(m.group(1), m.group(1)), word)
        if word in INTERPRETER_WORDS:
            command.append(sys.executable)
        elif word.startswith("${") and word.endswith("}"):
            command += macros.get(word[2:-1], [])
        else:
            command.append(word)
    return command + list(extra)


def fit_arguments(command: list[str]) -> list[str]:
    """What follows ``-m gen_research fit`` in a built command: the arguments fit parses."""
    for i in range(len(command) - 2):
        if command[i:i + 3] == ["-m", "gen_research", "fit"]:
            return command[i + 3:]
    return []


def wants_offline(environ: dict[str, str]) -> bool:
    """Offline W&B unless the user chose a mode or can reach W&B with a key (the logger's own rule then applies)."""
    if environ.get("WANDB_MODE") or environ.get("WANDB_API_KEY"):
        return False
    from gen_research.training.loggers import _has_api_key  # a key in ~/.netrc from `wandb login`

    return not _has_api_key()


def run_environment(sweep: SweepFile, sweep_dir: Path, label: str) -> dict[str, str]:
    """The environment of one run: the user's, plus the sweep's identity, W&B group and tags."""
    environ = dict(os.environ)
    environ.pop(RUN_DIR_ENV, None)  # each run chooses its own folder
    if wants_offline(environ):
        environ["WANDB_MODE"] = "offline"
    environ[SWEEP_DIR_ENV] = str(sweep_dir)
    environ[SWEEP_RUN_ENV] = label
    environ.setdefault("WANDB_RUN_GROUP", f"{sweep.name}/{sweep_dir.name}")  # the W&B UI groups the sweep's runs
    environ["WANDB_TAGS"] = ",".join(filter(None, [environ.get("WANDB_TAGS"), "sweep", sweep.name]))
    environ["PYTHONUNBUFFERED"] = "1"
    return environ
