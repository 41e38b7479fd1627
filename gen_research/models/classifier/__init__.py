"""Classifier family: a small conv classifier whose penultimate features serve as a domain feature extractor."""

from gen_research.models.classifier import model
from gen_research.models.classifier.model import Classifier

__all__ = ["Classifier", "model"]
