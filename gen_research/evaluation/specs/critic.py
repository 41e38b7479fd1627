"""nnd, nnd_accuracy: a neural network divergence from a small critic trained to tell real from generated features.

After Gulrajani, Raffel & Metz 2019, "Towards GAN Benchmarks Which Require Generalization": a critic trained on
one part of the samples and scored on held-out samples cannot be won by copying the training set. The paper's
example metric trains a WGAN-GP critic on images; here the critic is a small MLP on the extractor's features with
the binary cross-entropy (Jensen-Shannon) objective, so the number has a plain reading:

    nnd = log 2 - BCE_heldout,   BCE = -(1/2) E_real[log D(x)] - (1/2) E_generated[log(1 - D(x))]   (nats)

(each class averaged over its own held-out rows, so unequal set sizes weigh equally). Since
JSD(p, q) = log 2 + max_D (1/2) E_p log D + (1/2) E_q log(1 - D), nnd is a held-out estimate of a lower bound on
the Jensen-Shannon divergence of the two feature distributions: ~0 when the critic finds no difference, at most
log 2 = 0.693 (perfectly separated). It is NOT clipped: a slightly negative value means no detectable difference
(held-out noise, of order 1/sqrt(held-out rows)), a clearly negative one a critic that overfit. ``nnd_accuracy`` is
the critic's held-out balanced accuracy (mean of the real and generated accuracies; 0.5 = chance, 1 = separated).

Recipe (every choice fixed, so numbers are comparable with each other; the key names the critic,
``nnd/critic-mlp2x256-<extractor>``):

* rows of each set put in a canonical order (sorted by their bytes), then a seeded permutation (``options.seed``)
  splits each set into a training half (floor(n / 2) rows) and a held-out half (the rest); a quarter of each
  training half (floor) is kept aside for early stopping. One process and many give the same split.
* features standardised with the training half's mean and standard deviation (a constant feature is divided by 1);
* critic: Linear(d, 256) - LeakyReLU(0.2) - Linear(256, 256) - LeakyReLU(0.2) - Linear(256, 1), torch's default
  initialisation under ``seeded(options.seed)`` (global RNG untouched); AdamW (lr 1e-3, weight decay 1e-2), batch
  128, seeded shuffles, class-balanced loss weights, float32, on the device the features are on;
* at most ``options.critic_epochs`` epochs; after each, the balanced BCE on the early-stopping quarter; the critic
  kept is the one with the lowest such loss (the untrained critic included), and training stops once it has not
  improved by 1e-3 nats for 10 epochs. Without this a 2 x 256 MLP memorises a few hundred rows within ~20 epochs
  and its held-out loss exceeds log 2 by nearly 1 nat at any distance. The held-out half is never seen before
  the final score.

Cost: about one second for 2 x 500 rows of dimension 16, and a few seconds for 2 x 2000 rows of dimension 2048 on
one CPU thread. Deterministic on CPU given the seed (on GPU up to non-deterministic kernels). A critic sees what it
can learn from n / 2 rows: with few rows of high dimension it misses small differences (nnd ~0) that FID shows.
Needs at least ``MIN_SAMPLES`` real and generated feature rows (fewer make the held-out loss mostly noise).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.specs._common import Spec, StoredFeatures, autograd_enabled, canonical_order, seeded
from gen_research.registry import METRICS

CRITIC_NAME = "critic-mlp2x256"
MIN_SAMPLES = 40  # per set: a held-out half of >= 20 rows per class
WIDTH = 256
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-2
PATIENCE = 10  # epochs without a MIN_IMPROVEMENT on the early-stopping rows
MIN_IMPROVEMENT = 1e-3  # nats


def split_rows(features: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(fit, early-stopping, held-out) rows: canonical order, then a seeded permutation; halves, then a quarter."""
    rows = features[canonical_order(features)]
    rows = rows[torch.randperm(len(rows), generator=generator).to(rows.device)]
    train = len(rows) // 2
    stop = train // 4
    return rows[stop:train], rows[:stop], rows[train:]


