"""The image-to-image networks: shapes at several sizes, the references' parameter counts, layer layouts and
state_dict keys, the PatchGAN's receptive field (computed and measured), the N(0, 0.02) init, and the one-line errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.models.translation.networks import (
    NLayerDiscriminator,
    ResnetBlock,
    ResnetGenerator,
    StarGANDiscriminator,
    StarGANGenerator,
    UnetGenerator,
    init_weights_normal,
    n_layers_for_receptive_field,
    padded_size,
    patch_map_size,
    patch_receptive_field,
    resnet_blocks_for,
    stargan_depth,
    unet_depth,
    uses_bias,
)


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------------------ U-Net

def test_unet_depth_and_padding_follow_the_image_size():
    assert unet_depth(256, 256) == 8  # the reference's unet_256
    assert unet_depth(128, 128) == 7  # unet_128
    assert unet_depth(28, 28) == 5 and padded_size(28, 2**5) == 32
    assert unet_depth(32, 64) == 5 and unet_depth(8, 8) == 3 and unet_depth(1, 1) == 1
    assert padded_size(32, 32) == 32 and padded_size(33, 32) == 64


@pytest.mark.parametrize("height, width, ngf", [(32, 32, 4), (64, 64, 4), (32, 64, 4), (256, 256, 2), (8, 8, 4)])
def test_unet_keeps_the_size_and_maps_channels(height, width, ngf):
    torch.manual_seed(0)
    net = UnetGenerator(1, 3, unet_depth(height, width), ngf=ngf)
    out = net(torch.randn(2, 1, height, width))
    assert out.shape == (2, 3, height, width)
    assert out.abs().max() <= 1  # Tanh output


def test_unet_layout_matches_the_reference():
    net = UnetGenerator(3, 3, 8, ngf=4, norm="batch", use_dropout=True)
    # num_downs - 5 intermediate 8ngf blocks carry Dropout(0.5), as unet_256 in pix2pix.
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3 and all(m.p == 0.5 for m in dropouts)
    assert not any(isinstance(m, nn.Dropout) for m in UnetGenerator(3, 3, 8, ngf=4, use_dropout=False).modules())
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 16, 32, 32, 32, 32, 32]
    assert all(c.bias is None for c in convs[1:])  # batch norm follows: no bias
    # The reference's module nesting, so its checkpoints load: outermost down conv, then the next block's down conv.
    keys = net.state_dict().keys()
    assert "model.model.0.weight" in keys and "model.model.1.model.1.weight" in keys
    assert "model.model.1.model.2.running_mean" in keys  # the down norm of the second level


def test_unet_256_has_the_reference_parameter_count():
    # The reference's define_G(3, 3, 64, 'unet_256', 'batch'): it prints "Total number of parameters: 54.414 M";
    # 54,413,955 counted layer by layer from its UnetSkipConnectionBlock list.
    with torch.device("meta"):
        assert _parameters(UnetGenerator(3, 3, 8, ngf=64, norm="batch")) == 54_413_955


def test_unet_rejects_sizes_it_cannot_halve():
    net = UnetGenerator(1, 1, 5, ngf=4)
    with pytest.raises(ValueError, match="multiples of 32.*pad to 32x32"):
        net(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        net(torch.randn(1, 3, 32, 32))


def test_bias_only_where_no_norm_subtracts_one():
    assert uses_bias("instance") and uses_bias("none") and not uses_bias("batch")
    for norm, has_bias in (("batch", False), ("instance", True), ("none", True)):
        inner = [m for m in UnetGenerator(1, 1, 5, ngf=4, norm=norm).modules() if isinstance(m, nn.Conv2d)][1:]
        assert all((c.bias is not None) == has_bias for c in inner)
    instance_norms = [m for m in ResnetGenerator(1, 1, ngf=4, n_blocks=1).modules() if isinstance(m, nn.InstanceNorm2d)]
    assert instance_norms and all(not m.affine and not m.track_running_stats for m in instance_norms)


# --------------------------------------------------------------------------------------------------------- PatchGAN

def test_patch_receptive_field_and_its_inverse():
    assert [patch_receptive_field(n) for n in (1, 2, 3, 4)] == [16, 34, 70, 142]
    assert [n_layers_for_receptive_field(rf) for rf in (1, 16, 17, 34, 70, 71)] == [1, 1, 2, 2, 3, 4]


def test_patchgan_output_maps():
    torch.manual_seed(0)
    d = NLayerDiscriminator(6, ndf=4, n_layers=3)  # pix2pix's D sees concat(A, B)
    assert d(torch.randn(1, 6, 256, 256)).shape == (1, 1, 30, 30)  # the reference's 30x30 patches
    assert patch_map_size(256, 3) == 30
    assert patch_map_size(28, 2) == 5 and patch_map_size(28, 3) == 1
    assert NLayerDiscriminator(1, ndf=4, n_layers=2)(torch.randn(2, 1, 28, 28)).shape == (2, 1, 5, 5)
    assert NLayerDiscriminator(1, ndf=4, n_layers=3)(torch.randn(2, 1, 28, 28)).shape == (2, 1, 1, 1)
    assert NLayerDiscriminator(1, ndf=4, n_layers=2)(torch.randn(2, 1, 32, 64)).shape == (2, 1, 6, 14)
    with pytest.raises(ValueError, match="n_layers=3 needs larger images than 16x16"):
        NLayerDiscriminator(1, ndf=4, n_layers=3)(torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize("n_layers, size", [(1, 32), (2, 64)])
def test_patchgan_receptive_field_measured(n_layers, size):
    """The gradient of one central output w.r.t. the input is non-zero on exactly a field x field window."""
    torch.manual_seed(0)
    d = NLayerDiscriminator(2, ndf=4, n_layers=n_layers, norm="none").double()
    x = torch.randn(1, 2, size, size, dtype=torch.float64, requires_grad=True)
    out = d(x)
    centre = out.shape[-1] // 2
    out[0, 0, centre, centre].backward()
    touched = x.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = touched.any(dim=1).nonzero().flatten(), touched.any(dim=0).nonzero().flatten()
    field = patch_receptive_field(n_layers)
    assert rows.min() > 0 and rows.max() < size - 1  # the window lies inside the image, not clipped by padding
    assert rows.max() - rows.min() + 1 == field and cols.max() - cols.min() + 1 == field
    assert touched.sum() == field * field  # every pixel of the window counts


def test_patchgan_layout_and_reference_parameter_count():
    d = NLayerDiscriminator(6, ndf=64, n_layers=3, norm="batch")
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0], c.kernel_size[0], c.padding[0]) for c in convs] == [
        (64, 2, 4, 1), (128, 2, 4, 1), (256, 2, 4, 1), (512, 1, 4, 1), (1, 1, 4, 1)]
    assert [c.bias is not None for c in convs] == [True, False, False, False, True]
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    # define_D(6, 64, 'basic', norm='batch'): 6208 + 131328 + 524800 + 2098176 + 8193 parameters.
    assert _parameters(d) == 2_768_705
    assert {"model.0.weight", "model.2.weight", "model.3.weight", "model.11.bias"} <= set(d.state_dict())


# ------------------------------------------------------------------------------------------------- ResNet generator

def test_resnet_blocks_for_size():
    assert [resnet_blocks_for(s) for s in (28, 64, 128, 129, 256)] == [6, 6, 6, 9, 9]


@pytest.mark.parametrize("size, in_channels, out_channels", [(28, 1, 3), (64, 3, 1)])
def test_resnet_generator_keeps_the_size(size, in_channels, out_channels):
    torch.manual_seed(0)
    net = ResnetGenerator(in_channels, out_channels, ngf=4, n_blocks=resnet_blocks_for(size))
    assert sum(isinstance(m, ResnetBlock) for m in net.modules()) == 6
    out = net(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, out_channels, size, size) and out.abs().max() <= 1


def test_resnet_generator_reference_parameter_count_and_keys():
    # define_G(3, 3, 64, 'resnet_9blocks', 'instance'): instance norm has no affine parameters, so the convs keep biases.
    with torch.device("meta"):
        net = ResnetGenerator(3, 3, ngf=64, norm="instance", n_blocks=9)
    assert _parameters(net) == 11_378_179
    keys = set(net.state_dict())
    assert {"model.1.weight", "model.1.bias", "model.10.conv_block.1.weight", "model.10.conv_block.5.weight",
            "model.19.weight", "model.26.weight"} <= keys
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.kernel_size[0], u.stride[0], u.padding[0], u.output_padding[0]) for u in ups] == [(3, 2, 1, 1)] * 2


def test_resnet_generator_rejects_sizes():
    net = ResnetGenerator(1, 1, ngf=4, n_blocks=1)
    with pytest.raises(ValueError, match="multiples of 4.*pad to 32x32"):
        net(torch.randn(1, 1, 30, 30))
    with pytest.raises(ValueError, match="at least 8"):
        net(torch.randn(1, 1, 4, 4))
    for padding in ("reflect", "replicate", "zero"):
        assert ResnetGenerator(1, 1, ngf=4, n_blocks=1, padding=padding)(torch.randn(1, 1, 8, 8)).shape == (1, 1, 8, 8)


# ---------------------------------------------------------------------------------------------------------- StarGAN

def test_stargan_depth():
    assert stargan_depth(128) == 6 and stargan_depth(28) == 3 and stargan_depth(256) == 7 and stargan_depth(2) == 1


@pytest.mark.parametrize("size, out_src_side", [(28, 3), (128, 2)])
def test_stargan_shapes(size, out_src_side):
    torch.manual_seed(0)
    domains = 4
    g = StarGANGenerator(image_channels=3, num_domains=domains, conv_dim=4, repeat_num=2)
    d = StarGANDiscriminator(size, image_channels=3, num_domains=domains, conv_dim=4, repeat_num=stargan_depth(size))
    x = torch.randn(2, 3, size, size)
    c = torch.eye(domains)[[0, 3]]
    fake = g(x, c)
    assert fake.shape == x.shape and fake.abs().max() <= 1
    assert not torch.allclose(fake, g(x, torch.eye(domains)[[1, 2]]))  # the target domain is used
    out_src, out_cls = d(fake)
    assert out_src.shape == (2, 1, out_src_side, out_src_side) and out_cls.shape == (2, domains)


def test_stargan_reference_parameter_counts():
    with torch.device("meta"):
        g = StarGANGenerator(3, num_domains=5, conv_dim=64, repeat_num=6)
        d128 = StarGANDiscriminator(128, 3, num_domains=5, conv_dim=64, repeat_num=6)
        d256 = StarGANDiscriminator(256, 3, num_domains=5, conv_dim=64, repeat_num=6)
    assert _parameters(g) == 8_430_528
    # model.py's Discriminator(128, 64, 5, 6): six biased convs (44,702,656), conv1 2048*9 and conv2 5*2048*2*2
    # (kernel 128 / 2**6 = 2). 44,884,928 is the same D at 256 px, where conv2's kernel is 4.
    assert _parameters(d128) == 44_762_048 and d128.conv2.kernel_size == (2, 2)
    assert _parameters(d256) == 44_884_928 and d256.conv2.kernel_size == (4, 4)
    assert all(m.bias is None for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 5 + 2 * 6 and all(m.affine and m.track_running_stats for m in norms)
    assert all(m.negative_slope == 0.01 for m in d128.modules() if isinstance(m, nn.LeakyReLU))
    assert {"main.0.weight", "main.1.running_mean", "main.9.main.0.weight", "main.21.weight"} <= set(g.state_dict())
    assert {"main.0.bias", "main.10.weight", "conv1.weight", "conv2.weight"} <= set(d128.state_dict())


def test_stargan_bad_inputs():
    g = StarGANGenerator(1, num_domains=3, conv_dim=4, repeat_num=1)
    with pytest.raises(ValueError, match=r"target domains \[B, 3\] = \[2, 3\], got \(2, 2\)"):
        g(torch.randn(2, 1, 8, 8), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="multiples of 4"):
        g(torch.randn(2, 1, 10, 10), torch.zeros(2, 3))
    d = StarGANDiscriminator(28, 1, num_domains=3, conv_dim=4, repeat_num=3)
    with pytest.raises(ValueError, match=r"built for \[B, 1, 28, 28\]"):
        d(torch.randn(1, 1, 32, 32))
    with pytest.raises(GenResearchError, match="repeat_num=5 halves 28x28 images below 1x1; use repeat_num <= 3"):
        StarGANDiscriminator(28, 1, num_domains=3, conv_dim=4, repeat_num=5)
    assert StarGANDiscriminator((32, 64), 1, 3, 4, 3)(torch.randn(1, 1, 32, 64))[1].shape == (1, 3)


# ---------------------------------------------------------------------------------------------- init and parameters

def test_init_weights_normal():
    torch.manual_seed(0)
    net = UnetGenerator(3, 3, 6, ngf=16, norm="batch")
    net.apply(init_weights_normal)
    big = max((m for m in net.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    assert big.weight.numel() >= 100_000
    assert abs(big.weight.std().item() - 0.02) < 0.002 and abs(big.weight.mean().item()) < 0.001
    biased = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None]
    assert biased and all(torch.all(m.bias == 0) for m in biased)
    bn_weights = torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn_weights.mean().item() - 1) < 0.005 and abs(bn_weights.std().item() - 0.02) < 0.004
    assert all(torch.all(m.bias == 0) for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    linear = nn.Linear(400, 400)
    init_weights_normal(linear, gain=0.05)
    assert abs(linear.weight.std().item() - 0.05) < 0.005 and torch.all(linear.bias == 0)


@pytest.mark.parametrize("build, message", [
    (lambda: UnetGenerator(3, 3, 0), "UnetGenerator: num_downs=0 must be an integer >= 1"),
    (lambda: UnetGenerator(3, 3, 5, norm="group"), "UnetGenerator: norm='group' must be one of batch, instance, none"),
    (lambda: NLayerDiscriminator(3, n_layers=0), "NLayerDiscriminator: n_layers=0 must be an integer >= 1"),
    (lambda: NLayerDiscriminator(3, ndf=2.5), "NLayerDiscriminator: ndf=2.5 must be an integer >= 1"),
    (lambda: ResnetGenerator(3, 3, n_blocks=-1), "ResnetGenerator: n_blocks=-1 must be an integer >= 0"),
    (lambda: ResnetGenerator(3, 3, padding="circular"), "ResnetGenerator: padding='circular' must be one of"),
    (lambda: StarGANGenerator(3, num_domains=0), "StarGANGenerator: num_domains=0 must be an integer >= 1"),
    (lambda: StarGANDiscriminator(1), "StarGANDiscriminator: image_size=1 must be an integer >= 2"),
])
def test_impossible_parameters_are_one_line_errors(build, message):
    with pytest.raises(GenResearchError, match=message) as caught:
        build()
    assert "\n" not in str(caught.value)


def test_stargan_generator_normalises_per_image_in_eval_mode_as_the_reference_uses_it():
    # yunjey/stargan never calls eval(): its translations use each image's own statistics, never the running ones.
    torch.manual_seed(0)
    g = StarGANGenerator(image_channels=3, num_domains=2, conv_dim=4, repeat_num=1)
    x, c = torch.randn(3, 3, 8, 8), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    with torch.no_grad():
        g.train()
        g(x * 5 + 3, c)  # running statistics now far from these inputs' own
        training_mode = g(x, c)
        buffers = {k: v.clone() for k, v in g.state_dict().items() if "running" in k}
        g.eval()
        evaluated = g(x, c)
    assert torch.allclose(evaluated, training_mode, atol=1e-6)  # per-image statistics either way
    g.eval()
    with torch.no_grad():
        g(x, c)
    assert buffers and all(torch.equal(v, g.state_dict()[k]) for k, v in buffers.items())  # eval leaves them alone
    assert torch.equal(g(x[:1], c[:1]), g(x[:1], c[:1]))  # eval mode: deterministic, nothing updated
