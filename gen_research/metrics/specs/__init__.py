"""Metric specs (registered in METRICS): importing this package registers them all.

distribution: fid, kid, is, mifid (torchmetrics); fidelity_diversity: precision, recall, density, coverage,
prdc; memorization: memorization; paired: ssim, psnr.
"""

from gen_research.metrics.specs import distribution, fidelity_diversity, memorization, paired  # noqa: F401

__all__ = ["distribution", "fidelity_diversity", "memorization", "paired"]
