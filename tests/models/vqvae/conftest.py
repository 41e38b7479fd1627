"""One tiny VQ-VAE run and one tiny prior run over its codes, shared by the tests of this folder (each a few seconds)."""

from pathlib import Path

import pytest
from vq_helpers import TINY_PRIOR, TINY_VQVAE, run


@pytest.fixture(scope="session")
def vq_root(tmp_path_factory):
    """An empty folder for the runs (--runs_root) and the commands' outputs, W&B off; the working folder is not changed."""
    root = tmp_path_factory.mktemp("vq_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        yield root


@pytest.fixture(scope="session")
def tiny_vqvae_run(vq_root) -> Path:
    """The run folder of tiny_vqvae.yaml (2 epochs of 5 batches, metrics.csv written)."""
    assert run("fit", "--config", TINY_VQVAE, "--runs_root", str(vq_root / "runs"), "--trainer.logger=csv") == 0
    (folder,) = (vq_root / "runs" / "tiny_vqvae").iterdir()
    return folder


@pytest.fixture(scope="session")
def tiny_prior_run(vq_root, tiny_vqvae_run) -> tuple[Path, Path]:
    """(prior run folder, the copy of the VQ-VAE checkpoint it was trained from: a test may delete it)."""
    first_stage = vq_root / "first_stage_copy.ckpt"
    first_stage.write_bytes((tiny_vqvae_run / "checkpoints" / "last.ckpt").read_bytes())
    assert run("fit", "--config", TINY_PRIOR, "--runs_root", str(vq_root / "runs"), "--trainer.logger=false", f"--model.init_args.first_stage_ckpt={first_stage}") == 0
    (folder,) = (vq_root / "runs" / "tiny_vq_prior").iterdir()
    return folder, first_stage
