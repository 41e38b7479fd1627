"""Helpers of the rating tests: tiny image folders, a rating server in a thread, raw HTTP requests."""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gen_research.commands.rate import write_results
from gen_research.rating.server import RatingServer, RatingSession
from gen_research.rating.store import AnswerStore
from gen_research.rating.trials import build_plan


def make_folder(folder: Path, count: int, side: int = 28, seed: int = 0, mode: str = "L") -> Path:
    """``count`` random PNG images of side x side pixels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        shape = (side, side) if mode == "L" else (side, side, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"image_{index:03d}.png")
    return folder


def listed(folder: Path) -> tuple[str, list[str]]:
    return str(folder), sorted(glob.glob(str(folder / "*.png")))


def plan_of(folders: dict[str, Path], fakes: tuple[str, ...] = ("a", "b"), **options: Any) -> dict[str, Any]:
    return build_plan(listed(folders["real"]), [listed(folders[name]) for name in fakes], **options)


@contextlib.contextmanager
def serving(out: Path, plan: dict[str, Any]) -> Iterator[RatingServer]:
    """What `rate` serves (results.json rewritten after each answer), in a thread, on a free port."""
    store = AnswerStore(out, plan)
    server = RatingServer(RatingSession(store, on_answer=lambda results: write_results(out, results, show=False)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        store.close()
        thread.join(5)


def request(server_or_port: Any, path: str, method: str = "GET", body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    """(status, raw body, headers) of one request sent as given: the path is not normalised on the way."""
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    all_headers = {"Content-Type": "application/json"} if data is not None else {}
    connection.request(method, path, body=data, headers={**all_headers, **(headers or {})})
    reply = connection.getresponse()
    content = reply.read()
    connection.close()
    return reply.status, content, reply.headers


def get_json(server: Any, path: str) -> Any:
    status, content, _ = request(server, path)
    assert status == 200, (path, status, content)
    return json.loads(content)


def post_answer(server: Any, answer: dict[str, Any]) -> tuple[int, Any]:
    status, content, _ = request(server, "/api/answer", "POST", {"response_ms": 700, **answer})
    return status, json.loads(content)
