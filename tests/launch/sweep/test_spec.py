"""Sweep files as W&B reads them: every malformed file is a one-line error before anything runs."""

import pytest

from gen_research.commands.main import main
from gen_research.launch.sweep.spec import load_sweep_file, parse_parameter

from .helpers import fit_command, write_sweep


def sweep_error(capsys, path, *args) -> str:
    """Run the sweep command, expect exit status 2 and exactly one error line; return it."""
    assert main(["sweep", str(path), "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("gen_research: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": "grdi"}, "unknown method 'grdi'; did you mean grid?"),
        ({"method": None}, "unknown method None"),
        ({"metric": None}, "no metric; add e.g. metric: {name: val/loss, goal: minimize}"),
        ({"metric": {"goal": "maximize"}}, "metric must be a mapping with a name"),
        ({"metric": {"name": "val/elbo", "goal": "max"}}, "metric goal 'max' is not minimize or maximize"),
        ({"parameters": {}}, "parameters must be a non-empty mapping"),
        ({"parameters": {"model.init_args.beta": {"values": []}}}, "values must be a non-empty list"),
        ({"parameters": {"model.init_args.beta": [1, 2]}}, "must be a mapping such as {values: [1, 2]}"),
        ({"parameters": {"model.init_args.beta": {"distribution": "log_uniformm", "min": 0.1, "max": 1.0}}},
         "unknown distribution 'log_uniformm'; did you mean log_uniform?"),
        ({"parameters": {"model.init_args.beta": {"min": 2.0, "max": 1.0}}}, "min 2.0 is not less than max 1.0"),
        ({"parameters": {"model.init_args.beta": {"mins": 0.1, "max": 1.0, "distribution": "uniform"}}},
         "does not take 'mins'; did you mean min?"),
        ({"parameters": {"model.init_args.beta": {"distribution": "log_uniform_values", "min": 0, "max": 1}}}, "min must be > 0"),
        ({"parameters": {"model": {"parameters": {"init_args.beta": {"values": [1]}}}}}, "nested parameters under model are not supported"),
        ({"parameters": {"model.init_args.beta": {"min": 0.1, "max": 1.0}}}, "grid search takes values/value/int_uniform/q_uniform"),
        ({"command": None}, "no command; add command: [${env}, python, -m, gen_research, fit"),
        ({"command": ["python", "-m", "gen_research", "fit", "--config", "x.yaml"]}, "command lacks ${args}"),
        ({"command": ["python", "train.py", "${args}"]}, "command must run `python -m gen_research fit --config EXPERIMENT ${args}`"),
        ({"command": fit_command("${args_json_file}")}, "command macro ${args_json_file} is not supported here"),
        ({"run_cap": 0}, "run_cap must be a positive integer"),
    ],
)
def test_malformed_sweep_files(capsys, tmp_path, monkeypatch, changes, message):
    monkeypatch.chdir(tmp_path)
    line = sweep_error(capsys, write_sweep(tmp_path, **changes))
    assert message in line, line
    assert not (tmp_path / "runs").exists()


def test_missing_and_non_yaml_files(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "sweep file not found: nope.yaml" in sweep_error(capsys, "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [grid\n")
    assert "malformed YAML in" in sweep_error(capsys, bad)
    bad.write_text("- grid\n- random\n")
    assert "must hold a W&B sweep config" in sweep_error(capsys, bad)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_random_and_bayes_need_a_count(capsys, tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, method=method, parameters={"model.init_args.beta": {"min": 0.5, "max": 4.0}})
    assert f"a {method} sweep never ends by itself: pass --count N" in sweep_error(capsys, path)
    assert "--shard '3/3' is not i/K" in sweep_error(capsys, path, "--count", "2", "--shard", "3/3")
    assert "--count must be >= 1" in sweep_error(capsys, path, "--count", "0")


def test_shards_need_a_shared_sweep_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert "--shard needs --sweep-dir DIR" in sweep_error(capsys, write_sweep(tmp_path), "--shard", "0/2")


def test_inferred_distributions_and_defaults_follow_wandb():
    assert parse_parameter("a", {"value": 3}, "f").distribution == "constant"
    assert parse_parameter("a", {"values": [1, 2]}, "f").distribution == "categorical"
    assert parse_parameter("a", {"values": [1, 2], "probabilities": [0.3, 0.7]}, "f").distribution == "categorical_w_probabilities"
    assert parse_parameter("a", {"min": 1, "max": 4}, "f").distribution == "int_uniform"
    assert parse_parameter("a", {"min": 1, "max": 4.0}, "f").distribution == "uniform"
    normal = parse_parameter("a", {"distribution": "normal"}, "f")
    assert normal.settings == {"mu": 0.0, "sigma": 1.0}
    assert parse_parameter("a", {"distribution": "q_uniform", "min": 0, "max": 1}, "f").settings["q"] == 1.0


def test_experiment_configs_are_read_from_the_command(tmp_path):
    sweep = load_sweep_file(write_sweep(tmp_path, command=["python", "-m", "gen_research", "fit", "--config=a.yaml", "-c", "b.yaml", "${args}"]))
    assert sweep.experiment_configs == ["a.yaml", "b.yaml"]
    assert [p.name for p in load_sweep_file(write_sweep(tmp_path, parameters={"z": {"value": 1}, "a.b": {"value": 2}})).parameters] == ["a.b", "z"]
