"""Checks of the parsed trainer/checkpoint/run-folder settings, before anything is built or written.

Lightning checks some of these itself, but only while it builds the Trainer (after our run folder exists) and
with a traceback; others it accepts and misbehaves on (``limit_train_batches=-1``, ``accumulate_grad_batches=0``).
Here each one is a one-line :class:`GenResearchError` naming the option and the values it takes. Run first in
``GenResearchCLI.before_instantiate_classes``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError

# option -> (lowest allowed int, what it means): -1 means "unlimited" where Lightning says so.
_INT_AT_LEAST: dict[str, tuple[int, str]] = {
    "max_epochs": (-1, "-1 (no limit) or a number of epochs >= 0"),
    "min_epochs": (0, "a number of epochs >= 0"),
    "max_steps": (-1, "-1 (no limit) or a number of optimizer steps >= 0"),
    "min_steps": (0, "a number of optimizer steps >= 0"),
    "num_nodes": (1, "a number of nodes >= 1"),
    "accumulate_grad_batches": (1, "a number of batches >= 1 (1: no accumulation)"),
    "check_val_every_n_epoch": (1, "a number of epochs >= 1 (or null with an integer val_check_interval)"),
    "log_every_n_steps": (1, "a number of steps >= 1"),
    "num_sanity_val_steps": (-1, "-1 (the whole validation set), 0 (none) or a number of batches"),
}
_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")
_CHECKPOINT_INT_AT_LEAST: dict[str, tuple[int, str]] = {
    "save_top_k": (-1, "-1 (keep all), 0 (none) or how many best checkpoints to keep"),
    "every_n_train_steps": (0, "0 (off) or a number of steps >= 1"),
    "every_n_epochs": (0, "0 (off) or a number of epochs >= 1"),
}


def check_run_config(config: Any, subcommand: str = "fit") -> None:
    """Every trainer, checkpoint and run-folder setting that cannot work, as one line naming what to set."""
    trainer = config.get("trainer")
    if trainer is not None:
        check_trainer_config(trainer)
    checkpoint = config.get("checkpoint")
    if checkpoint is not None:
        _check_int_options(checkpoint, "checkpoint", _CHECKPOINT_INT_AT_LEAST)
    runs_root = config.get("runs_root")
    if runs_root:
        check_writable_folder(Path(runs_root) / (config.get("name") or "default"), "--runs_root")
    ckpt = config.get("ckpt_path")
    if subcommand == "fit" and ckpt and Path(ckpt).parent.name == "checkpoints" and Path(ckpt).is_file():
        # A resumed fit writes into the checkpoint's own run folder (config.resume-N.yaml, new checkpoints).
        for folder in (Path(ckpt).parent.parent, Path(ckpt).parent):
            check_writable_folder(folder, "--ckpt_path", "a resumed fit writes into the checkpoint's run folder: make it writable or copy the run to a writable place")


def check_trainer_config(trainer: Any) -> None:
    _check_int_options(trainer, "trainer", _INT_AT_LEAST)
    for name in _LIMITS:
        value = trainer.get(name)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, float) and value > 1.0 and value.is_integer():
            value = int(value)  # "2" may parse as 2.0; Lightning reads an integral float above 1 as a batch count
        if isinstance(value, int) and value < 0 or isinstance(value, float) and not 0.0 <= value <= 1.0:
            _fail(f"trainer.{name}", value, "a fraction in [0.0, 1.0] of the batches or a number of batches >= 0")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float) and interval > 1.0 and interval.is_integer():
        interval = int(interval)
    if isinstance(interval, float) and not 0.0 < interval <= 1.0 or isinstance(interval, int) and not isinstance(interval, bool) and interval < 1:
        _fail("trainer.val_check_interval", interval, "a fraction in (0.0, 1.0] of an epoch or a number of batches >= 1")
    clip = trainer.get("gradient_clip_val")
    if isinstance(clip, (int, float)) and not (math.isfinite(clip) and clip >= 0):
        _fail("trainer.gradient_clip_val", clip, "a norm (or value) >= 0, or null for no clipping")
    check_devices(trainer.get("devices"))


def check_devices(devices: Any) -> None:
    """``devices``: "auto", -1 (all), a count >= 1, a list of device indices, or their string forms ("2", "0,1")."""
    what = 'a count >= 1, -1 (all), "auto", or a list of device indices such as [0, 1]'
    if devices is None or devices == "auto":
        return
    if isinstance(devices, bool):
        _fail("trainer.devices", devices, what)
    if isinstance(devices, int):
        if devices < 1 and devices != -1:
            _fail("trainer.devices", devices, what)
        return
    if isinstance(devices, str):
        text = devices.strip().strip("[]")
        if "," in text:  # "0,1" or "1,": device indices
            parts = [p.strip() for p in text.split(",") if p.strip()]
            ok = bool(parts) and all(p.isdigit() for p in parts)
        else:  # "2": a count, "-1": all
            ok = text == "-1" or (text.isdigit() and int(text) >= 1)
        if not ok:
            _fail("trainer.devices", devices, what)
        return
    if isinstance(devices, (list, tuple)):
        if not devices or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices) or len(set(devices)) != len(devices):
            _fail("trainer.devices", devices, "a list of distinct device indices >= 0, such as [0, 1]")


def check_writable_folder(folder: Path, option: str, fix: str | None = None) -> None:
    """``folder`` is (or can be created as) a writable folder: no part of it is a regular file, and the nearest
    existing part is writable (a read-only mount or a folder without write permission is reported here, before
    anything is built, instead of as a traceback when the run folder is made)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link
            raise GenResearchError(f"{option} {folder}: {existing} is a broken symbolic link; point {option} at a folder")
        existing = existing.parent
    if not existing.exists():
        existing = Path(".")
    if not existing.is_dir():
        raise GenResearchError(f"{option} {folder}: {existing} is a file, not a folder; point {option} at a folder (new or existing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GenResearchError(f"{option} {folder}: {existing.resolve()} is not writable; {fix or f'point {option} at a folder you can write to'}")


def _check_int_options(section: Any, prefix: str, rules: dict[str, tuple[int, str]]) -> None:
    for name, (lowest, what) in rules.items():
        value = section.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value < lowest:
            _fail(f"{prefix}.{name}", value, what)


def _fail(option: str, value: Any, what: str) -> None:
    raise GenResearchError(f"{option}={value!r} is not allowed; set --{option} to {what}")


__all__ = ["check_devices", "check_run_config", "check_trainer_config", "check_writable_folder"]
