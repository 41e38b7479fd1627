"""One sampling option a family declares (``SAMPLING_OPTIONS``, see gen_research/models/contract.py).

Kept apart from the contract, and free of torch, so that ``sample --help`` can list every family's options from
the index of built-ins (gen_research/registry_index.py) without importing any family.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from gen_research.errors import GenResearchError

TYPES = {"float": float, "int": int, "str": str, "bool": bool}


@dataclass(frozen=True)
class SamplingOption:
    """One option of a family's ``sample``/``translate``: the keyword ``name`` (the flag is ``--name-with-dashes``).

    ``default`` None means "the model's own default" (often a hyperparameter it was trained with); ``low``/``high``
    bound numbers (inclusive unless ``*_inclusive`` is False); ``choices`` lists the allowed strings.
    """

    name: str
    type: type = float
    help: str = ""
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` converted to the option's type and within its range, else a one-line error."""
        try:
            if self.type is bool:  # bool("false") is True: read the words
                words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
                converted = value if isinstance(value, bool) else words[str(value).strip().lower()]
            else:
                converted = self.type(value)
            if self.type is int and converted != float(value):  # 2.5 is not silently 2
                raise ValueError(value)
        except (TypeError, ValueError, KeyError):
            raise GenResearchError(f"{self.flag} {value!r}: must be a{'n' if self.type is int else ''} {self.type.__name__}") from None
        if self.choices is not None and converted not in self.choices:
            close = difflib.get_close_matches(str(converted), list(self.choices), n=3, cutoff=0.4)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise GenResearchError(f"{self.flag} {value!r} is unknown; {hint}choose one of {', '.join(self.choices)}")
        if self.type in (int, float):
            ok = math.isfinite(converted)
            if ok and self.low is not None:
                ok = converted >= self.low if self.low_inclusive else converted > self.low
            if ok and self.high is not None:
                ok = converted <= self.high if self.high_inclusive else converted < self.high
            if not ok:
                lo = "(-inf" if self.low is None else ("[" if self.low_inclusive else "(") + f"{self.low:g}"
                hi = "inf)" if self.high is None else f"{self.high:g}" + ("]" if self.high_inclusive else ")")
                raise GenResearchError(f"{self.flag} {value}: must be a finite number in {lo}, {hi}")
        return converted
