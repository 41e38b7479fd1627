"""Feature extractors (registered in FEATURES): pixels, classifier, inception, clip, dinov2.

Every extractor takes ``(weights=None, resize=None, resize_mode=None)`` (plus the optional ``image_shape`` hint), so the CLI
builds any of them the same way; an argument an extractor cannot use is a one-line GenResearchError.
Heavy libraries (torch-fidelity, transformers) are imported only when such an extractor is built.
"""

from gen_research.evaluation.extractors import classifier, clip, common, dinov2, inception, pixels
from gen_research.evaluation.extractors.classifier import ClassifierFeatures
from gen_research.evaluation.extractors.clip import CLIPFeatures
from gen_research.evaluation.extractors.dinov2 import DINOv2Features
from gen_research.evaluation.extractors.inception import InceptionFeatures
from gen_research.evaluation.extractors.pixels import PixelFeatures

__all__ = [
    "CLIPFeatures",
    "ClassifierFeatures",
    "DINOv2Features",
    "InceptionFeatures",
    "PixelFeatures",
    "classifier",
    "clip",
    "common",
    "dinov2",
    "inception",
    "pixels",
]
