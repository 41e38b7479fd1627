"""gen_research: a Lightning framework for generative image models."""
__version__ = "0.1.0"
