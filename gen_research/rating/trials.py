"""The seeded trial plan of a rating session: which images each trial shows, in which order, left or right.

Modes (the *conditions* are what the results are reported per):

- ``mos`` (Mean Opinion Score, ITU-T P.800 absolute category rating): one image per trial, rated 1 (bad) .. 5
  (excellent). Conditions: the real set and every fake set.
- ``2afc`` with ``pairs="real"``: a real and a generated image side by side, "which is real?". Conditions: the fake
  sets (each paired with its own draw of real images).
- ``2afc`` with ``pairs="models"``: images of two fake sets A and B side by side, "which looks better?". Conditions:
  every pair of fake sets (A before B in --fake order).

Balance: ``num_trials`` is split over the conditions as evenly as possible (counts differ by at most one; the extra
trials go to conditions in a seeded order); within a condition each image of a set is shown at most once (a draw
without replacement), and in 2AFC the first-named image (real, or model A) is on the left in exactly
``ceil(k / 2)`` of the condition's k trials, on the right in the others, in a seeded order. All trials are then
shuffled together; a trial's id is its position in that order. ``random.Random(seed)`` drives every draw (its
shuffle and sample are stable across Python versions), so the same folders, mode, pairs, count and seed always give
the same plan. Each image shown is named by its set and its path relative to the set's folder, with the sha256 of
its bytes: a folder whose images changed no longer matches a saved plan.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError

PLAN_FORMAT = "gen_research rating plan 1"
MODES = ("mos", "2afc")
PAIRS = ("real", "models")
DEFAULT_TRIALS_PER_CONDITION = 20
REAL = "real"


def set_names(fake_folders: list[str]) -> list[str]:
    """Display names of the fake sets: the shortest trailing part of each folder's path that tells them apart (and
    is not ``real``, the reference set's name): ``runs/a/samples`` and ``runs/b/samples`` become ``a/samples``,
    ``b/samples``."""
    parts = [Path(os.path.abspath(folder)).parts for folder in fake_folders]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-depth:]).lstrip("/") or "/" for p in parts]
        if len(set(names)) == len(names) and REAL not in names:
            return names
    return [os.path.abspath(folder) for folder in fake_folders]


def conditions(mode: str, pairs: str | None, num_fakes: int) -> list[tuple[int, ...]]:
    """Set indices (0 = real, 1.. = fakes) of each condition's images, in plan order."""
    if mode == "mos":
        return [(index,) for index in range(num_fakes + 1)]
    if pairs == "real":
        return [(0, index) for index in range(1, num_fakes + 1)]
    return list(itertools.combinations(range(1, num_fakes + 1), 2))


