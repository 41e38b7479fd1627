"""Writes that are all-or-nothing: a reader (or a resumed run) sees the old file or the new one, never half of one.

The temporary file lives in the *same directory* as the target, so the final ``os.replace`` is a rename within one
filesystem (atomic on POSIX), whatever ``$TMPDIR`` is; fsspec and ``tempfile`` defaults write to ``$TMPDIR`` and fall
back to a copy when it is another filesystem (a node-local /tmp and a networked run folder). The data is fsynced
before the rename and the directory after it, so a power cut or a SIGKILL leaves the previous file intact; a killed
write leaves at most a ``.tmp-<name>.<random>`` file beside the target (hidden, never matched by ``*.csv`` globs).

The new file gets the permissions a plain ``open(path, "w")`` would give it (0o666 minus the umask), or those of the
file it replaces: ``tempfile.mkstemp`` would make every result private (0o600), unreadable to the rest of a group.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from gen_research.errors import GenResearchError

TEMP_PREFIX = ".tmp-"  # temporary files start with this: a crashed write leaves one, never a half target
_NAME_PART = 120  # of the target's name in the temporary one: stays under NAME_MAX (255) for any target
_USER_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM)


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


def _create_temporary(target: Path) -> tuple[int, Path]:
    """An exclusive new file beside ``target``, created with mode 0o666 (the umask applies, as for ``open``)."""
    for _ in range(100):
        temporary = target.with_name(f"{TEMP_PREFIX}{target.name[:_NAME_PART]}.{secrets.token_hex(4)}")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(target.parent))


def _user_error(target: Path, error: OSError) -> GenResearchError:
    return GenResearchError(
        f"cannot write {target} ({os.strerror(error.errno)}); free space or fix permissions in {target.parent} "
        "and run again (the previous file, if any, is unchanged)"
    )


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_open(p, "w") as f: f.write(...)``: ``p`` is replaced only when the block succeeds.

    An exception inside the block (or a kill) leaves ``p`` as it was. Disk full, quota, read-only or permission
    problems become a one-line :class:`GenResearchError` naming the file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not 'w' or 'wb'")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = _create_temporary(target)
    except OSError as error:
        if error.errno in _USER_ERRORS or isinstance(error, (FileExistsError, NotADirectoryError)):
            raise GenResearchError(f"cannot create {target} ({error.strerror or error}); choose a writable folder") from None
        raise
    try:
        with contextlib.suppress(FileNotFoundError):  # replacing a file: keep its permissions
            os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno in _USER_ERRORS:
            raise _user_error(target, error) from None
        raise
    _fsync_directory(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str, newline: str | None = None) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline=newline) as handle:
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
    by several processes (sweep agents writing one leaderboard). Blocks until the lock is free; the kernel drops
    it when the holder dies, so a killed agent never leaves the others waiting. (On NFS, Linux maps flock to
    byte-range locks, which the server arbitrates across machines.)"""
    lock_path = Path(f"{os.fspath(path)}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


__all__ = ["TEMP_PREFIX", "atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_with", "file_lock"]
