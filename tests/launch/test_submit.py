"""submit --dry-run: the sbatch script a SLURM cluster would run (the real-cluster requeue test is not written yet)."""

from pathlib import Path

import pytest

from gen_research.cli import main

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
