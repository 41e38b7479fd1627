"""Feature extractors (registered in FEATURES): pixels, classifier, inception, clip.

Every extractor takes ``(weights=None, resize=None)`` (plus the optional ``image_shape`` hint), so the CLI
builds any of them the same way; an argument an extractor cannot use is a one-line GenResearchError.
Heavy libraries (torch-fidelity, transformers) are imported only when such an extractor is built.
"""

from gen_research.evaluation.extractors import classifier, clip, common, inception, pixels
from gen_research.evaluation.extractors.classifier import ClassifierFeatures
from gen_research.evaluation.extractors.clip import CLIPFeatures
from gen_research.evaluation.extractors.inception import InceptionFeatures
from gen_research.evaluation.extractors.pixels import PixelFeatures

__all__ = [
    "CLIPFeatures",
    "ClassifierFeatures",
    "InceptionFeatures",
    "PixelFeatures",
    "classifier",
    "clip",
    "common",
    "inception",
    "pixels",
]
