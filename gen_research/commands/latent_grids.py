"""The latent-space pictures of ``sample --grid``: interpolations, style mixing and latent vector arithmetic.

- ``interpolation``: ``--rows`` paths of ``--path-steps`` images between two random latents, linear in z for a model
  with a latent prior (the DCGAN paper's walks) and in W for a StyleGAN (its paper's Figure 8: W is the space where
  paths are perceptually short).
- ``style-mixing``: a StyleGAN's grid of NVlabs' style_mixing.py: the first row and column are the sources; the cell
  (r, c) takes row r's coarse styles (layers before ``--crossover``) and column c's fine styles (from it on).
- ``arithmetic A-B+C``: the DCGAN paper's "vector arithmetic on face samples" with classes instead of hand-picked
  faces: a pool of latents is labelled by a classifier (``--classifier``, the shipped MNIST one by default), and the
  mean latent (mean w for a StyleGAN) of class A minus that of class B is added to latents of class C. The
  classifier's reading of the results is written to ``arithmetic.json`` (how many now read as A, how many stay C).

All of them draw from a ``torch.Generator`` seeded with ``--seed`` and, for a StyleGAN, synthesize with its constant
noise, so the same seed gives the same pictures. Only unconditional latent spaces: a class-conditional model is
refused (its latent space is one per class; use ``--grid samples --class K``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.models.contract import LatentPrior, StyleSpace, can, conditioning_classes

from gen_research.commands.sample import GRIDS  # noqa: E402,F401  (one definition; sample --help needs it without torch)
ARITHMETIC = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*\+\s*(\d+)\s*$")


@dataclass(frozen=True)
class Arithmetic:
    """``plus - minus + base`` on class means: e.g. 7-1+1 turns 1s into 7s if the latent space is linear enough."""

    plus: int
    minus: int
    base: int

    @classmethod
    def parse(cls, text: str) -> Arithmetic:
        match = ARITHMETIC.match(text or "")
        if not match:
            raise GenResearchError(f"--arithmetic {text!r}: write it as A-B+C with class numbers, e.g. --arithmetic 7-1+1")
        return cls(*(int(group) for group in match.groups()))


def check_grid_model(model: Any, grid: str, options: dict[str, Any]) -> None:
    """One-line errors for a grid the model cannot draw, before anything is drawn."""
    if grid == "samples":
        return
    if grid == "style-mixing" and not can(model, StyleSpace):
        raise GenResearchError(f"--grid style-mixing needs a model with a style space W (stylegan); {type(model).__name__} has none")
    if not (can(model, StyleSpace) or can(model, LatentPrior)):
        raise GenResearchError(f"--grid {grid} walks a latent space: {type(model).__name__} has no latent prior; use --grid samples")
    if conditioning_classes(model):
        raise GenResearchError(f"--grid {grid} walks an unconditional latent space; {type(model).__name__} is class-conditional: "
                               "use --grid samples --class K")
    unknown = sorted(set(options) - {"truncation_psi", "truncation_cutoff"})
    if unknown:
        raise GenResearchError(f"--{unknown[0].replace('_', '-')} applies to --grid samples only; drop it for --grid {grid}")


def _latents(model: Any, count: int, generator: torch.Generator) -> Tensor:
    z_dim = int(model.latent_dim)
    return torch.randn(count, z_dim, generator=generator, device=generator.device)


def _codes(model: Any, z: Tensor, options: dict[str, Any]) -> Tensor:
    """What paths and means are taken in: w [N, w_dim] for a StyleGAN (truncated as asked), else z itself."""
    if can(model, StyleSpace):
        return model.to_w(z.to(model.device), **options)[:, 0]
    return z


def _render(model: Any, codes: Tensor, options: dict[str, Any]) -> Tensor:
    if can(model, StyleSpace):
        return model.synthesize(codes[:, None].expand(-1, int(model.num_ws), -1), noise_mode="const")
    return model.decode(codes.to(model.device), **options)


def interpolation_grid(model: Any, rows: int, steps: int, generator: torch.Generator, options: dict[str, Any]) -> Tensor:
    """``[rows * steps, C, H, W]``: row i runs linearly from code a_i to code b_i (z, or w for a StyleGAN)."""
    a = _codes(model, _latents(model, rows, generator), options)
    b = _codes(model, _latents(model, rows, generator), options)
    t = torch.linspace(0.0, 1.0, steps, device=a.device)[None, :, None]
    path = a[:, None] * (1 - t) + b[:, None] * t
    return _render(model, path.flatten(0, 1), options)


def style_mixing_grid(model: Any, rows: int, columns: int, crossover: int | None, generator: torch.Generator,
                      options: dict[str, Any]) -> Tensor:
    """``[(rows + 1) * (columns + 1), C, H, W]`` in NVlabs' layout: a blank corner, the column sources on top, then per
    row its source followed by row-coarse x column-fine mixes."""
    layers = int(model.num_ws)
    crossover = int(model.style_mixing_crossover) if crossover is None else crossover
    if not 0 < crossover < layers:
        raise GenResearchError(f"--crossover {crossover}: must be between 1 and {layers - 1} (the model has {layers} style layers)")
    row_ws = model.to_w(_latents(model, rows, generator).to(model.device), **options)
    column_ws = model.to_w(_latents(model, columns, generator).to(model.device), **options)
    mixed = torch.cat([row_ws[:, None, :crossover].expand(-1, columns, -1, -1),
                       column_ws[None, :, crossover:].expand(rows, -1, -1, -1)], dim=2).flatten(0, 1)
    row_images, column_images = model.synthesize(row_ws), model.synthesize(column_ws)
    mixes = model.synthesize(mixed).view(rows, columns, *row_images.shape[1:])
    blank = torch.full_like(row_images[:1], -1.0)
    cells = [blank, column_images]
    for r in range(rows):
        cells += [row_images[r : r + 1], mixes[r]]
    return torch.cat(cells)


def latent_arithmetic(model: Any, arithmetic: Arithmetic, classify: Any, count: int, pool: int, generator: torch.Generator,
                      options: dict[str, Any], batch_size: int = 256) -> tuple[Tensor, dict[str, Any]]:
    """Rows of ``count`` images: class A, class B, class C, then C + mean(A) - mean(B); and the classifier's reading.

    ``classify(images) -> logits``. Latents come from a pool of ``pool`` draws labelled by the classifier; a class with
    fewer than ``count`` members in the pool is a one-line error (draw a larger --pool)."""
    codes, labels = [], []
    for start in range(0, pool, batch_size):
        batch = _codes(model, _latents(model, min(batch_size, pool - start), generator), options)
        codes.append(batch)
        labels.append(classify(_render(model, batch, options)).argmax(1).to(batch.device))
    codes_all, labels_all = torch.cat(codes), torch.cat(labels)
    members = {}
    for name, label in (("A", arithmetic.plus), ("B", arithmetic.minus), ("C", arithmetic.base)):
        chosen = codes_all[labels_all == label]
        needed = 2 * count if name == "C" and label == arithmetic.minus else count  # C = B: show other members than B's
        if len(chosen) < needed:
            raise GenResearchError(f"--arithmetic: only {len(chosen)} of {pool} samples read as class {label} ({name}); "
                                   f"pass a larger --pool or a smaller --columns (needs {needed})")
        members[name] = chosen
    direction = members["A"].mean(0) - members["B"].mean(0)  # mean over every member of the pool, not only the shown
    shown_c = members["C"][count : 2 * count] if arithmetic.base == arithmetic.minus else members["C"][:count]
    results = shown_c + direction
    rows = [_render(model, members[name][:count], options) for name in ("A", "B")]
    rows += [_render(model, shown_c, options), _render(model, results, options)]
    read = classify(rows[-1]).argmax(1).cpu()
    summary = {
        "arithmetic": f"{arithmetic.plus}-{arithmetic.minus}+{arithmetic.base}",
        "space": "w" if can(model, StyleSpace) else "z",
        "pool": pool,
        "pool_counts": {str(k): int((labels_all == k).sum()) for k in sorted(set(labels_all.tolist()))},
        "results": count,
        "results_read_as_plus": float((read == arithmetic.plus).float().mean()),
        "results_read_as_base": float((read == arithmetic.base).float().mean()),
        "results_classes": read.tolist(),
    }
    return torch.cat(rows), summary


__all__ = ["ARITHMETIC", "GRIDS", "Arithmetic", "check_grid_model", "interpolation_grid", "latent_arithmetic", "style_mixing_grid"]
