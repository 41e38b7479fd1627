"""The sweep loop with stand-in runs (tiny Python scripts): metric reading, failed runs, leaderboard, shards."""

import csv
import sys
import textwrap

from gen_research.launch.sweep.runner import SweepRunner, read_metric
from gen_research.launch.sweep.search import GridSearch, Shard
from gen_research.launch.sweep.spec import load_sweep_file

from .helpers import write_sweep

# Plays the part of `gen_research fit`: writes metrics.csv into a run folder and prints it, or fails.
FAKE_FIT = textwrap.dedent("""
    import sys, pathlib
    mode, run_dir = sys.argv[1], pathlib.Path(sys.argv[2])
    if mode == "crash":
        print("training...")
        print("ValueError: batch_size should be a positive integer")
        sys.exit(3)
    run_dir.mkdir(parents=True)
    column = "val/other" if mode == "nometric" else "val/elbo"
    value = {"good": -10.0, "better": -5.0, "worst": -20.0}.get(mode, 0.0)
    (run_dir / "metrics.csv").write_text(f"epoch,step,train/loss,{column}\\n0,4,3.0,\\n0,4,,{value - 1}\\n1,9,,{value}\\n")
    print(f"Run folder: {run_dir}")
""")


def make_runner(tmp_path, modes, shard=Shard()):
    sweep = load_sweep_file(write_sweep(tmp_path, parameters={"mode": {"values": modes}}))
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir(exist_ok=True)
    command_for = lambda label, assignment: [sys.executable, "-c", FAKE_FIT, assignment["mode"], str(sweep_dir / label / "run")]
    lines = []
    runner = SweepRunner(sweep, GridSearch(sweep, None, shard), sweep_dir, command_for, lambda label: {}, shard.suffix, lines.append)
    return runner, sweep_dir, lines


def read_rows(path):
    return list(csv.DictReader(path.open()))


def test_failed_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    runner, sweep_dir, lines = make_runner(tmp_path, ["good", "crash", "nometric", "better"])
    records = runner.run()
    assert [r.status for r in records] == ["finished", "failed", "failed", "finished"]
    assert records[1].note == "exit status 3: ValueError: batch_size should be a positive integer"
    assert records[2].note == "metric val/elbo was never logged; logged: train/loss, val/other"
    rows = read_rows(sweep_dir / "leaderboard.csv")
    assert list(rows[0]) == ["rank", "run", "status", "mode", "val/elbo", "seconds", "run_folder", "note"]
    # maximize: the best (highest) val/elbo first, then the failed runs without a rank
    assert [(r["rank"], r["run"], r["mode"], r["val/elbo"]) for r in rows] == [
        ("1", "tiny_sweep-003", "better", "-5.0"), ("2", "tiny_sweep-000", "good", "-10.0"),
        ("", "tiny_sweep-001", "crash", ""), ("", "tiny_sweep-002", "nometric", "")]
    assert rows[0]["run_folder"] == str(sweep_dir / "tiny_sweep-003" / "run")
    assert (sweep_dir / "tiny_sweep-001" / "fit.log").read_text().startswith("$ ")
    assert any("[4/4] tiny_sweep-003: mode=better" in line for line in lines)


def test_shards_write_their_own_leaderboard_and_a_merged_one(tmp_path):
    for index in range(2):
        runner, sweep_dir, _ = make_runner(tmp_path, ["good", "better", "worst"], Shard(index, 2))
        runner.run()
    assert [r["run"] for r in read_rows(sweep_dir / "leaderboard-shard-0-of-2.csv")] == ["tiny_sweep-000", "tiny_sweep-002"]
    assert [r["run"] for r in read_rows(sweep_dir / "leaderboard-shard-1-of-2.csv")] == ["tiny_sweep-001"]
    merged = read_rows(sweep_dir / "leaderboard.csv")
    assert [(r["rank"], r["run"]) for r in merged] == [("1", "tiny_sweep-001"), ("2", "tiny_sweep-000"), ("3", "tiny_sweep-002")]


def test_read_metric_takes_the_last_logged_value(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,val/loss,train/loss\n0,1,,2.0\n0,1,1.5,\n1,3,,1.0\n1,3,1.25,\n")
    assert read_metric(path, "val/loss") == (1.25, "")
    assert read_metric(path, "val/elbo") == (None, "metric val/elbo was never logged; logged: train/loss, val/loss")
    assert read_metric(tmp_path / "missing.csv", "val/loss")[0] is None
