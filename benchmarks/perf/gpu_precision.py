"""Section ``gpu_precision`` of ``make bench`` (benchmarks/gpu_suite.sh on a GPU): training steps/s of the
ddpm_cifar10 recipe's network under four ways of running it, side by side in one process.

The model is built from experiments/ddpm_cifar10.yaml's ``model.init_args`` through the registered family (the
paper's 35.7M-parameter UNet), trained at batch 128 on synthetic 3x32x32 images that already sit on the device
(CIFAR-10 itself is not needed: data loading is left out), with the family's own ``configure_optimizers``
(AdamW and its warm-up schedule, stepped every iteration as Lightning does) and the recipe's gradient clip (1.0,
by norm). Each variant has its own copy of the model, built from the same seed:

    fp32                 no autocast; torch's defaults (cuDNN convolutions may use TF32, matmuls do not)
    bf16                 torch.autocast(bfloat16) around the loss, as Lightning's precision="bf16-mixed"
    bf16_compile         bf16 + gen_research.training.speed.compile_networks (nn.Module.compile of the UNet)
    bf16_channels_last   bf16 + speed.to_channels_last(model) and speed.batch_to_channels_last(batch)

Timing: every variant is warmed up untimed (the compiled one's first step, which compiles, is reported as
``compile_s``), then timed in alternating blocks A B C D A B C D (ctx.pairs rounds) of a fixed number of steps
each, with torch.cuda.synchronize() before every clock read; steps/s are medians over the blocks. Peak memory
per variant is torch.cuda.max_memory_allocated (after reset_peak_memory_stats) over building it and its
warm-up steps, counted from what was allocated before it (so the other variants' models are not in it): its
weights, gradients, AdamW state and the activations of a step. Achieved TFLOP/s counts the forward+backward
FLOPs of one step with torch.utils.flop_counter.FlopCounterMode (convolutions, matmuls and, on CUDA, attention;
not normalisations, element-wise ops or the optimizer) times steps/s.

With ``BENCH_SECTION_DEADLINE`` (epoch seconds) or ``BENCH_SECTION_BUDGET_S`` set (gpu_suite.sh sets both from
the section's timeout), a variant whose build and warm-up (in practice: compiling) would run within
WARMUP_RESERVE_S of the deadline is interrupted and recorded as failed, and the timed blocks shrink so that the
section still ends in time with the other variants' figures. With ctx.quick: a tiny UNet, batch 2, one step per
block and compile_networks under torch.compiler.set_stance("force_eager") (the code path runs, nothing compiles):
it checks the machinery on a CPU and measures nothing.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: harness

from harness import REPO, alternate, machine_line, markdown_table, ratio  # noqa: E402

EXPERIMENT = REPO / "experiments" / "ddpm_cifar10.yaml"
VARIANTS = ("fp32", "bf16", "bf16_compile", "bf16_channels_last")
LABELS = {
    "fp32": "fp32",
    "bf16": "bf16 autocast",
    "bf16_compile": "bf16 + compile",
    "bf16_channels_last": "bf16 + channels_last",
}
WARMUP_ORDER = ("fp32", "bf16", "bf16_channels_last", "bf16_compile")  # the slow compile last: the rest is ready first
IMAGE_SHAPE = (3, 32, 32)
BATCH = 128
BLOCK_S = 2.0  # target seconds of one timed block on a GPU
WARMUP_RESERVE_S = 30.0  # a variant's build and warm-up must end this long before the section's deadline (timing, JSON)
QUICK_ARGS = {"block_out_channels": [8, 16], "layers_per_block": 1, "attention_levels": [1], "dropout": 0.0}
QUICK_SHAPE = (3, 8, 8)
QUICK_BATCH = 2


class OutOfTime(TimeoutError):
    """A variant's warm-up (in practice: compiling) ran into the section's deadline."""


@contextmanager
def interrupt_after(seconds: float | None) -> Iterator[None]:
    """Raise :class:`OutOfTime` in the block after ``seconds`` (SIGALRM; None: never), so that a compile running
    into the section's timeout costs that variant only, not every figure measured before it."""
    if seconds is None or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return
    if seconds <= 0:
        raise OutOfTime("no time left before the section's deadline")

    def expire(signum: int, frame: Any) -> None:
        raise OutOfTime(f"did not finish within the {seconds:.0f} s left before the section's deadline")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def section_deadline() -> float | None:
    """The section's deadline in epoch seconds (gpu_suite.sh: ``BENCH_SECTION_DEADLINE``), if one is set."""
    return float(os.environ.get("BENCH_SECTION_DEADLINE") or 0) or None


