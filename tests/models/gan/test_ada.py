"""ADA (gen_research/models/gan/ada.py): NVlabs' defaults, the p feedback step, identity at p = 0, the coordinate
convention of the geometric transforms, gradients through the augmentations, and p carried by checkpoints."""

import math

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F

from gen_research.data.embedded import Digits
from gen_research.errors import GenResearchError
from gen_research.models.gan import DCGAN
from gen_research.models.gan.ada import AdaptiveAugment, augment, check_ada_settings, colour_transform, geometric_matrices


def test_settings_default_to_nvlabs_and_bad_keys_fail_in_one_line():
    assert check_ada_settings("dcgan", {}) == {"target": 0.6, "interval": 4, "kimg": 500.0}
    assert check_ada_settings("dcgan", None) is None
    with pytest.raises(GenResearchError, match="unknown key.*targt"):
        check_ada_settings("dcgan", {"targt": 0.6})
    with pytest.raises(GenResearchError, match=r"ada.target=1.5 must be in \(0, 1\)"):
        check_ada_settings("dcgan", {"target": 1.5})
    with pytest.raises(GenResearchError, match="diffaugment .* or ada, not both"):
        DCGAN(image_shape=(1, 8, 8), latent_dim=4, base_channels=4, diffaugment="color", ada={})


def test_p_moves_by_batch_times_interval_over_kimg_after_interval_observations():
    ada = AdaptiveAugment(target=0.6, interval=2, kimg=1.0)
    ada.p.fill_(0.5)
    ada.observe(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert ada.update(batch_images=4) is None and float(ada.p) == 0.5  # one observation of two: no step yet
    ada.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]))
    r_t = ada.update(batch_images=4)
    assert float(r_t) == pytest.approx(6 / 8)  # mean sign over both observations
    assert float(ada.p) == pytest.approx(0.5 + 4 * 2 / 1000)  # r_t > target: more augmentation
    for _ in range(2):
        ada.observe(torch.tensor([-1.0, -1.0]))
    ada.update(batch_images=1000)
    assert float(ada.p) == 0.0  # r_t < target: less, never below 0
    assert {"p", "signs", "observations"} <= set(ada.state_dict())


def test_p_zero_is_the_identity_and_p_one_changes_every_image_differentiably():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    assert torch.equal(augment(images, 0.0), images)
    assert torch.allclose(geometric_matrices(6, 16, 16, 0.0, images.device), torch.eye(3).expand(6, 3, 3))
    assert torch.allclose(colour_transform(images, 0.0), images, atol=1e-6)
    source = images.clone().requires_grad_(True)
    out = augment(source, 1.0)
    assert out.shape == images.shape and all(not torch.allclose(a, b) for a, b in zip(out, images))
    out.square().sum().backward()
    assert source.grad is not None and source.grad.abs().sum() > 0  # G gets gradients through D's augmentations


def test_matrices_map_output_to_input_coordinates_so_a_flip_and_a_pixel_shift_are_exact():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    flip = torch.tensor([[-1.0, 0, 0], [0, 1, 0]]).expand(2, 2, 3)
    grid = F.affine_grid(flip, [2, 1, 4, 4], align_corners=False)
    assert torch.allclose(F.grid_sample(images, grid, align_corners=False), images.flip(3))
    shift = torch.tensor([[1.0, 0, 2 / 4], [0, 1, 0]]).expand(2, 2, 3)  # one pixel of 4 (2 / width in [-1, 1] units)
    grid = F.affine_grid(shift, [2, 1, 4, 4], align_corners=False)
    shifted = F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)
    assert torch.allclose(shifted[..., :3], images[..., 1:])


def test_hue_rotation_keeps_grey_pixels_and_luma_flip_negates_them():
    grey = torch.full((64, 3, 2, 2), 0.25)
    torch.manual_seed(1)
    out = colour_transform(grey, 1.0)
    same_luma = out.std(dim=1).max()  # every channel of a pixel stays equal: only brightness/contrast/flip act on grey
    assert float(same_luma) < 1e-5
    assert math.isclose(colour_transform(torch.zeros(1, 3, 1, 1), 0.0).abs().max().item(), 0.0, abs_tol=1e-7)


def test_a_fit_with_ada_moves_p_and_checkpoints_carry_it(tmp_path):
    torch.manual_seed(0)
    model = DCGAN(image_shape=(1, 8, 8), latent_dim=8, base_channels=8, ada={"target": 0.6, "interval": 2, "kimg": 0.05})
    model.ada.p.fill_(0.5)  # every update moves p by +-0.64 (16 * 2 / 50), so any update shows
    trainer = L.Trainer(max_steps=8, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu")
    trainer.fit(model, datamodule=Digits(batch_size=16))
    p = float(model.ada.p)
    assert p != 0.5 and int(model.ada.observations) == 0  # 8 D steps = 4 updates, the last one just done
    lattice = [0.5 + k * 0.64 for k in range(5)] + [k * 0.64 for k in range(5)]  # whole steps, from 0.5 or from a clamp at 0
    assert any(p == pytest.approx(value) for value in lattice)
    trainer.save_checkpoint(tmp_path / "ada.ckpt")
    state = torch.load(tmp_path / "ada.ckpt", weights_only=True)["state_dict"]
    assert float(state["ada.p"]) == p
