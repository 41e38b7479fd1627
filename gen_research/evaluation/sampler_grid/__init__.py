"""Sampler sweep: ``evaluate`` over a grid of diffusion samplers, step counts and guidance scales (GitHub issue 5).

    python -m gen_research evaluate --config EXP --ckpt_path CKPT --samplers ddim,dpm-solver++ --steps 10,20,50 \
        --guidance-scales 1,2,4 [--eta E] [--features ... --metrics ... --num-images N --seed S] [--out DIR]

``grid`` parses and checks the grid and counts network evaluations; ``run`` samples and evaluates every point
against reference features computed once; ``report`` writes ``sweep.csv``/``sweep.json``, the plots
``fid_vs_nfe.png`` and ``guidance.png``, sample grids and a W&B run.

``psi_grid`` is the same machinery over a GAN's truncation psi (``evaluate --truncation-psis 0.5,0.7,1``):
``psi.csv``/``psi.json``, ``metrics_vs_psi.png`` and a sample grid per psi.
"""

from gen_research.evaluation.sampler_grid.grid import GridPoint, SweepAxes, expand_grid, parse_axes, parse_truncation_psis
from gen_research.evaluation.sampler_grid.psi_grid import run_psi_grid
from gen_research.evaluation.sampler_grid.run import check_arguments, run_sampler_sweep

__all__ = ["GridPoint", "SweepAxes", "check_arguments", "expand_grid", "parse_axes", "parse_truncation_psis", "run_psi_grid", "run_sampler_sweep"]
