import pytest


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run commands from an empty folder, with W&B off unless a test turns it on."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
    return tmp_path
