"""ssim, psnr: generated / reconstructed images against their paired originals (torchmetrics), images in [0, 1];
cycle_l1: a translator's cycle reconstruction (source -> target domain -> back) against the source."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor
from torchmetrics import MeanAbsoluteError, Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from gen_research.evaluation.base import EvalOptions, FeatureExtractor, to_unit_range
from gen_research.evaluation.specs._common import Spec, to_float
from gen_research.registry import METRICS


class _Paired(Spec):
    """A metric of image pairs; the evaluator calls update_pairs (images in [-1, 1]) instead of update."""

    paired: ClassVar[bool] = True
    needs_reals: ClassVar[bool] = False
    #: Which pairs it compares: "output" (a translation with its paired target, a reconstruction with its input) or
    #: "cycle" (a translation translated back into the source's domain, with the source).
    pairs: ClassVar[str] = "output"

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        raise TypeError(f"metric {self.name!r} compares image pairs; feed it with update_pairs(metric, preds, target)")

    def update_pairs(self, metric: Metric, preds: Tensor, target: Tensor) -> None:
        metric.update(to_unit_range(preds), to_unit_range(target))

    def compute(self, metric: Metric) -> dict[str, float]:
        return {self.name: to_float(metric.compute())}

    def feature_name(self, extractor: FeatureExtractor) -> str:
        # Computed on the pixels whatever --features says: keyed ssim/pixels, never ssim/classifier-mnist5k (which
        # would read as if the classifier's features were compared).
        return "pixels"


class SSIM(_Paired):
    """Mean structural similarity of image pairs (11x11 gaussian window, sigma 1.5, data range 1)."""

    name = "ssim"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        return StructuralSimilarityIndexMeasure(gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0)


class PSNR(_Paired):
    """Mean over image pairs of the peak signal-to-noise ratio in dB (data range 1)."""

    name = "psnr"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        # dim=(1, 2, 3): one PSNR per image, averaged (not the PSNR of the pooled squared error).
        return PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")


class CycleL1(_Paired):
    """Mean absolute error, in [0, 1] pixel units, between a source image and its cycle reconstruction
    G_back(G(source)) (CycleGAN's cycle-consistency term, StarGAN's reconstruction loss), for translators whose data
    name each item's domain and target domain. It is a property of the translator, not of a feature space."""

    name = "cycle_l1"
    pairs = "cycle"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        return MeanAbsoluteError()


METRICS.add("ssim", SSIM, "structural similarity of generated/reconstructed images to their paired originals")
METRICS.add("psnr", PSNR, "peak signal-to-noise ratio (dB) of generated/reconstructed images to their paired originals")
METRICS.add("cycle_l1", CycleL1, "cycle reconstruction error of a translator: mean |G_back(G(source)) - source| in [0, 1] units (lower is better)")
