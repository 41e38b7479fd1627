"""``make bench`` section ``throughput``: how fast ``sample`` draws images with each sampler, and how fast ``evaluate``
pushes images through each feature extractor (issue 18).

Sampling (block ``sampling-<device>``). The models are the shipped experiments' own, RANDOMLY initialised: the time of
a forward pass does not depend on the weights, so no training is needed (the images are noise; nothing is judged).
Each model is written to a checkpoint and read back with ``load_model_and_data``; its options are parsed by the
``sample`` command's own parser and turned into keywords by ``sampling_plan``; then ``model.sample`` is called batch
by batch under ``torch.no_grad`` as ``sample`` does (gen_research/commands/sample.py), without writing the PNGs.

- experiments/ddpm_mnist5k.yaml (1.06M-parameter UNet, 1x28x28): every sampler the family declares (its ``SAMPLERS``,
  ``list samplers``) at the experiment's ``sampling_steps`` (20);
- experiments/cfg_mnist5k.yaml: the class-conditional model with its classifier-free guidance (scale 2, dpm-solver++,
  20 steps): one UNet call a step on a doubled batch;
- the one-shot families for scale: the quickstart VAE (experiments/quickstart.yaml: ``sample`` decodes z ~ N(0, I))
  and the DCGAN generator (experiments/dcgan_mnist5k.yaml).

NFE is counted, not computed: a forward pre-hook on the network the family names (``sampling_network()``, the UNet;
gen_research.evaluation.sampler_grid.grid.ForwardCounter) counts the calls of one trajectory (``nfe_calls``) and the
batch rows they carry; ``nfe_per_image`` = rows / images (a guided step counts 2, its compute cost).

Evaluation (block ``evaluation-throughput-<device>``). Real 1x28x28 MNIST images of the quickstart data module's
validation split, read through ``Feeder.reference_batches`` (the evaluate command's reference path), then timed
through ``Evaluator.extract`` (what ``Evaluator.add_images`` runs: move to the device as float32, the extractor's
resize and network), data loading excluded. Extractors are built through the feature registry as ``evaluate`` builds
them (``FEATURES.get(name)(weights=..., image_shape=...)``), with their default resize modes:

- ``pixels`` and ``classifier`` (assets/classifier-mnist5k.ckpt, reads 28x28 itself: no resize);
- ``inception``: the FID InceptionV3 of torch-fidelity with RANDOM weights (the official file cannot be downloaded
  here; benchmarks/bench_eval.py random_inception_weights): realistic timings, meaningless values;
- ``clip`` ViT-B/32 and ``dinov2`` ViT-S/14 and ViT-L/14: transformers models of the published architectures with
  random weights, saved to a local folder and loaded by the extractors from it (as their tests do);
- one row of the ``clean`` resize alone (28 -> 224, Pillow on the CPU), the preprocessing share of clip/dinov2.

And one end-to-end ``evaluate`` of the quickstart protocol (500 samples of the quickstart VAE vs the 500 validation
images, classifier features, fid,kid,precision,recall, reference cache off), in-process through
``gen_research.commands.evaluate.evaluate_command``: model loading, data, both feature passes and the metrics.

Every comparison alternates its variants round-robin (A B C A B C, ``ctx.pairs`` rounds) after one untimed warm-up
each, and reports medians. On ``cuda`` everything runs on the GPU (fp32, no autocast: neither command autocasts)
with ``torch.cuda.synchronize()`` before every clock read, and the extractors take batches of 256.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import REPO, alternate, machine_line, markdown_table, ratio  # noqa: E402

DIFFUSION = REPO / "experiments" / "ddpm_mnist5k.yaml"
GUIDED = REPO / "experiments" / "cfg_mnist5k.yaml"
ONE_SHOT = {"vae": REPO / "experiments" / "quickstart.yaml", "dcgan": REPO / "experiments" / "dcgan_mnist5k.yaml"}
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
CLASSIFIER = "package://classifier-mnist5k.ckpt"

SAMPLE_BATCH = 64  # images per model.sample call (the sample command's default --batch-size)
QUICK_STEPS = 2  # --quick: sampling steps of every diffusion row

# images drawn per measurement (one measurement = one round of a variant)
SAMPLING_IMAGES = {"cpu": 64, "cuda": 256}
ONE_SHOT_IMAGES = {"cpu": 1024, "cuda": 8192}
# extractor -> images per measurement; batch 64 on the CPU, 256 on a GPU (min with the images)
EXTRACTOR_IMAGES = {
    "cpu": {"pixels": 2048, "classifier": 2048, "inception": 64, "clip-vitb32": 64, "dinov2-vits14": 64, "dinov2-vitl14": 4,
            "clean-resize-224": 256},
    "cuda": {"pixels": 16384, "classifier": 16384, "inception": 1024, "clip-vitb32": 1024, "dinov2-vits14": 1024,
             "dinov2-vitl14": 512, "clean-resize-224": 1024},
}
EXTRACTOR_BATCH = {"cpu": 64, "cuda": 256}
QUICK_EXTRACTOR_IMAGES = 2
END_TO_END = {"num_images": 500, "kid_subset_size": 250, "kid_subsets": 50}  # experiments/quickstart.yaml's evaluation
QUICK_END_TO_END = {"num_images": 20, "kid_subset_size": 10, "kid_subsets": 5}
END_TO_END_METRICS = "fid,kid,precision,recall"

# The published CLIP ViT-B/32 (openai/clip-vit-base-patch32 config.json)
CLIP_VITB32 = {
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
                    "vocab_size": 49408, "max_position_embeddings": 77},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "image_size": 224, "patch_size": 32},
    "projection_dim": 512,
}
# --quick only: a tiny CLIP (the same code path, seconds)
CLIP_TINY = {
    "text_config": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 99,
                    "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
    "vision_config": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4,
                      "image_size": 32, "patch_size": 8},
    "projection_dim": 16,
}


# ---- shared -------------------------------------------------------------------------------------------
def synchronize(device: str) -> None:
    """Wait for the GPU's queued kernels before a clock is read (nothing on the CPU)."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def quiet() -> Any:
    """Library deprecation chatter (jsonargparse, transformers), their progress bars and the commands' printed tables
    off the bench log (an exception still propagates)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def random_checkpoint(experiment: Path, path: Path, seed: int = 0) -> Path:
    """The experiment's model, randomly initialised (seeded), as a Lightning checkpoint at ``path``: its data module's
    image shape and classes linked in as ``fit`` links them (gen_research/commands/lightning.py)."""
    import lightning
    import torch
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule, LightningModule

    from gen_research.config.files import load_experiment
    from gen_research.registry import load_builtins

    load_builtins()
    config = load_experiment(Path(experiment))
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    parser.add_subclass_arguments(LightningModule, "model")
    parser.link_arguments("data.image_shape", "model.init_args.image_shape", apply_on="instantiate")
    parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
    torch.manual_seed(seed)
    with quiet():
        model = parser.instantiate(parser.parse_object({"data": config["data"], "model": config["model"]})).model
    hyper = {**dict(model.hparams), "_class_path": config["model"]["class_path"]}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyper, "pytorch-lightning_version": lightning.__version__,
                "epoch": 0, "global_step": 0}, path)
    return path


def load(experiment: Path, ckpt: Path, device: str) -> tuple[Any, Any]:
    """(model on ``device`` in eval mode, data module), read as the sample and evaluate commands read a checkpoint."""
    from gen_research.commands.loading import load_model_and_data
    from gen_research.models.contract import Generates, require

    with quiet():
        model, datamodule, _ = load_model_and_data(str(experiment), str(ckpt))
    require(model, Generates, "sample")
    return model.to(device).eval(), datamodule


def sampling_keywords(model: Any, datamodule: Any, experiment: Path, ckpt: Path, device: str, num_images: int,
                      options: list[str]) -> dict[str, Any]:
    """The keywords ``sample`` passes to ``model.sample`` for the command-line ``options`` (e.g. ["--sampler", "ddim"]):
    its parser, its argument checks and the family's sampling plan."""
    from gen_research.commands.sample import build_parser, check_arguments
    from gen_research.commands.sampling_options import sampling_plan
    from gen_research.models.contract import SamplingContext

    argv = ["--config", str(experiment), "--ckpt_path", str(ckpt), "--num-images", str(num_images),
            "--batch-size", str(SAMPLE_BATCH), "--device", device, *options]
    args = build_parser().parse_args(argv)
    check_arguments(args)
    plan = sampling_plan(model, args, args.family_options, SamplingContext(num_images=num_images, device=device, datamodule=datamodule))
    if plan.per_image:
        raise ValueError(f"per-image sampling inputs {list(plan.per_image)}: not a plain sampling row")
    return dict(plan.options)


