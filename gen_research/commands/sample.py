"""``python -m gen_research sample``: draw images from a checkpoint (EMA weights when EMA was on).

    sample --config EXP --ckpt_path CKPT [--num-images 64 --seed 0 --out DIR] [--class K] [family options]
    sample ... --grid interpolation [--rows 8 --path-steps 10]        (a latent prior: z; a StyleGAN: W)
    sample ... --grid style-mixing [--rows 5 --columns 6 --crossover K]   (a StyleGAN)
    sample ... --grid arithmetic --arithmetic 7-1+1 [--columns 8 --pool 2000 --classifier CKPT]

Writes one PNG per image and ``grid.png`` (``interpolation.png``, ``style-mixing.png``, ``arithmetic.png`` plus
``arithmetic.json`` for the latent grids, gen_research/commands/latent_grids.py) into a new folder; the same seed
gives the same images. The family options (``--temperature`` of a vae, ``--sampler --steps --guidance-scale ...``
of ddpm, a GAN's truncation) are the ones each family declares (gen_research/models/contract.py, ``SAMPLING_OPTIONS``): ``--help`` lists them per
family, and an option the checkpoint's family does not declare is refused, so a typo never silently changes nothing.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError, OneLineArgumentParser


GRIDS = ("samples", "interpolation", "style-mixing", "arithmetic")  # drawn by gen_research/commands/latent_grids.py


def build_parser() -> argparse.ArgumentParser:
    from gen_research.commands.sampling_options import add_family_options

    parser = OneLineArgumentParser(prog="python -m gen_research sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML the checkpoint was trained with")
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", required=True)
    parser.add_argument("--num-images", type=int, default=64, help="images of --grid samples (the latent grids take --rows/--columns)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", help="output folder (new or empty); default runs/<experiment>/<timestamp>-sample")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--class", dest="class_label", type=int, help="draw only this class (class-conditional models, or a family option such as classifier guidance)")
    parser.set_defaults(family_options=add_family_options(parser))  # every family's declared options
    grids = parser.add_argument_group("latent grids (--grid other than samples)")
    grids.add_argument("--grid", choices=GRIDS, default="samples", help="what to draw (default samples)")
    grids.add_argument("--rows", type=int, help="interpolation: paths (8); style-mixing: row sources (5)")
    grids.add_argument("--path-steps", dest="path_steps", type=int, help="interpolation: images per path (10)")
    grids.add_argument("--columns", type=int, help="style-mixing: column sources (6); arithmetic: images per row (8)")
    grids.add_argument("--crossover", type=int, help="style-mixing: first layer taken from the column (default: the model's)")
    grids.add_argument("--arithmetic", help="arithmetic: A-B+C with class numbers, e.g. 7-1+1")
    grids.add_argument("--pool", type=int, help="arithmetic: latents drawn and labelled by the classifier (2000)")
    grids.add_argument("--classifier", help="arithmetic: classifier checkpoint that labels samples (default package://classifier-mnist5k.ckpt)")
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
    for option, value in (("--num-images", args.num_images), ("--batch-size", args.batch_size), ("--rows", args.rows),
                          ("--columns", args.columns), ("--pool", args.pool)):
        if value is not None and value < 1:
            raise GenResearchError(f"{option} {value}: must be at least 1; pass a positive {option}")
    applies = {"rows": ("interpolation", "style-mixing"), "path_steps": ("interpolation",), "columns": ("style-mixing", "arithmetic"),
               "crossover": ("style-mixing",), "pool": ("arithmetic",), "classifier": ("arithmetic",)}
    for name, grids in applies.items():  # a layout flag the chosen grid does not use is refused, not ignored
        if getattr(args, name) is not None and args.grid not in grids:
            raise GenResearchError(f"--{name.replace('_', '-')} applies to --grid {' / '.join(grids)}; drop it for --grid {args.grid}")
    if args.path_steps is not None and args.path_steps < 2:
        raise GenResearchError(f"--path-steps {args.path_steps}: a path needs at least 2 images")
    if (args.grid == "arithmetic") != (args.arithmetic is not None):
        raise GenResearchError("--grid arithmetic and --arithmetic A-B+C go together; pass both or neither")
    if args.arithmetic is not None:
        from gen_research.commands.latent_grids import Arithmetic

        Arithmetic.parse(args.arithmetic)
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
    if args.grid != "samples":
        from gen_research.commands.latent_grids import check_grid_model

        if args.class_label is not None:
            raise GenResearchError(f"--class applies to --grid samples only; drop it for --grid {args.grid}")
        check_grid_model(model, args.grid, plan.options)
    from gen_research.training import run_folder

    existed, created_before = bool(args.out) and Path(args.out).is_dir(), len(run_folder.CREATED_RUN_DIRS)
    out = output_folder(args)
    try:
        if args.grid != "samples":
            return _latent_grid_into(out, args, model, plan, device)
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


def _latent_grid_into(out: Path, args: argparse.Namespace, model: Any, plan: Any, device: str) -> int:
    import json

    import torch

    from gen_research.commands import latent_grids
    from gen_research.files.image_grid import save_grid

    generator = torch.Generator(device=device).manual_seed(args.seed)
    summary = None
    with torch.no_grad():
        if args.grid == "interpolation":
            nrow = args.path_steps or 10
            images = latent_grids.interpolation_grid(model, args.rows or 8, nrow, generator, plan.options)
        elif args.grid == "style-mixing":
            nrow = (args.columns or 6) + 1
            images = latent_grids.style_mixing_grid(model, args.rows or 5, nrow - 1, args.crossover, generator, plan.options)
        else:
            nrow = args.columns or 8
            classify = _classifier(args.classifier or "package://classifier-mnist5k.ckpt", device)
            images, summary = latent_grids.latent_arithmetic(model, latent_grids.Arithmetic.parse(args.arithmetic), classify,
                                                             nrow, args.pool or 2000, generator, plan.options, args.batch_size)
    images = images.float().clamp(-1, 1).cpu()
    for index, image in enumerate(images):
        save_grid(image[None], out / f"{index:05d}.png", nrow=1, padding=0)
    save_grid(images, out / f"{args.grid}.png", nrow=nrow)
    message = f"{len(images)} images and {args.grid}.png in {out}"
    if summary is not None:
        (out / "arithmetic.json").write_text(json.dumps(summary, indent=2) + "\n")
        plus, minus, base = summary["arithmetic"].replace("+", "-").split("-")
        message += (f"; rows: {plus}s, {minus}s, {base}s, then {base}s + mean({plus}s) - mean({minus}s); the classifier reads "
                    f"{summary['results_read_as_plus']:.0%} of those as {plus}, {summary['results_read_as_base']:.0%} as {base} (arithmetic.json)")
    print(message)
    return 0


def _classifier(weights: str, device: str) -> Any:
    """``images -> logits`` of the classifier checkpoint ``weights``; images of another size than the classifier's
    are resized to it (they are only labelled, not measured)."""
    from gen_research.assets import resolve_asset
    from gen_research.registry import FEATURES

    extractor_class = FEATURES.get("classifier")
    extractors: dict[tuple[int, ...], Any] = {}

    def classify(images: Any) -> Any:
        shape = tuple(images.shape[1:])
        if shape not in extractors:
            extractor = extractor_class(weights=resolve_asset(weights))
            if shape[1:] != tuple(extractor.image_shape[1:]):
                extractor = extractor_class(weights=resolve_asset(weights), resize=extractor.image_shape[1])
            extractors[shape] = extractor.to(device)
        return extractors[shape](images)["logits"]

    return classify
