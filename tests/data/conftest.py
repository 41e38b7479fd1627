"""Fixtures for the data-layer tests: tiny image folders, a fake torchvision MNIST, a stand-in trainer."""

from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, size: tuple[int, int] = (12, 10), value: int = 128, mode: str = "RGB") -> Path:
    """An image of one grey level; size is (width, height) as PIL has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)  # mode follows from the array shape
    return path


@pytest.fixture
def png():
    return write_png


def write_idx_mnist(raw: Path, split: str, values: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's idx-ubyte files as torchvision reads them (<root>/MNIST/raw/{train,t10k}-*-ubyte)."""
    raw.mkdir(parents=True, exist_ok=True)
    n = len(values)
    images = np.repeat(values.astype(np.uint8)[:, None], 28 * 28, axis=1)  # image i: every pixel = values[i]
    (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes())
    (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + labels.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist_root(tmp_path: Path) -> Path:
    """100 train / 20 test images; image i has every pixel equal to 2 * i and label i % 10."""
    raw = tmp_path / "MNIST" / "raw"
    write_idx_mnist(raw, "train", np.arange(100) * 2, np.arange(100) % 10)
    write_idx_mnist(raw, "t10k", 200 + np.arange(20), np.arange(20) % 10)
    return tmp_path


def stub_trainer(epoch: int = 0, ready: int = 0, training: bool = True, fn: str = "fit", world_size: int = 1, rank: int = 0):
    """Just the trainer attributes the data module reads."""
    return SimpleNamespace(
        world_size=world_size,
        global_rank=rank,
        current_epoch=epoch,
        training=training,
        state=SimpleNamespace(fn=fn),
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=SimpleNamespace(ready=ready)))),
    )


@pytest.fixture
def make_trainer():
    return stub_trainer
