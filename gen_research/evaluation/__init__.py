"""Evaluation: feature extractors, metrics named after them, keyed reference statistics.

Importing this package registers the extractors (FEATURES) and metrics (METRICS).
"""

from gen_research.evaluation import extractors, specs  # noqa: F401  (registration)
