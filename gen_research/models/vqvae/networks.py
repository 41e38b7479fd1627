"""The VQ-VAE paper's encoder and decoder (van den Oord et al. 2017, section 4.1; the layer order of DeepMind's Sonnet
vqvae_example): two 4x4 stride-2 convolutions (28 -> 14 -> 7), a 3x3 convolution, two residual blocks
(ReLU, 3x3, ReLU, 1x1), and a 1x1 projection to the codebook's dimension; the decoder mirrors it with transposed
convolutions. Hand-written: diffusers' VQModel is a different (GroupNorm, multi-level) network."""

from __future__ import annotations

from torch import Tensor, nn

from gen_research.errors import GenResearchError

DOWNSAMPLING = 4  # two stride-2 convolutions


def latent_grid(image_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the code grid of an image of ``image_size``; a size not divisible by 4 is refused in one line."""
    h, w = image_size
    if h % DOWNSAMPLING or w % DOWNSAMPLING:
        raise GenResearchError(f"vqvae: image size {h}x{w} is not divisible by {DOWNSAMPLING} (two stride-2 convolutions); "
                               "set data.init_args.resize or center_crop to a multiple of 4")
    return h // DOWNSAMPLING, w // DOWNSAMPLING


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))): the paper's residual block."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class VQEncoder(nn.Module):
    """Images ``[B, C, H, W]`` -> latents ``[B, embedding_dim, H/4, W/4]`` (before quantisation)."""

    def __init__(self, in_channels: int, channels: int, residual_channels: int, embedding_dim: int, num_residual_blocks: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            *[ResidualBlock(channels, residual_channels) for _ in range(num_residual_blocks)],
            nn.ReLU(),  # Sonnet's ResidualStack ends in a ReLU
            nn.Conv2d(channels, embedding_dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class VQDecoder(nn.Module):
    """Quantised latents ``[B, embedding_dim, h, w]`` -> images ``[B, C, 4h, 4w]`` (unbounded; clamp for images)."""

    def __init__(self, out_channels: int, channels: int, residual_channels: int, embedding_dim: int, num_residual_blocks: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(embedding_dim, channels, 3, padding=1),
            *[ResidualBlock(channels, residual_channels) for _ in range(num_residual_blocks)],
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(channels // 2, out_channels, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


__all__ = ["DOWNSAMPLING", "ResidualBlock", "VQDecoder", "VQEncoder", "latent_grid"]
