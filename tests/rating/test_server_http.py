"""The rating server over HTTP (no browser): whole sessions answered with urllib-level requests, and what it refuses."""

import json
import statistics

import pytest
from scipy import stats as scipy_stats

from gen_research.rating.server import RatingServer
from gen_research.rating.stats import wilson_interval
from tests.rating.helpers import get_json, plan_of, post_answer, request, serving


def test_mos_session_end_to_end(tmp_path, folders):
    plan = plan_of(folders, mode="mos", num_trials=9, seed=2)
    given: dict[int, list[int]] = {0: [], 1: [], 2: []}
    with serving(tmp_path, plan) as server:
        page = request(server, "/")
        assert page[0] == 200 and b"image-rendering: pixelated" in page[1] and b"http" not in page[1].split(b"<body>")[1]
        for number in range(9):
            next_trial = get_json(server, "/api/next")
            assert not next_trial["done"] and next_trial["answered"] == number and next_trial["total"] == 9
            trial = plan["trials"][next_trial["trial"]]
            status, content, headers = request(server, next_trial["images"][0])
            image = trial["images"][0]
            with open(f"{plan['sets'][image['set']]['folder']}/{image['file']}", "rb") as handle:
                assert status == 200 and content == handle.read() and headers["Content-Type"] == "image/png"
            rating = number % 5 + 1
            given[image["set"]].append(rating)
            assert post_answer(server, {"trial": next_trial["trial"], "rating": rating}) == (200, {"ok": True, "answered": number + 1, "total": 9})
            written = json.loads((tmp_path / "results.json").read_text())  # rewritten before the reply
            assert written["answered"] == number + 1
        assert get_json(server, "/api/next")["done"] is True
        served = get_json(server, "/api/results")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == served and results["complete"]
    for index, name in enumerate(("real", "a/samples", "b/samples")):
        ratings = given[index]
        low, high = scipy_stats.t.interval(0.95, len(ratings) - 1, loc=statistics.mean(ratings), scale=scipy_stats.sem(ratings))
        assert results["mos"][name] == {"mos": pytest.approx(statistics.mean(ratings)), "ratings": 3,
                                        "ci95": pytest.approx([low, high])}
    lines = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert sorted(line["trial"] for line in lines) == list(range(9)) and all(line["response_ms"] == 700 for line in lines)


def test_2afc_session_end_to_end_and_nothing_names_a_set(tmp_path, folders):
    plan = plan_of(folders, mode="2afc", num_trials=8, seed=1)
    fooled = {1: 0, 2: 0}
    with serving(tmp_path, plan) as server:
        while not (next_trial := get_json(server, "/api/next"))["done"]:
            text = json.dumps(next_trial)
            assert "samples" not in text and "image_" not in text and "real" not in text.replace("Which image is real?", "")
            trial = plan["trials"][next_trial["trial"]]
            choice = next_trial["trial"] % 2
            picked = trial["images"][choice]["set"]
            if picked != 0:
                fooled[picked] += 1
            assert post_answer(server, {"trial": next_trial["trial"], "choice": choice})[0] == 200
        assert post_answer(server, {"trial": 0, "choice": 0}) == (409, {"ok": False, "error": "trial 0 is already answered"})
    results = json.loads((tmp_path / "results.json").read_text())
    for index, name in ((1, "a/samples"), (2, "b/samples")):
        assert results["fool_rate"][name] == {"fool_rate": fooled[index] / 4, "chosen": fooled[index], "trials": 4,
                                              "ci95": pytest.approx(list(wilson_interval(fooled[index], 4)))}


OUTSIDE_THE_PLAN = [
    "/img/../../../../etc/passwd", "/img/0/../../../etc/passwd", "/img/%2e%2e/%2e%2e/etc/passwd", "/../etc/passwd",
    "/img/0/0/../../../../etc/passwd", "/img/-1/0", "/img/99/0", "/img/0/1", "/img/0/9", "/img/0x0/0", "/img//etc/passwd",
    "//etc/passwd", "/img/0/0%00.png", "/page.html", "/api/../page.html", "/img/1e2/0", "/img/0/0/", "/img/" + "9" * 30 + "/0",
]


def test_paths_outside_the_plan_get_404(tmp_path, folders):
    with serving(tmp_path, plan_of(folders, mode="mos", num_trials=3)) as server:
        for path in OUTSIDE_THE_PLAN:
            status, content, _ = request(server, path)
            assert status == 404 and b"root:" not in content, path
        assert request(server, "/img/0/0")[0] == 200 and request(server, "/img/2/0?x=1")[0] == 200


def test_requests_refused(tmp_path, folders):
    with serving(tmp_path, plan_of(folders, mode="mos", num_trials=3)) as server:
        port = server.server_address[1]
        assert request(server, "/api/next", headers={"Host": "attacker.example"})[0] == 403  # DNS rebinding
        assert request(server, "/api/next", headers={"Host": f"localhost:{port}"})[0] == 200
        assert request(server, "/api/answer", "POST", b'{"trial": 0, "rating": 3, "response_ms": 1}',
                       headers={"Content-Type": "text/plain"})[0] == 415
        assert request(server, "/api/answer", "POST", b"{not json")[0] == 400
        assert request(server, "/api/answer", "POST", b"x" * 5000)[0] == 413
        assert request(server, "/api/next", "POST", {"trial": 0})[0] == 404
        assert request(server, "/api/answer", "PUT", {"trial": 0})[0] == 501
    assert not (tmp_path / "answers.jsonl").read_text()
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        RatingServer(None, host="0.0.0.0")
