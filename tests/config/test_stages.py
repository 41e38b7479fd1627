"""gen_research/config/stages.py without training: the config digest, the finished-fit marker, the plan a two-stage
command makes (and that DDP workers follow), ``--print_config``, and the one-line errors."""

import json
import os
from pathlib import Path

import pytest
import yaml

from gen_research.commands.main import main
from gen_research.config import stages
from gen_research.config.stages import FIT_MARKER, PLAN_ENV, config_digest, read_fit_marker, stages_resolved, write_fit_marker
from gen_research.training.run_folder import RUN_DIR_ENV

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TWO_STAGE = CONFIGS / "tiny_two_stage.yaml"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for name in (RUN_DIR_ENV, PLAN_ENV, "SLURM_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_digest_compares_configs_as_data_and_ignores_where_a_run_goes():
    config = yaml.safe_dump({"model": {"init_args": {"hidden": 4, "lr": 0.01}}, "seed_everything": 7})
    reordered = yaml.safe_dump({"seed_everything": 7, "model": {"init_args": {"lr": 0.01, "hidden": 4}}})
    base = config_digest(["--config", config, "--trainer.max_epochs=2"])
    assert base.startswith("sha256:")
    assert config_digest(["fit", "--name=a", "--config", reordered, "--runs_root", "elsewhere", "--trainer.max_epochs=2",
                          "--ckpt_path=last"]) == base
    assert config_digest(["--config", config, "--trainer.max_epochs=3"]) != base
    assert config_digest(["--config", config.replace("0.01", "0.02"), "--trainer.max_epochs=2"]) != base


def test_the_marker_names_the_final_checkpoint_relative_to_its_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    path = write_fit_marker(run, run / "checkpoints" / "last.ckpt", 12, "sha256:abc")
    assert path == run / FIT_MARKER
    record = read_fit_marker(run)
    assert record["checkpoint"] == "checkpoints/last.ckpt" and record["global_step"] == 12 and record["config_digest"] == "sha256:abc"
    assert stages.marker_checkpoint(run, record) == run / "checkpoints" / "last.ckpt"
    (run / FIT_MARKER).write_text("{not json")
    assert read_fit_marker(run) is None and read_fit_marker(tmp_path / "missing") is None
    assert not list(run.glob("*.tmp*"))  # written atomically: no temporary left


def _experiment(tmp_path: Path, name: str, stages_node: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"defaults": [str(TWO_STAGE)], "stages": stages_node}))
    return path


@pytest.mark.parametrize(
    ("stages_node", "message"),
    [
        ({"model.init_args.first_stage_ckpt": "missing.yaml"}, "names the experiment"),
        ({"first_stage_ckpt": str(CONFIGS / "tiny_vae.yaml")}, "'first_stage_ckpt' is not a dotted option path"),
        ({"model.init_args.first_stage_ckpt": str(TWO_STAGE)}, "nested stages are not supported"),
    ],
)
def test_bad_stages_are_one_line_errors_before_anything_is_written(workdir, capsys, stages_node, message):
    path = _experiment(workdir, "bad", stages_node)
    assert main(["fit", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("gen_research: error: ")
    if "missing" in message:
        assert str(workdir / "missing.yaml") in err  # relative to the file that names it
    assert not (workdir / "runs").exists()


def test_validate_needs_a_finished_stage(workdir, capsys):
    assert main(["validate", "--config", str(TWO_STAGE), "--ckpt_path=some.ckpt"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no finished fit" in err and f"fit {TWO_STAGE} first" in err and "\n" not in err


def test_print_config_trains_nothing_and_parses_without_the_stages_key(workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(TWO_STAGE), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "stages" not in printed and printed["model"]["init_args"]["first_stage_ckpt"] is None
    assert not (workdir / "runs").exists()


def test_an_option_set_in_a_file_or_on_the_command_line_runs_no_stage(workdir):
    given = _experiment(workdir, "given", {})
    given.write_text(given.read_text() + "model:\n  init_args: {first_stage_ckpt: some.ckpt}\n")
    assert stages.plan_stages("fit", ["--config", str(given)]) is None
    assert stages.plan_stages("fit", ["--config", str(TWO_STAGE), "--model.init_args.first_stage_ckpt", "x.ckpt"]) is None
    assert not (workdir / "runs").exists()


def _fake_fit(calls: list):
    """A stage fit that only writes the checkpoint its run folder would end with."""

    def fit(argv):
        calls.append((argv, os.environ.get(RUN_DIR_ENV), os.environ.get(PLAN_ENV) is not None))
        checkpoint = Path(os.environ[RUN_DIR_ENV]) / "checkpoints" / "last.ckpt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"x")
        return 0

    return fit


def test_the_starting_process_plans_the_folders_and_a_ddp_worker_follows_its_plan(workdir):
    calls: list = []
    command = ["fit", "--config", str(TWO_STAGE), "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_epochs=1"]
    with stages_resolved(command, fit=_fake_fit(calls)) as second:
        plan = json.loads(os.environ[PLAN_ENV])  # what a DDP worker launched now inherits
        second_run_dir = os.environ[RUN_DIR_ENV]
    (stage_argv, stage_run_dir, planned), = calls
    assert planned and Path(stage_run_dir).parent == Path("runs/tiny_two_stage.tiny_two_stage_first")
    assert stage_argv[:3] == ["fit", "--config", str(CONFIGS / "tiny_two_stage_first.yaml")]
    assert "--trainer.devices=2" in stage_argv and "--trainer.strategy=ddp" in stage_argv  # the same strategy
    assert "--trainer.max_epochs=1" not in stage_argv  # the second stage's own override
    assert Path(second_run_dir).parent == Path("runs/tiny_two_stage") and second_run_dir != stage_run_dir
    checkpoint = (Path(stage_run_dir) / "checkpoints" / "last.ckpt").resolve()
    assert second == [*command, f"--model.init_args.first_stage_ckpt={checkpoint}"]
    assert RUN_DIR_ENV not in os.environ and PLAN_ENV not in os.environ  # nothing leaks into the next command

    # A worker re-running the command: it inherits the plan and the stage's folder, runs the same fits in the same
    # folders, and gets the second stage's folder, not the stage's.
    worker_calls: list = []
    os.environ[PLAN_ENV], os.environ[RUN_DIR_ENV] = json.dumps(plan), stage_run_dir
    try:
        with stages_resolved(command, fit=_fake_fit(worker_calls)) as worker_second:
            assert os.environ[RUN_DIR_ENV] == second_run_dir
        assert worker_second == second and [(a, d) for a, d, _ in worker_calls] == [(stage_argv, stage_run_dir)]
        assert os.environ[PLAN_ENV] == json.dumps(plan)  # the worker leaves its inherited plan alone
    finally:
        os.environ.pop(PLAN_ENV, None)
        os.environ.pop(RUN_DIR_ENV, None)


def test_an_explicit_second_stage_checkpoint_with_a_stage_to_train_is_refused(workdir, capsys):
    assert main(["fit", "--config", str(TWO_STAGE), "--ckpt_path=old.ckpt"]) == 2
    err = capsys.readouterr().err
    assert "--ckpt_path old.ckpt" in err and "another first stage" in err
    assert not any(path.is_dir() and any(path.iterdir()) for path in (workdir / "runs").glob("*/*"))
