"""Reading checkpoints, weights and caches without running code from them.

``torch.load(weights_only=False)`` unpickles whatever the file says, including a call such as
``os.system(...)``: loading a file from someone else would run their code. Everything this package loads
goes through :func:`load_plain` (``weights_only=True``: tensors, numbers, strings, lists, dicts, tuples),
and a file that needs any other Python object is refused with one line naming it. docs/security.md
explains the trust model and how to convert an old file.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError

# torch's weights-only unpickler names the object it refused: "Unsupported global: GLOBAL posix.system ...",
# "Trying to load unsupported GLOBAL x.y whose module x is blocked".
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")
_REFUSED_OBJECT = ("Can only build", "Can only create new object", "call reduce for unrecognized function")


def refused_object(error: BaseException) -> str | None:
    """The Python object a weights-only load refused to create, or None if the file is only damaged/foreign."""
    if not isinstance(error, pickle.UnpicklingError) or "Weights only load failed" not in str(error):
        return None
    message = str(error)
    match = _REFUSED_GLOBAL.search(message)
    if match:
        return match.group(1).rstrip(".,")
    return "a Python object" if any(part in message for part in _REFUSED_OBJECT) else None


def refusal(path: Path | str, what: str, obj: str) -> GenResearchError:
    return GenResearchError(
        f"{what} {path} is not loaded: it holds a pickled Python object ({obj}), and unpickling it could execute code; "
        "re-save it as a plain state dict (tensors, numbers, strings, lists, dicts), or obtain it from a trusted source "
        "(docs/security.md: converting an old file)"
    )


def load_plain(path: Path | str, what: str = "checkpoint", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU. A file needing pickled objects raises a one-line
    GenResearchError; other failures (truncated, not a torch file) propagate for the caller to describe."""
    try:
        import torch  # here, not at the top: the CLI's start-up path imports this module (tests/test_cli_startup.py)

        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        obj = refused_object(error)
        if obj is None:
            raise
        raise refusal(path, what, obj) from None


__all__ = ["load_plain", "refusal", "refused_object"]
