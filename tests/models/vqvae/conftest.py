"""One tiny VQ-VAE run and one tiny prior run over its codes, shared by the tests of this folder (each a few seconds)."""

from pathlib import Path

import pytest

from gen_research.commands.main import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_VQVAE = str(CONFIGS / "tiny_vqvae.yaml")
TINY_PRIOR = str(CONFIGS / "tiny_vq_prior.yaml")


def run(*args: str) -> int:
    """The CLI in this process; SystemExit from --help is returned as its code."""
    try:
        return main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.fixture(scope="session")
def vq_root(tmp_path_factory):
    """An empty folder the runs are made in (the CLI writes runs/ under the working folder), W&B off."""
    root = tmp_path_factory.mktemp("vq_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        yield root


@pytest.fixture(scope="session")
def tiny_vqvae_run(vq_root) -> Path:
    """The run folder of tiny_vqvae.yaml (2 epochs of 5 batches, metrics.csv written)."""
    assert run("fit", "--config", TINY_VQVAE, "--trainer.logger=csv") == 0
    (folder,) = (vq_root / "runs" / "tiny_vqvae").iterdir()
    return folder


@pytest.fixture(scope="session")
def tiny_prior_run(vq_root, tiny_vqvae_run) -> tuple[Path, Path]:
    """(prior run folder, the copy of the VQ-VAE checkpoint it was trained from: a test may delete it)."""
    first_stage = vq_root / "first_stage_copy.ckpt"
    first_stage.write_bytes((tiny_vqvae_run / "checkpoints" / "last.ckpt").read_bytes())
    assert run("fit", "--config", TINY_PRIOR, "--trainer.logger=false", f"--model.init_args.first_stage_ckpt={first_stage}") == 0
    (folder,) = (vq_root / "runs" / "tiny_vq_prior").iterdir()
    return folder, first_stage
