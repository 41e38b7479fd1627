"""A real local sweep: two tiny VAE fits as subprocesses, offline W&B runs, the leaderboard, values reaching the model."""

import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml

from .helpers import REPO

pytestmark = pytest.mark.integration
SWEEP = "tests/configs/tiny_sweep_vae.yaml"  # relative to the repository root, as wandb agent would run it


def test_local_grid_sweep_runs_fits_and_ranks_them(tmp_path):
    env = {**os.environ, "WANDB_MODE": "", "WANDB_API_KEY": "", "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("GEN_RESEARCH_RUN_DIR", None)
    result = subprocess.run([sys.executable, "-m", "gen_research", "sweep", SWEEP, "--runs_root", str(tmp_path / "runs")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "runs" / "sweeps" / "tiny_sweep_vae").iterdir()
    assert (sweep_dir / "sweep.yaml").read_text() == (REPO / SWEEP).read_text()
    rows = list(csv.DictReader((sweep_dir / "leaderboard.csv").open()))
    assert [row["status"] for row in rows] == ["finished", "finished"]
    assert sorted(row["model.init_args.beta"] for row in rows) == ["0.5", "2.0"]
    elbos = [float(row["val/elbo"]) for row in rows]
    assert elbos[0] >= elbos[1] and [row["rank"] for row in rows] == ["1", "2"]  # maximize: best first
    for row in rows:
        run_dir = REPO / row["run_folder"] if not os.path.isabs(row["run_folder"]) else tmp_path / row["run_folder"]
        assert run_dir.parent == sweep_dir / row["run"] and (sweep_dir / row["run"] / "fit.log").is_file()
        # --model.init_args.beta=X, as the W&B agent passes it, reached the model: saved config and checkpoint.
        beta = float(row["model.init_args.beta"])
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["model"]["init_args"]["beta"] == beta and config["trainer"]["max_epochs"] == 1
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]["beta"] == beta
        # The leaderboard's number is the last val/elbo the run logged.
        logged = [r["val/elbo"] for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("val/elbo")]
        assert float(logged[-1]) == float(row["val/elbo"])
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # an offline W&B run per sweep run
    assert "Leaderboard (maximize val/elbo, best first)" in result.stdout and f"leaderboard: {sweep_dir / 'leaderboard.csv'}" in result.stdout
