"""The k-NN helpers behind prdc, memorization and alpha_precision: bounded blocks (never N x N), results exact in
float64 and identical whatever the block size, the device or a data set that defeats plain float32 products."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from prdc import compute_prdc

from gen_research.evaluation.specs import _common
from gen_research.evaluation.specs._common import (block_rows, kth_nearest, kth_neighbour_radii, nearest_distances,
                                                    within_radii_blocks)
from gen_research.evaluation.specs.memorization import authenticity
from tests.evaluation.specs.helpers import run_spec

REPO = Path(__file__).resolve().parents[2]
PRDC_KEYS = ("precision", "recall", "density", "coverage")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def exact_matrix(x, y):
    """Every float64 distance, by differences (no cancellation): the reference at small N."""
    return (x.double()[:, None, :] - y.double()[None, :, :]).square().sum(dim=-1).sqrt()


def reference_prdc(real, fake, k):
    """compute_prdc's definitions on exact_matrix (strict <, the point itself its own 0-th neighbour)."""
    rr, ff, rf = exact_matrix(real, real), exact_matrix(fake, fake), exact_matrix(real, fake)
    r_real = rr.sort(dim=1).values[:, k]
    r_fake = ff.sort(dim=1).values[:, k]
    inside = rf < r_real[:, None]
    return {
        "precision": inside.any(dim=0).double().mean().item(),
        "recall": (rf < r_fake[None, :]).any(dim=1).double().mean().item(),
        "density": (inside.sum().double() / (k * fake.shape[0])).item(),
        "coverage": (rf.min(dim=1).values < r_real).double().mean().item(),
    }


