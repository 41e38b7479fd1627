"""sample --grid's pictures (gen_research/commands/latent_grids.py) on toy models whose images show their latents:
interpolation endpoints and linearity, the style-mixing crossover and layout, and class-mean arithmetic."""

import pytest
import torch

from gen_research.commands.latent_grids import Arithmetic, check_grid_model, interpolation_grid, latent_arithmetic, style_mixing_grid
from gen_research.errors import GenResearchError


class ToyStyleModel:
    """num_ws = 4 styles of w_dim 2; the image of ws is ws itself (rows = layers), so every layer's source shows."""

    latent_dim, w_dim, num_ws, style_mixing_crossover = 2, 2, 4, 2
    latent_prior = "standard_normal"
    conditioning_classes = None
    device = torch.device("cpu")

    def to_w(self, z, labels=None, truncation_psi=1.0, truncation_cutoff=None):
        return (z * truncation_psi)[:, None].expand(-1, self.num_ws, -1) + 10.0  # w = z + 10, so w never equals z

    def synthesize(self, ws, noise_mode="const", generator=None):
        return ws[:, None]  # [N, 1, num_ws, w_dim]

    def decode(self, z, **options):
        return self.synthesize(self.to_w(z, **options))


class ToyPriorModel:
    """A latent prior whose image is z itself."""

    latent_dim, latent_prior, conditioning_classes, device = 2, "standard_normal", None, torch.device("cpu")

    def decode(self, z, truncation_psi=1.0):
        return (z * truncation_psi)[:, None, None]

    def sample(self, num_samples, labels=None, generator=None, **options):
        return self.decode(torch.randn(num_samples, 2, generator=generator))


def test_interpolation_runs_linearly_between_two_codes_in_w_for_a_style_model():
    model = ToyStyleModel()
    images = interpolation_grid(model, rows=3, steps=5, generator=torch.Generator().manual_seed(0), options={})
    paths = images[:, 0, 0].view(3, 5, 2)  # the w of every image
    assert torch.allclose(paths[:, 2], (paths[:, 0] + paths[:, 4]) / 2, atol=1e-6)  # linear: the middle is the mean
    assert (paths[:, 0] > 5).all()  # paths are in W (z + 10), not in z
    again = interpolation_grid(model, rows=3, steps=5, generator=torch.Generator().manual_seed(0), options={})
    assert torch.equal(images, again)  # the seed fixes the picture


def test_interpolation_in_z_applies_the_truncation_psi():
    images = interpolation_grid(ToyPriorModel(), 2, 3, torch.Generator().manual_seed(0), {"truncation_psi": 0.0})
    assert images.shape == (6, 1, 1, 2) and torch.equal(images, torch.zeros_like(images))


def test_style_mixing_cells_take_row_coarse_and_column_fine_styles_in_nvlabs_layout():
    model = ToyStyleModel()
    grid = style_mixing_grid(model, rows=2, columns=3, crossover=1, generator=torch.Generator().manual_seed(0), options={})
    cells = grid[:, 0]  # [(2 + 1) * (3 + 1), num_ws, w_dim]
    assert len(cells) == 12 and torch.equal(cells[0], torch.full_like(cells[0], -1.0))  # the blank corner
    columns, rows = cells[1:4], cells[[4, 8]]
    for r in range(2):
        for c in range(3):
            mixed = cells[4 * (r + 1) + 1 + c]
            assert torch.equal(mixed[:1], rows[r][:1]) and torch.equal(mixed[1:], columns[c][1:])  # crossover at layer 1
    default = style_mixing_grid(model, 1, 1, None, torch.Generator().manual_seed(0), {})[:, 0]
    assert torch.equal(default[3][:2], default[2][:2]) and torch.equal(default[3][2:], default[1][2:])  # model's crossover 2
    with pytest.raises(GenResearchError, match="--crossover 4: must be between 1 and 3"):
        style_mixing_grid(model, 1, 1, 4, torch.Generator(), {})


def test_arithmetic_adds_the_class_mean_difference_to_the_base_class():
    def classify(images):  # class 1 when the first coordinate of the latent is positive
        first = images.flatten(1)[:, 0]
        return torch.stack([-first, first], dim=1)

    grid, summary = latent_arithmetic(ToyPriorModel(), Arithmetic.parse("1-0+0"), classify, count=4, pool=400,
                                      generator=torch.Generator().manual_seed(0), options={})
    rows = grid.flatten(1).view(4, 4, 2)[..., 0]  # A, B, C, results: first coordinates
    assert (rows[0] > 0).all() and (rows[1] < 0).all() and (rows[2] < 0).all()
    shift = rows[3] - rows[2]
    assert torch.allclose(shift, shift[:1].expand(4)) and 1.2 < float(shift[0]) < 2.0  # E|z| difference: 2 * sqrt(2 / pi)
    assert summary["space"] == "z" and summary["pool"] == 400 and sum(summary["pool_counts"].values()) == 400
    assert not torch.equal(grid[4:8], grid[8:12])  # C = B: the C row shows other members than the B row
    assert summary["results_read_as_plus"] >= 0.5
    with pytest.raises(GenResearchError, match="only 0 of 400 samples read as class 5"):
        latent_arithmetic(ToyPriorModel(), Arithmetic.parse("5-0+0"), classify, 4, 400, torch.Generator().manual_seed(0), {})


def test_bad_requests_fail_in_one_line():
    with pytest.raises(GenResearchError, match="write it as A-B\\+C"):
        Arithmetic.parse("7+1-1")
    with pytest.raises(GenResearchError, match="style-mixing needs a model with a style space"):
        check_grid_model(ToyPriorModel(), "style-mixing", {})
    conditional = ToyPriorModel()
    conditional.conditioning_classes = 10
    with pytest.raises(GenResearchError, match="is class-conditional: use --grid samples --class K"):
        check_grid_model(conditional, "interpolation", {})
    with pytest.raises(GenResearchError, match="--temperature applies to --grid samples only"):
        check_grid_model(ToyPriorModel(), "interpolation", {"temperature": 0.5})
    check_grid_model(ToyStyleModel(), "style-mixing", {"truncation_psi": 0.7})
