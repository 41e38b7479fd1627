"""Condense jsonargparse's nested, multi-line parse errors into one line that says what to change."""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Callable

# section ("model", "trainer", ...) -> the option names that section accepts
KeysOf = Callable[[str], list[str]]

_SECTION = re.compile(r'Parser key "([\w.]+)"')
_NOT_ACCEPTED = re.compile(r"Option '([\w.]+)' is not accepted")
_NO_OPTION = re.compile(r"does not accept option '([\w.]+)'")
_UNRECOGNIZED = re.compile(r"[Uu]nrecognized arguments: (\S+)")
_NO_ACTION = re.compile(r'No action for key "([\w.]+)"')
_WRONG_TYPE = re.compile(r"Parser key \"([\w.]+)\":\s*Expected a <class '(\w+)'>\. Got value: (.*)")
_LITERAL = re.compile(r"Parser key \"([\w.]+)\":\s*Expected a typing\.Literal\[(.*?)\]\. Got value: (.*)")
_EXPECTED = re.compile(r"Expected a <class '(\w+)'>\. Got value: (.*)")
_UNION = re.compile(r"Subtypes: \[(.*?)\].*?Given value: (.*)", re.DOTALL)
_CLASS_PATH = re.compile(r"[Pp]roblem with given class_path '([\w.]+)'|Import path ([\w.]+) does not|module '([\w.]+)' has no attribute")


def signature_keys(cls: type) -> list[str]:
    """Constructor argument names of a class (what ``init_args`` may contain)."""
    try:
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _unknown_key(dotted: str, keys_of: KeysOf) -> str:
    section, _, rest = dotted.partition(".")
    leaf = rest.split(".")[-1] if rest else section
    known = keys_of(section) if rest else keys_of("")
    prefix = f"{section}.init_args." if rest.startswith("init_args.") or (rest and section in ("model", "data")) else (f"{section}." if rest else "")
    hint = _suggest(leaf, known)
    if hint:
        hint = hint.replace("did you mean ", f"did you mean {prefix}").replace(" or ", f" or {prefix}")
    return f"unknown option {dotted}{hint or '; see python -m gen_research fit --help for the accepted options'}"


def _dotted_key(section: str, key: str) -> str:
    """The key as a user writes it: model.init_args.beta, trainer.max_epochs, or the key alone."""
    if section in ("model", "data"):
        return f"{section}.init_args.{key}"
    return f"{section}.{key}" if section and section != key else key


def condense_parser_error(message: str, keys_of: KeysOf) -> str:
    """One line for the most specific problem found in a jsonargparse error message."""
    section_match = _SECTION.search(message)
    section = section_match.group(1) if section_match else ""
    if match := _NOT_ACCEPTED.search(message):
        return _unknown_key(f"{section}.init_args.{match.group(1)}" if section else match.group(1), keys_of)
    if match := (_NO_OPTION.search(message) or _NO_ACTION.search(message)):
        return _unknown_key(match.group(1), keys_of)
    if match := _UNRECOGNIZED.search(message):
        return _unknown_key(match.group(1).lstrip("-").split("=")[0], keys_of)
    inner = message[section_match.end():] if section_match else message
    if match := _LITERAL.search(inner):  # a choice (Literal[...]) given a value outside it
        key, choices, got = match.groups()
        where = _dotted_key(section, key)
        allowed = ", ".join(choice.strip().strip("'\"") for choice in choices.split(","))
        return f"{where}={got.strip()!r} is not one of {allowed}; fix it in the YAML or the --{where}=... override"
    if match := _WRONG_TYPE.search(inner):
        key, expected, got = match.groups()
        where = _dotted_key(section, key)
        return f"{where} expects a value of type {expected}, got {got.strip()!r}; fix it in the YAML or the --{where}=... override"
    if match := _EXPECTED.search(message):
        expected, got = match.groups()
        return f"{section or 'a value'} expects a value of type {expected}, got {got.strip()!r}; fix it in the YAML or the override"
    if (match := _UNION.search(message)) and section not in ("model", "data"):
        types = " or ".join(re.findall(r"<class '(\w+)'>", match.group(1))).replace("NoneType", "null")
        return f"{section} expects a value of type {types}, got {match.group(2).strip()!r}; fix it in the YAML or the --{section}=... override"
    if match := _CLASS_PATH.search(message):
        name = next(g for g in match.groups() if g)
        return f"cannot import class {name!r}{f' for {section}' if section else ''}; use a registered name (python -m gen_research list) or a full import path"
    lines = [line.strip(" -") for line in message.strip().splitlines() if line.strip(" -")]
    useful = [line for line in lines if not line.startswith(("Subtypes:", "Given value", "Errors:", "Does not validate", "Expected a <class 'NoneType'>"))]
    return "; ".join(useful or lines)[:400]
