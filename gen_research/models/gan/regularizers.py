"""Discriminator penalties and the StyleGAN2 training arithmetic (lazy regularization, batch-size-invariant EMA).

Pure functions: the penalties return the unweighted term (the caller multiplies by lambda, gamma / 2, the lazy
interval) and keep their graph, so ``backward`` trains the discriminator through them. No function reads global
state; the gradient penalty's interpolation weights come from the ``torch.Generator`` it is given.

=========================  ================================================  ======================================
function                   what                                              reference
=========================  ================================================  ======================================
:func:`gradient_penalty`   E[(||grad D(x_hat)||_2 - 1)^2], x_hat on lines    Gulrajani et al. 2017 (WGAN-GP), alg. 1
                           between real and fake images                      (lambda 10); ProGAN, StarGAN
:func:`r1_penalty`         E[||grad D(x)||^2] on real images                 Mescheder et al. 2018; NVlabs
                                                                             stylegan2-ada ``loss.py`` (gamma / 2)
:func:`drift_penalty`      E[D(x)^2] on real images                          Karras et al. 2018 (ProGAN), eps 0.001
:func:`r1_gamma_heuristic` 0.0002 * resolution^2 / batch                     stylegan2-ada ``train.py`` (auto cfg)
:func:`lazy_regularization` lr * r, betas ** r, r = k / (k + 1)              Karras et al. 2020 (StyleGAN2), app. B;
                                                                             stylegan2-ada ``training_loop.py``
:func:`ema_beta`           0.5 ** (batch / (half_life_kimg * 1000))          stylegan2-ada ``training_loop.py``
=========================  ================================================  ======================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.training.callbacks.ema import ema_beta  # noqa: F401  (moved there: training code imports no family)


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP's penalty: the batch mean of (||grad_x D(x_hat)||_2 - 1)^2 at x_hat = eps real + (1 - eps) fake.

    ``eps ~ U(0, 1)``, one per image, drawn from ``generator`` (None: torch's default generator). Both image
    batches are detached (the penalty constrains D, never G); the gradient is taken with ``create_graph=True`` so
    the returned scalar backpropagates into D's parameters. ``discriminator`` takes only images: bind labels or
    other inputs with a lambda. The caller multiplies by lambda (10 in WGAN-GP).
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape"
        )
    batch = real.shape[0]
    device = generator.device if generator is not None else real.device
    eps = torch.rand(batch, generator=generator, device=device, dtype=real.dtype).to(real.device)
    eps = eps.view(batch, *([1] * (real.dim() - 1)))
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1.0).square().mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """R1: the batch mean of ||grad_x D(x)||^2 at the real images (the squared norm, no square root).

    ``real_images`` must have required grad before ``real_logits = D(real_images)`` was computed. The gradient
    keeps its graph (``create_graph=True``) so the penalty trains D. The caller multiplies by gamma / 2, and by the
    lazy interval k when it regularizes every k steps (as NVlabs do).
    """
    if not real_images.requires_grad:
        raise ValueError(
            "r1_penalty: call real_images.requires_grad_(True) before computing real_logits = D(real_images)"
        )
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


def drift_penalty(real_logits: Tensor) -> Tensor:
    """ProGAN's drift term, the mean of D(x)^2 on real images: keeps WGAN critic outputs near 0 (weight 0.001)."""
    return real_logits.square().mean()


def r1_gamma_heuristic(resolution: int, batch_size: int) -> float:
    """StyleGAN2-ADA's default R1 gamma, 0.0002 * resolution^2 / batch_size (``train.py``'s ``auto`` config).

    It grows with the pixel count (the penalty sums over pixels per image) and shrinks with the batch.
    """
    for name, value in (("resolution", resolution), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenResearchError(f"R1 gamma heuristic: {name}={value!r} must be a positive integer")
    return 0.0002 * resolution**2 / batch_size


def lazy_regularization(lr: float, betas: tuple[float, float], interval: int) -> tuple[float, tuple[float, float]]:
    """The optimizer settings for a network regularized only every ``interval`` (k) steps, as StyleGAN2 does.

    With the penalty applied every k steps (and multiplied by k), an optimizer step happens k + 1 times per k
    minibatches in the reference's accounting; ratio r = k / (k + 1) scales the learning rate to ``lr * r`` and
    the Adam decays to ``beta ** r`` so that the per-minibatch dynamics match regularizing every step.
    ``interval`` 1 (every step) or 0 (no regularization) returns ``lr`` and ``betas`` unchanged.
    """
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
        raise GenResearchError(
            f"lazy regularization interval={interval!r} must be an integer >= 0 "
            "(0: no regularization, 1: every step; StyleGAN2 uses 16 for D's R1, 4 for G's path length)"
        )
    beta1, beta2 = betas
    if interval <= 1:
        return lr, (beta1, beta2)
    ratio = interval / (interval + 1)
    return lr * ratio, (beta1**ratio, beta2**ratio)

