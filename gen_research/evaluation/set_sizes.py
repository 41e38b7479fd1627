"""How many real and generated images each metric needs, checked before any feature is computed.

Without this check a too-small set fails only inside ``compute()``, after FID and KID have run on every
image (minutes with Inception); the ``evaluate`` command and the evaluation callback call it as soon as the
set sizes are known.
"""

from __future__ import annotations

from collections.abc import Iterable

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.registry import METRICS

NND_MIN_SAMPLES = 40  # = gen_research.evaluation.specs.critic.MIN_SAMPLES (kept here: this module imports no metric code)


def check_set_sizes(metric_names: Iterable[str], options: EvalOptions, num_real: int, num_fake: int,
                    real_option: str = "the reference set", fake_option: str = "the generated set") -> None:
    """One line naming the metric, the sizes and what to change when a set is too small for a requested metric."""
    for name in metric_names:
        kind = getattr(METRICS.get(name), "name", name)
        if kind == "prdc":
            k = options.nearest_k
            if min(num_real, num_fake) <= k:
                raise GenResearchError(
                    f"{name} needs more than nearest_k={k} real and generated images; {real_option} has {num_real} and "
                    f"{fake_option} {num_fake}: evaluate more images or lower nearest_k"
                )
        elif kind in ("fid", "kid", "mifid"):
            if min(num_real, num_fake) < 2:
                raise GenResearchError(
                    f"{name} needs at least 2 real and 2 generated images; {real_option} has {num_real} and {fake_option} {num_fake}: evaluate more images"
                )
        elif kind == "is" and num_fake < options.is_splits:
            raise GenResearchError(
                f"is needs at least is_splits={options.is_splits} generated images, got {num_fake}: evaluate more images or lower is_splits"
            )
        elif kind == "alpha_beta" and (num_real <= options.nearest_k or num_fake < 2):
            raise GenResearchError(
                f"{name} needs more than nearest_k={options.nearest_k} real and at least 2 generated images; {real_option} has {num_real} and "
                f"{fake_option} {num_fake}: evaluate more images or lower nearest_k"
            )
        elif kind == "nnd" and min(num_real, num_fake) < NND_MIN_SAMPLES:
            raise GenResearchError(
                f"{name} trains a critic on half of each set and scores the other half: it needs at least {NND_MIN_SAMPLES} real and generated "
                f"images; {real_option} has {num_real} and {fake_option} {num_fake}: evaluate more images"
            )
        elif kind in ("fid_infinity", "cafd", "cfid", "fld") and min(num_real, num_fake) < 2:
            raise GenResearchError(
                f"{name} needs at least 2 real and 2 generated images; {real_option} has {num_real} and {fake_option} {num_fake}: evaluate more images"
            )
        elif kind == "fid_infinity" and int(options.fid_infinity_min_fraction * num_fake) < 2:
            raise GenResearchError(
                f"fid_infinity's smallest subset (fid_infinity_min_fraction={options.fid_infinity_min_fraction} of {num_fake} generated images) "
                "has fewer than 2 images: evaluate more images"
            )


__all__ = ["check_set_sizes"]
