"""answers.jsonl: appended at once, resumed, torn last line tolerated, bad or foreign lines refused."""

import json

import pytest

from gen_research.errors import GenResearchError
from gen_research.rating.store import AnswerRefused, AnswerStore, read_answers
from tests.rating.helpers import plan_of


def _lines(store):
    return [json.loads(line) for line in store.path.read_text().splitlines()]


def test_each_answer_is_on_disk_when_record_returns(tmp_path, folders):
    plan = plan_of(folders, mode="2afc", num_trials=4)
    store = AnswerStore(tmp_path / "out", plan)
    store.record({"trial": 2, "choice": 1, "response_ms": 812.37})
    line = _lines(store)[0]  # read by another handle, before anything is closed
    trial = plan["trials"][2]
    names = [plan["sets"][i["set"]]["name"] for i in trial["images"]]
    assert line["trial"] == 2 and line["plan"] == plan["plan_id"] and line["choice"] == 1
    assert line["images"] == [{"set": n, "file": i["file"]} for n, i in zip(names, trial["images"])]
    assert line["chosen"] == line["images"][1] and line["response_ms"] == 812.4 and line["time"].endswith("+00:00")
    assert store.next_trial()["id"] == 0
    store.close()


def test_refused_answers(tmp_path, folders):
    store = AnswerStore(tmp_path, plan_of(folders, mode="mos", num_trials=3))
    store.record({"trial": 0, "rating": 4, "response_ms": 10})
    for payload, status in (({"trial": 0, "rating": 3, "response_ms": 10}, 409), ({"trial": 3, "rating": 3, "response_ms": 1}, 404),
                            ({"trial": True, "rating": 3, "response_ms": 1}, 404), ({"trial": 1, "rating": 6, "response_ms": 1}, 400),
                            ({"trial": 1, "rating": True, "response_ms": 1}, 400), ({"trial": 1, "rating": 2}, 400),
                            ({"trial": 1, "rating": 2, "response_ms": -5}, 400), ({"trial": 1, "choice": 0, "response_ms": 1}, 400),
                            ([1, 2], 400)):
        with pytest.raises(AnswerRefused) as refused:
            store.record(payload)
        assert refused.value.status == status, payload
    assert len(_lines(store)) == 1
    store.close()


def test_resume_skips_answered_trials(tmp_path, folders):
    plan = plan_of(folders, mode="mos", num_trials=5)
    store = AnswerStore(tmp_path, plan)
    for trial in (0, 1, 3):
        store.record({"trial": trial, "rating": trial + 1, "response_ms": 5})
    store.close()
    resumed = AnswerStore(tmp_path, plan)
    assert sorted(resumed.snapshot()) == [0, 1, 3] and resumed.snapshot()[3]["rating"] == 4
    assert resumed.next_trial()["id"] == 2
    resumed.record({"trial": 2, "rating": 1, "response_ms": 5})
    resumed.record({"trial": 4, "rating": 1, "response_ms": 5})
    assert resumed.next_trial() is None and len(_lines(resumed)) == 5
    resumed.close()


def test_torn_last_line_is_ignored_with_a_warning_and_cut_before_the_next_answer(tmp_path, folders):
    plan = plan_of(folders, mode="mos", num_trials=4)
    store = AnswerStore(tmp_path, plan)
    store.record({"trial": 0, "rating": 2, "response_ms": 5})
    store.close()
    with open(store.path, "ab") as handle:  # a crash in the middle of writing trial 1's line
        handle.write(b'{"trial": 1, "plan": "' + plan["plan_id"].encode() + b'", "rat')
    with pytest.warns(RuntimeWarning, match="torn last line"):
        answers, _ = read_answers(store.path, plan)
    assert list(answers) == [0]
    with pytest.warns(RuntimeWarning, match="torn last line"):
        resumed = AnswerStore(tmp_path, plan)
    assert resumed.next_trial()["id"] == 1
    resumed.record({"trial": 1, "rating": 5, "response_ms": 5})
    resumed.close()
    assert [(line["trial"], line["rating"]) for line in _lines(resumed)] == [(0, 2), (1, 5)]


def test_complete_last_answer_without_newline_is_kept(tmp_path, folders):
    plan = plan_of(folders, mode="mos", num_trials=4)
    store = AnswerStore(tmp_path, plan)
    store.record({"trial": 0, "rating": 2, "response_ms": 5})
    store.close()
    store.path.write_bytes(store.path.read_bytes().rstrip(b"\n"))
    resumed = AnswerStore(tmp_path, plan)
    resumed.record({"trial": 1, "rating": 3, "response_ms": 5})
    resumed.close()
    assert [line["trial"] for line in _lines(resumed)] == [0, 1]


def test_bad_or_foreign_lines_are_errors(tmp_path, folders):
    plan = plan_of(folders, mode="mos", num_trials=4)
    store = AnswerStore(tmp_path, plan)
    store.record({"trial": 0, "rating": 2, "response_ms": 5})
    store.close()
    good = store.path.read_bytes()
    store.path.write_bytes(b"garbage\n" + good)
    with pytest.raises(GenResearchError, match="line 1 is not a JSON answer"):
        read_answers(store.path, plan)
    store.path.write_bytes(good + good)
    with pytest.raises(GenResearchError, match="line 2 answers trial 0 a second time"):
        read_answers(store.path, plan)
    other = plan_of(folders, mode="mos", num_trials=4, seed=9)
    store.path.write_bytes(good)
    with pytest.raises(GenResearchError, match="belongs to another plan"):
        read_answers(store.path, other)