class SamplingRow:
    """One timed variant: ``num_images`` drawn in batches of ``batch`` as ``sample`` draws them; each call returns
    images/s and records the NFE of the first batch's trajectory (when ``network`` is given)."""

    def __init__(self, model: Any, keywords: dict[str, Any], num_images: int, batch: int, device: str, network: Any = None) -> None:
        self.model, self.keywords, self.num_images, self.batch, self.device, self.network = model, keywords, num_images, batch, device, network
        self.calls: list[int] = []
        self.rows_per_image: list[float] = []
        self.shape: tuple[int, ...] | None = None
        self.finite = True

    def draw(self, num_images: int, keywords: dict[str, Any], count_nfe: bool) -> None:
        import torch

        from gen_research.evaluation.sampler_grid.grid import ForwardCounter

        generator = torch.Generator(device=self.device).manual_seed(0)
        with torch.no_grad():
            for start in range(0, num_images, self.batch):
                count = min(self.batch, num_images - start)
                counter = ForwardCounter(self.network) if count_nfe and start == 0 and self.network is not None else contextlib.nullcontext()
                with counter:
                    images = self.model.sample(count, labels=None, generator=generator, **keywords)
                images = images.float().clamp(-1, 1).cpu()  # as sample's loop does (the PNG writing after it is not timed)
                if start == 0:
                    self.shape = tuple(images.shape[1:])
                    self.finite = self.finite and bool(torch.isfinite(images).all())
                if isinstance(counter, ForwardCounter):
                    self.calls.append(counter.calls)
                    self.rows_per_image.append(counter.rows / count)

    def warm_up(self) -> None:
        """One untimed batch (a diffusion model: one step), so lazy initialisation is not billed to round 1."""
        keywords = {**self.keywords, "steps": 1} if self.network is not None else self.keywords
        self.draw(min(self.batch, self.num_images), keywords, count_nfe=False)

    def __call__(self) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        self.draw(self.num_images, self.keywords, count_nfe=True)
        synchronize(self.device)
        return self.num_images / (time.perf_counter() - start)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# ---- sampling -----------------------------------------------------------------------------------------
