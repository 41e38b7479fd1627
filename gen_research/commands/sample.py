"""``python -m gen_research sample``: draw images from a checkpoint (EMA weights when EMA was on).

    sample --config EXP --ckpt_path CKPT [--num-images 64 --seed 0 --out DIR]
           [--temperature T]                                   models with a prior (vae)
           [--sampler NAME --steps N --eta E --guidance-scale W --class K]   diffusion models
           [--classifier-ckpt CKPT --classifier-scale S]       classifier guidance (noisy_classifier)
           [--input test|val|train|DIR] [--mask center|left|right|top|bottom|PNG] [--strength S]
                                                               inpainting (--mask) and img2img/SDEdit (--strength)

Writes one PNG per image and ``grid.png`` into a new folder; the same seed gives the same images. Options
the model's ``sample()`` does not take are refused, so a typo never silently changes nothing.
"""

from __future__ import annotations

import argparse
import inspect
import math
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError, OneLineArgumentParser

# command-line option -> keyword of model.sample()
SAMPLE_OPTIONS = {"temperature": "temperature", "sampler": "sampler", "steps": "steps", "eta": "eta", "guidance_scale": "guidance_scale",
                  "classifier_scale": "classifier_scale", "strength": "strength"}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m gen_research sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML the checkpoint was trained with")
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", required=True)
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", help="output folder (new or empty); default runs/<experiment>/<timestamp>-sample")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--temperature", type=float, help="scale of the prior noise (vae)")
    parser.add_argument("--sampler", help="diffusion sampler (python -m gen_research list samplers)")
    parser.add_argument("--steps", type=int, help="diffusion sampling steps")
    parser.add_argument("--eta", type=float, help="DDIM eta (0: deterministic)")
    parser.add_argument("--guidance-scale", dest="guidance_scale", type=float, help="classifier-free guidance scale")
    parser.add_argument("--class", dest="class_label", type=int, help="draw only this class (class-conditional models or classifier guidance)")
    guidance = parser.add_argument_group("classifier guidance (Dhariwal & Nichol 2021)")
    guidance.add_argument("--classifier-ckpt", dest="classifier_ckpt", help="noisy_classifier checkpoint trained on the model's noise schedule")
    guidance.add_argument("--classifier-scale", dest="classifier_scale", type=float, help="classifier guidance scale s (default 1)")
    modes = parser.add_argument_group("inpainting and img2img")
    modes.add_argument("--input", help="images to complete or transform: a data split (train, val, test) or a folder")
    modes.add_argument("--mask", help="inpainting: built-in region to generate (center, left, right, top, bottom) or a PNG, white = generate")
    modes.add_argument("--strength", type=float, help="img2img / SDEdit: 0 < S <= 1, the fraction of steps run from the noised input")
    return parser


