"""ssim / psnr of image pairs against scikit-image, per image then averaged."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gen_research.evaluation.base import EvalOptions
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import FakeExtractor


def pairs(n=6, c=3, size=32):
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    freq = torch.rand(n, c, 1, 1, generator=g) * 4 + 1
    target = torch.sin(freq * xx * 3) * torch.cos(freq * yy * 2) * 0.8  # smooth images in [-1, 1]
    noise = torch.linspace(0.05, 0.4, n).view(n, 1, 1, 1)
    preds = (target + noise * torch.randn(target.shape, generator=g)).clamp(-1, 1)
    return preds, target


def run_paired(name, preds, target, batch=4):
    spec = METRICS.get(name)()
    assert spec.paired and not spec.needs_reals
    metric = spec.build(FakeExtractor(8), EvalOptions())
    for start in range(0, len(preds), batch):
        spec.update_pairs(metric, preds[start : start + batch], target[start : start + batch])
    return spec.compute(metric)


def unit(x):
    return ((x.double() + 1) / 2).numpy()


def skimage_ssim(p, t, border="torchmetrics"):
    """Mean over images of skimage's SSIM (11x11 gaussian window, sigma 1.5, population covariances).

    skimage averages the SSIM map without a 5-pixel border; torchmetrics 1.9 averages the whole map, its
    windows at the border reaching into a reflect-padded image. ``border="torchmetrics"`` gives skimage the
    same reflect-padded images and averages its full map over the original pixels: the same definition.
    """
    r = 5
    values = []
    for a, b in zip(t, p):
        if border == "torchmetrics":
            a, b = (np.pad(x, ((0, 0), (r, r), (r, r)), mode="reflect") for x in (a, b))
        value, full = structural_similarity(a, b, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, data_range=1.0, full=True)
        values.append(full[:, r:-r, r:-r].mean() if border == "torchmetrics" else value)
    return float(np.mean(values))


def test_ssim_matches_skimage():
    preds, target = pairs()
    p, t = unit(preds), unit(target)
    ref = skimage_ssim(p, t)
    got = run_paired("ssim", preds, target)
    assert set(got) == {"ssim"}
    assert got["ssim"] == pytest.approx(ref, abs=1e-4)
    assert 0.1 < got["ssim"] < 0.95
    # Border handling is the only difference from skimage's cropped mean (small, but above 1e-4 on 32x32).
    assert got["ssim"] == pytest.approx(skimage_ssim(p, t, border="crop"), abs=0.03)


def test_psnr_matches_skimage():
    preds, target = pairs()
    p, t = unit(preds), unit(target)
    ref = np.mean([peak_signal_noise_ratio(t[i], p[i], data_range=1.0) for i in range(len(p))])
    got = run_paired("psnr", preds, target)
    assert set(got) == {"psnr"}
    assert got["psnr"] == pytest.approx(ref, abs=1e-4)
