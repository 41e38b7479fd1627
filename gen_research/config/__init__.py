"""Experiment files: YAML composition, trainer presets, precision, run-config checks, parser error messages."""
