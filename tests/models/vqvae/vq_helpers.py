"""What the VQ tests share: the tiny configs and the CLI in this process (a uniquely named module: tests/models has
its own conftest, so ``from conftest import`` would be ambiguous)."""

from pathlib import Path

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
