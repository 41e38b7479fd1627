"""The answers of a rating session: ``answers.jsonl``, one JSON object a line, appended as each answer arrives.

Each line: ``{"trial": id, "plan": plan_id, "images": [{"set": name, "file": path-in-folder}, ...], "rating": 1..5}``
(mos) or ``..., "choice": 0|1, "chosen": {"set", "file"}}`` (2afc: 0 = left), plus ``"response_ms"`` (from the images
being shown to the answer, measured by the page) and ``"time"`` (UTC, ISO 8601, when the server stored it). A line is
written in one ``write``, flushed and fsynced before the HTTP reply, so an answer the page saw acknowledged is on disk.

Reading back (resume, ``--summary``): a last line that does not parse (a crash mid-write: nothing acknowledged it)
is ignored with a warning and cut off before the next append; a bad line anywhere else, a line of another plan, or two
answers to one trial are one-line errors (the file was edited or mixed up), never silently skipped.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError

ANSWERS_FILE = "answers.jsonl"
RATINGS = (1, 2, 3, 4, 5)


class AnswerRefused(ValueError):
    """An answer the session cannot take (bad fields, unknown or already answered trial): the HTTP reply says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def read_answers(path: Path, plan: dict[str, Any]) -> tuple[dict[int, dict[str, Any]], int]:
    """The answers in ``path`` by trial id, and the byte length of its good part (a torn last line excluded)."""
    if not path.exists():
        return {}, 0
    data = path.read_bytes()
    answers: dict[int, dict[str, Any]] = {}
    start, number = 0, 0
    while start < len(data):
        newline = data.find(b"\n", start)
        end = len(data) if newline == -1 else newline + 1
        raw, number = data[start:end], number + 1
        if raw.strip():
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError:
                if end == len(data):
                    warnings.warn(f"{path}: ignoring a torn last line ({len(raw)} bytes; a crash while it was written, "
                                  "never acknowledged to the page): that trial will be asked again", RuntimeWarning,
                                  stacklevel=3)
                    return answers, start
                raise GenResearchError(f"{path} line {number} is not a JSON answer; fix or remove that line "
                                       "(every other answer is kept)") from None
            _check(record, number, path, plan, answers)
            answers[record["trial"]] = record
        start = end
    return answers, len(data)


def _check(record: dict[str, Any], number: int, path: Path, plan: dict[str, Any], answers: dict[int, Any]) -> None:
    if record.get("plan") != plan["plan_id"]:
        raise GenResearchError(f"{path} line {number} belongs to another plan ({record.get('plan')!r}, this one is "
                               f"{plan['plan_id']!r}); keep each session's answers.jsonl in its own --out folder")
    trial = record.get("trial")
    if not isinstance(trial, int) or not 0 <= trial < len(plan["trials"]):
        raise GenResearchError(f"{path} line {number}: no trial {trial!r} in the plan; fix or remove that line")
    if trial in answers:
        raise GenResearchError(f"{path} line {number} answers trial {trial} a second time; remove one of the two lines")
    valid = record.get("rating") in RATINGS if plan["mode"] == "mos" else record.get("choice") in (0, 1)
    if not valid:
        field = "rating 1..5" if plan["mode"] == "mos" else "choice 0 or 1"
        raise GenResearchError(f"{path} line {number} has no {field}; fix or remove that line")


class AnswerStore:
    """The answers of one session, appended to ``out_dir/answers.jsonl``; thread-safe (the server is threaded)."""

    def __init__(self, out_dir: str | os.PathLike, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.path = Path(out_dir) / ANSWERS_FILE
        self._lock = threading.Lock()
        self.answers, good_length = read_answers(self.path, plan)
        if self.path.exists():
            with open(self.path, "r+b") as handle:
                handle.truncate(good_length)  # the torn line goes, so the next answer starts on a line of its own
                if good_length:
                    handle.seek(good_length - 1)
                    if handle.read(1) != b"\n":  # a complete last answer that lost only its newline
                        handle.write(b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "ab")

    def close(self) -> None:
        with self._lock:
            self._handle.close()

    def next_trial(self) -> dict[str, Any] | None:
        """The first unanswered trial of the plan's order (None when every trial is answered)."""
        with self._lock:
            return next((t for t in self.plan["trials"] if t["id"] not in self.answers), None)

    def snapshot(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return dict(self.answers)

    def record(self, payload: Any) -> dict[str, Any]:
        """Check an answer from the page, append it and fsync it; raise AnswerRefused if it cannot be taken."""
        if not isinstance(payload, dict):
            raise AnswerRefused("the answer must be a JSON object")
        trial_id = payload.get("trial")
        if not isinstance(trial_id, int) or isinstance(trial_id, bool) or not 0 <= trial_id < len(self.plan["trials"]):
            raise AnswerRefused(f"no trial {trial_id!r} in this session", 404)
        trial = self.plan["trials"][trial_id]
        response_ms = payload.get("response_ms")
        if not isinstance(response_ms, (int, float)) or isinstance(response_ms, bool) or not 0 <= response_ms < 1e9:
            raise AnswerRefused("response_ms must be a number of milliseconds >= 0")
        images = [{"set": self.plan["sets"][i["set"]]["name"], "file": i["file"]} for i in trial["images"]]
        record: dict[str, Any] = {"trial": trial_id, "plan": self.plan["plan_id"], "images": images}
        if self.plan["mode"] == "mos":
            rating = payload.get("rating")
            if rating not in RATINGS or isinstance(rating, bool):
                raise AnswerRefused("rating must be one of 1, 2, 3, 4, 5")
            record["rating"] = rating
        else:
            choice = payload.get("choice")
            if choice not in (0, 1) or isinstance(choice, bool):
                raise AnswerRefused("choice must be 0 (left) or 1 (right)")
            record["choice"], record["chosen"] = choice, images[choice]
        record["response_ms"] = round(float(response_ms), 1)
        record["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        line = (json.dumps(record, sort_keys=False) + "\n").encode()
        with self._lock:
            if trial_id in self.answers:
                raise AnswerRefused(f"trial {trial_id} is already answered", 409)
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.answers[trial_id] = record
        return record
