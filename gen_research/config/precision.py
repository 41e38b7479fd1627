"""``trainer.precision: auto``: bf16-mixed only where the device computes bf16 natively, 32-true elsewhere.

Why: bf16 autocast is about 1.5x faster than fp32 on CPUs with AMX or AVX-512-BF16 units, but on a CPU
without them (e.g. AMD EPYC Zen 3, AVX2 only) every bf16 operation is emulated and the same training runs
about 10x SLOWER (12 steps of experiments/cfg_mnist5k.yaml: 144 s in bf16-mixed, 27 s in 32-true). Machines
of the same kind can carry either CPU, so the shipped CPU presets and experiments say ``auto``.

Lightning's Trainer does not accept "auto" for ``precision``: :func:`accept_auto_precision` widens the
parser's type so that a YAML or ``--trainer.precision=auto`` parses, and :func:`resolve_auto_precision`
replaces the value in the parsed config before anything is built. The choice is decided on the machine that
runs (each process of a SLURM/DDP job decides for itself), printed as one line, and kept in the saved
config.yaml: ``trainer.precision`` holds the resolved value and the top-level ``precision_auto`` key the
reason (also sent to the loggers with the rest of the config). An explicit precision is never changed.

Which device is asked follows ``trainer.accelerator``: ``cpu`` -> the CPU; ``gpu``/``cuda`` -> the CUDA
devices of ``trainer.devices``; ``auto`` -> CUDA when available (MPS next, as Lightning), else the CPU.
Native bf16 means: CPU flags ``amx_bf16`` or ``avx512_bf16`` (``torch.cpu.get_capabilities()``, falling back
to /proc/cpuinfo); CUDA ``torch.cuda.is_bf16_supported(including_emulation=False)`` (compute capability >= 8.0)
on every device that will be used. Anything else (ARM CPUs, MPS, other accelerators) gets 32-true: a wrong
"bf16" costs up to 10x, a wrong "32-true" at most 1.5x; set ``bf16-mixed`` explicitly where it is known to pay.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch

from gen_research.errors import GenResearchError

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"
RECORD_KEY = "precision_auto"  # top-level config key holding "auto -> <choice>: <reason>"
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 units that compute bf16 natively


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # what Lightning gets: bf16-mixed or 32-true
    reason: str  # why, naming the device

    def line(self) -> str:
        return f"precision auto -> {self.precision}: {self.reason}"


# ----------------------------------------------------------------------------------------------- CPU
def cpu_model_name() -> str:
    """The CPU's marketing name (lscpu's "Model name"), e.g. "AMD EPYC 7B13"; a best effort on every OS."""
    cpuinfo = _read_proc_cpuinfo()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "model name" and value.strip():
            return value.strip()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name" and value.strip():
                return value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return str(_torch_cpu_capabilities().get("cpu_name") or platform.processor() or platform.machine() or "unknown CPU")


def cpu_bf16_flags() -> list[str]:
    """Which of amx_bf16 / avx512_bf16 this CPU has (an empty list: bf16 would be emulated)."""
    capabilities = _torch_cpu_capabilities()
    if capabilities:
        return [flag for flag in CPU_BF16_FLAGS if capabilities.get(flag)]
    flags: set[str] = set()
    for line in _read_proc_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return [flag for flag in CPU_BF16_FLAGS if flag in flags]


def describe_cpu() -> dict[str, Any]:
    """What a benchmark records next to its timings: the CPU and whether it computes bf16 natively."""
    flags = cpu_bf16_flags()
    return {"cpu": cpu_model_name(), "bf16_native": bool(flags), "bf16_flags": flags,
            "precision_auto": choose_cpu_precision().precision}


def choose_cpu_precision() -> PrecisionChoice:
    name, flags = cpu_model_name(), cpu_bf16_flags()
    if flags:
        return PrecisionChoice(BF16, f"CPU {name} computes bf16 natively ({', '.join(flags)})")
    return PrecisionChoice(FP32, f"CPU {name} has no AMX/AVX-512-BF16 (bf16 would be emulated, several times slower)")


def _torch_cpu_capabilities() -> dict[str, Any]:
    get_capabilities = getattr(getattr(torch, "cpu", None), "get_capabilities", None)  # torch >= 2.10
    if get_capabilities is None:
        return {}
    try:
        return dict(get_capabilities())
    except Exception:  # cpuinfo could not read this CPU: fall back to /proc/cpuinfo
        return {}


def _read_proc_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------- CUDA
def choose_cuda_precision(devices: Any) -> PrecisionChoice:
    """bf16-mixed when every CUDA device of ``trainer.devices`` computes bf16 natively."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    if not torch.cuda.is_available():
        return PrecisionChoice(FP32, "no CUDA device is available")
    indices = _cuda_indices(devices, CUDAAccelerator)
    without = []
    for index in indices:
        with torch.cuda.device(index):
            if not torch.cuda.is_bf16_supported(including_emulation=False):
                without.append(index)
    named = without or indices
    names = ("CUDA device " if len(named) == 1 else "CUDA devices ") + ", ".join(f"{i} ({torch.cuda.get_device_name(i)})" for i in named)
    if without:
        return PrecisionChoice(FP32, f"{names}: no native bf16 (compute capability < 8.0); "
                                     "16-mixed is the fast choice there: configs/trainer/gpu-fp16.yaml")
    return PrecisionChoice(BF16, f"{names} computes bf16 natively")


