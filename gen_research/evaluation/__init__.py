"""Evaluation: feature extractors, metrics named after them, keyed reference statistics.

Importing gen_research.evaluation.extractors and gen_research.evaluation.specs registers the extractors (FEATURES)
and metrics (METRICS) (gen_research/registry.py: BUILTIN_PACKAGES); this package itself imports nothing, so that
``evaluate --help`` (gen_research.evaluation.options) answers at once.
"""
