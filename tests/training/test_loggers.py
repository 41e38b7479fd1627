import pytest

from gen_research.training import loggers
from gen_research.training.loggers import CSVLogger, WandbLogger, choose_wandb_mode


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED", "WANDB_BASE_URL", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    return monkeypatch


def test_wandb_mode_auto_is_offline_without_key(clean_env):
    assert choose_wandb_mode("auto") == "offline"


def test_wandb_mode_env_is_honoured(clean_env):
    clean_env.setenv("WANDB_MODE", "disabled")
    assert choose_wandb_mode("auto") == "disabled"
    assert choose_wandb_mode("online") == "online"  # an explicit mode wins


def test_wandb_mode_online_needs_key_and_reachable_server(clean_env):
    clean_env.setenv("WANDB_API_KEY", "x" * 40)
    clean_env.setattr(loggers, "_server_reachable", lambda host, timeout_s=2.0: False)
    assert choose_wandb_mode("auto") == "offline"
    clean_env.setattr(loggers, "_server_reachable", lambda host, timeout_s=2.0: True)
    assert choose_wandb_mode("auto") == "online"


def test_wandb_run_id_persists_in_run_folder(clean_env, tmp_path):
    run_dir = tmp_path / "exp" / "run1"
    first = WandbLogger(save_dir=str(run_dir))
    assert not (run_dir / "wandb_run_id").exists()  # nothing written until the W&B run starts
    first.experiment  # starts the (offline) run
    first.experiment.finish()
    second = WandbLogger(save_dir=str(run_dir))  # a resumed run: same W&B run
    assert first.version == second.version == (run_dir / "wandb_run_id").read_text().strip()
    assert first.resolved_mode == "offline"
    assert first._wandb_init["name"] == "exp/run1"


def test_csv_logger_writes_into_run_folder(tmp_path):
    logger = CSVLogger(save_dir=str(tmp_path))
    logger.log_metrics({"val/loss": 1.5}, step=3)
    logger.save()
    text = (tmp_path / "metrics.csv").read_text()
    assert "val/loss" in text and "1.5" in text


def test_wandb_run_id_file_is_written_atomically_and_an_empty_one_is_ignored(clean_env, tmp_path):
    run_dir = tmp_path / "exp" / "run2"
    run_dir.mkdir(parents=True)
    (run_dir / "wandb_run_id").write_text("\n")  # left by a kill mid-write of an older version
    logger = WandbLogger(save_dir=str(run_dir))
    assert logger.version and len(logger.version) == 12
    (run_dir / "wandb_run_id").unlink()
    logger.experiment
    logger.experiment.finish()
    assert (run_dir / "wandb_run_id").read_text() == f"{logger.version}\n"
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".tmp-")]
