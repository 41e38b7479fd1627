"""The GAN family's networks: shapes, the DCGAN paper's layer and init rules, conditioning, spectral norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.models.gan.networks import (
    ConditionalBatchNorm2d,
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    init_dcgan_weights,
)

LATENT = 16
CLASSES = 10
# (num_classes, conditioning): unconditional, label concatenated, projection D + conditional BN in G.
CONDITIONS = [(0, "concat"), (CLASSES, "concat"), (CLASSES, "projection")]


def _leaves(module: nn.Module) -> list[nn.Module]:
    """Innermost layers in registration order; a spectral-normalized conv counts as one layer."""
    return [
        m
        for name, m in module.named_modules()
        if "parametrizations" not in name.split(".")
        and not [child for child_name, child in m.named_children() if child_name != "parametrizations"]
    ]


def _top_singular_value(weight: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(weight.detach().reshape(weight.shape[0], -1), ord=2).item()


def _labels(batch: int) -> torch.Tensor:
    return torch.arange(batch) % CLASSES


@pytest.mark.parametrize("side", [8, 16, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes,conditioning", CONDITIONS)
def test_dcgan_shapes_and_ranges(side: int, channels: int, num_classes: int, conditioning: str) -> None:
    torch.manual_seed(0)
    shape = (channels, side, side)
    g = DCGANGenerator(LATENT, shape, base_channels=8, num_classes=num_classes, conditioning=conditioning)
    d = DCGANDiscriminator(shape, base_channels=8, num_classes=num_classes, conditioning=conditioning)
    labels = _labels(6) if num_classes else None
    images = g(torch.randn(6, LATENT), labels)
    assert images.shape == (6, *shape)
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0  # not a constant image: the network is actually wired
    logits = d(images, labels)
    assert logits.shape == (6,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("side", [8, 16, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [0, CLASSES])
def test_mlp_shapes_and_ranges(side: int, channels: int, num_classes: int) -> None:
    torch.manual_seed(0)
    shape = (channels, side, side)
    g = MLPGenerator(LATENT, shape, hidden=(32, 64), num_classes=num_classes)
    d = MLPDiscriminator(shape, hidden=(64, 32), num_classes=num_classes)
    labels = _labels(5) if num_classes else None
    images = g(torch.randn(5, LATENT), labels)
    assert images.shape == (5, *shape)
    assert images.min() >= -1 and images.max() <= 1
    logits = d(images, labels)
    assert logits.shape == (5,) and torch.isfinite(logits).all()


def test_mlp_layers_follow_hidden_widths_and_leaky_slope() -> None:
    g = MLPGenerator(LATENT, (1, 8, 8), hidden=(32, 48), num_classes=3)
    linears = [m for m in g.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(LATENT + 3, 32), (32, 48), (48, 64)]
    assert isinstance(_leaves(g)[-1], nn.Tanh)
    d = MLPDiscriminator((1, 8, 8), hidden=(48, 32), num_classes=3)
    linears = [m for m in d.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 + 3, 48), (48, 32), (32, 1)]
    slopes = [m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.2, 0.2]


@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_dcgan_generator_layer_rules(conditioning: str) -> None:
    g = DCGANGenerator(LATENT, (3, 32, 32), base_channels=8, num_classes=CLASSES, conditioning=conditioning)
    leaves = _leaves(g)
    # Output: a transposed conv then tanh, with no normalization in between.
    assert isinstance(leaves[-1], nn.Tanh)
    assert isinstance(leaves[-2], nn.ConvTranspose2d) and leaves[-2].out_channels == 3
    assert not any(isinstance(m, nn.LeakyReLU) for m in g.modules())
    norm_type = ConditionalBatchNorm2d if conditioning == "projection" else nn.BatchNorm2d
    # Hidden stages 4x4, 8x8, 16x16: conv -> (conditional) BN -> ReLU, channels halving to base_channels.
    assert [type(b.norm) for b in g.blocks] == [norm_type] * 3
    assert all(isinstance(b.act, nn.ReLU) for b in g.blocks)
    assert [b.conv.out_channels for b in g.blocks] == [32, 16, 8]
    assert [b.conv.stride for b in g.blocks] == [(1, 1), (2, 2), (2, 2)]
    assert g.output.stride == (2, 2)
    first_in = LATENT + (CLASSES if conditioning == "concat" else 0)
    assert g.blocks[0].conv.in_channels == first_in


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_dcgan_discriminator_layer_rules(spectral_norm: bool) -> None:
    d = DCGANDiscriminator((3, 32, 32), base_channels=8, spectral_norm=spectral_norm)
    leaves = _leaves(d)
    # Input layer: conv then LeakyReLU directly (no BatchNorm on the input layer).
    assert isinstance(leaves[0], nn.Conv2d) and leaves[0].in_channels == 3
    assert isinstance(leaves[1], nn.LeakyReLU)
    slopes = [m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.2] * 3
    assert not any(isinstance(m, nn.ReLU) for m in d.modules())
    norms = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == (0 if spectral_norm else 2)  # 32 -> 16 (input, no BN) -> 8 -> 4
    convs = [m for m in d.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32] and all(c.stride == (2, 2) for c in convs)
    assert d.head.kernel_size == (4, 4) and d.head.out_channels == 1


def test_dcgan_init_statistics_and_determinism() -> None:
    torch.manual_seed(1)
    g = DCGANGenerator(100, (3, 32, 32), base_channels=64)
    wide = g.blocks[0].conv.weight  # 100 x 256 x 4 x 4 = 409,600 weights
    assert wide.std().item() == pytest.approx(0.02, rel=0.02)
    assert abs(wide.mean().item()) < 1e-3
    bn_weights = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn_weights.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn_weights.std().item() == pytest.approx(0.02, rel=0.2)
    assert all((m.bias == 0).all() for m in g.modules() if isinstance(m, nn.BatchNorm2d))
    # Drawn from the global RNG: the run's seed fixes the networks.
    torch.manual_seed(1)
    again = DCGANGenerator(100, (3, 32, 32), base_channels=64)
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), again.state_dict().values()))


def test_init_keeps_conditional_bn_at_identity_and_zeroes_biases() -> None:
    g = DCGANGenerator(LATENT, (1, 16, 16), base_channels=8, num_classes=CLASSES, conditioning="projection")
    for m in g.modules():
        if isinstance(m, ConditionalBatchNorm2d):
            m.gamma.weight.data.fill_(3.0)
    init_dcgan_weights(g)
    cbns = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbns) == 2
    # Re-running init leaves gamma where it was (it only owns conv/linear/BN), and a fresh one is 1 / 0.
    assert all((m.gamma.weight == 3.0).all() for m in cbns)
    fresh = DCGANGenerator(LATENT, (1, 16, 16), base_channels=8, num_classes=CLASSES, conditioning="projection")
    for m in fresh.modules():
        if isinstance(m, ConditionalBatchNorm2d):
            assert (m.gamma.weight == 1).all() and (m.beta.weight == 0).all()
    d = DCGANDiscriminator((1, 16, 16), base_channels=8, spectral_norm=True)
    biases = [m.bias for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert biases and all(b is not None and (b == 0).all() for b in biases)


@pytest.mark.parametrize("side,expect", [(12, "16"), (4, "8"), (20, "32"), (7, "8")])
def test_bad_size_is_a_one_line_error(side: int, expect: str) -> None:
    for build in (lambda: DCGANGenerator(LATENT, (1, side, side)), lambda: DCGANDiscriminator((1, side, side))):
        with pytest.raises(GenResearchError) as info:
            build()
        message = str(info.value)
        assert "\n" not in message
        assert "data.init_args.resize" in message and "center_crop" in message and expect in message


def test_non_square_is_refused() -> None:
    with pytest.raises(GenResearchError, match="square"):
        DCGANGenerator(LATENT, (1, 16, 32))


def test_unknown_conditioning_and_missing_labels_are_refused() -> None:
    with pytest.raises(GenResearchError, match="concat, projection"):
        DCGANDiscriminator((1, 8, 8), num_classes=2, conditioning="auxiliary")  # type: ignore[arg-type]
    d = DCGANDiscriminator((1, 8, 8), base_channels=4, num_classes=2)
    with pytest.raises(GenResearchError, match="num_classes"):
        d(torch.randn(2, 1, 8, 8))


def test_unconditional_networks_ignore_labels() -> None:
    torch.manual_seed(0)
    g = DCGANGenerator(LATENT, (1, 8, 8), base_channels=4).eval()
    z = torch.randn(3, LATENT)
    assert torch.equal(g(z), g(z, torch.tensor([0, 1, 2])))


@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_label_changes_discriminator_logit(conditioning: str) -> None:
    torch.manual_seed(0)
    d = DCGANDiscriminator((3, 16, 16), base_channels=8, num_classes=CLASSES, conditioning=conditioning).eval()
    images = torch.randn(4, 3, 16, 16).repeat(2, 1, 1, 1)
    labels = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8])
    logits = d(images, labels)
    assert (logits[:4] - logits[4:]).abs().min() > 1e-4


def test_projection_logit_is_psi_plus_embedding_inner_product() -> None:
    torch.manual_seed(0)
    d = DCGANDiscriminator((3, 16, 16), base_channels=8, num_classes=CLASSES, conditioning="projection").eval()
    images = torch.randn(3, 3, 16, 16)
    a, b = torch.tensor([0, 4, 9]), torch.tensor([2, 4, 1])
    with torch.no_grad():
        h = d.features(images).sum(dim=(2, 3))
        expected = d.psi(h).squeeze(1) + (d.embed.weight[a] * h).sum(1)
        torch.testing.assert_close(d(images, a), expected)
        # Only the projection term depends on the label.
        diff = ((d.embed.weight[a] - d.embed.weight[b]) * h).sum(1)
        torch.testing.assert_close(d(images, a) - d(images, b), diff)
    assert not hasattr(d, "head")


@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_label_changes_generator_output(conditioning: str) -> None:
    torch.manual_seed(0)
    g = DCGANGenerator(LATENT, (1, 16, 16), base_channels=8, num_classes=CLASSES, conditioning=conditioning)
    if conditioning == "projection":  # fresh conditional BN is identity for every class: make classes differ
        for m in g.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                nn.init.normal_(m.gamma.weight, 1.0, 0.3)
                nn.init.normal_(m.beta.weight, 0.0, 0.3)
    g.eval()
    z = torch.randn(1, LATENT).expand(2, -1)
    out = g(z, torch.tensor([1, 7]))
    # Relative: at init (N(0, 0.02) weights, BN running stats 0/1) eval-mode outputs are small.
    assert (out[0] - out[1]).abs().max() > 0.05 * out.abs().max()


def test_conditional_batchnorm_uses_the_class_gamma_and_beta() -> None:
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(2, 3)
    with torch.no_grad():
        cbn.gamma.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, -1.0], [0.5, 3.0]]))
        cbn.beta.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, -5.0], [1.0, 2.0]]))
    x = torch.randn(4, 2, 3, 3) * 2 + 1
    labels = torch.tensor([1, 2, 0, 1])
    out = cbn(x, labels)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    normalized = (x - mean) / torch.sqrt(var + cbn.bn.eps)
    gamma = cbn.gamma.weight[labels][:, :, None, None]
    beta = cbn.beta.weight[labels][:, :, None, None]
    torch.testing.assert_close(out, gamma * normalized + beta)
    # Sample 0 (class 1) channel 0: 2 * n + 10; channel 1: -n - 5.
    torch.testing.assert_close(out[0, 0], 2 * normalized[0, 0] + 10)
    torch.testing.assert_close(out[0, 1], -normalized[0, 1] - 5)
    assert not cbn.bn.affine


@pytest.mark.parametrize(
    "build,inputs",
    [
        (
            lambda sn: DCGANDiscriminator(
                (3, 16, 16), base_channels=8, num_classes=CLASSES, conditioning="projection", spectral_norm=sn
            ),
            lambda: (torch.randn(8, 3, 16, 16), _labels(8)),
        ),
        (
            lambda sn: DCGANDiscriminator((1, 8, 8), base_channels=8, spectral_norm=sn),
            lambda: (torch.randn(8, 1, 8, 8),),
        ),
        (lambda sn: MLPDiscriminator((1, 8, 8), hidden=(32, 16), spectral_norm=sn), lambda: (torch.randn(8, 1, 8, 8),)),
    ],
)
def test_spectral_norm_bounds_top_singular_value(build, inputs) -> None:
    torch.manual_seed(0)
    d = build(True).train()
    for _ in range(5):
        d(*inputs())
    weighted = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert weighted and all(hasattr(m, "parametrizations") for m in weighted)
    for m in weighted:
        assert _top_singular_value(m.weight) == pytest.approx(1.0, abs=0.05)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    # Without spectral norm the same layers are far from 1 (N(0, 0.02) or PyTorch's default init).
    plain = build(False)
    values = [_top_singular_value(m.weight) for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert any(abs(v - 1.0) > 0.2 for v in values)


def test_dcgan_parameter_counts_match_the_reference_example() -> None:
    # pytorch/examples dcgan/main.py with ngf=ndf=64, nz=100, nc=3 (64x64 images): its Generator has 3,576,704
    # parameters and its Discriminator 2,765,568 (convs without bias, BatchNorm affine, no bias on the output).
    g = DCGANGenerator(100, (3, 64, 64), base_channels=64)
    d = DCGANDiscriminator((3, 64, 64), base_channels=64)
    assert sum(p.numel() for p in g.parameters()) == 3_576_704
    assert sum(p.numel() for p in d.parameters()) == 2_765_568
    assert [b.conv.out_channels for b in g.blocks] == [512, 256, 128, 64]
