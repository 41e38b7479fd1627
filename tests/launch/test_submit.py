"""submit --dry-run: the sbatch script a SLURM cluster would run (the real-cluster requeue test is not written yet)."""

from pathlib import Path

import pytest

from gen_research.commands.main import main

QUICKSTART = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")


def dry_run(capsys, *args):
    assert main(["submit", "--config", QUICKSTART, "--dry-run", *args]) == 0
    return capsys.readouterr().out


def test_gpu_job_script(capsys):
    script = dry_run(capsys, "--nodes", "2", "--gpus-per-node", "4", "--cpus-per-task", "8", "--partition", "gpu",
                     "--time", "12:00:00", "--account", "lab", "--mem", "64G", "--model.init_args.beta=4")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--partition=gpu",
                      "--time=12:00:00", "--account=lab", "--mem=64G", "--signal=USR1@90", "--requeue", "--open-mode=append",
                      "--output=runs/quickstart/slurm-%j.log", "--job-name=quickstart"):
        assert f"#SBATCH {directive}" in lines
    srun = next(line for line in lines if line.startswith("srun "))
    for part in ("-m gen_research fit", f"--config {QUICKSTART}", "--trainer.num_nodes=2", "--trainer.devices=4",
                 "--trainer.accelerator=gpu", "--trainer.strategy=ddp", "--model.init_args.beta=4", "--name=quickstart"):
        assert part in srun


def test_cpu_partition_uses_tasks_as_devices(capsys):
    script = dry_run(capsys, "--tasks-per-node", "2")
    assert "#SBATCH --ntasks-per-node=2" in script and "--gpus-per-node" not in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--trainer.accelerator=cpu" in srun and "--trainer.devices=2" in srun and "--trainer.strategy=ddp" in srun


@pytest.mark.parametrize(
    "args, message",
    [(["--time", "90 minutes"], "is not HH:MM:SS"), (["--bogus=1"], "unknown option --bogus"), (["--nodes", "0"], "--nodes must be >= 1")],
)
def test_bad_submit_input(capsys, args, message):
    assert main(["submit", "--config", QUICKSTART, "--dry-run", *args]) == 2
    assert message in capsys.readouterr().err


def test_without_sbatch_it_says_so(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main(["submit", "--config", QUICKSTART]) == 2
    assert "sbatch not found" in capsys.readouterr().err


REPO = Path(__file__).resolve().parents[2]


def sweep_script(capsys, monkeypatch, *args):
    monkeypatch.chdir(REPO)  # sweep files name their experiment relative to the repository root
    assert main(["submit", "--dry-run", *args]) == 0
    return capsys.readouterr().out.strip()


def test_local_sweep_file_becomes_an_array_of_shards(capsys, monkeypatch):
    script = sweep_script(capsys, monkeypatch, "--sweep", "experiments/sweeps/vae_beta_grid.yaml", "--array", "3",
                          "--gpus-per-node", "1", "--time", "02:00:00", "--partition", "gpu")
    lines = script.splitlines()
    for directive in ("--array=0-2", "--job-name=sweep-vae_beta_grid", "--nodes=1", "--ntasks=1", "--gpus-per-node=1",
                      "--time=02:00:00", "--partition=gpu", "--output=runs/sweeps/vae_beta_grid/slurm-%A_%a.log"):
        assert f"#SBATCH {directive}" in lines
    agent = lines[-1]
    assert "-m gen_research sweep experiments/sweeps/vae_beta_grid.yaml --runs_root runs" in agent
    assert agent.endswith('--shard "$TASK_ID/3" --sweep-dir "runs/sweeps/vae_beta_grid/slurm-$ARRAY_JOB_ID"')
    assert "--count" not in agent  # a grid is split whole
    # Saved before they are unset, so that each fit gets its own run folder and no srun detection.
    assert lines.index("TASK_ID=$SLURM_ARRAY_TASK_ID") < lines.index("unset SLURM_JOB_ID SLURM_ARRAY_JOB_ID SLURM_ARRAY_TASK_ID")
    assert "export SLURM_JOB_NAME=interactive" in lines and "--requeue" not in script


def test_random_sweep_file_splits_the_count_with_one_seed(capsys, monkeypatch):
    script = sweep_script(capsys, monkeypatch, "--sweep", "experiments/sweeps/vae_lr_random.yaml", "--array", "4",
                          "--count-per-task", "3", "--seed", "11")
    assert "--seed 11 --count 12 --shard \"$TASK_ID/4\"" in script.splitlines()[-1]


def test_wandb_sweep_id_starts_wandb_agents(capsys, monkeypatch):
    script = sweep_script(capsys, monkeypatch, "--sweep", "my-team/gen_research/abc123", "--array", "3", "--count-per-task", "5")
    lines = script.splitlines()
    assert "#SBATCH --array=0-2" in lines and "#SBATCH --job-name=sweep-abc123" in lines
    assert lines[-1].endswith("-m wandb agent --count 5 my-team/gen_research/abc123")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sweep", "abc123"], "submit --sweep needs --array K"),
        (["--sweep", "abc123", "--array", "2", "--config", QUICKSTART], "not both"),
        (["--sweep", "abc123", "--array", "2", "--seed", "1"], "--seed applies to local sweep files"),
        (["--sweep", "abc123", "--array", "2", "--nodes", "2"], "each sweep agent runs on one node"),
        (["--sweep", "abc123", "--array", "2", "--model.init_args.beta=4"], "submit --sweep: unknown option --model.init_args.beta=4"),
        (["--sweep", "not a sweep!", "--array", "2"], "is neither a sweep file (.yaml) nor a W&B sweep id"),
        (["--sweep", "missing.yaml", "--array", "2"], "sweep file not found: missing.yaml"),
        (["--sweep", "experiments/sweeps/ddpm_bayes.yaml", "--array", "2"], "pass --count-per-task N"),
        (["--config", QUICKSTART, "--array", "2"], "--array goes with --sweep"),
        ([], "submit needs --config EXP for a fit, or --sweep"),
    ],
)
def test_bad_sweep_submissions(capsys, monkeypatch, args, message):
    monkeypatch.chdir(REPO)
    assert main(["submit", "--dry-run", *args]) == 2
    assert message in capsys.readouterr().err
