"""Tiled translation (gen_research/sampling/tiling.py): exact where the blend rule holds, seamless where it cannot be."""

import pytest
import torch
from torch import nn

from gen_research.sampling.tiling import blend_weights, check_tiling, edge_profile, tile_starts, translate_tiled


def local_net(in_channels: int = 3, out_channels: int = 2) -> nn.Module:
    """Two 3x3 convolutions, no normalisation: every output pixel sees a 5x5 window (receptive radius 2)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, out_channels, 3, padding=1)).eval()


def instance_norm_net() -> nn.Module:
    """CycleGAN-style: reflection padding, instance norm (image-wide statistics per tile), so tiles never agree exactly."""
    torch.manual_seed(1)
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8, affine=True), nn.ReLU(),
                         nn.ReflectionPad2d(1), nn.Conv2d(8, 3, 3), nn.Tanh()).eval()


def test_a_tile_as_large_as_the_image_gives_exactly_the_untiled_output():
    net = local_net()
    images = torch.randn(5, 3, 12, 16)
    with torch.no_grad():
        assert torch.equal(translate_tiled(net, images, tile=16, overlap=4), net(images))
        assert torch.equal(translate_tiled(net, images, tile=16, overlap=0, batch_size=2), torch.cat([net(images[:2]), net(images[2:4]), net(images[4:])]))


def test_tiles_agree_with_the_untiled_output_when_overlap_quarter_covers_the_receptive_radius():
    net = local_net()
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(3, 3, 37, 53, generator=generator)
    with torch.no_grad():
        untiled = net(images)
        tiled = translate_tiled(net, images, tile=16, overlap=8, batch_size=5)  # overlap // 4 = 2 = the radius
    assert tiled.shape == (3, 2, 37, 53) and tiled.dtype == untiled.dtype
    assert len(tile_starts(37, 16, 8)) * len(tile_starts(53, 16, 8)) == 4 * 6  # really tiled, in 5 batches
    assert (tiled - untiled).abs().max().item() < 1e-5


def test_too_small_an_overlap_mixes_in_tile_edges_the_untiled_net_never_sees():
    net = local_net()
    images = torch.randn(2, 3, 37, 53, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        untiled = net(images)
        for overlap in (4, 6):  # overlap // 4 = 1 < radius 2: pixels next to a tile's zero padding get weight
            error = (translate_tiled(net, images, tile=16, overlap=overlap) - untiled).abs().max().item()
            assert error > 1e-3, (overlap, error)


def test_a_constant_image_through_an_instance_norm_net_stays_constant_without_a_seam():
    net = instance_norm_net()
    image = torch.full((1, 3, 41, 70), 0.3)
    with torch.no_grad():
        tiled = translate_tiled(net, image, tile=16, overlap=4)
    assert tiled.shape == (1, 3, 41, 70)
    assert tiled.flatten(2).std(dim=2).max().item() < 1e-5
    with torch.no_grad():  # and it is the constant a whole-image pass gives
        torch.testing.assert_close(tiled, net(image), rtol=0, atol=1e-5)


def test_blend_weights_are_positive_everywhere_and_tiles_overlap_at_least_as_asked():
    for height, width, tile, overlap in [(37, 53, 16, 8), (17, 100, 16, 4), (9, 9, 8, 4), (64, 65, 32, 16), (200, 33, 24, 7), (31, 8, 8, 4)]:
        total = torch.zeros(height, width, dtype=torch.float64)
        for top, left, weight in blend_weights(height, width, tile, overlap):
            assert weight.min() >= 0 and weight.max() == 1
            total[top : top + weight.shape[0], left : left + weight.shape[1]] += weight
        assert total.min() > 0, (height, width, tile, overlap)
        for length in (height, width):
            starts = tile_starts(length, tile, overlap)
            assert starts[0] == 0 and starts[-1] + min(tile, length) == length
            assert all(0 < b - a <= tile - overlap for a, b in zip(starts, starts[1:])), starts


def test_edge_profile_skips_overlap_quarter_then_ramps_over_overlap_half():
    profile = edge_profile(16, 8, inner_start=True, inner_end=False).tolist()
    assert profile[:2] == [0, 0] and profile[2:6] == [0.25, 0.5, 0.75, 1.0] and profile[6:] == [1.0] * 10
    both = edge_profile(16, 8, inner_start=True, inner_end=True)
    assert torch.equal(both, both.flip(0)) and both[:2].sum() == 0
    assert torch.equal(edge_profile(16, 8, inner_start=False, inner_end=False), torch.ones(16, dtype=torch.float64))


@pytest.mark.parametrize(("tile", "overlap", "size", "message"), [
    (6, 0, None, "at least 8"),
    (16, 9, None, r"\[0, tile // 2 = 8\]"),
    (16, -1, None, "must be an integer"),
    (16, 2, (40, 24), "overlap >= 4"),
])
def test_bad_settings_are_refused(tile, overlap, size, message):
    with pytest.raises(ValueError, match=message):
        check_tiling(tile, overlap, *(size or (None, None)))
    with pytest.raises(ValueError, match=message):
        translate_tiled(nn.Identity(), torch.zeros(1, 1, *(size or (8, 8))), tile, overlap)
    check_tiling(16, 2, 16, 16)  # a small overlap is fine when the image fits one tile


def test_a_function_that_changes_the_tile_size_is_refused():
    with pytest.raises(ValueError, match="keep the batch and the tile size"):
        translate_tiled(lambda x: x[..., :-1, :], torch.zeros(1, 1, 20, 20), tile=16, overlap=4)
