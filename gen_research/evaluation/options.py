"""The metrics' knobs, without torch: ``evaluate --help`` shows their defaults before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalOptions:
    """Knobs of the metrics (the ``evaluate`` command's options and the EvaluationCallback's arguments)."""

    kid_subset_size: int = 1000
    kid_subsets: int = 100
    nearest_k: int = 5
    is_splits: int = 10
    seed: int = 0
    num_classes: int | None = None  # class-conditional metrics (accuracy, intra_fid); from the data when known
    clip_model: str | None = None  # local CLIP folder for clip_score
    # alpha_precision / beta_recall (Alaa et al. 2022): alphas and betas on linspace(0, 1, alpha_steps); the
    # embedding the balls live in: "features" (the extractor's features) or "oneclass" (a seeded Deep SVDD on the reals).
    alpha_steps: int = 30
    alpha_embedding: str = "features"
    vendi_q: float = 1.0  # order of the Vendi score's Renyi entropy (1: Shannon, the paper's default)
    critic_epochs: int = 100  # nnd: at most this many epochs of the real-vs-generated critic (early-stopped, specs/critic.py)
    fid_infinity_points: int = 15  # fid_infinity: FID at this many N, evenly spaced in 1/N (Chong & Forsyth 2020)
    fid_infinity_min_fraction: float = 0.1  # smallest N as a fraction of the generated set (the paper: 5k of 50k)