def measure_sampling(ctx: Any, scratch: Path) -> dict[str, Any]:
    from gen_research.evaluation.sampler_grid.grid import denoising_network
    from gen_research.models.contract import sampler_table

    device = ctx.device
    num_images = 2 if ctx.quick else SAMPLING_IMAGES.get(device, SAMPLING_IMAGES["cpu"])
    one_shot_images = 4 if ctx.quick else ONE_SHOT_IMAGES.get(device, ONE_SHOT_IMAGES["cpu"])
    batch = min(SAMPLE_BATCH, num_images)
    steps = ["--steps", str(QUICK_STEPS)] if ctx.quick else []
    variants: dict[str, SamplingRow] = {}
    info: dict[str, dict[str, Any]] = {}

    ckpt = random_checkpoint(DIFFUSION, scratch / "ddpm.ckpt")
    model, datamodule = load(DIFFUSION, ckpt, device)
    defaults = model.sampling_defaults()
    samplers = [sampler for family, sampler, _ in sampler_table() if family == "ddpm"]
    for sampler in samplers:
        keywords = sampling_keywords(model, datamodule, DIFFUSION, ckpt, device, num_images, ["--sampler", sampler, *steps])
        name = f"ddpm/{sampler}"
        variants[name] = SamplingRow(model, keywords, num_images, batch, device, denoising_network(model))
        info[name] = {"experiment": DIFFUSION.name, "kind": "diffusion", "sampler": sampler,
                      "steps": int(keywords.get("steps", defaults["steps"])), "guidance_scale": defaults["guidance_scale"]}

    ckpt = random_checkpoint(GUIDED, scratch / "cfg.ckpt")
    guided, datamodule = load(GUIDED, ckpt, device)
    keywords = sampling_keywords(guided, datamodule, GUIDED, ckpt, device, num_images, steps)
    guided_defaults = guided.sampling_defaults()
    name = f"cfg/{guided_defaults['sampler']}"
    variants[name] = SamplingRow(guided, keywords, num_images, batch, device, denoising_network(guided))
    info[name] = {"experiment": GUIDED.name, "kind": "diffusion, classifier-free guidance", "sampler": guided_defaults["sampler"],
                  "steps": int(keywords.get("steps", guided_defaults["steps"])), "guidance_scale": guided_defaults["guidance_scale"]}

    for family, experiment in ONE_SHOT.items():
        ckpt = random_checkpoint(experiment, scratch / f"{family}.ckpt")
        one_shot, datamodule = load(experiment, ckpt, device)
        keywords = sampling_keywords(one_shot, datamodule, experiment, ckpt, device, one_shot_images, [])
        variants[family] = SamplingRow(one_shot, keywords, one_shot_images, min(SAMPLE_BATCH, one_shot_images), device)
        info[family] = {"experiment": experiment.name, "kind": "one network pass", "sampler": None, "steps": None, "guidance_scale": None}

    for row in variants.values():
        row.warm_up()
    timed = alternate(variants, ctx.pairs)
    rows = []
    for name, row in variants.items():
        calls = sorted(set(row.calls))
        rows.append({
            "name": name, **info[name],
            "images": row.num_images, "batch": row.batch, "image_shape": list(row.shape or ()), "finite": row.finite,
            "images_per_s": timed[name]["median"], "runs": timed[name]["runs"],
            "seconds_per_batch": row.batch / timed[name]["median"],
            # the same in every round (a stochastic sampler still takes a fixed number of steps); all kept if not
            "nfe_calls": calls[0] if len(calls) == 1 else (calls or None),
            "nfe_per_image": _median(row.rows_per_image),
        })
    default = f"ddpm/{defaults['sampler']}"
    for row in rows:
        row["vs_default_sampler"] = ratio(row["images_per_s"], timed[default]["median"]) if row["kind"].startswith("diffusion") else None
    return {"rows": rows, "default_sampler": default, "images_per_round": num_images, "one_shot_images_per_round": one_shot_images}