def gaussian(n, d, seed, scale=1.0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * scale + shift


def lattice(n, seed):
    """Points of a small integer grid: many exactly equal distances and duplicates (ties at every radius)."""
    return torch.randint(0, 4, (n, 3), generator=torch.Generator().manual_seed(seed)).float()


def test_block_rows_follow_the_byte_budget():
    assert block_rows(50_000) == 671  # 256 MiB of 8-byte entries over 50,000 columns
    assert block_rows(1000, budget=8 * 1000 * 7) == 7
    assert block_rows(10**9, budget=1) == 1  # never zero rows


def test_no_block_is_ever_n_by_n(monkeypatch):
    """A tiny budget: every float32 block, every cdist block and every candidate list stays within it."""
    n, budget = 120, 8 * 120 * 5  # five rows of 120 columns
    monkeypatch.setattr(_common, "BLOCK_BYTES", budget)
    shapes, pairs = [], []
    block, cdist, chunks = _common.squared_distance_block, torch.cdist, _common._pair_chunks

    def record_block(x, y, start, rows):
        out = block(x, y, start, rows)
        shapes.append(tuple(out.shape))
        return out

    def record_cdist(a, b, *args, **kwargs):
        shapes.append((a.shape[0], b.shape[0]))
        return cdist(a, b, *args, **kwargs)

    def record_chunks(mask):
        for first, found in chunks(mask):
            pairs.append(found.shape[0])
            yield first, found

    monkeypatch.setattr(_common, "squared_distance_block", record_block)
    monkeypatch.setattr(_common.torch, "cdist", record_cdist)
    monkeypatch.setattr(_common, "_pair_chunks", record_chunks)
    real, fake, train = gaussian(n, 8, 0), gaussian(n, 8, 1), gaussian(n, 8, 2)
    run_spec("prdc", real, fake)
    run_spec("memorization", real=real, fake=fake, train=train)
    list(_common.distance_blocks(real, fake))  # fld's and alpha_precision's float64 blocks
    assert len(shapes) > 20 and pairs
    assert all(rows * cols * 8 <= budget and rows < n for rows, cols in shapes), shapes
    assert max(pairs) <= max(budget // 32, n)  # one row's candidates at most when a row alone exceeds the budget


@pytest.mark.parametrize("budget", [None, 8 * 900 * 3, 8 * 700, 1])
def test_results_do_not_depend_on_the_block_size(monkeypatch, budget):
    real, fake, train = gaussian(900, 24, 0), gaussian(700, 24, 1, 0.9, 0.2), gaussian(800, 24, 2)
    whole = (run_spec("prdc", real, fake), run_spec("memorization", real=real, fake=fake, train=train),
             kth_neighbour_radii(real, 5), kth_nearest(fake, train, 0))
    if budget is not None:
        monkeypatch.setattr(_common, "BLOCK_BYTES", budget)
    got = (run_spec("prdc", real, fake), run_spec("memorization", real=real, fake=fake, train=train),
           kth_neighbour_radii(real, 5), kth_nearest(fake, train, 0))
    assert got[:2] == whole[:2]
    assert torch.equal(got[2], whole[2]) and torch.equal(got[3][0], whole[3][0]) and torch.equal(got[3][1], whole[3][1])


@pytest.mark.parametrize("k", [1, 3, 5])
def test_radii_and_nearest_are_the_exact_float64_values(k):
    x, y = gaussian(300, 40, 3), gaussian(250, 40, 4)
    ref = exact_matrix(x, x).sort(dim=1).values[:, k]
    assert torch.allclose(kth_neighbour_radii(x, k), ref, rtol=1e-12, atol=0)
    full = exact_matrix(x, y)
    distance, index = kth_nearest(x, y, 0)
    assert torch.allclose(distance, full.min(dim=1).values, rtol=1e-12, atol=0)
    assert torch.equal(index, full.argmin(dim=1))
    assert torch.allclose(nearest_distances(y, x), full.min(dim=0).values, rtol=1e-12, atol=0)


def test_ties_at_the_radius_follow_the_strict_rule():
    """On a lattice most distances tie with some radius; strict < decides, exactly as compute_prdc."""
    real, fake = lattice(400, 5), lattice(300, 6)
    for k in (3, 5):
        ref = compute_prdc(real.double().numpy(), fake.double().numpy(), nearest_k=k)
        got = run_spec("prdc", real, fake, options=_common_options(k))
        assert got == pytest.approx(reference_prdc(real, fake, k), abs=0)
        assert got == pytest.approx({key: float(ref[key]) for key in PRDC_KEYS}, abs=1e-12)
    # duplicates: the nearest training row is the lowest index among equals, as a sort would give
    distance, index = kth_nearest(fake, real, 0)
    full = exact_matrix(fake, real)
    assert torch.equal(distance, full.min(dim=1).values)
    first = torch.stack([torch.nonzero(row == row.min())[0, 0] for row in full])
    assert torch.equal(index, first)


def _common_options(k):
    from gen_research.evaluation.base import EvalOptions

    return EvalOptions(nearest_k=k)


def test_a_large_offset_that_defeats_float32_products():
    """Features ~1000 with spread 0.01: plain float32 ||x||^2 + ||y||^2 - 2 x.y has errors of about 4 (the squared
    distances are ~0.006) and gets the neighbours wrong. Centring plus the float64 re-check gives the exact result."""
    real, fake = gaussian(300, 32, 7, 0.01, 1000.0), gaussian(260, 32, 8, 0.012, 1000.0)
    naive = (real.square().sum(1)[:, None] + real.square().sum(1)[None, :] - 2 * real @ real.T)
    truth = exact_matrix(real, real)
    assert not torch.equal(naive.topk(4, dim=1, largest=False).indices[:, 3], truth.topk(4, dim=1, largest=False).indices[:, 3])
    assert torch.allclose(kth_neighbour_radii(real, 3), truth.sort(dim=1).values[:, 3], rtol=1e-12, atol=0)
    assert run_spec("prdc", real, fake, options=_common_options(3)) == pytest.approx(reference_prdc(real, fake, 3), abs=0)


def test_within_radii_blocks_against_the_full_matrix(monkeypatch):
    monkeypatch.setattr(_common, "BLOCK_BYTES", 8 * 150 * 4)
    x, y = gaussian(200, 16, 9), gaussian(150, 16, 10)
    row_r, col_r = torch.rand(200, dtype=torch.float64) * 6, torch.rand(150, dtype=torch.float64) * 6
    full = exact_matrix(x, y)
    row_r[:10] = full[torch.arange(10), torch.arange(10)]  # radii equal to a distance: that pair is not inside
    rows, cols = [], []
    for start, a, b in within_radii_blocks(x, y, row_r, col_r):
        assert a.shape == b.shape and a.shape[0] <= 4
        rows.append(a), cols.append(b)
    assert torch.equal(torch.cat(rows), full < row_r[:, None])
    assert torch.equal(torch.cat(cols), full < col_r[None, :])
    assert list(within_radii_blocks(x, y))[0][1:] == (None, None)


def test_authenticity_matches_the_full_matrix():
    train = torch.cat([gaussian(300, 12, 11), gaussian(20, 12, 11)])  # 20 duplicated training rows
    fake = torch.cat([gaussian(200, 12, 12), train[:40] + 1e-4])
    full = exact_matrix(fake, train)
    nearest = full.argmin(dim=1)
    own = exact_matrix(train, train).sort(dim=1).values[:, 1]
    expected = (full.min(dim=1).values > own[nearest]).double().mean()
    assert float(authenticity(train, fake)) == pytest.approx(float(expected), abs=0)


def test_full_float32_products_whatever_the_matmul_precision_setting():
    previous = torch.get_float32_matmul_precision()
    real, fake = gaussian(200, 16, 13), gaussian(200, 16, 14)
    want = run_spec("prdc", real, fake)
    try:
        torch.set_float32_matmul_precision("medium")  # TF32 / bf16 passes where the hardware has them
        assert run_spec("prdc", real, fake) == want
        assert torch.get_float32_matmul_precision() == "medium"  # restored after the k-NN pass
    finally:
        torch.set_float32_matmul_precision(previous)


def test_the_default_matmul_setting_is_left_untouched():
    """Under the default ("highest") the k-NN pass sets nothing: setting the precision, even to the same value, pins
    oneDNN's CPU matmul flag for the rest of the process. In a fresh interpreter, as earlier tests in this one may
    have pinned it already."""
    code = (
        "import torch\n"
        "from tests.evaluation.specs.helpers import run_spec\n"
        "before = torch.backends.mkldnn.matmul.fp32_precision\n"
        "g = torch.Generator().manual_seed(0)\n"
        "run_spec('prdc', torch.randn(100, 8, generator=g), torch.randn(100, 8, generator=g))\n"
        "run_spec('memorization', real=torch.randn(100, 8, generator=g), fake=torch.randn(100, 8, generator=g),\n"
        "         train=torch.randn(100, 8, generator=g))\n"
        "print(before, torch.backends.mkldnn.matmul.fp32_precision)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = result.stdout.split()[-2:]
    assert before == "none" and after == before


def test_tf32_on_by_the_cuda_flag_is_off_inside_and_restored_without_touching_onednn():
    """tf32: auto/true sets only torch.backends.cuda.matmul.allow_tf32 (training/speed.py); the k-NN pass turns it off
    and back on by the same flag."""
    from gen_research.training import speed

    if torch.get_float32_matmul_precision() != "highest":
        pytest.skip("an earlier test changed the process's matmul precision")
    before = torch.backends.mkldnn.matmul.fp32_precision
    seen = []
    block = _common.squared_distance_block
    real, fake = gaussian(100, 8, 21), gaussian(100, 8, 22)
    want = run_spec("prdc", real, fake)
    speed.set_tf32(True)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_common, "squared_distance_block",
                          lambda *a: seen.append(torch.backends.cuda.matmul.allow_tf32) or block(*a))
            assert run_spec("prdc", real, fake) == want
        assert seen and not any(seen)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.mkldnn.matmul.fp32_precision == before
    finally:
        speed.set_tf32(False)


def test_float64_inputs_as_alpha_precision_passes_them():
    x = gaussian(200, 10, 15).double() * 1.000000001
    assert torch.allclose(kth_neighbour_radii(x, 4), exact_matrix(x, x).sort(dim=1).values[:, 4], rtol=1e-12, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_numbers():
    real, fake, train = gaussian(700, 64, 16), gaussian(600, 64, 17, 0.9), gaussian(800, 64, 18)
    on_cpu = kth_neighbour_radii(real, 5), kth_nearest(fake, train, 0)
    on_gpu = kth_neighbour_radii(real.cuda(), 5), kth_nearest(fake.cuda(), train.cuda(), 0)
    assert on_gpu[0].device.type == "cuda"
    assert torch.allclose(on_gpu[0].cpu(), on_cpu[0], rtol=1e-12, atol=0)
    assert torch.equal(on_gpu[1][1].cpu(), on_cpu[1][1])
    from gen_research.evaluation.specs.fidelity_diversity import FidelityDiversity

    metrics = {}
    for device in ("cpu", "cuda"):
        metric = FidelityDiversity(nearest_k=5).to(device)
        metric.update(real.to(device), real=True)
        metric.update(fake.to(device), real=False)
        metrics[device] = {key: float(value) for key, value in metric.compute().items()}
    assert metrics["cuda"] == metrics["cpu"]
