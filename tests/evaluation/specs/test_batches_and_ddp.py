"""Numbers do not depend on the batch size nor on how many processes share the data."""

import pytest
import torch

from gen_research.evaluation.base import EvalOptions
from tests.evaluation.specs.helpers import run_ddp, run_spec


def sample(n, seed, d=16, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


REAL, FAKE, TRAIN = sample(500, 0), sample(400, 1, shift=0.2), sample(800, 2)
KID_OPTIONS = EvalOptions(kid_subsets=10, kid_subset_size=100, seed=5)
KID_FULL = EvalOptions(kid_subsets=1, kid_subset_size=400)


def assert_close(a: dict, b: dict, rel: float):
    assert set(a) == set(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-12), key


@pytest.mark.parametrize(("name", "kwargs"), [
    ("fid", {}),
    ("kid", {"options": KID_OPTIONS}),
    ("prdc", {}),
    ("memorization", {"train": TRAIN}),
])
def test_batch_size_does_not_matter(name, kwargs):
    small = run_spec(name, REAL, FAKE, batch=7, **kwargs)
    large = run_spec(name, REAL, FAKE, batch=64, **kwargs)
    assert_close(small, large, rel=1e-6)


def test_two_processes_match_one():
    jobs = [
        ("fid", {"real": REAL, "fake": FAKE}),
        ("prdc", {"real": REAL, "fake": FAKE}),
        ("kid", {"real": REAL[:400], "fake": FAKE, "options": KID_FULL}),  # all rows: no sampling order
        ("memorization", {"real": REAL, "fake": FAKE, "train": TRAIN}),
    ]
    single = [run_spec(name, **kwargs) for name, kwargs in jobs]
    ranks = run_ddp(jobs)
    for rank_results in ranks:
        for (name, _), one, many in zip(jobs, single, rank_results):
            if name == "memorization":  # k-means cells depend on the (gathered) row order; distances do not
                one = {k: v for k, v in one.items() if k != "data_copying_zu"}
                many = {k: v for k, v in many.items() if k != "data_copying_zu"}
            assert_close(one, many, rel=1e-6)
    assert ranks[0] == ranks[1]
