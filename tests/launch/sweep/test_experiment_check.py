"""Parameters are checked against the experiment's resolved config before any run; --dry-run shows the plan."""

import pytest

from gen_research.commands.main import main

from .helpers import TINY_VAE, fit_command, write_sweep
from .test_spec import sweep_error


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
    return tmp_path


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"model.init_args.betta": {"values": [1.0]}},
         f"parameter model.init_args.betta is not in the config of {TINY_VAE}; did you mean model.init_args.beta?"),
        ({"beta": {"values": [1.0]}}, "parameter beta is not in the config of"),
        ({"trainer.max_epoch": {"value": 1}}, "did you mean trainer.max_epochs?"),
        ({"model.init_args.beta": {"values": [1.0, "abc"]}},
         "fit rejects model.init_args.beta='abc': model.init_args.beta expects a value of type float"),
        ({"model.init_args.likelihood": {"values": ["bernoulli", "gausian"]}}, "fit rejects model.init_args.likelihood='gausian'"),
    ],
)
def test_parameters_the_experiment_lacks_or_rejects(capsys, workdir, parameters, message):
    line = sweep_error(capsys, write_sweep(workdir, parameters=parameters), "--runs_root", str(workdir / "runs"))
    assert message in line, line
    if "beta is not" in message:
        assert "did you mean model.init_args.beta?" in line
    assert not (workdir / "runs").exists()


def test_missing_experiment_file_is_named(capsys, workdir):
    line = sweep_error(capsys, write_sweep(workdir, command=fit_command(config=workdir / "nope.yaml")))
    assert f"the command's --config {workdir / 'nope.yaml'} is not found" in line


def test_an_experiment_without_the_csv_logger_is_refused(capsys, workdir):
    line = sweep_error(capsys, write_sweep(workdir, command=fit_command("--trainer.logger=false")))
    assert "reads val/elbo from each run's metrics.csv" in line and "add {class_path: csv} to trainer.logger" in line


def test_dry_run_prints_the_planned_agent_command_lines(capsys, workdir):
    path = write_sweep(workdir, parameters={"model.init_args.beta": {"values": [0.5, 2.0, 4.0]}, "trainer.max_epochs": {"value": 1}})
    assert main(["sweep", str(path), "--count", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    planned = [line.strip() for line in out.splitlines() if line.strip().startswith("tiny_sweep-")]
    assert len(planned) == 2
    assert planned[0].endswith(f"--config {TINY_VAE} --model.init_args.beta=0.5 --trainer.max_epochs=1 --name=tiny_sweep-000 "
                               f"--runs_root=runs/sweeps/tiny_sweep/{out.split('runs/sweeps/tiny_sweep/')[1][:15]}")
    assert "--model.init_args.beta=2.0" in planned[1]
    assert "Dry run: 2 runs would go to runs/sweeps/tiny_sweep/" in out
    assert not (workdir / "runs").exists()
