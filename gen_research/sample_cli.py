"""``python -m gen_research sample``: draw images from a checkpoint (EMA weights when EMA was on).

    sample --config EXP --ckpt_path CKPT [--num-images 64 --seed 0 --out DIR]
           [--temperature T]                                   models with a prior (vae)
           [--sampler NAME --steps N --eta E --guidance-scale W --class K]   diffusion models

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
SAMPLE_OPTIONS = {"temperature": "temperature", "sampler": "sampler", "steps": "steps", "eta": "eta", "guidance_scale": "guidance_scale"}


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
    parser.add_argument("--class", dest="class_label", type=int, help="draw only this class (class-conditional models)")
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
    if args.class_label is not None:
        num_classes = getattr(model, "num_classes", None) or getattr(getattr(model, "hparams", {}), "get", lambda *_: None)("num_classes")
        if "labels" not in accepted or not num_classes:
            raise GenResearchError(f"--class needs a class-conditional model; {type(model).__name__} samples without classes")
        if not 0 <= args.class_label < int(num_classes):
            raise GenResearchError(f"--class {args.class_label} is not a class of this model (0..{int(num_classes) - 1})")
    return keywords


def output_folder(args: argparse.Namespace) -> Path:
    if args.out:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise GenResearchError(f"--out {out} is not empty; pass a new folder (samples are never written over others)")
        out.mkdir(parents=True, exist_ok=True)
        return out
    from gen_research.run_folder import new_run_dir

    return new_run_dir(Path("runs"), Path(args.config).stem, "sample")


def sample_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.num_images < 1:
        raise GenResearchError("--num-images must be at least 1")
    import torch
    from tqdm import tqdm

    from gen_research.callbacks.images import save_grid
    from gen_research.evaluate_cli import load_model_and_data
    from gen_research.registry import load_builtins

    load_builtins()
    model, _, _ = load_model_and_data(args.config, args.ckpt_path)
    if not getattr(model, "has_prior", False):
        raise GenResearchError(f"{type(model).__name__} cannot generate new images (no prior); sample a vae or a diffusion model")
    keywords = sample_keywords(model, args)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = model.to(device).eval()
    out = output_folder(args)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    images = []
    with torch.no_grad():
        for start in tqdm(range(0, args.num_images, args.batch_size), desc="sampling", unit="batch"):
            count = min(args.batch_size, args.num_images - start)
            extra = dict(keywords)
            if args.class_label is not None:
                extra["labels"] = torch.full((count,), args.class_label, device=device, dtype=torch.long)
            images.append(model.sample(count, generator=generator, **extra).float().clamp(-1, 1).cpu())
    images = torch.cat(images)
    for index, image in enumerate(images):
        save_grid(image[None], out / f"{index:05d}.png", nrow=1, padding=0)
    save_grid(images, out / "grid.png", nrow=int(math.ceil(math.sqrt(len(images)))))
    print(f"{len(images)} images and grid.png in {out}")
    return 0
