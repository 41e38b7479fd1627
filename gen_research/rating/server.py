"""The rating page's HTTP server: ``http.server.ThreadingHTTPServer`` on 127.0.0.1 only.

Routes (anything else is 404):

- ``GET /``: the page (page.html: plain HTML and a little JS, no external assets).
- ``GET /api/next``: the first unanswered trial, ``{"done": false, "trial": id, "images": ["/img/<id>/0", ...],
  "mode", "question", "answered", "total"}``, or ``{"done": true, ...}``. It names no set and no file: the rater must
  not learn where an image comes from (the URLs hold the trial id and the position on screen only).
- ``POST /api/answer``: ``{"trial": id, "rating": 1..5}`` (mos) or ``{"trial": id, "choice": 0|1}`` (2afc, 0 =
  left), with ``"response_ms"``; stored and fsynced (store.py) before the reply, then results.json is rewritten.
  400 for a malformed answer, 404 for an unknown trial, 409 for one already answered (the page moves on).
- ``GET /img/<trial>/<position>``: that image of the plan. Both parts must be decimal numbers within the plan; the
  file opened is the plan's (its folder + its listed path), so nothing the client sends becomes a path.
- ``GET /api/results``: the current results (stats.py).

Requests whose Host header is not this server's own address (127.0.0.1 or localhost at its port) get 403, which
stops a web page elsewhere reaching the server through DNS rebinding; answers must be sent as
``application/json`` (a cross-site form cannot send that without the browser asking first).
"""

from __future__ import annotations

import json
import mimetypes
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from gen_research.rating.stats import summarize
from gen_research.rating.store import AnswerRefused, AnswerStore
from gen_research.rating.trials import image_path, question

ALLOWED_HOST = "127.0.0.1"
MAX_BODY_BYTES = 4096
IMAGE_ROUTE = re.compile(r"^/img/([0-9]{1,9})/([0-9])$")
PAGE_SECURITY = ("default-src 'none'; img-src 'self'; connect-src 'self'; script-src 'unsafe-inline'; "
                 "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


class RatingSession:
    """A plan and its answers, as the server's handlers see them; ``on_answer(results)`` runs after each answer."""

    def __init__(self, store: AnswerStore, on_answer: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store, self.plan = store, store.plan
        self.on_answer = on_answer
        self._results_lock = threading.Lock()

    def results(self) -> dict[str, Any]:
        return summarize(self.plan, self.store.snapshot())

    def next_payload(self) -> dict[str, Any]:
        trial = self.store.next_trial()
        payload: dict[str, Any] = {"mode": self.plan["mode"], "question": question(self.plan),
                                   "answered": len(self.store.snapshot()), "total": len(self.plan["trials"])}
        if trial is None:
            return {**payload, "done": True}
        images = [f"/img/{trial['id']}/{position}" for position in range(len(trial["images"]))]
        return {**payload, "done": False, "trial": trial["id"], "images": images}

    def answer(self, payload: Any) -> dict[str, Any]:
        self.store.record(payload)
        with self._results_lock:  # one results.json writer at a time, each with every answer stored so far
            results = self.results()
            if self.on_answer is not None:
                self.on_answer(results)
        return results

    def image_file(self, trial_id: int, position: int) -> str | None:
        trials = self.plan["trials"]
        if not 0 <= trial_id < len(trials) or not 0 <= position < len(trials[trial_id]["images"]):
            return None
        return image_path(self.plan, trials[trial_id]["images"][position])


def page_html() -> bytes:
    return resources.files("gen_research.rating").joinpath("page.html").read_bytes()


class RatingHandler(BaseHTTPRequestHandler):
    server: "RatingServer"
    server_version = "gen_research-rate"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # the command prints the results table instead of one line per request

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # a later session on the same port has other images at these URLs
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", PAGE_SECURITY)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"ok": False, "error": message})

    def _host_allowed(self) -> bool:
        port = self.server.server_address[1]
        if self.headers.get("Host") in (f"{ALLOWED_HOST}:{port}", f"localhost:{port}"):
            return True
        self._error(HTTPStatus.FORBIDDEN, "this server answers requests to its own address only")
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._host_allowed():
            return
        session = self.server.session
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, page_html(), "text/html; charset=utf-8")
        elif path == "/api/next":
            self._json(HTTPStatus.OK, session.next_payload())
        elif path == "/api/results":
            self._json(HTTPStatus.OK, session.results())
        elif match := IMAGE_ROUTE.match(path):
            file = session.image_file(int(match.group(1)), int(match.group(2)))
            if file is None:
                self._error(HTTPStatus.NOT_FOUND, "no such image")
                return
            try:
                with open(file, "rb") as handle:
                    body = handle.read()
            except OSError:
                self._error(HTTPStatus.NOT_FOUND, "the image file is gone")
                return
            self._send(HTTPStatus.OK, body, mimetypes.guess_type(file)[0] or "application/octet-stream")
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_allowed():
            return
        if self.path != "/api/answer":
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        if self.headers.get_content_type() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the answer as application/json")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return
        if not 0 <= length <= MAX_BODY_BYTES:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"an answer is at most {MAX_BODY_BYTES} bytes")
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "the answer is not JSON")
            return
        try:
            results = self.server.session.answer(payload)
        except AnswerRefused as refused:
            self._error(refused.status, str(refused))
            return
        self._json(HTTPStatus.OK, {"ok": True, "answered": results["answered"], "total": results["total"]})


class RatingServer(ThreadingHTTPServer):
    daemon_threads = True  # a browser's keep-alive connection never holds up Ctrl-C

    def __init__(self, session: RatingSession, port: int = 0, host: str = ALLOWED_HOST) -> None:
        if host != ALLOWED_HOST:
            raise ValueError(f"the rating server binds {ALLOWED_HOST} only, not {host!r}")
        self.session = session
        super().__init__((host, port), RatingHandler)

    @property
    def url(self) -> str:
        return f"http://{ALLOWED_HOST}:{self.server_address[1]}/"