# ---- evaluation ---------------------------------------------------------------------------------------
def _fill_random(model: Any, seed: int) -> Any:
    """Seeded random weights in place (norm weights near 1, the rest N(0, 0.02^2)): transformers' own init of a big ViT
    takes tens of seconds here, and the values do not change the time."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if ("norm" in name and name.endswith("weight")) else 0.02 * noise)
    return model.eval()


def random_clip_folder(folder: Path, spec: dict[str, Any]) -> Path:
    from transformers import CLIPConfig, CLIPModel
    from transformers.initialization import no_init_weights

    with quiet():
        with no_init_weights():
            model = CLIPModel(CLIPConfig(**spec))
        _fill_random(model, 0).save_pretrained(folder)
    return folder


def random_dinov2_folder(folder: Path, arch: str) -> Path:
    from transformers import Dinov2Config, Dinov2Model
    from transformers.initialization import no_init_weights

    from gen_research.evaluation.extractors.dinov2 import COMMON, PUBLISHED

    with quiet():
        with no_init_weights():
            model = Dinov2Model(Dinov2Config(**COMMON, **PUBLISHED[arch]))
        _fill_random(model, 0).save_pretrained(folder)
    return folder


def build_extractors(ctx: Any, scratch: Path, image_shape: tuple[int, int, int]) -> dict[str, tuple[Any, str]]:
    """name -> (extractor, what its weights are), built through the registry as ``evaluate`` builds them."""
    from bench_eval import random_inception_weights

    from gen_research.assets import resolve_asset
    from gen_research.registry import FEATURES, load_builtins

    load_builtins()

    def registry(name: str, **kwargs: Any) -> Any:
        with quiet():
            return FEATURES.get(name)(image_shape=image_shape, **kwargs)

    extractors: dict[str, tuple[Any, str]] = {
        "pixels": (registry("pixels"), "none"),
        "classifier": (registry("classifier", weights=resolve_asset(CLASSIFIER)), "assets/classifier-mnist5k.ckpt"),
    }
    inception_dir = scratch / "inception"
    inception_dir.mkdir()
    with quiet():
        weights = random_inception_weights(inception_dir)
    extractors["inception"] = (registry("inception", weights=str(weights), verify_hash=False), "random (FID InceptionV3 architecture)")
    clip = random_clip_folder(scratch / ("tiny" if ctx.quick else "vitb32"), CLIP_TINY if ctx.quick else CLIP_VITB32)  # name clip-<folder>
    extractors["clip-vitb32"] = (registry("clip", weights=str(clip)), "random (tiny CLIP: --quick)" if ctx.quick else "random (ViT-B/32 architecture)")
    archs = ("vits14",) if ctx.quick else ("vits14", "vitl14")
    for arch in archs:
        folder = random_dinov2_folder(scratch / f"dinov2-{arch}", arch)
        extractors[f"dinov2-{arch}"] = (registry("dinov2", weights=str(folder), verify_hash=False), f"random (ViT-{arch[3].upper()}/14 architecture)")
    return extractors


class ExtractorRow:
    """One timed variant: ``batches`` (CPU tensors from the data) through ``function``; returns images/s."""

    def __init__(self, function: Callable[[Any], Any], batches: list[Any], device: str) -> None:
        self.function, self.batches, self.device = function, batches, device
        self.num_images = sum(len(b) for b in batches)
        self.out_shape: tuple[int, ...] | None = None
        self.finite = True

    def warm_up(self) -> None:
        import torch

        out = self.function(self.batches[0][: min(8, len(self.batches[0]))])
        tensor = out["features"] if isinstance(out, dict) else out
        self.out_shape = tuple(tensor.shape[1:])
        self.finite = bool(torch.isfinite(tensor).all())

    def __call__(self) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        for batch in self.batches:
            self.function(batch)
        synchronize(self.device)
        return self.num_images / (time.perf_counter() - start)


def network_input(name: str, extractor: Any, image_shape: tuple[int, int, int]) -> str:
    """The image size the network reads (after the extractor's resize and grey -> RGB), for the table."""
    c, h, w = image_shape
    if name == "pixels":
        return f"{c}x{h}x{w} (no network)"
    if name == "classifier":
        return "x".join(map(str, extractor.image_shape))
    if name == "inception":
        return "3x299x299"
    if name.startswith("clip"):
        crop = extractor.preprocess.crop
        return f"3x{crop[0]}x{crop[1]}" if crop else f"3x{extractor.preprocess.resize}"
    return "3x224x224"  # dinov2 (its IMAGE_SIZE)


def measure_evaluation(ctx: Any, scratch: Path) -> dict[str, Any]:
    import torch

    from gen_research.evaluation.evaluator import Evaluator
    from gen_research.evaluation.extractors.resize import resize_images
    from gen_research.evaluation.feeder import Feeder
    from gen_research.evaluation.sources import reference_image_shape

    device = ctx.device
    ckpt = random_checkpoint(QUICKSTART, scratch / "quickstart.ckpt")
    model, datamodule = load(QUICKSTART, ckpt, device)
    datamodule.setup("validate")
    split = datamodule.val_set
    image_shape = tuple(reference_image_shape(split))
    batch = EXTRACTOR_BATCH.get(device, EXTRACTOR_BATCH["cpu"])
    counts = EXTRACTOR_IMAGES.get(device, EXTRACTOR_IMAGES["cpu"])
    extractors = build_extractors(ctx, scratch, image_shape)

    def batches(num_images: int) -> list[Any]:
        """``num_images`` validation images in batches (the split repeated when it holds fewer)."""
        size = min(batch, num_images)
        feeder = Feeder(model, split, min(len(split), num_images), 0, size)  # the evaluate command's reference batches
        pool = torch.cat(list(feeder.reference_batches(with_labels=False)))
        repeats = math.ceil(num_images / len(pool))
        images = pool.repeat(repeats, 1, 1, 1)[:num_images]
        return list(images.split(size))

    variants: dict[str, ExtractorRow] = {}
    info: dict[str, dict[str, Any]] = {}
    for name, (extractor, weights) in extractors.items():
        evaluator = Evaluator(extractor, ["fid"], device=device)
        images = QUICK_EXTRACTOR_IMAGES if ctx.quick else counts[name]
        variants[name] = ExtractorRow(evaluator.extract, batches(images), device)
        info[name] = {"extractor": extractor.name, "weights": weights, "resize_mode": getattr(extractor, "resize_mode", None),
                      "network_input": network_input(name, extractor, image_shape),
                      "parameters": sum(p.numel() for p in extractor.parameters())}
    images = QUICK_EXTRACTOR_IMAGES if ctx.quick else counts["clean-resize-224"]
    variants["clean-resize-224"] = ExtractorRow(lambda x: resize_images(x.to(device), (224, 224), "clean"), batches(images), device)
    info["clean-resize-224"] = {"extractor": "resize only (no network)", "weights": None, "resize_mode": "clean",
                                "network_input": "1x224x224", "parameters": 0}
    for row in variants.values():
        row.warm_up()
    timed = alternate(variants, ctx.pairs)
    rows = [{"name": name, **info[name], "input": "x".join(map(str, image_shape)), "images": row.num_images,
             "batch": len(row.batches[0]), "feature_shape": list(row.out_shape or ()), "finite": row.finite,
             "images_per_s": timed[name]["median"], "runs": timed[name]["runs"], "ms_per_image": 1000.0 / timed[name]["median"]}
            for name, row in variants.items()]
    return {"rows": rows, "images": "validation split of experiments/quickstart.yaml's data (real MNIST, 1x28x28)",
            "end_to_end": measure_end_to_end(ctx, ckpt, scratch)}


def measure_end_to_end(ctx: Any, ckpt: Path, scratch: Path) -> dict[str, Any]:
    """``evaluate`` of the quickstart protocol, in-process (the CLI start-up excluded): seconds per run, ``ctx.pairs`` runs."""
    from gen_research.commands.evaluate import evaluate_command

    sizes = QUICK_END_TO_END if ctx.quick else END_TO_END
    runs, results = [], {}
    for index in range(ctx.pairs):
        out = scratch / f"evaluate-{index}.json"
        argv = ["--config", str(QUICKSTART), "--ckpt_path", str(ckpt), "--split", "val", "--features", "classifier",
                "--feature-weights", CLASSIFIER, "--metrics", END_TO_END_METRICS, "--num-images", str(sizes["num_images"]),
                "--kid-subset-size", str(sizes["kid_subset_size"]), "--kid-subsets", str(sizes["kid_subsets"]),
                "--no-cache", "--device", ctx.device, "--json", str(out)]
        synchronize(ctx.device)
        start = time.perf_counter()
        with quiet():  # its table and progress bars
            code = evaluate_command(argv)
        synchronize(ctx.device)
        runs.append(time.perf_counter() - start)
        if code != 0:
            raise RuntimeError(f"evaluate exited {code}")
        results = {k: v for k, v in json.loads(out.read_text()).items() if k != "provenance"}
    seconds = statistics.median(runs)
    return {"command": "evaluate --config experiments/quickstart.yaml --ckpt_path <random VAE> --split val --features classifier "
                       f"--feature-weights {CLASSIFIER} --metrics {END_TO_END_METRICS} --num-images {sizes['num_images']} "
                       f"--kid-subset-size {sizes['kid_subset_size']} --kid-subsets {sizes['kid_subsets']} --no-cache",
            "num_generated": sizes["num_images"], "num_real": sizes["num_images"], "seconds": seconds, "runs": runs,
            "images_per_s": 2 * sizes["num_images"] / seconds, "metrics": results}


# ---- the section --------------------------------------------------------------------------------------
def run(ctx: Any) -> dict[str, Any]:
    import torch

    ctx.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="throughput-", dir=ctx.out))
    try:
        with torch.no_grad():
            sampling = measure_sampling(ctx, scratch)
        evaluation = measure_evaluation(ctx, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # checkpoints and ~2 GB of random ViT folders
    return {"device": ctx.device, "quick": ctx.quick, "pairs": ctx.pairs, "threads": torch.get_num_threads(),
            "sampling": sampling, "evaluation": evaluation}


def _cell(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def tables(result: dict[str, Any], machine: dict[str, Any]) -> dict[str, str]:
    suffix = "cuda" if str(machine.get("device", "cpu")).startswith("cuda") else "cpu"
    head = machine_line(machine)
    sampling = result["sampling"]
    rows = []
    for row in sampling["rows"]:
        rows.append([row["experiment"], row["sampler"] or row["name"], row["steps"], row["guidance_scale"], _cell(row["nfe_calls"]),
                     _cell(row["nfe_per_image"]), row["batch"], float(row["images_per_s"]), float(row["seconds_per_batch"]),
                     _cell(row["vs_default_sampler"])])
    sampling_md = "\n".join([
        head, "",
        f"`sample` throughput, in-process (the command's parser, sampling plan and `model.sample` loop; PNG writing not timed), "
        f"randomly initialised models (speed does not depend on the weights), fp32, {sampling['images_per_round']} images per "
        f"diffusion round and {sampling['one_shot_images_per_round']} per one-shot round, medians of {result['pairs']} rounds "
        "alternated round-robin. NFE: UNet calls of one trajectory, counted by a forward hook; NFE per image counts a "
        "classifier-free-guidance call twice (its doubled batch).", "",
        markdown_table(["experiment", "sampler", "steps", "guidance", "UNet calls (NFE)", "NFE per image", "batch", "images/s",
                        "s per batch", f"speed vs {sampling['default_sampler'].split('/')[1]}"], rows),
    ])
    evaluation = result["evaluation"]
    rows = [[row["extractor"], row["weights"], f"{row['input']} -> {row['network_input']}", row["resize_mode"] or "none",
             row["batch"], row["images"], float(row["images_per_s"]), float(row["ms_per_image"])] for row in evaluation["rows"]]
    e2e = evaluation["end_to_end"]
    evaluation_md = "\n".join([
        head, "",
        "`evaluate` feature throughput: real MNIST validation images (1x28x28) through `Evaluator.extract` (to the device as "
        "float32, the extractor's resize, its network), extractors built by the registry as `evaluate` builds them, default "
        f"resize modes, medians of {result['pairs']} rounds alternated round-robin. Weights marked random have the published "
        "architecture with random values (the real files cannot be downloaded here): the times are realistic, the features "
        "are not.", "",
        markdown_table(["extractor", "weights", "input -> network", "resize mode", "batch", "images per round", "images/s",
                        "ms per image"], rows),
        "",
        f"End to end, `{e2e['command']}` in-process ({e2e['num_generated']} samples vs {e2e['num_real']} real images): "
        f"median {e2e['seconds']:.3g} s over {len(e2e['runs'])} runs (model and data loading, sampling, both feature passes, metrics).",
    ])
    return {f"sampling-{suffix}": sampling_md, f"evaluation-throughput-{suffix}": evaluation_md}
