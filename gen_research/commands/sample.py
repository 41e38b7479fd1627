"""``python -m gen_research sample``: draw images from a checkpoint (EMA weights when EMA was on).

    sample --config EXP --ckpt_path CKPT [--num-images 64 --seed 0 --out DIR] [--class K] [family options]

Writes one PNG per image and ``grid.png`` into a new folder; the same seed gives the same images. The family
options (``--temperature`` of a vae, ``--sampler --steps --guidance-scale ...`` of ddpm, a GAN's truncation) are
the ones each family declares (gen_research/models/contract.py, ``SAMPLING_OPTIONS``): ``--help`` lists them per
family, and an option the checkpoint's family does not declare is refused, so a typo never silently changes nothing.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError, OneLineArgumentParser


def build_parser() -> argparse.ArgumentParser:
    from gen_research.commands.sampling_options import add_family_options

    parser = OneLineArgumentParser(prog="python -m gen_research sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML the checkpoint was trained with")
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", required=True)
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", help="output folder (new or empty); default runs/<experiment>/<timestamp>-sample")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--class", dest="class_label", type=int, help="draw only this class (class-conditional models, or a family option such as classifier guidance)")
    parser.set_defaults(family_options=add_family_options(parser))  # every family's declared options
    return parser


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
    for option, value in (("--num-images", args.num_images), ("--batch-size", args.batch_size)):
        if value < 1:
            raise GenResearchError(f"{option} {value}: must be at least 1; pass a positive {option}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise GenResearchError(f"--out {args.out} is a file; pass a new or empty folder")
    from gen_research.commands.sampling_options import check_given_values

    check_given_values(args, args.family_options)  # each value alone, before the checkpoint is read


def sample_command(argv: list[str]) -> int:
    from gen_research.commands.sampling_options import register_experiment_families

    register_experiment_families(argv)  # a family registered by the experiment's imports: brings its options
    args = build_parser().parse_args(argv)
    check_arguments(args)
    import torch

    from gen_research.commands.loading import load_model_and_data
    from gen_research.commands.sampling_options import sampling_plan
    from gen_research.models.contract import Generates, SamplingContext, require

    model, datamodule, _ = load_model_and_data(args.config, args.ckpt_path)
    require(model, Generates, "sample")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    context = SamplingContext(num_images=args.num_images, device=device, datamodule=datamodule, class_label=args.class_label)
    model = model.to(device).eval()
    plan = sampling_plan(model, args, args.family_options, context)  # the family's declarations, rules and inputs
    from gen_research.training import run_folder

    existed, created_before = bool(args.out) and Path(args.out).is_dir(), len(run_folder.CREATED_RUN_DIRS)
    out = output_folder(args)
    try:
        return _sample_into(out, args, model, plan, device)
    except BaseException:  # a failed run leaves no empty folder behind
        run_folder.remove_empty_run_dirs(since=created_before)
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _sample_into(out: Path, args: argparse.Namespace, model: Any, plan: Any, device: str) -> int:
    import torch
    from tqdm import tqdm

    from gen_research.files.image_grid import save_grid

    generator = torch.Generator(device=device).manual_seed(args.seed)
    images = []
    with torch.no_grad():
        for start in tqdm(range(0, args.num_images, args.batch_size), desc="sampling", unit="batch"):
            count = min(args.batch_size, args.num_images - start)
            labels = None
            if args.class_label is not None:
                labels = torch.full((count,), args.class_label, device=device, dtype=torch.long)
            per_image = {name: values[start : start + count] for name, values in plan.per_image.items()}
            images.append(model.sample(count, labels=labels, generator=generator, **plan.options, **per_image).float().clamp(-1, 1).cpu())
    images = torch.cat(images)
    nrow = int(math.ceil(math.sqrt(len(images))))
    if plan.shown_inputs is not None:  # what the model was given
        save_grid(plan.shown_inputs.cpu(), out / "input.png", nrow=nrow)
    for index, image in enumerate(images):
        save_grid(image[None], out / f"{index:05d}.png", nrow=1, padding=0)
    save_grid(images, out / "grid.png", nrow=nrow)
    print(f"{len(images)} images and grid.png in {out}" + (" (inputs in input.png)" if plan.shown_inputs is not None else ""))
    return 0
