"""Metric specs (registered in METRICS): importing this package registers them all.

distribution: fid, kid, is, mifid (torchmetrics); fidelity_diversity: precision, recall, density, coverage,
prdc; memorization: memorization; paired: ssim, psnr; conditional: accuracy, intra_fid, per_class_fid.
"""

from gen_research.evaluation.specs import conditional, distribution, fidelity_diversity, memorization, paired  # noqa: F401
from gen_research.evaluation.specs import perceptual  # noqa: F401  (lpips, ppl)
from gen_research.evaluation.specs import clip_score  # noqa: F401  (clip_score)
from gen_research.evaluation.specs import cas  # noqa: F401  (cas: train on generated, test on real)
from gen_research.evaluation.specs import alpha_precision, fld  # noqa: F401  (alpha_precision, beta_recall; fld)
from gen_research.evaluation.specs import vendi, critic  # noqa: F401  (vendi; nnd: a trained critic's divergence)
from gen_research.evaluation.specs import class_aware, fid_infinity  # noqa: F401  (cafd, cfid; fid_infinity)

__all__ = ["conditional", "distribution", "fidelity_diversity", "memorization", "paired"]
