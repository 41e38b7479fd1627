"""The seeded trial plan: deterministic, balanced, each image once per set, hashed; plans compared and verified."""

import hashlib
import os
from collections import Counter

import pytest

from gen_research.errors import GenResearchError
from gen_research.rating.trials import plan_difference, set_names, verify_plan_files
from tests.rating.helpers import plan_of


def test_same_seed_same_plan_other_seed_other_order(folders):
    first, again = plan_of(folders, mode="mos", num_trials=12, seed=3), plan_of(folders, mode="mos", num_trials=12, seed=3)
    other = plan_of(folders, mode="mos", num_trials=12, seed=4)
    assert first == again and first["plan_id"] == again["plan_id"]
    assert other["plan_id"] != first["plan_id"]
    assert [t["images"] for t in other["trials"]] != [t["images"] for t in first["trials"]]
    assert [t["id"] for t in first["trials"]] == list(range(12))


def test_mos_splits_trials_evenly_and_shows_each_image_once_per_set(folders):
    plan = plan_of(folders, mode="mos", num_trials=10, seed=0)
    assert plan["conditions"] == [[0], [1], [2]]
    per_set = Counter(t["images"][0]["set"] for t in plan["trials"])
    assert sorted(per_set.values()) == [3, 3, 4]  # 10 over 3 sets: counts differ by at most one
    for index in range(3):
        files = [t["images"][0]["file"] for t in plan["trials"] if t["images"][0]["set"] == index]
        assert len(files) == len(set(files))
    assert {s["name"] for s in plan["sets"]} == {"real", "a/samples", "b/samples"}


def test_mixed_order_is_not_grouped_by_set(folders):
    plan = plan_of(folders, mode="mos", num_trials=30, seed=0)
    sets = [t["images"][0]["set"] for t in plan["trials"]]
    assert sets != sorted(sets) and len(set(sets[:10])) > 1


def test_2afc_real_pairs_a_real_with_each_fake_set_left_right_balanced(folders):
    plan = plan_of(folders, mode="2afc", num_trials=10, seed=5)
    assert plan["pairs"] == "real" and plan["conditions"] == [[0, 1], [0, 2]]
    for condition, fake in ((0, 1), (1, 2)):
        trials = [t for t in plan["trials"] if t["condition"] == condition]
        assert len(trials) == 5
        assert all(sorted(i["set"] for i in t["images"]) == [0, fake] for t in trials)
        real_left = sum(t["images"][0]["set"] == 0 for t in trials)
        assert real_left == 3  # ceil(5 / 2) on the left, the others on the right
        assert len({t["images"][0 if t["images"][0]["set"] == 0 else 1]["file"] for t in trials}) == 5


def test_2afc_models_pairs_every_two_fake_sets(tmp_path, folders):
    from tests.rating.helpers import make_folder

    folders["c"] = make_folder(tmp_path / "runs" / "c" / "samples", 10, seed=4)
    plan = plan_of(folders, fakes=("a", "b", "c"), mode="2afc", pairs="models", num_trials=12, seed=0)
    assert plan["conditions"] == [[1, 2], [1, 3], [2, 3]]
    assert Counter(t["condition"] for t in plan["trials"]) == {0: 4, 1: 4, 2: 4}
    assert all(0 not in [i["set"] for i in t["images"]] for t in plan["trials"])  # real images never shown
    for condition, (a, _) in enumerate(plan["conditions"]):
        assert sum(t["images"][0]["set"] == a for t in plan["trials"] if t["condition"] == condition) == 2


def test_default_count_and_too_many_trials(folders):
    assert plan_of(folders, mode="mos")["num_trials"] == 30  # 20 per set wanted; the fake folders hold 10 each
    assert plan_of(folders, mode="2afc")["num_trials"] == 20
    with pytest.raises(GenResearchError, match=r"holds only 10; lower --num-trials to at most 30"):
        plan_of(folders, mode="mos", num_trials=31)
    with pytest.raises(GenResearchError, match="at least two --fake"):
        plan_of(folders, fakes=("a",), mode="2afc", pairs="models")


def test_images_are_hashed_with_sha256(folders):
    plan = plan_of(folders, mode="mos", num_trials=3)
    for trial in plan["trials"]:
        image = trial["images"][0]
        path = os.path.join(plan["sets"][image["set"]]["folder"], image["file"])
        with open(path, "rb") as handle:
            assert image["sha256"] == hashlib.sha256(handle.read()).hexdigest()


def test_set_names_tell_folders_apart():
    assert set_names(["/x/runs/a/samples", "/x/runs/b/samples"]) == ["a/samples", "b/samples"]
    assert set_names(["/x/gan", "/y/vae"]) == ["gan", "vae"]
    assert set_names(["/x/fakes/real"]) == ["fakes/real"]  # "real" names the reference set


def test_plan_difference_and_changed_images(folders):
    plan = plan_of(folders, mode="mos", num_trials=6)
    assert plan_difference(plan, plan_of(folders, mode="mos", num_trials=6)) is None
    assert "seed 0 there, 1 now" in plan_difference(plan, plan_of(folders, mode="mos", num_trials=6, seed=1))
    assert "mode 'mos' there, '2afc' now" in plan_difference(plan, plan_of(folders, mode="2afc", num_trials=6))
    verify_plan_files(plan)
    shown = plan["trials"][0]["images"][0]
    path = os.path.join(plan["sets"][shown["set"]]["folder"], shown["file"])
    with open(path, "ab") as handle:
        handle.write(b"x")
    assert "images changed" in plan_difference(plan, plan_of(folders, mode="mos", num_trials=6))
    with pytest.raises(GenResearchError, match="changed since the plan was made"):
        verify_plan_files(plan)
    os.remove(path)
    with pytest.raises(GenResearchError, match="of the saved plan is missing"):
        verify_plan_files(plan)
