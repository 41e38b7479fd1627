"""``python -m gen_research rate`` in this process: serve, answer, Ctrl-C (a real SIGINT), resume, summary, refusals."""

import json
import os
import re
import signal
import socket
import threading
import time

import pytest

from gen_research.commands.main import main
from tests.rating.helpers import get_json, post_answer, request

# A server that missed its Ctrl-C would wait forever: fail instead. (Lightning sets SIGINT to SIG_IGN in-process after a
# KeyboardInterrupt in fit; `rate` installs its own handler for that reason, and this suite's earlier tests cause it.)
pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rate_while(answer_trials, *args):
    """Run ``rate *args`` here; a helper thread answers ``answer_trials(port)`` then presses Ctrl-C (SIGINT)."""
    port = _free_port()
    outcome, returned = {}, threading.Event()

    def rater():
        deadline = time.monotonic() + 120  # the first `rate` imports the image-folder code (seconds)
        while not returned.is_set() and time.monotonic() < deadline:
            try:
                request(port, "/api/next")
                break
            except OSError:
                time.sleep(0.05)
        try:
            outcome["answered"] = answer_trials(port)
        finally:
            if not returned.is_set():  # never interrupt pytest itself
                os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=rater, daemon=True)
    thread.start()
    try:
        rc = main(["rate", *args, "--port", str(port), "--no-browser"])
    finally:
        returned.set()
    thread.join(10)
    return rc, outcome.get("answered")


def _answer(count):
    def answer_trials(port):
        given = []
        for _ in range(count):
            next_trial = get_json(port, "/api/next")
            if next_trial["done"]:
                break
            rating = next_trial["trial"] % 5 + 1
            assert post_answer(port, {"trial": next_trial["trial"], "rating": rating})[0] == 200
            given.append((next_trial["trial"], rating))
        return given
    return answer_trials


def _one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("gen_research: error: "), err
    for word in words:
        assert word in err, err


def test_serve_interrupt_resume_refuse_and_summary(tmp_path, folders, capsys):
    out = tmp_path / "session"
    folder_args = ["--real", str(folders["real"]), "--fake", str(folders["a"]), "--fake", str(folders["b"]), "--out", str(out)]
    rc, first = _rate_while(_answer(4), *folder_args, "--num-trials", "6", "--seed", "7")
    printed = capsys.readouterr().out
    assert rc == 0 and len(first) == 4 and "rating page: http://127.0.0.1:" in printed and "4 of 6 trials answered" in printed
    plan = json.loads((out / "plan.json").read_text())
    assert plan["seed"] == 7 and plan["num_trials"] == 6 and json.loads((out / "results.json").read_text())["answered"] == 4
    answers_before = (out / "answers.jsonl").read_bytes()

    _one_line_error(capsys, main(["rate", *folder_args, "--num-trials", "6", "--seed", "8", "--no-browser"]),
                    "another plan", "seed 7 there, 8 now")
    _one_line_error(capsys, main(["rate", *folder_args, "--mode", "2afc", "--no-browser"]), "another plan")
    _one_line_error(capsys, main(["rate", "--out", str(out), "--mode", "2afc"]), "mode 'mos' there, '2afc' now")
    assert (out / "answers.jsonl").read_bytes() == answers_before and json.loads((out / "plan.json").read_text()) == plan

    rc, second = _rate_while(_answer(10), "--out", str(out))  # the saved plan alone: resumes at the first unanswered
    assert rc == 0 and len(second) == 2 and not {t for t, _ in second} & {t for t, _ in first}
    assert "6 of 6 trials answered" in capsys.readouterr().out

    (out / "results.json").unlink()
    assert main(["rate", "--out", str(out), "--summary"]) == 0
    table = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    ratings = dict(first + second)
    for index, name in enumerate(("real", "a/samples", "b/samples")):
        mine = [ratings[t["id"]] for t in plan["trials"] if t["images"][0]["set"] == index]
        assert results["mos"][name]["mos"] == pytest.approx(sum(mine) / len(mine)) and results["mos"][name]["ratings"] == 2
        assert re.search(rf"^{name} +{sum(mine) / len(mine):.2f}  ", table, re.MULTILINE), table


@pytest.mark.parametrize("args, words", [
    (["--host", "0.0.0.0"], ["--host 0.0.0.0", "127.0.0.1 only"]),
    (["--host", "localhost"], ["127.0.0.1 only"]),
    (["--port", "70000"], ["--port 70000"]),
    (["--num-trials", "0"], ["--num-trials 0"]),
    (["--mode", "abx"], ["invalid choice: 'abx'"]),
])
def test_bad_options_are_one_line_errors(tmp_path, folders, capsys, args, words):
    rc = main(["rate", "--real", str(folders["real"]), "--fake", str(folders["a"]), "--out", str(tmp_path / "o"), *args])
    _one_line_error(capsys, rc, *words)
    assert not (tmp_path / "o").exists()


def test_bad_folders_are_one_line_errors(tmp_path, folders, capsys):
    out = ["--out", str(tmp_path / "o"), "--no-browser"]
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, main(["rate", "--real", str(tmp_path / "nope"), "--fake", str(folders["a"]), *out]),
                    "--real folder not found")
    _one_line_error(capsys, main(["rate", "--real", str(folders["real"]), "--fake", str(tmp_path / "empty"), *out]),
                    "holds no images")
    _one_line_error(capsys, main(["rate", "--real", str(folders["real"]), "--fake", str(folders["a"]), "--fake",
                                  str(folders["a"]), *out]), "given twice")
    _one_line_error(capsys, main(["rate", "--real", str(folders["real"]), *out]), "needs both --real DIR and --fake DIR")
    _one_line_error(capsys, main(["rate", *out]), "no rate session in")
    _one_line_error(capsys, main(["rate", "--out", str(tmp_path / "o"), "--summary"]), "no rate session in")
    _one_line_error(capsys, main(["rate", "--real", str(folders["real"]), "--fake", str(folders["a"]), "--mode", "2afc",
                                  "--pairs", "models", *out]), "at least two --fake")
    assert not (tmp_path / "o" / "plan.json").exists()
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "answers.jsonl").write_text("{}\n")
    _one_line_error(capsys, main(["rate", "--real", str(folders["real"]), "--fake", str(folders["a"]), *out]),
                    "answers.jsonl but no plan.json")


def test_help_lists_rate(capsys):
    assert main(["--help"]) == 0
    assert "  rate      people rate images" in capsys.readouterr().out


def test_port_in_use_is_a_one_line_error(tmp_path, folders, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = main(["rate", "--real", str(folders["real"]), "--fake", str(folders["a"]), "--out", str(tmp_path / "o"),
                   "--port", str(port), "--no-browser"])
    _one_line_error(capsys, rc, f"cannot serve on 127.0.0.1:{port}", "pass another --port")
