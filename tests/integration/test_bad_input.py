"""The bad-input catalogue (docs/reliability.md, "Bad input"): each case ends in one line on stderr that says what
to change, exit status 2, no traceback, and leaves the finished run's folder untouched and no new folder behind."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .helpers import REPO, TEST_CONFIGS, run_in_process, run_subprocess, snapshot

pytestmark = pytest.mark.integration
TINY = str(TEST_CONFIGS / "tiny_vae.yaml")
DDPM = str(TEST_CONFIGS / "tiny_ddpm.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.logger=false"]
FAST = [*QUIET, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]


@pytest.fixture(scope="module")
def runs_home(tmp_path_factory):
    """Finished tiny VAE and DDPM runs: every bad command below must leave this folder exactly as it is."""
    root = tmp_path_factory.mktemp("bad_input_home")
    for config, extra in ((TINY, FAST), (DDPM, [])):
        result = run_subprocess("fit", "--config", config, *extra, cwd=root, env={"WANDB_MODE": "disabled"})
        assert result.returncode == 0, result.stderr[-2000:]
    return root


@pytest.fixture
def home(runs_home, monkeypatch):
    monkeypatch.chdir(runs_home)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
    before = snapshot(runs_home)
    folders = sorted(str(p) for p in runs_home.rglob("*") if p.is_dir())
    yield runs_home
    assert snapshot(runs_home) == before, "a refused command changed or added files"
    assert sorted(str(p) for p in runs_home.rglob("*") if p.is_dir()) == folders, "a refused command left a folder behind"


def vae_ckpt(root) -> str:
    return glob.glob(str(root / "runs" / "tiny_vae" / "*" / "checkpoints" / "last.ckpt"))[0]


def ddpm_ckpt(root) -> str:
    return glob.glob(str(root / "runs" / "tiny_ddpm" / "*" / "checkpoints" / "last.ckpt"))[0]


def refused(capsys, *args: str) -> str:
    """Run the CLI, expect exit status 2 and exactly one stderr line (no traceback, no progress bar): return it."""
    capsys.readouterr()
    assert run_in_process(*args) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if line.strip() and not line.startswith("Seed set to")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("gen_research: error: ") and "Traceback" not in captured.err
    return lines[0]


def png_folder(folder, count=12, size=8, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


# ---- trainer and run-folder settings (gen_research/config/checks.py) --------------------------------------
@pytest.mark.parametrize(
    "option, expected",
    [
        ("--trainer.max_steps=-5", "trainer.max_steps=-5 is not allowed; set --trainer.max_steps to -1 (no limit)"),
        ("--trainer.max_epochs=-3", "trainer.max_epochs=-3 is not allowed; set --trainer.max_epochs to -1 (no limit)"),
        ("--trainer.devices=0", "trainer.devices='0' is not allowed; set --trainer.devices to a count >= 1"),
        ("--trainer.devices=[0, 0]", "set --trainer.devices to a list of distinct device indices"),
        ("--trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5 is not allowed"),
        ("--trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is not allowed"),
        ("--trainer.val_check_interval=0", "trainer.val_check_interval=0 is not allowed"),
        ("--trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1"),
        ("--checkpoint.save_top_k=-3", "checkpoint.save_top_k=-3 is not allowed"),
    ],
)
def test_trainer_settings_that_cannot_work(home, capsys, option, expected):
    assert expected in refused(capsys, "fit", "--config", TINY, *QUIET, option)


def test_runs_root_under_a_regular_file(home, capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    line = refused(capsys, "fit", "--config", TINY, *FAST, f"--runs_root={tmp_path / 'notes.txt' / 'runs'}")
    assert "notes.txt is a file, not a folder; point --runs_root at a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits; the read-only mount case below covers root")
def test_runs_root_without_write_permission(home, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert "is not writable; point --runs_root at a folder you can write to" in refused(
            capsys, "fit", "--config", TINY, *FAST, f"--runs_root={locked / 'runs'}")
    finally:
        locked.chmod(0o755)


def test_resume_into_a_read_only_run_folder(runs_home, tmp_path):
    """A run folder on a read-only mount (a private mount namespace, so this works as root too): refused before
    anything is built, instead of a traceback when the resumed config is written."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -m` (a private mount namespace) to make a read-only bind mount")
    run_copy = tmp_path / "copy"
    shutil.copytree(runs_home / "runs", run_copy / "runs")
    ckpt = glob.glob(str(run_copy / "runs" / "tiny_vae" / "*" / "checkpoints" / "last.ckpt"))[0]
    before = snapshot(run_copy)
    command = (
        f"mount --bind {run_copy} {run_copy} && mount -o remount,ro,bind {run_copy} && "
        f"{sys.executable} -m gen_research fit --config {TINY} {' '.join(FAST)} --trainer.max_epochs=2 --ckpt_path={ckpt}"
    )
    result = subprocess.run(["unshare", "-m", "sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "WANDB_MODE": "disabled"})
    if "mount:" in result.stderr and "gen_research" not in result.stderr:
        pytest.skip(f"cannot make a read-only bind mount here: {result.stderr.strip()[:200]}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("gen_research: error: --ckpt_path ")
    assert "is not writable; a resumed fit writes into the checkpoint's run folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(run_copy) == before


# ---- hyperparameters (model and data constructors) -------------------------------------------------------
@pytest.mark.parametrize(
    "config, option, expected",
    [
        (TINY, "--model.init_args.lr=-1", "vae: model.init_args.lr=-1.0 must be in (0, inf); set model.init_args.lr to e.g. 1e-3"),
        (TINY, "--model.init_args.weight_decay=-0.1", "vae: model.init_args.weight_decay=-0.1 must be in [0, inf)"),
        (TINY, "--model.init_args.warmup_steps=-2", "vae: model.init_args.warmup_steps=-2 must be in [0, inf)"),
        (TINY, "--model.init_args.beta=-2", "vae: model.init_args.beta=-2.0 must be in [0, inf)"),
        (TINY, "--model.init_args.latent_dim=0", "vae: model.init_args.latent_dim=0 must be positive integers"),
        (TINY, "--model.init_args.channels=[]", "vae: model.init_args.channels=[] must be positive integers"),
        (TINY, "--model.init_args.iw_samples=0", "vae: model.init_args.iw_samples=0 must be positive integers"),
        (TINY, "--data.init_args.batch_size=0", "digits: batch_size must be a positive integer, got 0; set data.init_args.batch_size"),
        (TINY, "--data.init_args.val_fraction=1.0", "digits: val_fraction must be in [0, 1), got 1.0"),
        (DDPM, "--model.init_args.sampling_steps=0", "ddpm: model.init_args.sampling_steps=0 must be in [1, 1000]"),
        (DDPM, "--model.init_args.dropout=1.5", "ddpm: model.init_args.dropout=1.5 must be in [0, 1)"),
        (DDPM, "--model.init_args.lr=0", "ddpm: model.init_args.lr=0.0 must be in (0, inf)"),
    ],
)
def test_nonsensical_hyperparameters(home, capsys, config, option, expected):
    assert expected in refused(capsys, "fit", "--config", config, *FAST, option)


# ---- image folders -------------------------------------------------------------------------------------
def test_truncated_png_in_an_image_folder_is_reported_at_setup(home, capsys, tmp_path):
    folder = png_folder(tmp_path / "images")
    damaged = folder / "005.png"
    damaged.write_bytes(damaged.read_bytes()[:-30])  # header intact, image data cut off
    line = refused(capsys, "fit", "--config", TINY, *FAST, "--data=image_folder", f"--data.init_args.root={folder}",
                   "--data.init_args.grayscale=true", "--data.init_args.val_fraction=0.25", "--data.init_args.test_fraction=0.25",
                   "--data.init_args.batch_size=4", "--runs_root=runs")
    assert f"cannot read image {str(damaged)!r}" in line and "remove or fix it" in line


def test_a_text_file_named_png_in_an_image_folder(home, capsys, tmp_path):
    folder = png_folder(tmp_path / "images")
    (folder / "zz_notes.png").write_text("not an image")
    line = refused(capsys, "fit", "--config", TINY, *FAST, "--data=image_folder", f"--data.init_args.root={folder}",
                   "--data.init_args.grayscale=true", "--data.init_args.batch_size=4")
    assert "zz_notes.png" in line and "remove or fix it" in line


# ---- sample -------------------------------------------------------------------------------------------------
def test_sample_batch_size_and_count_must_be_positive(home, capsys):
    ckpt = vae_ckpt(home)
    assert "--batch-size 0: must be at least 1" in refused(capsys, "sample", "--config", TINY, "--ckpt_path", ckpt, "--batch-size", "0")
    assert "--num-images 0: must be at least 1" in refused(capsys, "sample", "--config", TINY, "--ckpt_path", ckpt, "--num-images", "0")
    assert "--temperature -1.0: must be a finite number in [0, inf)" in refused(
        capsys, "sample", "--config", TINY, "--ckpt_path", ckpt, "--temperature", "-1")


def test_sample_strength_out_of_range(home, capsys):
    line = refused(capsys, "sample", "--config", DDPM, "--ckpt_path", ddpm_ckpt(home), "--input", "val", "--strength", "1.5")
    assert "--strength 1.5: must be a finite number in (0, 1]" in line


def test_sample_refused_option_leaves_no_output_folder(home, capsys, tmp_path):
    """An unknown sampler (once refused inside the sampling loop) and too many steps (a diffusers traceback) are
    refused before the output folder is made."""
    out = tmp_path / "samples"
    line = refused(capsys, "sample", "--config", DDPM, "--ckpt_path", ddpm_ckpt(home), "--sampler", "ddimm", "--out", str(out))
    assert "--sampler 'ddimm' is unknown; did you mean ddim" in line
    assert not out.exists()
    line = refused(capsys, "sample", "--config", DDPM, "--ckpt_path", ddpm_ckpt(home), "--steps", "5000", "--num-images", "2")
    assert "--steps 5000 is more than the 1000 noise levels the model was trained on" in line
    # (the fixture checks that no runs/tiny_ddpm/<timestamp>-sample folder is left behind)


def test_sample_refused_while_sampling_removes_its_folder(home, capsys, tmp_path, monkeypatch):
    """A refusal raised inside model.sample (after the folder was made) removes the folder it made, and its parents."""
    from gen_research.errors import GenResearchError
    from gen_research.models.diffusion.ddpm import DDPM as DDPMModel

    def refuse(*args, **kwargs):
        raise GenResearchError("refused while sampling; change something")

    monkeypatch.setattr(DDPMModel, "sample", refuse)
    for where in (["--out", str(tmp_path / "new" / "samples")], []):  # a new --out folder, and the default run folder
        assert run_in_process("sample", "--config", DDPM, "--ckpt_path", ddpm_ckpt(home), "--num-images", "2", *where) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == "gen_research: error: refused while sampling; change something"
    assert not (tmp_path / "new" / "samples").exists()
    # (the fixture checks that no runs/tiny_ddpm/<timestamp>-sample folder is left behind)


def test_mask_png_of_the_wrong_size_is_not_stretched(home, capsys, tmp_path):
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((16, 16), 255, dtype=np.uint8)).save(mask)  # the model makes 8x8 images
    line = refused(capsys, "sample", "--config", DDPM, "--ckpt_path", ddpm_ckpt(home), "--input", "val", "--mask", str(mask),
                   "--num-images", "2")
    assert "is 16x16 pixels; the model makes 8x8 images: give a mask of that size" in line


def test_truncated_mask_png(home, capsys, tmp_path):
    mask = tmp_path / "mask.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(mask)
    mask.write_bytes(mask.read_bytes()[:-30])
    line = refused(capsys, "sample", "--config", DDPM, "--ckpt_path", ddpm_ckpt(home), "--input", "val", "--mask", str(mask),
                   "--num-images", "2")
    assert "is not an image" in line


# ---- evaluate -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, expected",
    [
        (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["--num-images", "0"], "--num-images 0: must be at least 1 (leave it out to use every reference image)"),
        (["--num-images", "-5"], "--num-images -5: must be at least 1 (leave it out to use every reference image)"),
        (["--nearest-k", "0"], "--nearest-k 0: must be at least 1"),
        (["--kid-subset-size", "0"], "--kid-subset-size 0: must be at least 1"),
    ],
)
def test_evaluate_counts_must_be_positive(home, capsys, options, expected):
    assert expected in refused(capsys, "evaluate", "--config", TINY, "--ckpt_path", vae_ckpt(home), *options)


def test_evaluate_fewer_images_than_nearest_k_fails_before_any_metric_runs(home, capsys):
    # One stderr line means no feature pass ran (its progress bars write to stderr) and FID/KID never computed.
    line = refused(capsys, "evaluate", "--config", TINY, "--ckpt_path", vae_ckpt(home), "--metrics", "fid,kid,precision",
                   "--num-images", "4", "--no-cache")
    assert "precision needs more than nearest_k=5 real and generated images; the val split has 4 and the generated set 4" in line


def test_evaluate_folders_too_small_or_fewer_than_asked(home, capsys, tmp_path):
    real, fake = png_folder(tmp_path / "real", 5), png_folder(tmp_path / "fake", 5, seed=1)
    line = refused(capsys, "evaluate", "--real", str(real), "--fake", str(fake), "--metrics", "fid,precision", "--no-cache")
    assert "precision needs more than nearest_k=5" in line and f"--real {real} has 5" in line
    line = refused(capsys, "evaluate", "--real", str(real), "--fake", str(fake), "--metrics", "fid", "--num-images", "10", "--no-cache")
    assert "--num-images 10 is more than the 5 images of --real" in line


def test_evaluate_unknown_shipped_asset(home, capsys):
    line = refused(capsys, "evaluate", "--config", TINY, "--ckpt_path", vae_ckpt(home), "--features", "classifier",
                   "--feature-weights", "package://classifier-mnist.ckpt")
    assert "package://classifier-mnist.ckpt: no such file ships with gen_research" in line and "classifier-mnist5k.ckpt" in line


# ---- submit ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, expected",
    [
        (["--tasks-per-node=-3", "--mem=lots"], "submit: --tasks-per-node must be >= 1, got -3"),
        (["--mem=lots"], "submit: --mem='lots' is not a SLURM memory size"),
        (["--cpus-per-task=0"], "submit: --cpus-per-task must be >= 1, got 0"),
        (["--partition=gpu\n#SBATCH --x"], "is not a SLURM partition name"),
    ],
)
def test_submit_resources_refused_before_a_script_is_written(home, capsys, options, expected):
    assert expected in refused(capsys, "submit", "--config", TINY, *options, "--dry-run")
    assert "#SBATCH" not in capsys.readouterr().out