def recipe() -> dict[str, Any]:
    """The ddpm_cifar10 experiment's model family, its init_args and the trainer's gradient clip."""
    from gen_research.config.files import load_experiment
    from gen_research.registry import MODELS, load_builtins

    load_builtins()
    config = load_experiment(EXPERIMENT)
    model, trainer = config["model"], config.get("trainer", {})
    family = next(entry for entry in MODELS if entry.class_path == model["class_path"])
    return {
        "family": family.name,
        "init_args": dict(model.get("init_args") or {}),
        "gradient_clip_val": trainer.get("gradient_clip_val"),
        "gradient_clip_algorithm": trainer.get("gradient_clip_algorithm") or "norm",
    }


class Trainee:
    """One variant: its own model, optimizer, schedule and batch, and ``step()`` = one training iteration."""

    def __init__(self, variant: str, family: type, init_args: dict[str, Any], image_shape: tuple[int, int, int],
                 images: Any, clip: float | None, clip_algorithm: str, quick: bool) -> None:
        import torch

        from gen_research.training.speed import batch_to_channels_last, compile_networks, to_channels_last

        self.variant = variant
        self.device = images.device
        torch.manual_seed(0)  # every variant starts from the same weights
        self.model = family(image_shape=image_shape, **init_args).to(self.device).train()
        self.compiled: list[str] = []
        batch = {"image": images}
        if variant == "bf16_channels_last":
            to_channels_last(self.model)
            batch = batch_to_channels_last(batch)
        if variant == "bf16_compile":
            self.compiled = list(compile_networks(self.model))
        self.batch = batch
        configured = self.model.configure_optimizers()
        if isinstance(configured, dict):
            self.optimizer = configured["optimizer"]
            scheduler = configured.get("lr_scheduler")
            self.scheduler = scheduler.get("scheduler") if isinstance(scheduler, dict) else scheduler
        else:
            self.optimizer, self.scheduler = configured, None
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.clip = clip
        self.clip_algorithm = clip_algorithm
        self.bf16 = variant.startswith("bf16")
        # quick (CPU smoke test): the compile call runs, its compiled forward runs eagerly (inductor would take minutes)
        self.stance = (lambda: torch.compiler.set_stance("force_eager")) if quick and self.compiled else nullcontext

    def autocast(self) -> Any:
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def loss(self) -> Any:
        with self.autocast():
            return self.model.compute_losses(self.batch["image"], self.batch.get("label"))["loss"]

    def step(self) -> None:
        import torch

        with self.stance():
            loss = self.loss()
            loss.backward()
        if self.clip:
            if self.clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(self.parameters, self.clip)
            else:
                torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def count_flops(self) -> dict[str, Any]:
        """Forward+backward FLOPs of one step (FlopCounterMode), by operator; gradients are dropped after."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.loss().backward()
        self.optimizer.zero_grad(set_to_none=True)
        by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
        return {"per_step": int(counter.get_total_flops()), "by_op": by_op}


def run(ctx: Any) -> dict[str, Any]:
    import torch

    section_start = time.perf_counter()
    device = torch.device(ctx.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def allocated() -> int | None:
        return torch.cuda.memory_allocated(device) if cuda else None

    spec = recipe()
    from gen_research.registry import MODELS

    family = MODELS.get(spec["family"])
    init_args = {**spec["init_args"], **(QUICK_ARGS if ctx.quick else {})}
    shape, batch_size = (QUICK_SHAPE, QUICK_BATCH) if ctx.quick else (IMAGE_SHAPE, BATCH)
    generator = torch.Generator(device="cpu").manual_seed(0)
    images = (torch.rand((batch_size, *shape), generator=generator) * 2 - 1).to(device)  # CIFAR-like, in [-1, 1]
    warmup_steps, probe_steps = (1, 0) if ctx.quick else (3, 3)

    trainees: dict[str, Trainee] = {}
    variants: dict[str, dict[str, Any]] = {name: {"label": LABELS[name]} for name in VARIANTS}

    def warm_up(name: str, info: dict[str, Any]) -> Trainee:
        """Build the variant and run its untimed steps; its peak memory is counted from what was allocated before."""
        sync()
        base = allocated()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        if name == "bf16_compile":
            print(f"   {name}: compiling (the first step) ...", flush=True)
        start = time.perf_counter()
        trainee = Trainee(name, family, init_args, shape, images, spec["gradient_clip_val"],
                          spec["gradient_clip_algorithm"], ctx.quick)
        sync()
        info["build_s"] = time.perf_counter() - start
        first = time.perf_counter()
        trainee.step()
        sync()
        info["first_step_s"] = time.perf_counter() - first  # the compiled variant: compiling forward and backward
        for _ in range(warmup_steps - 1):
            trainee.step()
        sync()
        probe = time.perf_counter()
        for _ in range(probe_steps):
            trainee.step()
        sync()
        info["probe_s_per_step"] = (time.perf_counter() - probe) / probe_steps if probe_steps else None
        if cuda:
            info["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            info["state_memory_mb"] = (torch.cuda.memory_allocated(device) - base) / 2**20
        else:
            info["peak_memory_mb"] = info["state_memory_mb"] = None
        if trainee.compiled:
            info["compiled"] = trainee.compiled
            info["compile_s"] = info["first_step_s"]
        return trainee

    for name in WARMUP_ORDER:
        info = variants[name]
        deadline = section_deadline()
        try:
            with interrupt_after(None if deadline is None else deadline - WARMUP_RESERVE_S - time.time()):
                trainees[name] = warm_up(name, info)
            memory = f", peak {info['peak_memory_mb']:,.0f} MiB" if info["peak_memory_mb"] is not None else ""
            print(f"   {name}: ready, first step {info['first_step_s']:.1f} s{memory}", flush=True)
        except Exception as error:  # a variant that cannot run here (no compiler, out of time): recorded, the rest go on
            info["error"] = f"{type(error).__name__}: {error}"[:2000]
            info["traceback"] = traceback.format_exc()[-4000:]
            print(f"   {name} failed: {info['error'].splitlines()[0]}", flush=True)
        if name not in trainees and cuda:  # after the except block, which held the failed variant's frames
            torch.cuda.empty_cache()

    parameters = sum(p.numel() for p in next(iter(trainees.values())).model.parameters()) if trainees else None
    flops: dict[str, Any] | None = None
    counter = trainees.get("fp32") or next(iter(trainees.values()), None)
    if counter is not None:
        try:
            flops = counter.count_flops()
            sync()
        except Exception as error:  # no FLOP figure rather than a wrong one
            flops = {"per_step": None, "error": f"{type(error).__name__}: {error}"[:500]}

    # Steps per block: about BLOCK_S seconds each, shrunk to fit the section's budget (gpu_suite.sh) if one is set.
    alive = [name for name in VARIANTS if name in trainees]
    budget = float(os.environ.get("BENCH_SECTION_BUDGET_S") or 0) or None
    deadline = section_deadline()  # epoch seconds: the process's timeout
    block_s = BLOCK_S
    if (budget or deadline) and alive:
        left = (deadline - time.time()) if deadline else budget - (time.perf_counter() - section_start)
        left -= 20.0  # margin: JSON, process exit
        block_s = max(0.2, min(BLOCK_S, 0.8 * left / (ctx.pairs * len(alive))))
    for name in alive:
        per_step = variants[name]["probe_s_per_step"]
        steps = 1 if ctx.quick or not per_step else max(3, min(500, math.ceil(block_s / per_step)))
        variants[name]["steps_per_block"] = steps

    def block(name: str) -> Callable[[], float]:
        trainee, steps = trainees[name], variants[name]["steps_per_block"]

        def measure() -> float:
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                trainee.step()
            sync()
            return steps / (time.perf_counter() - start)

        return measure

    print(f"   timing {', '.join(alive)}: {ctx.pairs} rounds of "
          f"{'/'.join(str(variants[name]['steps_per_block']) for name in alive)} steps", flush=True)
    timed = alternate({name: block(name) for name in alive}, pairs=ctx.pairs) if alive else {}
    reference = timed.get("fp32", {}).get("median")
    for name in alive:
        median = timed[name]["median"]
        variants[name].update(
            steps_per_s=median,
            runs=timed[name]["runs"],
            images_per_s=median * batch_size,
            vs_fp32=ratio(median, reference) if reference else None,
            tflops=(flops["per_step"] * median / 1e12) if flops and flops.get("per_step") else None,
        )
        print(f"   {name}: {median:.3g} steps/s ({ratio(median, reference) or 0:.2f}x fp32)", flush=True)
    return {
        "device": ctx.device,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "quick": ctx.quick,
        "pairs": ctx.pairs,
        "model": {"experiment": str(EXPERIMENT.relative_to(REPO)), "family": spec["family"], "init_args": init_args,
                  "parameters": parameters},
        "batch_size": batch_size,
        "image_shape": list(shape),
        "gradient_clip_val": spec["gradient_clip_val"],
        "block_s": block_s,
        "budget_s": budget,
        "flops": flops,
        "settings": {
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "compile_stance": "force_eager (quick: nothing compiled)" if ctx.quick else "default",
        },
        "variants": {name: variants[name] for name in VARIANTS},
    }


def tables(result: dict[str, Any], machine: dict[str, Any]) -> dict[str, str]:
    device = machine.get("device") or result.get("device") or "cpu"
    block = f"gpu-precision-{'cuda' if str(device).startswith('cuda') else 'cpu'}"
    gpu = result.get("gpu") or machine.get("gpu")
    model = result.get("model", {})
    parameters = model.get("parameters")
    size = f"{parameters / 1e6:.1f}M-parameter " if parameters else ""
    settings = result.get("settings", {})
    where = f"on the GPU ({gpu})" if gpu else "on the CPU (no GPU in this run)"
    lines = [
        machine_line(machine),
        "",
        f"Training steps of {model.get('experiment', 'experiments/ddpm_cifar10.yaml')}'s {size}UNet {where}: "
        f"batch {result.get('batch_size')} of synthetic {'x'.join(map(str, result.get('image_shape', [])))} images already "
        f"on the device (no data loading, no EMA), the family's AdamW and warm-up schedule, gradient clip "
        f"{result.get('gradient_clip_val')}. Medians of {result.get('pairs')} alternating blocks per variant "
        f"(A B C D ...), warm-up untimed. fp32 is torch's default: cuDNN TF32 "
        f"{'on' if settings.get('cudnn_allow_tf32') else 'off'}, matmul TF32 {'on' if settings.get('matmul_allow_tf32') else 'off'}.",
    ]
    flops = result.get("flops") or {}
    if flops.get("per_step"):
        lines[-1] += (f" TFLOP/s: {flops['per_step'] / 1e9:.3g} GFLOP per step (forward+backward convolutions, matmuls"
                      f"{' and attention' if gpu else ''}, counted by FlopCounterMode) x steps/s.")
    rows = []
    for name in VARIANTS:
        info = result.get("variants", {}).get(name, {})
        note = ""
        if info.get("error"):
            note = "failed: " + info["error"].splitlines()[0][:160].replace("|", "/")
        elif info.get("compile_s") is not None:
            note = f"compile (first step) {info['compile_s']:.1f} s"
        rows.append([info.get("label", LABELS[name]), info.get("steps_per_s"), info.get("images_per_s"),
                     info.get("vs_fp32"), info.get("peak_memory_mb"), info.get("tflops"), note])
    lines += ["", markdown_table(["Variant", "steps/s", "images/s", "vs fp32", "peak memory (MiB)", "TFLOP/s", "note"], rows)]
    if result.get("quick"):
        lines += ["", "(--quick: tiny sizes, nothing compiled; checks the machinery, measures nothing.)"]
    return {block: "\n".join(lines)}
