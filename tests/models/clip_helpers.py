"""A tiny captioned data set for the clip tests: coloured squares at named places, 16x16 RGB, eight captions."""

from __future__ import annotations

import itertools
from typing import Any

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, Dataset

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0), "white": (1.0, 1.0, 1.0)}
PLACES = {"top left": (0, 0), "bottom right": (8, 8)}
CAPTIONS = [f"a {colour} square at the {place}" for colour, place in itertools.product(COLOURS, PLACES)]
SIDE = 16
# Widths small enough for a few-second fit on two cores.
TINY_CLIP = dict(image_shape=(3, SIDE, SIDE), vocab_size=560, max_length=12, text_hidden_size=32, text_layers=2, text_heads=2,
                 vision_hidden_size=32, vision_layers=2, vision_heads=2, patch_size=4, projection_dim=16, lr=2e-3,
                 warmup_steps=0, lr_schedule="constant")


def square_image(caption: str, noise: torch.Tensor) -> torch.Tensor:
    """The image of a caption: a grey background with an 8x8 square of the colour at the place, plus noise,
    quantised to 8 bits (uint8 / 127.5 - 1, as data modules produce)."""
    words = caption.split()
    colour, place = words[1], " ".join(words[-2:])
    image = torch.zeros(3, SIDE, SIDE)
    top, left = PLACES[place]
    image[:, top:top + 8, left:left + 8] = torch.tensor(COLOURS[colour])[:, None, None]
    image = (image + noise).clamp(-1, 1)
    return torch.round((image + 1) * 127.5) / 127.5 - 1


class SquaresDataset(Dataset):
    def __init__(self, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(size)]
        self.images = torch.stack([square_image(c, 0.1 * torch.randn(3, SIDE, SIDE, generator=generator)) for c in self.captions])

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "label": torch.tensor(index % len(CAPTIONS)), "caption": self.captions[index]}


class SquaresData(L.LightningDataModule):
    """{"image", "label", "caption"} batches (default collate: captions become a list of strings)."""

    batch_fields = ("image", "label", "caption")

    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.train = SquaresDataset(64, seed=0)
        self.val = SquaresDataset(16, seed=1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)


def tiny_trainer(max_steps: int, **kwargs: Any) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=max_steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)
