"""The sample command: PNGs and a grid in a new folder, reproducible by seed, options checked against the model."""

import pytest
import torch
from PIL import Image

from .helpers import TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration
TINY = str(TEST_CONFIGS / "tiny_vae.yaml")


@pytest.fixture
def checkpoint(workdir):
    assert run_in_process("fit", "--config", TINY, "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.max_epochs=1") == 0
    return str(next((workdir / "runs" / "tiny_vae").glob("*/checkpoints/last.ckpt")))


def pngs(folder):
    return [Image.open(p).tobytes() for p in sorted(folder.glob("0*.png"))]


def test_same_seed_same_images_and_a_grid(checkpoint, workdir):
    base = ["sample", "--config", TINY, "--ckpt_path", checkpoint, "--num-images", "10", "--batch-size", "4"]
    assert run_in_process(*base, "--seed", "3", "--out", "a") == 0
    assert run_in_process(*base, "--seed", "3", "--out", "b") == 0
    assert run_in_process(*base, "--seed", "4", "--out", "c") == 0
    a, b, c = (pngs(workdir / name) for name in "abc")
    assert len(a) == 10 and a == b and a != c
    assert Image.open(workdir / "a" / "00000.png").size == (8, 8)
    assert Image.open(workdir / "a" / "grid.png").size == (4 * 10 + 2, 3 * 10 + 2)  # 10 images, 4 per row


def test_temperature_zero_decodes_the_prior_mean(checkpoint, workdir):
    assert run_in_process("sample", "--config", TINY, "--ckpt_path", checkpoint, "--num-images", "3", "--temperature", "0", "--out", "t0") == 0
    images = pngs(workdir / "t0")
    assert images[0] == images[1] == images[2]


def test_options_the_model_does_not_take_are_refused(checkpoint, workdir, capsys):
    assert run_in_process("sample", "--config", TINY, "--ckpt_path", checkpoint, "--steps", "20") == 2
    assert "--steps does not apply to VAE; it takes: --temperature" in capsys.readouterr().err
    assert run_in_process("sample", "--config", TINY, "--ckpt_path", checkpoint, "--class", "3") == 2
    assert "--class needs a class-conditional model" in capsys.readouterr().err
    (workdir / "full").mkdir()
    (workdir / "full" / "keep.png").write_bytes(b"x")
    assert run_in_process("sample", "--config", TINY, "--ckpt_path", checkpoint, "--out", "full") == 2
    assert "is not empty" in capsys.readouterr().err and (workdir / "full" / "keep.png").read_bytes() == b"x"
