"""The shared leaderboard.csv: merged read-modify-write under a file lock, so agents writing at once lose no row."""

import csv
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from gen_research.launch.sweep.runner import merge_leaderboard

REPO = Path(__file__).resolve().parents[3]
COLUMNS = ["rank", "run", "status", "lr", "val/loss", "seconds", "run_folder", "note"]

# One agent: finishes 40 runs, merging each run's row alone into the shared leaderboard the moment it finishes.
AGENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gen_research.launch.sweep.runner import merge_leaderboard
    path, go, agent = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    columns = sys.argv[4].split(",")
    while not go.exists():
        time.sleep(0.001)
    for index in range(40):
        run = agent * 1000 + index
        row = {"run": f"run-{run:04d}", "status": "finished", "lr": index, "val/loss": run / 1000, "seconds": 1.0,
               "run_folder": "", "note": ""}
        merge_leaderboard(path, [row], columns, "val/loss", "minimize")
""")


def read_rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_agents_merging_at_once_lose_no_row(tmp_path):
    board, go = tmp_path / "leaderboard.csv", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agents = [subprocess.Popen([sys.executable, "-c", AGENT, str(board), str(go), str(agent), ",".join(COLUMNS)], env=env)
              for agent in (1, 2)]
    time.sleep(0.2)  # both are waiting for the start signal (a head start, not a measurement)
    go.touch()
    assert [agent.wait(timeout=120) for agent in agents] == [0, 0]
    rows = read_rows(board)
    expected = sorted(f"run-{agent * 1000 + index:04d}" for agent in (1, 2) for index in range(40))
    assert sorted(row["run"] for row in rows) == expected
    assert [row["run"] for row in rows] == expected and [row["rank"] for row in rows] == [str(i) for i in range(1, 81)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_run_row_is_replaced_and_a_killed_shards_own_file_is_merged(tmp_path):
    board = tmp_path / "leaderboard.csv"
    row = {"run": "s-000", "status": "running", "lr": 1, "val/loss": "", "seconds": 0, "run_folder": "", "note": ""}
    merge_leaderboard(board, [row], COLUMNS, "val/loss", "minimize")
    # Another shard wrote its own leaderboard, then died before merging it.
    with (tmp_path / "leaderboard-shard-1-of-2.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerow({**row, "run": "s-001", "status": "finished", "val/loss": 0.5})
    merge_leaderboard(board, [{**row, "status": "finished", "val/loss": 0.25}], COLUMNS, "val/loss", "minimize",
                      "leaderboard-shard-*.csv")
    assert [(r["rank"], r["run"], r["status"], r["val/loss"]) for r in read_rows(board)] == [
        ("1", "s-000", "finished", "0.25"), ("2", "s-001", "finished", "0.5")]
