"""Helpers shared by the extractors: freezing, hashing weights, one-line argument checks, the resize-mode choice."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import FeatureExtractor
from gen_research.evaluation.extractors.resize import check_resize_mode


class FrozenExtractor(FeatureExtractor):
    """A FeatureExtractor that stays frozen and in eval mode (``.train()`` from a parent module is ignored)."""

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenExtractor:
        # BatchNorm/dropout must never switch to training behaviour, whoever calls .train().
        return super().train(False)


def reject(extractor: str, argument: str, value: object, why: str) -> None:
    """Raise the one-line error for an argument this extractor does not take."""
    if value is not None:
        raise GenResearchError(f"the {extractor} extractor takes no {argument} (got {value!r}): {why}")


def choose_resize_mode(extractor: str, mode: str | None, default: str, resizes: bool,
                       why_not: str = "resize is not set: leave resize_mode out or set resize") -> str | None:
    """The effective resize mode: ``mode`` (checked), else ``default``; None when this extractor does not resize.

    A mode given to an extractor that does not resize is a one-line error (it would silently change nothing).
    """
    check_resize_mode(mode, extractor)
    if not resizes:
        if mode is not None:
            raise GenResearchError(f"{extractor}: resize_mode={mode!r} but no resize happens ({why_not})")
        return None
    return default if mode is None else mode


def mode_suffix(mode: str | None, default: str) -> str:
    """``-<mode>`` for a non-default mode, else "": numbers of different modes never share a metric key."""
    return "" if mode is None or mode == default else f"-{mode}"


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and bytes of every tensor (independent of the file format it came from)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def module_sha256(module: nn.Module) -> str:
    return sha256_state_dict(module.state_dict())


__all__ = ["FrozenExtractor", "choose_resize_mode", "mode_suffix", "module_sha256", "reject", "sha256_file", "sha256_state_dict"]
