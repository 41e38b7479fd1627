"""The sample grid draws with the family's declared sampling options, checked at setup against the model."""

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.autoencoder import VAE, Autoencoder
from gen_research.training.callbacks.sample_grid import SampleGridLogger

SMALL = dict(image_shape=(1, 8, 8), channels=[8, 16], latent_dim=4)


class FakeTrainer:
    current_epoch = 0
    global_step = 0
    loggers = ()

    def __init__(self, root):
        self.default_root_dir = str(root)


def test_grid_samples_with_the_declared_option(tmp_path):
    torch.manual_seed(0)
    model = VAE(**SMALL).eval()
    grid = SampleGridLogger(num_samples=4, num_reconstructions=0, interpolation_pairs=0, sample_options={"temperature": 0})
    grid.setup(None, model, "fit")
    grid.log_grids(FakeTrainer(tmp_path), model, torch.zeros(4, 1, 8, 8))
    assert [p.name for p in grid.saved] == ["epoch000-samples.png"]
    import numpy as np
    from PIL import Image

    from gen_research.files.image_grid import to_grid_uint8

    drawn = np.asarray(Image.open(grid.saved[0]))
    with torch.no_grad():
        cold = model.sample(4, generator=torch.Generator().manual_seed(grid.seed), temperature=0.0)
        warm = model.sample(4, generator=torch.Generator().manual_seed(grid.seed))
    assert np.array_equal(drawn, to_grid_uint8(cold)) and not np.array_equal(drawn, to_grid_uint8(warm))


@pytest.mark.parametrize("model, options, message", [
    (VAE(**SMALL), {"temperature": -1}, "--temperature -1: must be a finite number"),
    (VAE(**SMALL), {"truncation": 0.5}, "--truncation does not apply to VAE; it takes: --temperature"),
    (Autoencoder(**SMALL), {"temperature": 1}, "--temperature does not apply to Autoencoder; it takes: no sampling options"),
])
def test_bad_options_fail_at_setup(model, options, message):
    with pytest.raises(GenResearchError, match=message):
        SampleGridLogger(sample_options=options).setup(None, model, "fit")