def sample_keywords(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, checked against what ``model.sample`` accepts."""
    accepted = set(inspect.signature(model.sample).parameters)
    keywords = {}
    for option, keyword in SAMPLE_OPTIONS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if keyword not in accepted:
            takes = sorted(accepted & set(SAMPLE_OPTIONS.values())) or ["no sampling options"]
            raise GenResearchError(f"--{option.replace('_', '-')} does not apply to {type(model).__name__}; its sample() takes: {', '.join(takes)}")
        keywords[keyword] = value
    train_steps = (getattr(model, "hparams", None) or {}).get("num_train_timesteps")
    if args.steps is not None and train_steps and args.steps > int(train_steps):
        raise GenResearchError(f"--steps {args.steps} is more than the {int(train_steps)} noise levels the model was trained on; pass --steps <= {int(train_steps)}")
    if "sampler" in keywords:  # an unknown name fails now, not inside the sampling loop
        from gen_research.sampling.diffusion import check_scheduler_name

        check_scheduler_name(keywords["sampler"])
    if args.guidance_scale is not None and getattr(model, "is_diffusion", False) and not getattr(model, "num_classes", None):
        raise GenResearchError("--guidance-scale (classifier-free guidance) needs a class-conditional model; use --classifier-ckpt for an unconditional one")
    if args.classifier_scale is not None and not args.classifier_ckpt:
        raise GenResearchError("--classifier-scale needs --classifier-ckpt (a noisy_classifier checkpoint)")
    if bool(args.mask or args.strength is not None) != bool(args.input):
        raise GenResearchError("--mask (inpainting) and --strength (img2img) need --input, and --input needs one of them")
    for option, keyword in (("classifier_ckpt", "classifier"), ("mask", "known_mask"), ("input", "init_images")):
        if getattr(args, option) and keyword not in accepted:
            raise GenResearchError(f"--{option.replace('_', '-')} does not apply to {type(model).__name__}; it needs a diffusion model")
    if args.class_label is not None:
        num_classes = getattr(model, "num_classes", None) or getattr(getattr(model, "hparams", {}), "get", lambda *_: None)("num_classes")
        if args.classifier_ckpt:
            num_classes = None  # checked against the classifier once it is loaded
        elif "labels" not in accepted or not num_classes:
            raise GenResearchError(f"--class needs a class-conditional model; {type(model).__name__} samples without classes")
        if num_classes and not 0 <= args.class_label < int(num_classes):
            raise GenResearchError(f"--class {args.class_label} is not a class of this model (0..{int(num_classes) - 1})")
    return keywords


def output_folder(args: argparse.Namespace) -> Path:
    if args.out:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise GenResearchError(f"--out {out} is not empty; pass a new folder (samples are never written over others)")
        out.mkdir(parents=True, exist_ok=True)
        return out
    from gen_research.training.run_folder import new_run_dir

    return new_run_dir(Path("runs"), Path(args.config).stem, "sample")


def check_arguments(args: argparse.Namespace) -> None:
    """Numbers that cannot work, refused before the checkpoint is read or any folder is made."""
    for option, value, lowest in (("--num-images", args.num_images, 1), ("--batch-size", args.batch_size, 1), ("--steps", args.steps, 1)):
        if value is not None and value < lowest:
            raise GenResearchError(f"{option} {value}: must be at least {lowest}; pass a positive {option}")
    for option, value in (("--temperature", args.temperature), ("--eta", args.eta), ("--guidance-scale", args.guidance_scale),
                          ("--classifier-scale", args.classifier_scale)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise GenResearchError(f"{option} {value}: must be a finite number >= 0")
    if args.strength is not None and not 0 < args.strength <= 1:
        raise GenResearchError(f"--strength {args.strength}: must be in (0, 1], the fraction of the sampling steps run")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise GenResearchError(f"--out {args.out} is a file; pass a new or empty folder")


def sample_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_arguments(args)
    import torch

    from gen_research.commands.evaluate import load_model_and_data
    from gen_research.registry import load_builtins

    load_builtins()
    model, datamodule, _ = load_model_and_data(args.config, args.ckpt_path)
    if not getattr(model, "has_prior", False):
        raise GenResearchError(f"{type(model).__name__} cannot generate new images (no prior); sample a vae or a diffusion model")
    keywords = sample_keywords(model, args)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = model.to(device).eval()
    keywords.update(_mode_inputs(args, model, datamodule, device))
    inputs = keywords.pop("init_images", None)
    from gen_research.training import run_folder

    existed, created_before = bool(args.out) and Path(args.out).is_dir(), len(run_folder.CREATED_RUN_DIRS)
    out = output_folder(args)
    try:
        return _sample_into(out, args, model, keywords, inputs, device)
    except BaseException:  # a failed run leaves no empty folder behind
        run_folder.remove_empty_run_dirs(since=created_before)
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _sample_into(out: Path, args: argparse.Namespace, model: Any, keywords: dict[str, Any], inputs: Any, device: str) -> int:
    import torch
    from tqdm import tqdm

    from gen_research.files.image_grid import save_grid

    generator = torch.Generator(device=device).manual_seed(args.seed)
    images = []
    with torch.no_grad():
        for start in tqdm(range(0, args.num_images, args.batch_size), desc="sampling", unit="batch"):
            count = min(args.batch_size, args.num_images - start)
            extra = dict(keywords)
            if args.class_label is not None:
                extra["labels"] = torch.full((count,), args.class_label, device=device, dtype=torch.long)
            if inputs is not None:
                extra["init_images"] = inputs[start : start + count]
            images.append(model.sample(count, generator=generator, **extra).float().clamp(-1, 1).cpu())
    images = torch.cat(images)
    if inputs is not None:  # what the model was given: masked-out pixels grey
        shown = inputs if "known_mask" not in keywords else inputs * keywords["known_mask"]
        save_grid(shown.cpu(), out / "input.png", nrow=int(math.ceil(math.sqrt(len(images)))))
    for index, image in enumerate(images):
        save_grid(image[None], out / f"{index:05d}.png", nrow=1, padding=0)
    save_grid(images, out / "grid.png", nrow=int(math.ceil(math.sqrt(len(images)))))
    print(f"{len(images)} images and grid.png in {out}" + (" (inputs in input.png)" if inputs is not None else ""))
    return 0


def _mode_inputs(args: argparse.Namespace, model: Any, datamodule: Any, device: str) -> dict[str, Any]:
    """model.sample keywords of classifier guidance, inpainting and img2img, loaded and checked."""
    from gen_research.sampling.inputs import input_images, known_mask

    keywords: dict[str, Any] = {}
    if args.classifier_ckpt:
        keywords["classifier"] = _load_classifier(args.classifier_ckpt, model)
        classes = int(keywords["classifier"].hparams.num_classes)
        if args.class_label is not None and not 0 <= args.class_label < classes:
            raise GenResearchError(f"--class {args.class_label} is not a class of the classifier (0..{classes - 1})")
    if args.strength is not None:  # a strength that leaves no step fails here, before any sampling
        from gen_research.sampling.diffusion import start_index

        start_index(args.steps or model.hparams.sampling_steps, args.strength)
    if args.input:
        keywords["init_images"] = input_images(args.input, args.num_images, datamodule, model.image_shape).to(device)
    if args.mask:
        keywords["known_mask"] = known_mask(args.mask, model.image_shape).to(device)
    return keywords


def _load_classifier(path: str, model: Any) -> Any:
    from gen_research.models.diffusion import NoisyClassifier
    from gen_research.training.run_folder import read_checkpoint

    saved = (read_checkpoint(Path(path)).get("hyper_parameters") or {}).get("_class_path", "")
    if saved and not saved.endswith("NoisyClassifier"):
        raise GenResearchError(f"--classifier-ckpt {path} holds a {saved.rpartition('.')[2]}; classifier guidance needs a noisy_classifier checkpoint")
    classifier = NoisyClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    if tuple(classifier.hparams.image_shape) != tuple(model.image_shape):
        raise GenResearchError(f"--classifier-ckpt {path} classifies {tuple(classifier.hparams.image_shape)} images; the model makes {tuple(model.image_shape)}")
    return classifier
