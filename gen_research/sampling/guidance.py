"""Classifier guidance (Dhariwal & Nichol 2021, Alg. 2 in its DDIM form) for epsilon-prediction diffusion models.

Pure functions in the style of :mod:`gen_research.sampling.diffusion`: a model is ``denoise(x, t) -> eps``,
and :func:`classifier_guidance` returns another such function, so the result plugs straight into
``diffusion.sample(denoise, scheduler, ...)``. No global RNG is used.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch

from gen_research.errors import GenResearchError

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NoisyLogProb(Protocol):
    def log_prob(self, x_t: torch.Tensor, t: Any, labels: torch.Tensor) -> torch.Tensor: ...


def classifier_guidance(
    denoise: Denoiser,
    classifier: NoisyLogProb | Callable[[torch.Tensor, Any, torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    scale: float,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
) -> Denoiser:
    """A denoiser steered towards ``labels`` by a noisy classifier's gradient.

    eps_hat(x_t, t) = eps(x_t, t) - scale * sqrt(1 - alpha_bar_t) * grad_{x_t} log p(labels | x_t, t)

    which is the epsilon of the score of p(x_t) p(y | x_t)^scale. It ASSUMES an epsilon-prediction model:
    ``prediction_type`` must be ``"epsilon"`` (a GenResearchError otherwise; for x0/v models convert to
    epsilon first). ``classifier`` is an object with ``log_prob(x_t, t, labels) -> [N]`` (e.g.
    :class:`~gen_research.models.diffusion.NoisyClassifier`) or such a callable; ``alphas_cumprod`` is the
    training schedule's alpha_bar (indexed by integer t). The gradient is taken under ``torch.enable_grad``
    on a detached copy of x_t, so it works inside a ``torch.no_grad`` or ``torch.inference_mode`` sampling
    loop. ``scale == 0`` returns ``denoise``'s output untouched, without calling the classifier.
    """
    if prediction_type != "epsilon":
        raise GenResearchError(
            f"classifier_guidance needs an epsilon-prediction model, got prediction_type {prediction_type!r}; "
            "train the DDPM with prediction_type: epsilon"
        )
    log_prob = getattr(classifier, "log_prob", classifier)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = denoise(x, t)
        if scale == 0:
            return eps
        t_idx = torch.as_tensor(t, device=x.device).long()
        # inference_mode(False) + clone: also works inside torch.inference_mode (Lightning's eval loops),
        # where enable_grad alone cannot record a graph on inference tensors.
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_prob(x_in, t_idx.clone(), labels.clone()).sum(), x_in)
        abar = alphas_cumprod.to(device=x.device, dtype=torch.float32)[t_idx]
        sigma = (1 - abar).sqrt()
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1))) if sigma.ndim else sigma
        return eps - (scale * sigma * grad).to(eps.dtype)

    return guided


__all__ = ["classifier_guidance"]
