"""Condense jsonargparse's multi-line parse errors into one line that says what to change."""

from __future__ import annotations

from typing import Any


def condense_parser_error(message: str, parser: Any) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else message
