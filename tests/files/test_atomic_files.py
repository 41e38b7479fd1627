"""gen_research.files.atomic: all-or-nothing writes (temp file beside the target, whatever $TMPDIR is), permissions
like a plain open, a SIGKILL mid-write leaving the previous file intact, and file_lock excluding another process."""

import errno
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

from gen_research.files.atomic import TEMP_PREFIX, atomic_open, atomic_write_bytes, atomic_write_text, atomic_write_with, file_lock
from gen_research.errors import GenResearchError

REPO = Path(__file__).resolve().parents[2]


def other_filesystem_tmpdir(tmp_path: Path) -> Path:
    """A folder on another filesystem than tmp_path when there is one (/dev/shm is a tmpfs), else beside it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="gen-research-test-", dir=shm))
    else:
        folder = tmp_path / "tmpdir"
        folder.mkdir()
    return folder


@pytest.fixture()
def foreign_tmpdir(tmp_path, monkeypatch):
    folder = other_filesystem_tmpdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads $TMPDIR again
    assert tempfile.gettempdir() == str(folder)
    yield folder
    for leftover in folder.iterdir():
        leftover.unlink()
    folder.rmdir()


def test_writes_replace_the_whole_file_and_leave_nothing_else(tmp_path):
    target = tmp_path / "sub" / "result.json"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"
    atomic_write_bytes(tmp_path / "raw.bin", b"\x00\x01")
    atomic_write_with(tmp_path / "tensor.pt", lambda handle: torch.save({"x": torch.arange(3)}, handle))
    assert (tmp_path / "raw.bin").read_bytes() == b"\x00\x01"
    assert torch.equal(torch.load(tmp_path / "tensor.pt", weights_only=True)["x"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["raw.bin", "result.json", "sub", "tensor.pt"]
    with pytest.raises(ValueError, match="whole files"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_temp_file_is_in_the_target_folder_whatever_tmpdir_is(tmp_path, foreign_tmpdir):
    if os.stat(foreign_tmpdir).st_dev == os.stat(tmp_path).st_dev:  # no second filesystem here: still beside the target
        print(f"note: {foreign_tmpdir} is on the same filesystem as {tmp_path}")
    seen = {}

    def write(handle):
        handle.write(b"payload")
        seen["beside"] = [p.name for p in tmp_path.iterdir()]
        seen["tmpdir"] = list(foreign_tmpdir.iterdir())

    atomic_write_with(tmp_path / "out.bin", write)
    (temporary,) = seen["beside"]
    assert temporary.startswith(f"{TEMP_PREFIX}out.bin.") and seen["tmpdir"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"] and (tmp_path / "out.bin").read_bytes() == b"payload"


def test_failure_inside_the_block_keeps_the_previous_file(tmp_path):
    target = tmp_path / "board.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target, "w") as handle:
            handle.write("new, half")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["board.csv"]


def test_disk_full_is_a_one_line_error_and_the_previous_file_stays(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("{}\n")

    def full(handle):
        handle.write(b"{\"fid\": 1")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(GenResearchError, match=r"cannot write .*results\.json \(No space left on device\).*unchanged"):
        atomic_write_with(target, full)
    assert target.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
    (tmp_path / "file").write_text("")
    with pytest.raises(GenResearchError, match="cannot create"):
        atomic_write_text(tmp_path / "file" / "below.json", "{}")  # a folder that is a regular file


def test_permissions_are_those_of_open_or_of_the_replaced_file(tmp_path):
    old_umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o644  # not mkstemp's private 0o600
        (tmp_path / "script.sh").write_text("old")
        os.chmod(tmp_path / "script.sh", 0o750)
        atomic_write_text(tmp_path / "script.sh", "new")
        assert stat.S_IMODE(os.stat(tmp_path / "script.sh").st_mode) == 0o750
    finally:
        os.umask(old_umask)


# A child that writes a large payload slowly through atomic_write_with and says when it is half-way.
SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from gen_research.files.atomic import atomic_write_with
    def write(handle):
        for chunk in range(64):
            handle.write(bytes([chunk]) * (1 << 16))
            if chunk == 8:
                handle.flush()
                print("writing", flush=True)
            time.sleep(0.05)
    atomic_write_with(sys.argv[1], write)
    print("done", flush=True)
""")


@pytest.mark.parametrize("previous", [True, False], ids=["over-a-file", "new-file"])
def test_sigkill_during_a_write_leaves_the_previous_file_intact(tmp_path, foreign_tmpdir, previous):
    target = tmp_path / "predictions.pt"
    before = {"x": torch.arange(10)}
    if previous:
        atomic_write_with(target, lambda handle: torch.save(before, handle))
    env = {**os.environ, "TMPDIR": str(foreign_tmpdir), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "writing"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "predictions.pt")
    assert len(leftovers) == 1 and leftovers[0].startswith(f"{TEMP_PREFIX}predictions.pt.")  # the killed write's temp file
    assert (tmp_path / leftovers[0]).stat().st_size >= 9 * (1 << 16)  # it really was killed mid-write
    assert list(foreign_tmpdir.iterdir()) == []
    if previous:
        assert torch.equal(torch.load(target, weights_only=True)["x"], before["x"])
    else:
        assert not target.exists()  # never a partial target


# Each child adds 1 to a counter file 100 times, read-modify-write under file_lock (with a yield in between).
COUNTER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from gen_research.files.atomic import atomic_write_text, file_lock
    path, go = Path(sys.argv[1]), Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    for _ in range(100):
        with file_lock(path):
            value = int(path.read_text())
            os.sched_yield()
            atomic_write_text(path, str(value + 1))
""")


def test_file_lock_excludes_another_process(tmp_path):
    counter, go = tmp_path / "counter.txt", tmp_path / "go"
    counter.write_text("0")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", COUNTER, str(counter), str(go)], env=env) for _ in range(2)]
    time.sleep(0.2)  # both started (a head start, not a measurement)
    go.touch()
    assert [child.wait(timeout=120) for child in children] == [0, 0]
    assert counter.read_text() == "200"
