"""Grid order and count, seeded random draws within W&B's distributions, Optuna's bayes within bounds, shards."""

import math
import sys

import pytest

from gen_research.launch.sweep.command import build_command, fit_arguments
from gen_research.launch.sweep.search import BayesSearch, GridSearch, RandomSearch, Shard, grid_points
from gen_research.launch.sweep.spec import load_sweep_file, parse_parameter

from .helpers import write_sweep

DISTRIBUTIONS = {
    "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
    "p": {"distribution": "uniform", "min": 0.05, "max": 0.3},
    "steps": {"distribution": "int_uniform", "min": 0, "max": 3},
    "width": {"distribution": "q_uniform", "min": 8, "max": 64, "q": 8},
    "kind": {"values": ["a", "b", "c"]},
    "noise": {"distribution": "normal", "mu": 1.0, "sigma": 0.5},
    "decay": {"distribution": "inv_log_uniform_values", "min": 0.9, "max": 0.999},
    "fixed": {"value": 7},
}


def all_proposals(search):
    out = []
    while (proposal := search.propose()) is not None:
        out.append(proposal)
        search.report(proposal[0], None)
    return out


def test_grid_is_the_product_in_wandb_order(tmp_path):
    sweep = load_sweep_file(write_sweep(tmp_path, parameters={
        "b": {"values": [1, 2]}, "a": {"values": ["x", "y", "z"]}, "c": {"value": 7}}))
    points = grid_points(sweep)
    # Names sorted (a, b, c); the last name varies fastest, as itertools.product in W&B's grid search.
    assert [(p["a"], p["b"], p["c"]) for p in points] == [
        ("x", 1, 7), ("x", 2, 7), ("y", 1, 7), ("y", 2, 7), ("z", 1, 7), ("z", 2, 7)]
    assert [index for index, _ in all_proposals(GridSearch(sweep, 4, Shard()))] == [0, 1, 2, 3]
    assert [p for _, p in all_proposals(GridSearch(sweep, None, Shard(1, 3)))] == [points[1], points[4]]


def test_grid_expands_int_and_q_uniform_like_wandb(tmp_path):
    assert parse_parameter("n", {"min": 1, "max": 3}, "f").grid_values() == [1, 2, 3]
    # numpy.arange(min, max, q): max itself is not a grid point in W&B either
    assert parse_parameter("q", {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25}, "f").grid_values() == [0, 0.25, 0.5, 0.75]
    assert parse_parameter("v", {"values": [1, 1.0, 2]}, "f").grid_values() == [1, 2]  # 1 and 1.0: one point


def test_random_search_is_seeded_and_within_each_distribution(tmp_path):
    sweep = load_sweep_file(write_sweep(tmp_path, method="random", parameters=DISTRIBUTIONS))
    first = all_proposals(RandomSearch(sweep, 300, Shard(), seed=3))
    assert first == all_proposals(RandomSearch(sweep, 300, Shard(), seed=3))
    assert first != all_proposals(RandomSearch(sweep, 300, Shard(), seed=4))
    values = {name: [p[name] for _, p in first] for name in DISTRIBUTIONS}
    assert all(1e-4 <= v <= 1e-2 for v in values["lr"]) and min(values["lr"]) < 3e-4 and max(values["lr"]) > 3e-3
    assert all(0.05 <= v <= 0.3 for v in values["p"])
    assert set(values["steps"]) == {0, 1, 2, 3} and all(isinstance(v, int) for v in values["steps"])
    assert all(v % 8 == 0 and 8 <= v <= 64 and isinstance(v, int) for v in values["width"])
    assert set(values["kind"]) == {"a", "b", "c"}
    assert abs(sum(values["noise"]) / 300 - 1.0) < 0.1 and min(values["noise"]) < 0.5 < 1.5 < max(values["noise"])
    assert all(0.9 <= v <= 0.999 for v in values["decay"])
    assert set(values["fixed"]) == {7}


