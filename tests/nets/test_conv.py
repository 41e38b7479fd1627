import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.nets import ConvDecoder, ConvEncoder


@pytest.mark.parametrize(
    ("shape", "channels"),
    [((1, 28, 28), [32, 64]), ((1, 8, 8), [16, 32]), ((3, 32, 32), [32, 64, 128])],
)
@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_encoder_decoder_shapes(shape, channels, norm):
    c, h, w = shape
    enc = ConvEncoder(c, (h, w), channels, out_features=10, norm=norm)
    dec = ConvDecoder(7, c, (h, w), channels, norm=norm)
    x = torch.randn(3, c, h, w)
    assert enc(x).shape == (3, 10)
    out = dec(torch.randn(3, 7))
    assert out.shape == (3, c, h, w)
    # No output activation: an untrained decoder is not squashed into [-1, 1] by construction.
    out.sum().backward()
    assert all(p.grad is not None for p in dec.parameters())


def test_encoder_uses_one_stride2_block_per_channel():
    enc = ConvEncoder(3, (32, 32), [8, 16, 32], out_features=4, norm="none")
    assert enc.features(torch.zeros(1, 3, 32, 32)).shape == (1, 32, 4, 4)


@pytest.mark.parametrize("cls", ["enc", "dec"])
def test_non_divisible_size_raises_actionable_error(cls):
    with pytest.raises(GenResearchError) as info:
        if cls == "enc":
            ConvEncoder(1, (30, 30), [16, 32, 64], out_features=4, norm="batch")
        else:
            ConvDecoder(4, 1, (30, 30), [16, 32, 64], norm="batch")
    msg = str(info.value)
    assert "30x30" in msg and "2**3=8" in msg
    assert "channels" in msg and "resize" in msg
    assert "\n" not in msg


def test_rectangular_image():
    enc = ConvEncoder(1, (16, 8), [4, 8], out_features=3, norm="group")
    dec = ConvDecoder(3, 1, (16, 8), [4, 8], norm="group")
    assert dec(enc(torch.randn(2, 1, 16, 8))).shape == (2, 1, 16, 8)
