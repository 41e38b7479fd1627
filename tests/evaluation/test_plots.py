"""plot_curves: one PNG per curve (fid_infinity's FID vs 1/N with its fit; any x/y curve), never overwriting a file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import gen_research.evaluation.specs  # noqa: F401  (registration)
from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.evaluation.plots import curve_file_name, plot_curves
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import FakeExtractor


def fid_curve() -> dict:
    """The curve fid_infinity really draws, on Gaussian features."""
    spec = METRICS.get("fid_infinity")()
    metric = spec.build(FakeExtractor(4), EvalOptions(fid_infinity_points=8))
    spec.update(metric, {"features": torch.randn(500, 4, generator=torch.Generator().manual_seed(0))}, real=True)
    spec.update(metric, {"features": 0.2 + torch.randn(300, 4, generator=torch.Generator().manual_seed(1))}, real=False)
    spec.compute(metric)
    return spec.curves["fid_vs_n"]


ALPHA_CURVE = {"x": [0.0, 0.5, 1.0], "y": {"alpha-precision": [0.0, 0.4, 0.9], "ideal": [0.0, 0.5, 1.0]},
               "xlabel": "alpha", "ylabel": "precision", "title": "alpha-precision curve"}


def test_writes_one_png_per_curve_named_after_its_key(tmp_path):
    curves = {"fid_vs_n/classifier-mnist5k": fid_curve(), "alpha_precision_curve/pixels": ALPHA_CURVE}
    paths = plot_curves(curves, tmp_path / "plots")
    assert [p.name for p in paths] == ["fid_vs_n-classifier-mnist5k.png", "alpha_precision_curve-pixels.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # something drawn, not a blank canvas
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)  # no temporary left


def test_never_overwrites_and_writes_nothing_when_one_file_exists(tmp_path):
    existing = tmp_path / curve_file_name("alpha_precision_curve/pixels")
    existing.write_bytes(b"keep me")
    with pytest.raises(GenResearchError, match="already exists.*nothing is overwritten"):
        plot_curves({"fid_vs_n/pixels": fid_curve(), "alpha_precision_curve/pixels": ALPHA_CURVE}, tmp_path)
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "fid_vs_n-pixels.png").exists()


def test_malformed_curves_are_refused_in_one_line(tmp_path):
    with pytest.raises(GenResearchError, match="series 'b' has 2 values for 3 x values"):
        plot_curves({"bad": {"x": [1, 2, 3], "y": {"b": [1, 2]}}}, tmp_path)
    with pytest.raises(GenResearchError, match="needs an 'x' list"):
        plot_curves({"bad": [1, 2]}, tmp_path)
    assert curve_file_name("a b/c:d") == "a-b-c-d.png"