# ---- evaluation callback: set-up problems before the first training step -----------------------------------
def _with_evaluation(tmp_path, **init_args) -> str:
    import yaml

    override = {"trainer": {"callbacks": [{"class_path": "evaluation", "init_args": {"every_n_epochs": 1, **init_args}}]}}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(override))
    return str(path)


@pytest.mark.parametrize(
    "init_args, expected",
    [
        ({"features": "classifier", "feature_weights": "missing.ckpt"}, "classifier checkpoint not found: "),
        ({"metrics": "is", "features": "pixels"}, "metric 'is' needs an extractor with class logits"),
        ({"metrics": "accuracy", "features": "classifier", "feature_weights": str(REPO / "gen_research" / "assets" / "classifier-mnist5k.ckpt")},
         "was trained on images of shape (1, 28, 28)"),
        ({"metrics": "intra_fid", "features": "pixels"}, "class-conditional metrics (intra_fid) need a model that samples given classes; VAE does not"),
        ({"metrics": "fid,precision", "num_samples": 4}, "precision needs more than nearest_k=5"),
        ({"metrics": "fid", "sample_options": {"temperature": -1}}, "--temperature -1: must be a finite number in [0, inf)"),
        ({"metrics": "fid", "sample_options": {"truncation": 0.5}}, "--truncation does not apply to VAE; it takes: --temperature"),
    ],
)
def test_evaluation_setup_problems_stop_before_training(home, capsys, tmp_path, init_args, expected):
    line = refused(capsys, "fit", "--config", TINY, "--config", _with_evaluation(tmp_path, **init_args), *FAST)
    assert expected in line
    # (the fixture proves no run folder, checkpoint or config was written: nothing trained)


