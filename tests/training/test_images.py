import numpy as np
import torch
from PIL import Image

from gen_research.files.image_grid import save_grid, to_grid_uint8
from gen_research.training.callbacks.sample_grid import _interleave_rows


def test_grid_is_uint8_with_full_range_for_wandb():
    images = torch.cat([torch.full((2, 1, 4, 4), -1.0), torch.full((2, 1, 4, 4), 1.0)])
    grid = to_grid_uint8(images, nrow=2)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 4 + 3 * 2, 2 * 4 + 3 * 2)
    assert grid[2:6, 2:6].max() == 0 and grid[8:12, 2:6].min() == 255  # -1 -> black, +1 -> white


def test_rgb_grid_and_png(tmp_path):
    images = torch.rand(3, 3, 5, 5) * 2 - 1
    path = tmp_path / "sub" / "grid.png"
    array = save_grid(images, path, nrow=3)
    assert array.shape[-1] == 3 and Image.open(path).size == (3 * 5 + 4 * 2, 5 + 2 * 2)


def test_interleave_rows_alternates_originals_and_reconstructions():
    originals, reconstructions = torch.zeros(16, 1, 2, 2), torch.ones(16, 1, 2, 2)
    mixed = _interleave_rows(originals, reconstructions, row=8)
    assert [float(x.mean()) for x in mixed[::8]] == [0.0, 1.0, 0.0, 1.0]