def test_quantiles_match_wandb_definitions():
    log_uniform = parse_parameter("x", {"distribution": "log_uniform", "min": -2.0, "max": 0.0}, "f")  # exponents
    assert math.isclose(log_uniform.quantile(0.5), math.exp(-1.0))
    values = parse_parameter("x", {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0}, "f")
    assert math.isclose(values.quantile(0.5), 0.1)
    assert math.isclose(parse_parameter("x", {"distribution": "q_log_uniform_values", "min": 1, "max": 100, "q": 5}, "f").quantile(0.5), 10)
    weighted = parse_parameter("x", {"values": ["a", "b"], "probabilities": [0.9, 0.1]}, "f")
    assert [weighted.quantile(u) for u in (0.1, 0.85, 0.95)] == ["a", "a", "b"]
    beta = parse_parameter("x", {"distribution": "beta", "a": 2, "b": 2}, "f")
    assert math.isclose(beta.quantile(0.5), 0.5)


def test_random_shards_split_the_count_and_use_different_seeds(tmp_path):
    sweep = load_sweep_file(write_sweep(tmp_path, method="random", parameters=DISTRIBUTIONS))
    shards = [all_proposals(RandomSearch(sweep, 7, Shard(i, 3), seed=0)) for i in range(3)]
    assert [[index for index, _ in shard] for shard in shards] == [[0, 3, 6], [1, 4], [2, 5]]
    assert shards[0][0][1] != shards[1][0][1]


def test_bayes_proposes_values_inside_the_bounds_and_learns_direction(tmp_path):
    sweep = load_sweep_file(write_sweep(tmp_path, method="bayes", parameters=DISTRIBUTIONS,
                                        metric={"name": "val/loss", "goal": "maximize"}))
    search = BayesSearch(sweep, 16, Shard(), seed=0)
    assert search.study.direction.name == "MAXIMIZE"
    proposals = []
    while (proposal := search.propose()) is not None:
        index, values = proposal
        proposals.append(values)
        search.report(index, values["p"] if index != 3 else None)  # one failed run
    assert len(proposals) == 16  # past TPE's 10 random start-up trials
    for values in proposals:
        assert 1e-4 <= values["lr"] <= 1e-2 and 0.05 <= values["p"] <= 0.3
        assert values["steps"] in (0, 1, 2, 3) and values["kind"] in ("a", "b", "c")
        assert values["width"] % 8 == 0 and 8 <= values["width"] <= 64 and 0.9 <= values["decay"] <= 0.999
        assert values["fixed"] == 7 and math.isfinite(values["noise"])
    assert len(search.study.trials) == 16 and sum(t.state.name == "FAIL" for t in search.study.trials) == 1
    again = BayesSearch(sweep, 2, Shard(), seed=0)
    assert again.propose()[1] == proposals[0]  # seeded


def test_bayes_shards_share_one_study_through_the_journal(tmp_path):
    sweep = load_sweep_file(write_sweep(tmp_path, method="bayes", parameters={"x": {"min": 0.0, "max": 1.0}}))
    for index in range(2):
        search = BayesSearch(sweep, 4, Shard(index, 2), seed=1, journal=tmp_path / "optuna-journal.log")
        all_proposals(search)
    # the second shard's study holds the first shard's runs too (0, 2) besides its own (1, 3)
    assert sorted(t.user_attrs["run_index"] for t in search.study.trials) == [0, 1, 2, 3]


def test_agent_style_arguments_match_wandb(tmp_path):
    sweep = load_sweep_file(write_sweep(tmp_path))
    assignment = {"model.init_args.beta": 2.0, "model.init_args.channels": [8, 16], "trainer.enable_progress_bar": False}
    command = build_command(sweep, assignment, ["--name=x"])
    assert command[0] == sys.executable and "${env}" not in command and command[-1] == "--name=x"
    assert fit_arguments(command)[2:5] == ["--model.init_args.beta=2.0", "--model.init_args.channels=[8, 16]",
                                           "--trainer.enable_progress_bar=False"]
    utils = pytest.importorskip("wandb.sdk.launch.sweeps.utils")
    wandb_args = utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in assignment.items()}})
    assert fit_arguments(command)[2:5] == wandb_args["args"]
