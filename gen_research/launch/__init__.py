"""Launching at scale: SLURM submission (and, later, sweeps)."""
