"""alpha_precision / beta_recall (Alaa et al. 2022): hand-computed curves, known limiting cases, prdc's coverage."""

import numpy as np
import pytest
import torch
from prdc import compute_prdc

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import FakeExtractor, batches, run_ddp, run_spec


def sample(n, seed, d=2, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float() + shift


def run_with_curves(real, fake, options=None, batch=64):
    """Like run_spec, but also returns the spec's curves (what the evaluator plots)."""
    spec = METRICS.get("alpha_beta")()
    metric = spec.build(FakeExtractor(real.shape[1]), options or EvalOptions())
    for role, data in (("real", real), ("fake", fake)):
        for chunk in batches(data, batch):
            spec.update(metric, {"features": chunk}, real=role == "real")
    values = spec.compute(metric)
    curve = spec.curves["alpha_precision_curve"]
    return values, np.array(curve["x"]), np.array(curve["y"]["alpha-precision"]), np.array(curve["y"]["beta-recall"])


def test_hand_computed_one_dimensional_case():
    # reals -3 -1 0 1 3: centre 0, radii quantiles at a = 0, .25, .5, .75, 1 are 0, 1, 1, 3, 3.
    # fakes 0.5 -2 4 (distances .5 2 4): P = 0, 1/3, 1/3, 2/3, 2/3 -> IP = 1 - 2 (0 + 1/12 + 1/6 + 1/12 + 1/3) / 5.
    # k = 1 balls of the reals: 2 1 1 1 2; the fakes' centre 5/6, their radii 1/3, 17/6, 19/6 (beta-quantiles 1/3,
    # 19/12, 17/6, 3, 19/6). The innermost fake in each real's ball: -3, -1 -> fake -2 (17/6); 0, 1 -> fake .5 (1/3);
    # 3 -> fake 4 (19/6). So R = .4 .4 .8 .8 1 -> IR = 1 - 2 (.4 + .15 + .3 + .05 + 0) / 5.
    real = torch.tensor([[-3.0], [-1.0], [0.0], [1.0], [3.0]])
    fake = torch.tensor([[0.5], [-2.0], [4.0]])
    values, grid, precision, recall = run_with_curves(real, fake, EvalOptions(alpha_steps=5, nearest_k=1), batch=2)
    assert grid == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert precision == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert recall == pytest.approx([0.4, 0.4, 0.8, 0.8, 1.0])
    assert values["alpha_precision"] == pytest.approx(11 / 15)
    assert values["beta_recall"] == pytest.approx(0.64)


def test_precision_curve_and_full_recall_match_numpy_and_prdc_coverage():
    real, fake = sample(700, 0, d=5), sample(500, 1, d=5) * 1.3 + 0.3
    _, grid, precision, recall = run_with_curves(real, fake, EvalOptions(alpha_steps=12, nearest_k=4))
    r, f = real.double().numpy(), fake.double().numpy()
    radii = np.quantile(np.linalg.norm(r - r.mean(0), axis=1), grid)
    expected = (np.linalg.norm(f - r.mean(0), axis=1)[None, :] <= radii[:, None]).mean(1)
    np.testing.assert_allclose(precision, expected)
    # At beta = 1 the generated support holds every fake: beta-recall is coverage (Naeem et al. 2020).
    assert recall[-1] == pytest.approx(compute_prdc(r, f, nearest_k=4)["coverage"])
    assert 0.2 < recall[-1] < 0.95 and np.all(np.diff(recall) >= 0)


def test_identical_sets_lie_on_the_diagonal():
    real = sample(3000, 2)
    values, grid, precision, recall = run_with_curves(real, real.clone())
    assert np.abs(precision - grid).max() < 1e-3  # P_a = ceil-rounded a: within 1/n
    assert values["alpha_precision"] > 0.999
    assert np.abs(recall - grid).max() < 0.1 and values["beta_recall"] > 0.93  # boundary points' k-NN reach in


def test_fresh_samples_of_the_same_distribution_score_high():
    values = run_spec("alpha_beta", sample(3000, 3), sample(3000, 4))
    assert values["alpha_precision"] > 0.96 and values["beta_recall"] > 0.94


def test_a_tight_cluster_at_the_real_centre():
    real = sample(1500, 5, d=3)
    fake = real.mean(0) + 1e-4 * sample(400, 6, d=3)
    values, grid, precision, recall = run_with_curves(real, fake)
    # Every fake is inside the smallest alpha-ball: P_a = 1 for all a, so IP = 1 - 2 mean(1 - a) = 0.
    assert np.all(precision == 1.0) and values["alpha_precision"] == pytest.approx(0.0, abs=1e-12)
    # R_b = the fraction of reals whose 5-NN ball reaches the cluster, whatever b.
    r = real.double().numpy()
    nnd = np.sort(np.linalg.norm(r[:, None] - r[None], axis=2), axis=1)[:, 5]
    reached = (np.linalg.norm(r - fake.double().numpy().mean(0), axis=1) <= nnd).mean()
    assert 0 < reached < 0.1 and recall == pytest.approx(np.full_like(grid, reached), abs=1e-12)
    assert values["beta_recall"] == pytest.approx(1 - 2 * np.abs(reached - grid).mean())


@pytest.mark.parametrize("embedding", ["features", "oneclass"])
def test_far_away_samples_score_zero(embedding):
    real = sample(300, 7, d=4)
    values, _, precision, recall = run_with_curves(real, sample(200, 8, d=4, shift=50.0),
                                                   EvalOptions(alpha_embedding=embedding))
    assert np.all(precision == 0) and np.all(recall == 0)
    assert values == {"alpha_precision": 0.0, "beta_recall": 0.0}


def test_oneclass_embedding_is_seeded_and_leaves_the_global_rng_alone():
    real, fake = sample(300, 9, d=4), sample(250, 10, d=4) * 0.7
    options = EvalOptions(alpha_embedding="oneclass", seed=3)
    state = torch.random.get_rng_state()
    first = run_spec("alpha_beta", real, fake, options=options)
    assert torch.equal(state, torch.random.get_rng_state())
    assert first == run_spec("alpha_beta", real, fake, options=options)
    same = run_spec("alpha_beta", real, real.clone(), options=options)
    assert same["alpha_precision"] > 0.99  # identical inputs, identical embeddings
    assert 0 < first["alpha_precision"] < same["alpha_precision"]


def test_oneclass_trains_under_inference_mode():
    """Lightning's validation loop (where the EvaluationCallback runs) is under torch.inference_mode."""
    real, fake = sample(200, 11, d=3), sample(200, 12, d=3)
    options = EvalOptions(alpha_embedding="oneclass")
    with torch.inference_mode():
        got = run_spec("alpha_beta", real, fake, options=options)
    assert got == run_spec("alpha_beta", real, fake, options=options)


def test_curves_for_the_plot():
    real = sample(200, 13)
    values, grid, precision, recall = run_with_curves(real, sample(150, 14), EvalOptions(alpha_steps=7))
    spec = METRICS.get("alpha_beta")()
    assert spec.curves == {}
    assert len(grid) == len(precision) == len(recall) == 7 and grid[0] == 0 and grid[-1] == 1
    assert set(values) == {"alpha_precision", "beta_recall"}


@pytest.mark.parametrize("embedding", ["features", "oneclass"])
def test_batch_size_and_processes_do_not_matter(embedding):
    real, fake = sample(240, 15, d=3), sample(180, 16, d=3) + 0.3
    options = EvalOptions(alpha_embedding=embedding, seed=1)
    single = run_spec("alpha_beta", real, fake, options=options, batch=64)
    assert run_spec("alpha_beta", real, fake, options=options, batch=7) == single
    ranks = run_ddp([("alpha_beta", {"real": real, "fake": fake, "options": options})])
    assert ranks[0][0] == ranks[1][0] == single  # canonical row order: bitwise the same


def test_names_and_user_errors():
    assert len({METRICS.get(n) for n in ("alpha_precision", "beta_recall", "alpha_beta")}) == 1
    real = sample(50, 17)
    with pytest.raises(GenResearchError, match="alpha_embedding must be one of features, oneclass"):
        run_spec("alpha_precision", real, real, options=EvalOptions(alpha_embedding="inception"))
    with pytest.raises(GenResearchError, match="alpha_steps"):
        run_spec("alpha_precision", real, real, options=EvalOptions(alpha_steps=1))
    with pytest.raises(GenResearchError, match="nearest_k=5"):
        run_spec("beta_recall", real[:5], real)
