import random

import numpy as np
import torch

from gen_research.training.callbacks.rng_state import RandomStateCheckpoint


def draw():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    callback = RandomStateCheckpoint()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    draw()
    torch.save({"callback": callback.state_dict()}, tmp_path / "rng.ckpt")
    expected = draw()
    draw()  # move every generator on
    saved = torch.load(tmp_path / "rng.ckpt", weights_only=True)  # what Lightning uses on resume
    callback.load_state_dict(saved["callback"])
    assert draw() == expected