def _cuda_indices(devices: Any, cuda_accelerator: Any) -> list[int]:
    if devices in (None, AUTO, -1, "-1"):
        return list(range(torch.cuda.device_count()))
    if isinstance(devices, int) or (isinstance(devices, str) and devices.strip().isdigit()):
        return list(range(min(int(devices), torch.cuda.device_count())))  # Lightning takes the first N
    try:
        return list(cuda_accelerator.parse_devices(devices) or []) or list(range(torch.cuda.device_count()))
    except Exception:  # Lightning reports a bad devices value itself when it builds the Trainer
        return list(range(torch.cuda.device_count()))


# --------------------------------------------------------------------------------------- the config
def accelerator_kind(accelerator: Any) -> str | None:
    """``trainer.accelerator`` as the device kind that will run: cpu, cuda, mps (auto/gpu resolved as Lightning
    does), another name as given, None for an accelerator object."""
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    kind = accelerator.lower() if isinstance(accelerator, str) else None
    if kind == "auto" or (kind is None and accelerator is None):
        kind = "cuda" if CUDAAccelerator.is_available() else "mps" if MPSAccelerator.is_available() else "cpu"
    elif kind == "gpu":
        kind = "mps" if MPSAccelerator.is_available() and not CUDAAccelerator.is_available() else "cuda"
    return kind


def choose_precision(accelerator: Any, devices: Any = AUTO, strategy: Any = AUTO) -> PrecisionChoice:
    """What ``precision: auto`` means for this trainer configuration on this machine."""

    kind = accelerator_kind(accelerator)
    if kind == "cpu":
        return choose_cpu_precision()
    if kind == "cuda":
        if isinstance(strategy, str) and ("fork" in strategy or "notebook" in strategy):
            raise GenResearchError(
                f"precision auto asks the GPU whether it computes bf16, which initialises CUDA, and strategy={strategy!r} "
                "cannot fork after that; set --trainer.precision=bf16-mixed (Ampere or newer) or 16-mixed, or use strategy ddp"
            )
        return choose_cuda_precision(devices)
    return PrecisionChoice(FP32, f"accelerator {accelerator!r}: auto only detects native bf16 on CPUs and CUDA GPUs; "
                                 "set precision explicitly to use bf16 there")


