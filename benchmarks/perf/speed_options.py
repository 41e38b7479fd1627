"""``make bench`` section ``speed_options`` (issue 18): training steps/s of a recipe's DDPM UNet with each speed
option alone, against our defaults, side by side in one process.

CPU: the UNet of experiments/ddpm_mnist5k.yaml (1.06M parameters) at batch 64 on 1x28x28; CUDA: the UNet of
experiments/ddpm_cifar10.yaml (35.7M parameters, Ho et al.) at batch 128 on 3x32x32. The model is built from the
experiment's ``model.init_args`` through the registered family, trained on a synthetic batch held in memory with
the recipe's precision (``auto`` resolved for this device, as the CLI does) and gradient clipping. One step is what
Lightning runs: the family's loss under autocast, backward, clip, AdamW step.

Variants (each one option changed from the baseline, every one with its own copy of the same initial model):
baseline (our defaults: AdamW ``auto``, TF32 ``auto``, no compile, contiguous), compile (``compile_networks``: the UNet
in place, inductor, default mode), channels_last (weights and batch), AdamW fused / foreach / for_loop, and on CUDA
TF32 on / off. Each variant gets untimed warm-up steps (compile: the first step is timed on its own and reported as
the compile time), then the variants run alternately (A B C ... A B C, ``ctx.pairs`` rounds) in timed blocks of
steps; medians of the blocks' steps/s and ratios of medians to the baseline.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import time
from typing import Any, Callable

from harness import REPO, alternate, machine_line, markdown_table, ratio

CPU_RECIPE = ("experiments/ddpm_mnist5k.yaml", 64, (1, 28, 28))
CUDA_RECIPE = ("experiments/ddpm_cifar10.yaml", 128, (3, 32, 32))
# Steps per timed block and untimed warm-up steps: CPU ~1 s a step on 2 cores -> 6 variants x 3 pairs x 8 steps plus
# the compile (~1-2 min cold) stays under ~6 minutes; CUDA ~0.1 s a step.
STEPS = {"cpu": 8, "cuda": 30}
WARMUP = {"cpu": 2, "cuda": 5}
QUICK_STEPS, QUICK_WARMUP = 2, 1
QUICK_INIT = {"block_out_channels": [8, 16], "layers_per_block": 1, "attention_levels": [], "num_train_timesteps": 100}
NOT_APPLICABLE = "not applicable"


def _recipe(device: str) -> tuple[str, int, tuple[int, int, int], type, dict[str, Any], dict[str, Any]]:
    from gen_research.config.files import load_experiment
    from gen_research.registry import load_builtins

    load_builtins()
    path, batch, shape = CUDA_RECIPE if device == "cuda" else CPU_RECIPE
    config = load_experiment(REPO / path)
    module_name, _, class_name = config["model"]["class_path"].rpartition(".")
    family = getattr(importlib.import_module(module_name), class_name)
    return path, batch, shape, family, dict(config["model"].get("init_args") or {}), dict(config.get("trainer") or {})


def _precision(trainer: dict[str, Any], device: str) -> str:
    from gen_research.config.precision import AUTO, choose_precision

    precision = str(trainer.get("precision") or "32-true")
    if precision.lower() == AUTO:
        precision = choose_precision(device).precision
    return precision


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class Variant:
    """One model + optimizer with one option changed; ``steps(n)`` runs n training steps -> steps/s."""

    def __init__(self, name: str, model: Any, device: str, batch: Any, precision: str, clip: float | None, lr: float,
                 implementation: str = "auto", channels_last: bool = False, tf32: bool | None = None, compile_: bool = False) -> None:
        import torch

        from gen_research.training import speed
        from gen_research.training.optimizers import OptimizerSpec, build_adamw, optimizer_implementation

        self.name, self.device, self.clip, self.tf32 = name, device, clip, tf32
        self.model = model.to(device).train()
        self.batch = batch.clone()
        if channels_last:
            speed.to_channels_last(self.model)
            self.batch = speed.batch_to_channels_last(self.batch)
        self.optimizer, _ = build_adamw(self.model.parameters(), OptimizerSpec(lr=lr, implementation=implementation), self.model)
        self.implementation = optimizer_implementation(self.optimizer)
        self.compiled: list[str] = []
        if compile_:
            speed.check_compiler(device)
            self.compiled = speed.compile_networks(self.model)
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        self.autocast: Callable[[], Any] = (lambda: torch.autocast(device, dtype=dtype)) if dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(device) if precision == "16-mixed" else None

    def _step(self) -> None:
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.model.compute_losses(self.batch, None)["loss"]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def steps(self, n: int) -> float:
        from gen_research.training import speed

        if self.tf32 is not None:
            speed.set_tf32(self.tf32)
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(n):
            self._step()
        _sync(self.device)
        return n / (time.perf_counter() - start)


def run(ctx: Any) -> dict[str, Any]:
    import torch

    from gen_research.training import speed

    device = ctx.device
    path, batch_size, shape, family, init_args, trainer = _recipe(device)
    precision = _precision(trainer, device)
    clip = trainer.get("gradient_clip_val") or None
    if ctx.quick:
        init_args, batch_size, shape = {**init_args, **QUICK_INIT}, 4, (shape[0], 8, 8)
    steps, warmup = (QUICK_STEPS, QUICK_WARMUP) if ctx.quick else (STEPS[device], WARMUP[device])
    lr = float(init_args.get("lr", 2e-4))
    torch.manual_seed(0)
    base_model = family(image_shape=shape, **init_args)
    parameters = sum(p.numel() for p in base_model.parameters())
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn((batch_size, *shape), generator=generator).clamp(-1, 1).to(device)
    tf32_before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32_default = device == "cuda" and speed.tf32_supported()  # what tf32: auto picks (gen_research/config/precision.py)

    specs: dict[str, dict[str, Any]] = {
        "baseline": {},
        "compile": {"compile_": True},
        "channels_last": {"channels_last": True},
        "adamw_fused": {"implementation": "fused"},
        "adamw_foreach": {"implementation": "foreach"},
        "adamw_for_loop": {"implementation": "for_loop"},
    }
    if device == "cuda":
        specs["tf32_on"] = {"tf32": True}
        specs["tf32_off"] = {"tf32": False}
    skipped: dict[str, str] = {}
    if ctx.quick:
        skipped["compile"] = "skipped in --quick (compiling takes minutes here)"
    if device != "cuda":
        skipped["tf32"] = NOT_APPLICABLE + " (TF32 exists on CUDA GPUs of compute capability >= 8.0 only; CPU numerics are never changed)"

    variants: dict[str, Variant] = {}
    failed: dict[str, str] = {}
    compile_s = None
    try:
        for name, options in specs.items():
            if name in skipped:
                continue
            options = {"tf32": tf32_default if device == "cuda" else None, **options}
            try:
                variant = Variant(name, copy.deepcopy(base_model), device, batch, precision, clip, lr, **options)
                if name == "compile":  # the first step compiles: timed alone, reported as the compile time
                    first = 1.0 / variant.steps(1)
                    variant.steps(max(warmup - 1, 1))
                    compile_s = first
                else:
                    variant.steps(warmup)
            except Exception as error:  # one option failing (e.g. no compiler) must not lose the others' numbers
                failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
                continue
            variants[name] = variant
            print(f"   {name}: ready ({variant.implementation}{', compiled ' + ','.join(variant.compiled) if variant.compiled else ''})", flush=True)
        measured = alternate({name: (lambda v=v: v.steps(steps)) for name, v in variants.items()}, pairs=ctx.pairs)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
        torch._dynamo.reset()

    base = measured.get("baseline", {}).get("median")
    rows = {}
    for name in specs:
        if name in measured:
            rows[name] = {**measured[name], "ratio": ratio(measured[name]["median"], base), "adamw": variants[name].implementation}
        elif name in failed:
            rows[name] = {"failed": failed[name]}
        elif name in skipped:
            rows[name] = {"skipped": skipped[name]}
    if compile_s is not None and "compile" in rows and rows["compile"].get("median"):
        rows["compile"]["compile_s"] = max(compile_s - 1.0 / rows["compile"]["median"], 0.0)  # first step minus one step
        rows["compile"]["first_step_s"] = compile_s
    return {
        "recipe": path, "family": f"{family.__module__}.{family.__name__}", "device": device, "quick": ctx.quick,
        "batch_size": batch_size, "image_shape": list(shape), "parameters": parameters, "precision": precision,
        "gradient_clip_val": clip, "steps_per_block": steps, "warmup_steps": warmup, "pairs": ctx.pairs,
        "tf32_default": tf32_default, "baseline_adamw": variants["baseline"].implementation if "baseline" in variants else None,
        "tf32": skipped.get("tf32"), "variants": rows,
    }


LABELS = {
    "baseline": "baseline (defaults: AdamW auto, TF32 auto)",
    "compile": "compile (UNet, inductor, mode default)",
    "channels_last": "channels_last (weights + batch)",
    "adamw_fused": "AdamW fused",
    "adamw_foreach": "AdamW foreach",
    "adamw_for_loop": "AdamW for_loop",
    "tf32_on": "TF32 on",
    "tf32_off": "TF32 off",
}


def tables(result: dict[str, Any], machine: dict[str, Any]) -> dict[str, str]:
    device = result["device"]
    rows = []
    for name, row in result["variants"].items():
        note = ""
        if name == "compile" and row.get("compile_s") is not None:
            note = f"compile time {row['compile_s']:.0f} s (first step {row['first_step_s']:.0f} s), not in steps/s"
        if name == "baseline":
            note = f"AdamW auto -> {row.get('adamw')}" + (f", TF32 {'on' if result['tf32_default'] else 'off'}" if device == "cuda" else "")
        if "failed" in row:
            note = "failed: " + row["failed"]
        if "skipped" in row:
            note = row["skipped"]
        rows.append([LABELS.get(name, name), row.get("median"), row.get("ratio"), note])
    if result.get("tf32"):
        rows.append(["TF32 on", None, None, result["tf32"]])
    c, h, w = result["image_shape"]
    head = (f"{machine_line(machine)}\n\n"
            f"DDPM UNet of `{result['recipe']}` ({result['parameters'] / 1e6:.2f}M parameters), batch {result['batch_size']} of "
            f"{c}x{h}x{w} synthetic images in memory, precision {result['precision']}, gradient clipping "
            f"{result['gradient_clip_val'] or 'off'}; blocks of {result['steps_per_block']} steps after {result['warmup_steps']} "
            f"untimed, {result['pairs']} rounds alternating all variants, medians.\n\n")
    body = markdown_table(["Option", "steps/s", "ratio to baseline", "note"], rows)
    return {f"speed-options-{device}": head + body}
