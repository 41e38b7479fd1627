"""Training speed options: torch.compile of the networks, channels_last memory format, TF32 on CUDA.

Each is a switch that changes how fast a step runs, never what a checkpoint holds:

- :func:`compile_networks` compiles networks IN PLACE with ``nn.Module.compile()``: the module stays the same object
  with the same parameters, so ``state_dict`` keys, checkpoints, EMA copies and resumes are unchanged (wrapping a
  submodule in ``torch.compile(module)`` would add ``_orig_mod.`` to every key). YAML: the ``compile`` callback.
- :func:`to_channels_last` / :func:`batch_to_channels_last`: NHWC memory format for 4-D weights and image batches
  (cuDNN's tensor-core convolutions prefer it). YAML: the ``channels_last`` callback.
- :func:`set_tf32`: TensorFloat-32 for float32 matrix products and cuDNN convolutions on CUDA (Ampere and newer);
  the CLI's top-level ``tf32: auto`` (gen_research/config/precision.py) decides it per run.

The AdamW implementation (fused / foreach / for_loop) is chosen in gen_research/training/optimizers.py.
The callbacks are in gen_research/training/callbacks/speed.py; docs/results.md has the measurements.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gen_research.errors import GenResearchError

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# ------------------------------------------------------------------------------------------ torch.compile
def trainable_networks(module: nn.Module) -> list[str]:
    """The names of ``module``'s direct children that have trainable parameters, in registration order.

    This is the family-agnostic rule for "the model's networks": a DDPM's ``unet``, a GAN's ``generator`` and
    ``discriminator``, a first-stage autoencoder's ``encoder``/``decoder``/``discriminator``. Left out: children
    with no trainable parameter, i.e. frozen first stages (an LDM's VAE), frozen text encoders, frozen loss networks
    (LPIPS), EMA copies kept as children, metric modules. Those run forward only, often under ``no_grad`` with
    shapes that change (sampling, evaluation), where compiling costs recompiles and pays little; name them in
    ``names`` to compile them anyway. The EMA callback's average lives in the callback, not in the model.
    """
    return [name for name, child in module.named_children() if any(p.requires_grad for p in child.parameters())]


def compile_networks(module: nn.Module, mode: str | None = None, names: list[str] | None = None) -> list[str]:
    """Compile ``module``'s networks in place with ``nn.Module.compile(mode=mode)``; -> the names compiled.

    ``names`` default to :func:`trainable_networks`; a name may be a dotted path (``first_stage.decoder``). A name
    that is not a submodule is a one-line error listing the networks. A network compiled already is left as it is
    (and still named in the result). Compilation itself happens lazily, at the first forward call: on CPU
    torch's inductor backend needs a C++ compiler, on CUDA Triton needs a C compiler; :func:`check_compiler`
    says what to install when there is none.
    """
    if mode not in COMPILE_MODES:
        shown = ", ".join("null" if m is None else m for m in COMPILE_MODES)
        raise GenResearchError(f"compile: mode={mode!r} is not a torch.compile mode; use one of {shown}")
    if names is None:
        names = trainable_networks(module)
        if not names:
            raise GenResearchError(f"compile: {type(module).__name__} has no child module with trainable parameters; name the networks to compile in init_args.names")
    elif isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise GenResearchError(f"compile: names={names!r} must be a list of network names, e.g. [unet]")
    targets = []
    for name in names:
        try:
            network = module.get_submodule(name)
        except AttributeError:
            network = None
        if network is None or network is module or not isinstance(network, nn.Module):
            children = ", ".join(n for n, _ in module.named_children()) or "none"
            raise GenResearchError(f"compile: {name!r} is not a network of {type(module).__name__}; its networks are {children}")
        targets.append((name, network))
    kwargs = {} if mode is None else {"mode": mode}
    for _, network in targets:
        if getattr(network, "_compiled_call_impl", None) is None:  # nn.Module.compile's own marker
            network.compile(**kwargs)
    return [name for name, _ in targets]


def uncompile_networks(module: nn.Module) -> None:
    """Undo :func:`compile_networks` on every submodule (calls run eagerly again)."""
    for child in module.modules():
        if getattr(child, "_compiled_call_impl", None) is not None:
            child._compiled_call_impl = None


def check_compiler(device_type: str) -> None:
    """A one-line error when torch.compile cannot build code for ``device_type`` ("cpu" or "cuda") on this machine.

    Inductor writes C++ for the CPU (compiler: ``torch._inductor.config.cpp.cxx``, g++ unless $CXX says otherwise)
    and Triton kernels for CUDA, whose launcher Triton builds with a C compiler ($CC, else cc/gcc/clang)."""
    import os

    if device_type == "cpu":
        from torch._inductor import config as inductor_config

        candidates = [c for c in (os.environ.get("CXX"), *[c for c in inductor_config.cpp.cxx if c]) if c]
        candidates += ["g++", "c++", "clang++"]
        if not any(shutil.which(c) for c in candidates):
            raise GenResearchError("compile: torch.compile on CPU needs a C++ compiler and none is on PATH; install one "
                                   "(apt-get install g++) or set CXX, or remove the compile callback from trainer.callbacks")
    elif device_type == "cuda":
        candidates = [c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c]
        if not any(shutil.which(c) for c in candidates):
            raise GenResearchError("compile: torch.compile on CUDA needs a C compiler for Triton and none is on PATH; install one "
                                   "(apt-get install gcc) or set CC, or remove the compile callback from trainer.callbacks")


# ------------------------------------------------------------------------------------------ channels_last
def to_channels_last(module: nn.Module) -> nn.Module:
    """``module`` with every 4-D parameter and buffer in channels_last (NHWC) memory format, in place (the
    parameters stay the same objects, so optimizers built earlier keep working); other tensors are untouched."""
    return module.to(memory_format=torch.channels_last)


def batch_to_channels_last(batch: Any) -> Any:
    """4-D floating-point tensors of ``batch`` in channels_last: a dict batch is changed IN PLACE (and returned),
    so a callback can convert the batch Lightning hands it; lists/tuples give new ones; a tensor gives a tensor.
    Labels, captions, masks of other ranks and integer tensors are left as they are."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 4 and batch.is_floating_point():
            return batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        for key, value in batch.items():
            batch[key] = batch_to_channels_last(value)
        return batch
    if isinstance(batch, Mapping):
        return {key: batch_to_channels_last(value) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and not isinstance(batch, str):
        converted = [batch_to_channels_last(value) for value in batch]
        return type(batch)(converted) if not hasattr(batch, "_fields") else type(batch)(*converted)
    return batch


def optimizer_state_to_channels_last(optimizer: torch.optim.Optimizer) -> int:
    """Optimizer state tensors shaped like a channels_last 4-D parameter (AdamW's moments restored from a checkpoint
    arrive contiguous) put in the parameter's memory format; -> how many were converted. Values are unchanged."""
    converted = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.ndim != 4 or not param.is_contiguous(memory_format=torch.channels_last) or param.is_contiguous():
                continue
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and not value.is_contiguous(memory_format=torch.channels_last):
                    state[key] = value.contiguous(memory_format=torch.channels_last)
                    converted += 1
    return converted


# ------------------------------------------------------------------------------------------------ TF32
def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matrix products (cuBLAS) and cuDNN convolutions on CUDA on (True) or off (False: full fp32).

    Only CUDA devices of compute capability >= 8.0 (Ampere and newer) have TF32 units; elsewhere the flags do nothing.
    CPU numerics never change: these are the CUDA-only flags (``torch.set_float32_matmul_precision("high")`` would
    also switch oneDNN's CPU matmuls to tf32 in torch >= 2.9, and the newer ``fp32_precision`` API cannot be mixed
    with the ``get_float32_matmul_precision()`` that Lightning and our k-NN metrics read). PyTorch's own default is
    cuBLAS off, cuDNN on; ``set_tf32(False)`` turns both off."""
    if not isinstance(enabled, bool):
        raise GenResearchError(f"tf32={enabled!r} must be true, false or auto")
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled() -> bool:
    """Whether float32 matrix products on CUDA may use TF32 (the cuBLAS flag :func:`set_tf32` sets)."""
    return bool(torch.backends.cuda.matmul.allow_tf32)


def tf32_supported(device: torch.device | str | int | None = None) -> bool:
    """Whether a CUDA device has TF32 units (compute capability >= 8.0); False without CUDA."""
    if not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


__all__ = ["COMPILE_MODES", "batch_to_channels_last", "check_compiler", "compile_networks", "optimizer_state_to_channels_last",
           "set_tf32", "tf32_enabled", "tf32_supported", "to_channels_last", "trainable_networks", "uncompile_networks"]