def balanced_bce(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """(1/2) mean -log D(real) + (1/2) mean -log(1 - D(fake)), D = sigmoid(logit), in nats (float64)."""
    return 0.5 * (nn.functional.softplus(-logits_real.double()).mean() + nn.functional.softplus(logits_fake.double()).mean())


def balanced_accuracy(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * ((logits_real > 0).double().mean() + (logits_fake <= 0).double().mean())


def make_critic(dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, WIDTH), nn.LeakyReLU(0.2), nn.Linear(WIDTH, WIDTH), nn.LeakyReLU(0.2), nn.Linear(WIDTH, 1))


def critic_divergence(real: Tensor, fake: Tensor, epochs: int, seed: int) -> dict[str, Tensor]:
    """``{"nnd", "nnd_accuracy"}`` of a critic trained on half of each set and scored on the other half."""
    if min(len(real), len(fake)) < MIN_SAMPLES:
        raise GenResearchError(
            f"nnd needs at least {MIN_SAMPLES} real and {MIN_SAMPLES} generated images (half train the critic, half "
            f"score it); got {len(real)} real and {len(fake)} generated: evaluate more images"
        )
    if real.shape[1] != fake.shape[1]:
        raise GenResearchError(f"nnd: real features have {real.shape[1]} dimensions, generated {fake.shape[1]}; use one extractor")
    generator = torch.Generator().manual_seed(seed)
    real_fit, real_stop, real_heldout = split_rows(real.float(), generator)
    fake_fit, fake_stop, fake_heldout = split_rows(fake.float(), generator)
    training = torch.cat([real_fit, real_stop, fake_fit, fake_stop])
    mean, std = training.mean(dim=0), training.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))

    def standard(x: Tensor) -> Tensor:
        return (x - mean) / std

    inputs = standard(torch.cat([real_fit, fake_fit]))
    targets = torch.cat([torch.ones(len(real_fit)), torch.zeros(len(fake_fit))]).to(inputs.device)
    # Class-balanced: each class carries half of the expected loss, whatever the set sizes.
    weights = torch.cat([torch.full((len(real_fit),), len(inputs) / (2 * len(real_fit))),
                         torch.full((len(fake_fit),), len(inputs) / (2 * len(fake_fit)))]).to(inputs.device)
    stop_real, stop_fake = standard(real_stop), standard(fake_stop)

    def stopping_loss(net: nn.Module) -> float:
        with torch.no_grad():
            return float(balanced_bce(net(stop_real).squeeze(1), net(stop_fake).squeeze(1)))

    with seeded(seed):
        net = make_critic(inputs.shape[1]).to(inputs.device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    best_loss, best_state, waited = stopping_loss(net), copy.deepcopy(net.state_dict()), 0
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
        for start in range(0, len(inputs), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            losses = nn.functional.binary_cross_entropy_with_logits(net(inputs[batch]).squeeze(1), targets[batch], reduction="none")
            optimiser.zero_grad(set_to_none=True)
            (losses * weights[batch]).mean().backward()
            optimiser.step()
        loss = stopping_loss(net)
        if loss < best_loss:
            waited = 0 if loss < best_loss - MIN_IMPROVEMENT else waited + 1
            best_loss, best_state = loss, copy.deepcopy(net.state_dict())
        else:
            waited += 1
        if waited >= PATIENCE:
            break
    net.load_state_dict(best_state)
    with torch.no_grad():
        logits_real, logits_fake = net(standard(real_heldout)).squeeze(1), net(standard(fake_heldout)).squeeze(1)
    return {"nnd": math.log(2) - balanced_bce(logits_real, logits_fake), "nnd_accuracy": balanced_accuracy(logits_real, logits_fake)}


class CriticDivergence(StoredFeatures):
    """Keeps all real and generated features (gathered across processes); compute -> nnd and nnd_accuracy."""

    higher_is_better = False

    def __init__(self, epochs: int = 100, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.epochs, self.seed = epochs, seed

    def compute(self) -> dict[str, Tensor]:
        real, fake = self.stored()
        # The evaluation callback runs under no_grad (Lightning validation under inference mode): train outside them,
        # on copies that are not inference tensors.
        with autograd_enabled():
            return critic_divergence(real.clone(), fake.clone(), self.epochs, self.seed)


class NND(Spec):
    """Neural network divergence (after Gulrajani et al. 2019): log 2 minus a trained critic's held-out BCE, and its accuracy."""

    name = "nnd"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        if int(options.critic_epochs) < 1:
            raise GenResearchError(f"critic_epochs must be a positive integer (e.g. 100), got {options.critic_epochs}")
        return CriticDivergence(epochs=int(options.critic_epochs), seed=options.seed)

    def feature_name(self, extractor: FeatureExtractor) -> str:
        """The critic's architecture and the features it reads: the key is ``nnd/critic-mlp2x256-<extractor>``."""
        return f"{CRITIC_NAME}-{extractor.name}"

    def compute(self, metric: Metric) -> dict[str, float]:
        return {key: float(value) for key, value in metric.compute().items()}


METRICS.add("nnd", NND, "neural network divergence: log 2 - held-out BCE of an MLP critic telling real from generated features (0: alike)")
METRICS.add("nnd_accuracy", NND, "held-out balanced accuracy of the nnd critic telling real from generated features (0.5: alike)")

__all__ = ["CRITIC_NAME", "MIN_SAMPLES", "NND", "CriticDivergence", "critic_divergence"]
