"""Writes that are all-or-nothing: a reader (or a resumed run) sees the old file or the new one, never half of one.

The temporary file lives in the *same directory* as the target, so the final ``os.replace`` is a rename within one
filesystem (atomic on POSIX), whatever ``$TMPDIR`` is; fsspec and ``tempfile`` defaults write to ``$TMPDIR`` and fall
back to a copy when it is another filesystem (a node-local /tmp and a networked run folder). The data is fsynced
before the rename and the directory after it, so a power cut or a SIGKILL leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from gen_research.errors import GenResearchError

TEMP_PREFIX = ".tmp-"  # temporary files start with this: a crashed write leaves one, never a half target


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_open(p, "w") as f: f.write(...)``: ``p`` is replaced only when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not 'w' or 'wb'")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise GenResearchError(
                f"cannot write {target} ({os.strerror(error.errno)}); free space or fix permissions in {target.parent} "
                "and run again (the previous file, if any, is unchanged)"
            ) from None
        raise
    _fsync_directory(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """``atomic_write_with(p, lambda f: torch.save(obj, f))``."""
    with atomic_open(path, "wb") as handle:
        write(handle)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>.lock`` (fcntl.flock), for read-merge-write updates of a shared file
    by several processes (sweep agents writing one leaderboard)."""
    lock_path = Path(f"{os.fspath(path)}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


__all__ = ["TEMP_PREFIX", "atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_with", "file_lock"]
