"""Speed callbacks: ``compile`` (torch.compile of the networks, in place) and ``channels_last`` (NHWC weights and
batches). Both leave checkpoints exactly as without them (same state_dict keys and values), so a run may be resumed
with or without them; the functions are in gen_research/training/speed.py, the measurements in docs/results.md::

    trainer:
      callbacks:
        - class_path: compile
          init_args: {mode: null}      # or default / reduce-overhead / max-autotune; names: [unet] to choose networks
        - class_path: channels_last

or on the command line ``--trainer.callbacks+=compile`` (``--trainer.callbacks+=channels_last``).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from gen_research.errors import GenResearchError
from gen_research.registry import CALLBACKS
from gen_research.training.speed import (
    COMPILE_MODES,
    batch_to_channels_last,
    check_compiler,
    compile_networks,
    optimizer_state_to_channels_last,
    to_channels_last,
    trainable_networks,
)

# What torch raises when a backend could not build code (not an error of the model's own code, which dynamo
# re-raises as TorchRuntimeError & co. and which is left alone).
_BACKEND_FAILURES = ("BackendCompilerFailed", "InductorError", "CppCompileError", "CUDACompileError")


@CALLBACKS.register("compile", "torch.compile of the model's trainable networks, in place (checkpoints unchanged); mode: null/default/reduce-overhead/max-autotune")
class CompileNetworks(Callback):
    """Compiles the model's networks with ``nn.Module.compile(mode=mode)`` when fit (or validate/test/predict)
    starts: by default every direct child with trainable parameters (gen_research.training.speed.trainable_networks:
    frozen first stages, text encoders and loss networks run eagerly), or the ``names`` given.

    The networks are compiled in place, after the EMA callback has taken its copy and after DDP has wrapped the
    model, so parameters, state_dict keys, checkpoints, the EMA swap for validation and exact resume are what they
    are without it. Compilation happens at the first step (its time is not in the first step's progress bar
    estimate); validation and sampling recompile for their own shapes and modes (a few graphs, then torch's
    automatic dynamic shapes). A bad name or mode, or a machine without the C/C++ compiler torch needs, is a
    one-line error before any step; a backend that still fails says so in one line, with what to do.
    """

    def __init__(self, mode: str | None = None, names: list[str] | None = None) -> None:
        if mode not in COMPILE_MODES:
            shown = ", ".join("null" if m is None else m for m in COMPILE_MODES)
            raise GenResearchError(f"compile: mode={mode!r} is not a torch.compile mode; use one of {shown}")
        if names is not None and (isinstance(names, str) or not all(isinstance(n, str) and n for n in names)):
            raise GenResearchError(f"compile: names={names!r} must be a list of network names, e.g. [unet]")
        self.mode = mode
        self.names = None if names is None else list(names)
        self.compiled: list[str] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check names and compiler now, before any work (the compile itself waits for the model's final place)."""
        names = self.names if self.names is not None else trainable_networks(pl_module)
        if not names:
            raise GenResearchError(f"compile: {type(pl_module).__name__} has no child module with trainable parameters; name the networks to compile in init_args.names")
        for name in names:
            try:
                pl_module.get_submodule(name)
            except AttributeError:
                children = ", ".join(n for n, _ in pl_module.named_children()) or "none"
                raise GenResearchError(f"compile: {name!r} is not a network of {type(pl_module).__name__}; its networks are {children}") from None
        check_compiler(trainer.strategy.root_device.type)

    def _compile(self, pl_module: pl.LightningModule) -> None:
        if self.compiled:
            return
        self.compiled = compile_networks(pl_module, mode=self.mode, names=self.names)
        for name in self.compiled:
            network = pl_module.get_submodule(name)
            network._compiled_call_impl = _explain_backend_failures(network._compiled_call_impl, name, self.mode)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._compile(pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._compile(pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._compile(pl_module)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._compile(pl_module)


def _explain_backend_failures(compiled: Any, name: str, mode: str | None) -> Any:
    """``compiled`` (the network's compiled call) re-raising a backend failure as a one-line GenResearchError."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as error:
            if type(error).__name__ not in _BACKEND_FAILURES:
                raise
            first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)[:300]
            raise GenResearchError(
                f"compile: torch.compile(mode={mode!r}) could not build {name!r} ({type(error).__name__}: {first}); "
                "check the C/C++ compiler (CXX, CC), rerun with TORCH_LOGS=+inductor for details, or remove the compile callback from trainer.callbacks"
            ) from error

    call.__wrapped__ = compiled  # type: ignore[attr-defined]
    return call


@CALLBACKS.register("channels_last", "channels_last (NHWC) memory format for the model's 4-D weights and image batches (checkpoints unchanged)")
class ChannelsLast(Callback):
    """Puts the model's 4-D weights in channels_last at setup (before the optimizer and DDP see them) and the 4-D
    floating-point tensors of every batch (train, validation, test, predict) before the step; optimizer state
    restored from a checkpoint follows the weights' format at train start. Values, keys and checkpoints are those
    of the default format: a run may be resumed with or without this callback."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        to_channels_last(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            optimizer_state_to_channels_last(optimizer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        batch_to_channels_last(batch)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        batch_to_channels_last(batch)

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        batch_to_channels_last(batch)

    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        batch_to_channels_last(batch)


__all__ = ["ChannelsLast", "CompileNetworks"]
