"""Command-line commands: one module per command; main.py dispatches."""