def check_choices(mode: str, pairs: str | None, num_fakes: int) -> None:
    if mode not in MODES:
        raise GenResearchError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "mos" and pairs is not None:
        raise GenResearchError("--pairs applies to --mode 2afc only; leave it out with --mode mos")
    if mode == "2afc" and pairs not in PAIRS:
        raise GenResearchError(f"--pairs {pairs!r}: choose one of {', '.join(PAIRS)}")
    if pairs == "models" and num_fakes < 2:
        raise GenResearchError("--pairs models compares fake sets with each other: pass at least two --fake folders")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_plan(real: tuple[str, list[str]], fakes: list[tuple[str, list[str]]], mode: str = "mos",
               pairs: str | None = None, num_trials: int | None = None, seed: int = 0) -> dict[str, Any]:
    """The plan for ``real`` = (folder, image paths) and ``fakes`` = [(folder, image paths), ...].

    ``num_trials`` (all conditions together) defaults to 20 per condition, fewer if a set holds fewer images.
    """
    if mode == "2afc" and pairs is None:
        pairs = "real"
    check_choices(mode, pairs, len(fakes))
    sets = [(REAL, REAL, real)] + [(name, "fake", fake) for name, fake in zip(set_names([f for f, _ in fakes]), fakes)]
    listed = [sorted(os.path.relpath(path, folder) for path in paths) for _, _, (folder, paths) in sets]
    groups = conditions(mode, pairs, len(fakes))
    capacity = min(len(listed[index]) for group in groups for index in group)
    if num_trials is None:
        num_trials = min(DEFAULT_TRIALS_PER_CONDITION, capacity) * len(groups)
    if num_trials < 1:
        raise GenResearchError(f"--num-trials {num_trials}: must be at least 1")
    per_condition = math.ceil(num_trials / len(groups))
    if per_condition > capacity:
        smallest = min((index for group in groups for index in group), key=lambda index: len(listed[index]))
        raise GenResearchError(
            f"--num-trials {num_trials} shows up to {per_condition} images of each set, but {sets[smallest][2][0]} holds "
            f"only {capacity}; lower --num-trials to at most {capacity * len(groups)} or add images")
    generator = random.Random(seed)
    extra = set(generator.sample(range(len(groups)), num_trials % len(groups)))
    trials: list[dict[str, Any]] = []
    hashes: dict[tuple[int, str], str] = {}
    for position, group in enumerate(groups):
        count = num_trials // len(groups) + (position in extra)
        draws = [generator.sample(listed[index], count) for index in group]
        first_on_left = [True] * math.ceil(count / 2) + [False] * (count // 2)
        generator.shuffle(first_on_left)
        for number in range(count):
            shown = [(index, draw[number]) for index, draw in zip(group, draws)]
            if len(shown) == 2 and not first_on_left[number]:
                shown.reverse()
            images = []
            for index, relative in shown:
                key = (index, relative)
                if key not in hashes:
                    hashes[key] = file_sha256(os.path.join(sets[index][2][0], relative))
                images.append({"set": index, "file": relative, "sha256": hashes[key]})
            trials.append({"condition": position, "images": images})
    generator.shuffle(trials)
    for trial_id, trial in enumerate(trials):
        trial["id"] = trial_id
    plan = {
        "format": PLAN_FORMAT, "mode": mode, "pairs": pairs, "seed": seed, "num_trials": num_trials,
        "sets": [{"name": name, "role": role, "folder": os.path.abspath(folder), "images_in_folder": len(files)}
                 for (name, role, (folder, _)), files in zip(sets, listed)],
        "conditions": [list(group) for group in groups],
        "trials": [{"id": t["id"], "condition": t["condition"], "images": t["images"]} for t in trials],
    }
    plan["plan_id"] = plan_id(plan)
    return plan


def plan_id(plan: dict[str, Any]) -> str:
    """A short content hash of the plan (every field but itself): each answer line carries it."""
    body = {key: value for key, value in plan.items() if key != "plan_id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def plan_difference(saved: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What makes two plans different, in words (None when they are the same)."""
    for key, words in (("mode", "mode"), ("pairs", "--pairs"), ("seed", "seed"), ("num_trials", "number of trials")):
        if saved.get(key) != new.get(key):
            return f"{words} {saved.get(key)!r} there, {new.get(key)!r} now"
    old_sets, new_sets = saved.get("sets", []), new.get("sets", [])
    if [s["folder"] for s in old_sets] != [s["folder"] for s in new_sets]:
        return f"folders {[s['folder'] for s in old_sets]} there, {[s['folder'] for s in new_sets]} now"
    if saved != new:
        return "the folders' images changed (other files, or the same names with other contents)"
    return None


def load_plan(path: str | os.PathLike) -> dict[str, Any]:
    try:
        plan = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GenResearchError(f"cannot read the rating plan {path} ({error}); pass the --out folder of a rate session") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT or plan.get("plan_id") != plan_id(plan):
        raise GenResearchError(f"{path} is not a rating plan written by gen_research rate (or it was edited); "
                               "pass another --out folder")
    return plan


def image_path(plan: dict[str, Any], image: dict[str, Any]) -> str:
    return os.path.join(plan["sets"][image["set"]]["folder"], image["file"])


def verify_plan_files(plan: dict[str, Any]) -> None:
    """Every image of the plan is still there with the bytes it had when the plan was made."""
    checked: set[tuple[int, str]] = set()
    for trial in plan["trials"]:
        for image in trial["images"]:
            if (image["set"], image["file"]) in checked:
                continue
            checked.add((image["set"], image["file"]))
            path = image_path(plan, image)
            if not os.path.isfile(path):
                raise GenResearchError(f"image {path} of the saved plan is missing; restore it, or start a new session "
                                       "with another --out")
            if file_sha256(path) != image["sha256"]:
                raise GenResearchError(f"image {path} changed since the plan was made; restore it, or start a new "
                                       "session with another --out")


def question(plan: dict[str, Any]) -> str:
    if plan["mode"] == "mos":
        return "How good does this image look?"
    return "Which image is real?" if plan["pairs"] == "real" else "Which image looks better (more realistic)?"