def test_missing_weights_path_in_a_yaml_is_relative_to_that_yaml(home, capsys, tmp_path):
    line = refused(capsys, "fit", "--config", TINY, "--config", _with_evaluation(tmp_path, features="classifier", feature_weights="w/missing.ckpt"), *FAST)
    assert f"classifier checkpoint not found: {tmp_path / 'w' / 'missing.ckpt'}" in line


def test_declared_sampling_options_shape_evaluate_and_are_checked(home, capsys, tmp_path):
    """evaluate takes the family's declared options (a vae's --temperature): they change the generated set, are
    echoed, and are refused where they do not apply (folders, the sampler sweep, another family)."""
    import json

    from gen_research.commands.main import main

    def evaluate(*extra):
        out = tmp_path / f"r{len(list(tmp_path.iterdir()))}.json"
        assert main(["evaluate", "--config", TINY, "--ckpt_path", vae_ckpt(home), "--metrics", "fid", "--num-images", "40",
                     "--no-cache", "--json", str(out), *extra]) == 0
        return json.loads(out.read_text())["fid/pixels"], capsys.readouterr().out

    default, _ = evaluate()
    cold, printed = evaluate("--temperature", "0")
    assert "with temperature=0.0" in printed and cold != default  # every sample is the decoded mean latent
    assert evaluate("--temperature", "1")[0] == default  # 1 is the declared default
    assert "folders (--real/--fake) take no sampling options" in refused(capsys, "evaluate", "--real", "a", "--fake", "b", "--temperature", "1")
    assert "--temperature do(es) not apply to the sampler sweep" in refused(
        capsys, "evaluate", "--config", DDPM, "--ckpt_path", ddpm_ckpt(home), "--steps", "2", "--temperature", "1")
    assert "--temperature does not apply to DDPM; it takes: --sampler" in refused(
        capsys, "evaluate", "--config", DDPM, "--ckpt_path", ddpm_ckpt(home), "--temperature", "1", "--num-images", "8")
