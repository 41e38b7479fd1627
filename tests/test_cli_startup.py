"""The CLI answers at once: ``list``, the commands' ``--help`` and the config errors found before parsing import
neither torch nor lightning (gen_research/registry_index.py), and say the same as when every family is imported.

Times are measured in benchmarks (benchmarks/perf/cli.py), not here: these tests check what is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gen_research.registry import MODELS, Registry
from gen_research.registry_index import INDEX_PATH, NO_INDEX_ENV, REBUILD

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "torchmetrics", "diffusers", "transformers")
PROBE = """
import sys
from gen_research.commands.main import main
try:
    code = main({argv!r})
except SystemExit as exit:
    code = exit.code
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def run_cli(argv: list[str], no_index: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != NO_INDEX_ENV}
    if no_index:
        env[NO_INDEX_ENV] = "1"
    return subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def heavy_imports(result: subprocess.CompletedProcess) -> list[str]:
    line = [line for line in result.stderr.splitlines() if line.startswith("HEAVY=")][-1]
    return [name for name in line.removeprefix("HEAVY=").split(",") if name]


def test_the_committed_index_describes_the_source():
    check = subprocess.run([sys.executable, "-m", "gen_research.registry_index", "--check"], capture_output=True, text=True,
                           cwd=REPO, timeout=300)  # a fresh process: only the built-ins are registered
    assert check.returncode == 0, f"gen_research/registry_index.json is stale: run {REBUILD}\n{check.stdout}{check.stderr[-2000:]}"


@pytest.mark.parametrize("argv", [["list"], ["list", "samplers"], ["--help"], ["sample", "--help"], ["evaluate", "--help"],
                                  ["translate", "--help"], ["export", "--help"], ["sweep", "--help"], ["submit", "--help"],
                                  ["rate", "--help"]])
def test_answers_without_importing_torch_or_lightning(argv):
    result = run_cli(argv)
    assert result.returncode == 0, result.stderr[-2000:]
    assert heavy_imports(result) == [], f"{' '.join(argv)} imported {heavy_imports(result)}: keep heavy imports inside the functions that need them"


@pytest.mark.parametrize("argv", [["list"], ["sample", "--help"], ["evaluate", "--help"]])
def test_the_index_says_what_importing_every_family_says(argv):
    fast, slow = run_cli(argv), run_cli(argv, no_index=True)
    assert fast.returncode == slow.returncode == 0
    assert fast.stdout == slow.stdout
    assert "torch" in heavy_imports(slow)  # the comparison is with the real registries


@pytest.mark.parametrize("extra, message", [
    ([], "config file not found"),  # a config that does not exist
    (["--model=vea"], "did you mean vae"),  # an unknown registered name
    (["--model=os.system"], "is not imported"),  # a class path outside the trusted modules
])
def test_config_errors_found_before_parsing_are_one_line_and_light(tmp_path, extra, message):
    config = str(tmp_path / "missing.yaml") if not extra else str(REPO / "experiments" / "quickstart.yaml")
    result = run_cli(["fit", "--config", config, *extra])
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("gen_research: error:")]
    assert len(errors) == 1 and message in errors[0].lower(), result.stderr[-2000:]
    assert heavy_imports(result) == []


def test_a_stale_index_is_not_used(tmp_path, monkeypatch):
    import gen_research.registry_index as registry_index

    stale = tmp_path / "index.json"
    stale.write_text(json.dumps({**json.loads(INDEX_PATH.read_text()), "fingerprint": "0" * 64}))
    monkeypatch.setattr(registry_index, "INDEX_PATH", stale)
    assert registry_index.read_index() is None
    monkeypatch.setattr(registry_index, "INDEX_PATH", INDEX_PATH)
    assert registry_index.read_index() is not None


def test_an_indexed_entry_imports_its_module_only_when_used():
    registry = Registry("thing", "test")
    registry.add_indexed("ordered", "collections", "OrderedDict", "from the index")
    entry = registry.entry("ordered")
    assert not entry.imported and entry.class_path == "collections.OrderedDict"
    assert registry.name_of(__import__("collections").OrderedDict) == "ordered"  # by class path, nothing imported
    assert not entry.imported
    assert entry.obj is __import__("collections").OrderedDict and entry.imported


def test_the_real_registration_replaces_the_indexed_entry_and_a_different_class_is_refused():
    from collections import OrderedDict, defaultdict

    registry = Registry("thing", "test")
    registry.add_indexed("ordered", "collections", "OrderedDict", "from the index")
    registry.add("ordered", OrderedDict, "registered")
    assert registry.entry("ordered").imported and registry.entry("ordered").description == "registered"
    registry.add_indexed("other", "collections", "OrderedDict", "from the index")
    with pytest.raises(ValueError, match="already registered to collections.OrderedDict"):
        registry.add("other", defaultdict)


def test_every_indexed_model_resolves_to_its_registered_class():
    for entry in MODELS:
        assert f"{entry.obj.__module__}.{entry.obj.__qualname__}" == entry.class_path
