"""The make-bench machinery (benchmarks/harness.py, benchmarks/run.py): side-by-side order, medians, generated
docs blocks, and the training and cli sections on tiny sizes (their numbers are measured by `make bench`, not here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from harness import alternate, markdown_table, refresh_docs, replace_block, run_child  # noqa: E402
from perf import Context  # noqa: E402


def test_alternate_runs_the_variants_in_turn_and_reports_medians():
    calls = []
    values = {"a": iter([3.0, 1.0, 2.0]), "b": iter([10.0, 30.0, 20.0])}

    def variant(name):
        def measure():
            calls.append(name)
            return next(values[name])
        return measure

    result = alternate({"a": variant("a"), "b": variant("b")}, pairs=3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert result["a"] == {"runs": [3.0, 1.0, 2.0], "median": 2.0} and result["b"]["median"] == 20.0


def test_generated_blocks_are_replaced_in_place_and_missing_markers_refused(tmp_path):
    text = "intro\n<!-- bench:t-cpu -->\nold\ntable\n<!-- /bench:t-cpu -->\nafter\n<!-- bench:t-cuda -->\n<!-- /bench:t-cuda -->\n"
    assert replace_block(text, "t-cpu", "new") == text.replace("old\ntable", "new")
    assert "<!-- bench:t-cuda -->\nx\n<!-- /bench:t-cuda -->" in replace_block(text, "t-cuda", "x")
    with pytest.raises(KeyError, match="bench:other"):
        replace_block(text, "other", "x")
    docs = tmp_path / "results.md"
    docs.write_text(text)
    assert refresh_docs(docs, {"t-cpu": "1", "t-cuda": "2"}) == ["t-cpu", "t-cuda"]
    assert docs.read_text().count("<!-- bench:") == 2 and "\n1\n" in docs.read_text() and "\n2\n" in docs.read_text()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc")
def test_a_child_reports_its_own_peak_memory_not_its_parents():
    """ru_maxrss of a freshly exec'd child starts at the parent's resident size (every k-NN row once read 4.4 GB)."""
    ballast = bytearray(1500 * 2**20)  # the parent holds 1.5 GB, touched
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])
    child = run_child([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import harness; "
                       "harness.report({'ok': True})"])
    assert child["result"]["ok"] and 1 < child["peak_rss_mb"] < 500, child
    del ballast


def test_tables_leave_missing_values_empty_never_estimated():
    table = markdown_table(["a", "b"], [[1.23456, None], ["x", 12345.6]])
    assert table.splitlines()[2] == "| 1.23 |  |" and table.splitlines()[3] == "| x | 12,346 |"


def test_every_generated_block_of_the_docs_has_its_markers():
    docs = (BENCHMARKS.parent / "docs" / "results.md").read_text()
    shared = ["training", "speed-options", "data-loading", "sampling", "evaluation-throughput", "knn"]
    for block in [f"{name}-cpu" for name in ["cli", *shared]] + [f"{name}-cuda" for name in [*shared, "gpu-precision"]]:
        assert f"<!-- bench:{block} -->" in docs and f"<!-- /bench:{block} -->" in docs, block


def test_the_training_section_compares_fit_with_the_hand_written_loop(tmp_path, monkeypatch):
    from perf import training

    monkeypatch.setattr(training, "QUICK", {"vae": training.QUICK["vae"]})
    result = training.run(Context(quick=True, pairs=1, out=tmp_path))
    case = result["cases"]["vae"]
    assert case["fit_steps_per_s"] > 0 and case["hand_steps_per_s"] > 0 and case["throughput_ratio"] > 0
    assert 0 < case["hand_startup_s"] < 600 and 0 < case["fit_startup_s"] < 600
    assert case["parameters"] > 100_000  # the quickstart VAE, not a toy
    body = training.tables(result, {"device": "cpu", "cpu": "test CPU", "cpu_threads": 2, "cpu_bf16_units": [],
                                    "gpu": None, "measured": "now", "torch": "x", "lightning": "y"})["training-cpu"]
    assert "fit / hand" in body and "quickstart" in body
