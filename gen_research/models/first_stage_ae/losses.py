"""The first-stage autoencoders' losses: CompVis' LPIPSWithDiscriminator (latent-diffusion
``ldm/modules/losses/contperceptual.py``, KL) and taming-transformers' VQLPIPSWithDiscriminator
(``taming/modules/losses/vqperceptual.py``, VQ), split into small functions so each can be tested against a hand
computation. The discriminator is the hinge PatchGAN of taming (gen_research/models/translation/networks.py).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen_research.errors import GenResearchError
from gen_research.nets.lpips import load_lpips, prepare_lpips_input

ReconstructionLoss = Literal["l1", "l2"]
ADAPTIVE_WEIGHT_MAX = 1e4  # CompVis clamps d_weight to [0, 1e4]
ADAPTIVE_WEIGHT_EPS = 1e-4  # CompVis: ||grad nll|| / (||grad g|| + 1e-4)


def pixel_distance(inputs: Tensor, reconstructions: Tensor, kind: ReconstructionLoss) -> Tensor:
    """Per-pixel |x - x_hat| (CompVis) or (x - x_hat)^2, float32, [B, C, H, W]."""
    difference = inputs.float() - reconstructions.float()
    return difference.abs() if kind == "l1" else difference.pow(2)


def kl_nll(rec_loss: Tensor, logvar: Tensor) -> Tensor:
    """CompVis' ``nll_loss = rec_loss / exp(logvar) + logvar``, summed over every element and divided by the batch
    size (``torch.sum(nll_loss) / nll_loss.shape[0]``): a Gaussian/Laplacian likelihood with one learned scale."""
    nll = rec_loss / torch.exp(logvar.float()) + logvar.float()
    return nll.sum() / nll.shape[0]


def posterior_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed per image and averaged over the batch (CompVis'
    ``DiagonalGaussianDistribution.kl()`` then ``sum / batch``)."""
    mean, logvar = mean.float(), logvar.float()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
    return kl.sum() / kl.shape[0]


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """taming's ``hinge_d_loss``: 0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat))))."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def generator_adversarial_loss(logits_fake: Tensor) -> Tensor:
    """CompVis' ``g_loss = -mean(D(x_hat))``."""
    return -logits_fake.float().mean()


def adversarial_factor(global_step: int, disc_start: int, disc_factor: float = 1.0) -> float:
    """taming's ``adopt_weight``: 0 before ``disc_start`` (global steps), ``disc_factor`` from it on."""
    return 0.0 if global_step < disc_start else disc_factor


def adaptive_gan_weight(nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, disc_weight: float) -> Tensor:
    """CompVis' ``calculate_adaptive_weight``: ||d nll / d w|| / (||d g_loss / d w|| + 1e-4) at the decoder's last
    layer weight ``w``, clamped to [0, 1e4], detached, times ``disc_weight``: balances the two gradients' sizes."""
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.linalg.vector_norm(nll_grads) / (torch.linalg.vector_norm(g_grads) + ADAPTIVE_WEIGHT_EPS)
    return torch.clamp(weight, 0.0, ADAPTIVE_WEIGHT_MAX).detach() * disc_weight


class PerceptualDistance:
    """LPIPS distance per image ([B, 1, 1, 1], broadcast over pixels as CompVis adds it to the pixel loss).

    Not an nn.Module on purpose: the frozen LPIPS network stays outside the model's module tree, so it is neither in
    the checkpoint nor in any optimizer; it is loaded when training starts (:meth:`load`) and follows the inputs'
    device."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.network: nn.Module | None = None

    def load(self) -> None:
        """Read the LPIPS backbone (once); a missing file is one line naming it and how to train without LPIPS."""
        if self.network is not None:
            return
        try:
            self.network = load_lpips("alex")  # CompVis' LPIPS uses VGG16; alex is the backbone this package ships a loader default for
        except GenResearchError as error:
            raise GenResearchError(f"{self.owner}: the perceptual loss needs LPIPS: {error}; or train without it: "
                                   "model.init_args.perceptual_weight=0") from None

    def __call__(self, inputs: Tensor, reconstructions: Tensor) -> Tensor:
        if self.network is None:
            self.load()
        assert self.network is not None
        if next(self.network.parameters()).device != inputs.device:
            self.network.to(inputs.device)
        # torchmetrics' _NoTrainLpips takes [-1, 1] images; autocast off: the frozen net runs in float32.
        with torch.autocast(inputs.device.type, enabled=False):
            distance = self.network(prepare_lpips_input(inputs, clamp=False), prepare_lpips_input(reconstructions, clamp=False))
        return distance.reshape(-1, 1, 1, 1)


__all__ = ["ADAPTIVE_WEIGHT_EPS", "ADAPTIVE_WEIGHT_MAX", "PerceptualDistance", "ReconstructionLoss", "adaptive_gan_weight",
           "adversarial_factor", "generator_adversarial_loss", "hinge_d_loss", "kl_nll", "pixel_distance", "posterior_kl"]
