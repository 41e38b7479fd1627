"""Runs from anywhere: a NON-editable install of the wheel runs the shipped quickstart experiment from an empty
directory (the classifier weights are package data, named ``package://classifier-mnist5k.ckpt``), and paths
written in an experiment file resolve against that file, not against the working directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from .helpers import REPO, TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration


def test_wheel_runs_the_quickstart_from_an_empty_directory(tmp_path):
    wheels, site, empty = tmp_path / "wheels", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    # --no-build-isolation: build with the environment's setuptools (nothing fetched from an index).
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(wheels)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("gen_research-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    assert (site / "gen_research" / "assets" / "classifier-mnist5k.ckpt").is_file()  # package data made it into the wheel

    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.pop("GEN_RESEARCH_RUN_DIR", None)
    where = subprocess.run([sys.executable, "-c", "import gen_research, gen_research.assets as a; print(gen_research.__file__); print(a.ASSETS_DIR)"],
                           cwd=empty, env=env, capture_output=True, text=True, timeout=120)
    package_file, assets_dir = where.stdout.split()
    assert package_file.startswith(str(site)) and assets_dir.startswith(str(site)), where.stdout  # the wheel's, not the checkout

    fit = subprocess.run(
        [sys.executable, "-m", "gen_research", "fit", "--config", str(REPO / "experiments" / "quickstart.yaml"),
         "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
         "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false", "--trainer.logger=false"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=600,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    (run,) = (empty / "runs" / "quickstart").iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    evaluation = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("EvaluationCallback"))
    assert evaluation["init_args"]["feature_weights"] == "package://classifier-mnist5k.ckpt"
    # The evaluation ran on the shipped classifier's features: its FID selected the best checkpoint.
    assert list((run / "checkpoints").glob("best-*.ckpt")), sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "fid/classifier-mnist5k" in fit.stdout + fit.stderr
    assert sorted(p.name for p in empty.iterdir()) == ["runs"]  # nothing else written where the user stands


def test_paths_in_an_experiment_resolve_against_the_file(workdir, capsys, tmp_path):
    """The same experiment, run from two directories, reads the same image folder (named relative to the YAML)."""
    from PIL import Image
    import numpy as np

    experiment_dir = tmp_path / "project"
    images = experiment_dir / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(images / f"{i}.png")
    (experiment_dir / "exp.yaml").write_text(yaml.safe_dump({
        "data": {"class_path": "image_folder", "init_args": {"root": "images", "grayscale": True, "batch_size": 4,
                                                             "val_fraction": 0.25, "test_fraction": 0.25}},
    }))
    for cwd in (workdir, experiment_dir):
        os.chdir(cwd)
        assert run_in_process("fit", "--config", str(TEST_CONFIGS / "tiny_vae.yaml"), "--config", str(experiment_dir / "exp.yaml"),
                              "--print_config") == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["data"]["init_args"]["root"] == str(images)
    # Keys that name outputs stay where the user stands; package:// and keywords are left for their loaders.
    from gen_research.config.files import resolve_relative_paths

    resolved = resolve_relative_paths({"runs_root": "runs", "ckpt_path": "last", "trainer": {"callbacks": [
        {"class_path": "evaluation", "init_args": {"feature_weights": "package://classifier-mnist5k.ckpt", "cache_dir": "cache"}}]},
        "model": {"init_args": {"init_from": "../pipeline"}}}, experiment_dir / "exp.yaml")
    assert resolved["runs_root"] == "runs" and resolved["ckpt_path"] == "last"
    assert resolved["trainer"]["callbacks"][0] == {"class_path": "evaluation",
                                                   "init_args": {"feature_weights": "package://classifier-mnist5k.ckpt", "cache_dir": "cache"}}
    assert resolved["model"]["init_args"]["init_from"] == str(tmp_path / "pipeline")


def test_evaluation_setup_problem_is_reported_before_the_first_step(workdir):
    """The issue's case: a missing classifier used to surface after a whole training epoch. Now the fit stops at
    set-up: no checkpoint, no run folder, and no training step logged."""
    override = workdir / "eval.yaml"
    override.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "evaluation", "init_args": {
        "features": "classifier", "feature_weights": "no/such/classifier.ckpt"}}]}}))
    result = subprocess.run(
        [sys.executable, "-m", "gen_research", "fit", "--config", str(TEST_CONFIGS / "tiny_vae.yaml"), "--config", str(override),
         "--trainer.enable_progress_bar=false", "--trainer.logger=false"],
        cwd=workdir, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"gen_research: error: classifier checkpoint not found: {workdir / 'no' / 'such' / 'classifier.ckpt'}; "
        "train one with `python -m gen_research fit --config experiments/classifier_mnist5k.yaml`, "
        "then pass weights=runs/classifier_mnist5k/<run>/checkpoints/best-*.ckpt"
    )
    assert "Traceback" not in result.stderr and "Epoch 0" not in result.stdout
    assert not (workdir / "runs").exists()