def resolve_auto_precision(config: Any) -> PrecisionChoice | None:
    """Replace ``trainer.precision: auto`` in a parsed subcommand config by the choice, record and print it.

    ``config`` is the subcommand's jsonargparse Namespace (``config.trainer.precision``, ``config.precision_auto``).
    Any other precision is left exactly as given, and a stale record (e.g. from a reused config.yaml) is cleared.
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    trainer = config.trainer
    if str(trainer.get("precision")).lower() != AUTO:
        if RECORD_KEY in config:
            config[RECORD_KEY] = None
        return None
    choice = choose_precision(trainer.get("accelerator"), trainer.get("devices", AUTO), trainer.get("strategy", AUTO))
    trainer.precision = choice.precision
    config[RECORD_KEY] = f"auto -> {choice.precision}: {choice.reason}"
    if rank_zero_only.rank == 0:  # DDP/SLURM workers decide too (same machine), but only rank 0 says so
        print(choice.line(), flush=True)
    return choice


def accept_auto_precision(parser: Any) -> None:
    """Let the LightningCLI parser accept ``trainer.precision: auto`` and record the choice in ``precision_auto``.

    jsonargparse types the Trainer's ``precision`` from Lightning's Literal and rejects "auto" while parsing,
    before any hook runs; we add "auto" to that type (argparse has no public way to retype an argument).
    """
    action = next((a for a in getattr(parser, "_actions", []) if a.dest == "trainer.precision"), None)
    if action is None or not hasattr(action, "_typehint"):
        raise RuntimeError("the parser has no typed trainer.precision argument: jsonargparse/Lightning changed; update gen_research/config/precision.py")
    action._typehint = Optional[Union[Literal["auto"], action._typehint]]
    action.help = (action.help or "") + "\n'auto' (gen_research): bf16-mixed where the device computes bf16 natively, else 32-true."
    parser.add_argument(
        f"--{RECORD_KEY}", type=Optional[str], default=None,
        help="Written by the CLI when trainer.precision is auto: what it picked and why (a given value is replaced).",
    )


# ---------------------------------------------------------------------------------------------- TF32
TF32_KEY = "tf32"  # top-level config key: auto (default), true, false


def choose_tf32(accelerator: Any, devices: Any = AUTO, strategy: Any = AUTO) -> tuple[bool, str]:
    """What ``tf32: auto`` means here -> (on, reason): on where the trainer runs on CUDA devices of compute
    capability >= 8.0 (Ampere and newer: the only ones with TF32 units), off elsewhere. TF32 rounds the inputs of
    float32 matrix products and convolutions to a 10-bit mantissa (fp32 range and accumulation), which is what
    bf16/fp16 autocast already does to most of them; diffusion and GAN training are insensitive to it, and the
    float32 parts of a 32-true run get the tensor cores. Under a fork-based strategy CUDA must not be initialised,
    so the devices are not asked: the flags are set, and GPUs older than Ampere ignore them."""
    kind = accelerator_kind(accelerator)
    if kind != "cuda":
        return False, f"accelerator {kind or accelerator!r}: TF32 exists on CUDA GPUs only (CPU numerics are never changed)"
    if isinstance(strategy, str) and ("fork" in strategy or "notebook" in strategy):
        return True, f"strategy {strategy!r} must not initialise CUDA: flags set without asking the GPUs (pre-Ampere GPUs ignore them)"
    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    from lightning.pytorch.accelerators import CUDAAccelerator

    indices = _cuda_indices(devices, CUDAAccelerator)
    capabilities = {i: torch.cuda.get_device_capability(i) for i in indices}
    names = ", ".join(f"{i} ({torch.cuda.get_device_name(i)}, compute capability {c[0]}.{c[1]})" for i, c in capabilities.items())
    if capabilities and all(major >= 8 for major, _ in capabilities.values()):
        return True, f"CUDA {names}: TF32 tensor cores"
    return False, f"CUDA {names}: TF32 needs compute capability >= 8.0 on every device"


def resolve_tf32(config: Any) -> bool:
    """Apply the top-level ``tf32`` setting of a parsed subcommand config (auto, true, false) for this process
    (gen_research.training.speed.set_tf32) -> whether TF32 is on. ``auto`` is decided by :func:`choose_tf32` on the
    machine that runs (each DDP process launched by the CLI decides for itself; ``ddp_spawn`` workers start with
    PyTorch's defaults) and kept as ``auto`` in the saved config; ``auto`` says so in one line when it turns TF32 on."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from gen_research.training.speed import set_tf32

    value = config.get(TF32_KEY, AUTO)
    if isinstance(value, str) and value.lower() == AUTO:
        trainer = config.trainer
        enabled, reason = choose_tf32(trainer.get("accelerator"), trainer.get("devices", AUTO), trainer.get("strategy", AUTO))
        if enabled and rank_zero_only.rank == 0:
            print(f"tf32 auto -> on: {reason}", flush=True)
    elif isinstance(value, bool):
        enabled = value
    else:
        raise GenResearchError(f"{TF32_KEY}={value!r} must be auto, true or false")
    set_tf32(enabled)
    return enabled


def accept_tf32(parser: Any) -> None:
    """The top-level ``tf32: auto | true | false`` option (``--tf32=false``)."""
    parser.add_argument(
        f"--{TF32_KEY}", type=Union[bool, Literal["auto"]], default=AUTO,
        help="TF32 matrix products and convolutions on CUDA: auto (on for compute capability >= 8.0), true, false. Never changes CPU numerics.",
    )


__all__ = ["PrecisionChoice", "TF32_KEY", "accelerator_kind", "accept_auto_precision", "accept_tf32", "choose_precision", "choose_tf32",
           "cpu_bf16_flags", "cpu_model_name", "describe_cpu", "resolve_auto_precision", "resolve_tf32"]
