"""``python -m gen_research translate``: a translator checkpoint applied to your own images, at their own size.

    translate --config EXP --ckpt_path CKPT --input DIR_OR_IMAGE [--out DIR]
        [--direction AtoB|BtoA] [--target-domain K|NAME|all] [--tile N [--overlap M]] [--targets DIR]
        [--batch-size B] [--device auto|cpu|cuda]

Reads every image of --input (a file, or a folder searched recursively, in sorted order) in the model's mode
(grey for a 1-channel model, RGB for 3), translates it whole or in overlapping tiles of --tile pixels blended
without seams (gen_research/sampling/tiling.py; --overlap defaults to N // 4; the tiled result equals the whole
one when overlap // 4 covers the network's receptive radius and the network uses no image-wide statistics such
as instance norm), and writes into a new or empty folder:

- ``<relative path>.png`` per input (``<relative path>_<domain>.png`` for each domain of --target-domain all);
- ``<relative path>_grid.png``: input | output(s) | target (the image of the same relative name under --targets);
- ``grid.png``: every input's row, when all inputs have the same size.

Which translation: a one-direction model (Pix2Pix) translates the way it was trained (--direction AtoB or
nothing); a model with domains needs --direction XtoY (into domain Y, e.g. CycleGAN's BtoA) or --target-domain
(an id, a name, or ``all``: StarGAN's one-row-per-input figure). Domains are sent as int64 ids: a multi-label
model (float attribute vectors, StarGAN on CelebA attributes) cannot be driven by this command.

The model always runs in eval mode without gradients, so the same input gives the same output. (The reference's
test.py runs pix2pix with dropout and batch statistics unless --eval; we always evaluate.)
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError, OneLineArgumentParser


@dataclass(frozen=True)
class InputImage:
    path: Path
    relative: Path  # relative to --input (its file name for a single file): names the outputs
    size: tuple[int, int]  # (height, width)
    target: Path | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m gen_research translate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML the checkpoint was trained with")
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", required=True)
    parser.add_argument("--input", required=True, help="an image file, or a folder of images (searched recursively)")
    parser.add_argument("--out", help="output folder (new or empty); default runs/<experiment>/<timestamp>-translate")
    parser.add_argument("--direction", help="XtoY: translate into domain Y (AtoB, BtoA); a one-direction model takes only AtoB")
    parser.add_argument("--target-domain", dest="target_domain", help="a domain id, a domain name, or all (one output per domain)")
    parser.add_argument("--tile", type=int, help="translate in tiles of N x N pixels (images larger than N on a side)")
    parser.add_argument("--overlap", type=int, help="pixels the tiles overlap by (default N // 4; at least 4 when tiling)")
    parser.add_argument("--targets", help="folder of ground-truth images with the inputs' relative names, shown in the grids")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=16, help="images (or tiles) per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Flags that cannot work, refused before any file is read."""
    from gen_research.sampling.tiling import check_tiling

    if args.batch_size < 1:
        raise GenResearchError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.overlap is not None and args.tile is None:
        raise GenResearchError("--overlap applies to tiled translation; pass --tile N with it (or drop --overlap)")
    if args.tile is not None:
        if args.overlap is None:
            args.overlap = args.tile // 4
        try:
            check_tiling(args.tile, args.overlap)
        except ValueError as error:
            raise GenResearchError(f"--tile {args.tile} --overlap {args.overlap}: {error}") from None
    if args.direction is not None and args.target_domain is not None:
        raise GenResearchError("--direction and --target-domain both name the target; pass one of them")
    if args.out and Path(args.out).exists():
        if not Path(args.out).is_dir():
            raise GenResearchError(f"--out {args.out} is a file; pass a new or empty folder")
        if any(Path(args.out).iterdir()):
            raise GenResearchError(f"--out {args.out} is not empty; pass a new folder (translations are never written over others)")
    if args.device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", args.device):
        raise GenResearchError(f"--device {args.device!r}: use auto, cpu, cuda or cuda:N")


def find_inputs(args: argparse.Namespace) -> list[InputImage]:
    """Every input image (decoded once, so an unreadable file is refused before anything is written) with its target."""
    from gen_research.data.datasets import load_image
    from gen_research.data.folder import find_images

    source = Path(args.input)
    if not source.exists():
        raise GenResearchError(f"--input {source} does not exist; pass an image file or a folder of images")
    paths = [Path(p) for p in find_images(str(source))] if source.is_dir() else [source]
    if not paths:
        raise GenResearchError(f"--input {source} holds no images (png, jpg, ...); pass a folder with images in it")
    target_paths: dict[Path, Path] = {}
    if args.targets is not None:
        targets = Path(args.targets)
        if not targets.is_dir():
            raise GenResearchError(f"--targets {targets} is not a folder; pass the folder of ground-truth images")
        target_paths = {Path(p).relative_to(targets): Path(p) for p in find_images(str(targets))}
    found = []
    for path in paths:
        relative = path.relative_to(source) if source.is_dir() else Path(path.name)
        height, width = load_image(str(path), grayscale=True).shape[-2:]
        target = None
        if args.targets is not None:
            target = _target_of(relative, target_paths, Path(args.targets))
            target_height, target_width = load_image(str(target), grayscale=True).shape[-2:]
            if (target_height, target_width) != (height, width):
                raise GenResearchError(f"--targets: {target} is {target_width}x{target_height} but its input {path} is {width}x{height}; "
                                       "a target must have its input's size")
        found.append(InputImage(path, relative, (int(height), int(width)), target))
    return found


def _target_of(relative: Path, targets: dict[Path, Path], folder: Path) -> Path:
    """The target with the input's relative name, or else the only one with its relative name minus the extension."""
    if relative in targets:
        return targets[relative]
    same_stem = [path for name, path in targets.items() if name.with_suffix("") == relative.with_suffix("")]
    if len(same_stem) == 1:
        return same_stem[0]
    raise GenResearchError(f"--targets {folder} has no {relative} (nor one image named {relative.with_suffix('')}.*); "
                           "add it, or drop --targets")


def resolve_targets(model: Any, direction: str | None, target_domain: str | None) -> list[tuple[int | None, str | None]]:
    """(domain id or None, domain name or None) of each translation asked for, checked against the model's domains."""
    name = type(model).__name__
    count = model.target_domains
    if count is None:  # one fixed direction (Pix2Pix)
        if target_domain is not None:
            raise GenResearchError(f"--target-domain: {name} translates in one fixed direction and has no domains; drop --target-domain")
        if direction == "BtoA":
            raise GenResearchError(f"--direction BtoA: {name} translates one way, the way it was trained; "
                                   "train on data with direction BtoA for the other")
        if direction not in (None, "AtoB"):
            raise GenResearchError(f"--direction {direction}: {name} translates one way; pass --direction AtoB or leave it out")
        return [(None, None)]
    names = tuple(model.domain_names or (str(index) for index in range(int(count))))
    listing = ", ".join(f"{index}={domain}" for index, domain in enumerate(names))
    if direction is not None:
        pairs = [(x, y) for x in names for y in names if f"{x}to{y}" == direction]
        if len(pairs) != 1 or pairs[0][0] == pairs[0][1]:
            example = f"{names[0]}to{names[1]}" if len(names) > 1 else "XtoY"
            raise GenResearchError(f"--direction {direction} is not XtoY for two different domains of {name} ({', '.join(names)}); "
                                   f"e.g. --direction {example}, or --target-domain")
        return [(names.index(pairs[0][1]), pairs[0][1])]
    if target_domain is None:
        raise GenResearchError(f"{name} translates into one of {len(names)} domains; pass --target-domain with an id, a name or all "
                               f"({listing}), or --direction XtoY")
    if target_domain == "all":
        return list(enumerate(names))
    if target_domain in names:
        return [(names.index(target_domain), target_domain)]
    if re.fullmatch(r"\d+", target_domain) and int(target_domain) < len(names):
        return [(int(target_domain), names[int(target_domain)])]
    raise GenResearchError(f"--target-domain {target_domain} is not a domain of {name}; choose an id or a name ({listing}) or all")


def output_names(inputs: list[InputImage], targets: list[tuple[int | None, str | None]]) -> list[list[Path]]:
    """Per input: its outputs' paths (relative to --out), then its grid's; refused when two files would share a name."""
    several = len(targets) > 1
    names: list[list[Path]] = []
    seen: dict[str, Path] = {"grid.png": Path("(the grid of all inputs)")} if len({item.size for item in inputs}) == 1 else {}
    for item in inputs:
        stem = item.relative.with_suffix("")
        suffixes = [f"_{re.sub(r'[^0-9A-Za-z.-]+', '-', str(domain))}" if several else "" for _, domain in targets]
        paths = [stem.with_name(stem.name + suffix + ".png") for suffix in suffixes] + [stem.with_name(stem.name + "_grid.png")]
        for path in paths:
            key = str(path).lower()  # case-insensitive file systems
            if key in seen:
                raise GenResearchError(f"inputs {seen[key]} and {item.path} would both write {path}; rename one of them")
            seen[key] = item.path
        names.append(paths)
    return names


def output_folder(args: argparse.Namespace) -> Path:
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    from gen_research.training.run_folder import new_run_dir

    return new_run_dir(Path("runs"), Path(args.config).stem, "translate")


def translate_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_arguments(args)
    inputs = find_inputs(args)
    if args.tile is not None:
        from gen_research.sampling.tiling import check_tiling

        for height, width in sorted({item.size for item in inputs}):
            try:
                check_tiling(args.tile, args.overlap, height, width)
            except ValueError as error:
                raise GenResearchError(f"--tile {args.tile} --overlap {args.overlap}: {error}") from None
    import torch

    from gen_research.commands.loading import load_model_and_data
    from gen_research.models.contract import Translates, require
    from gen_research.registry import load_builtins

    load_builtins()  # the experiment names registered models, data modules and loggers
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise GenResearchError(f"--device {args.device}: no CUDA GPU is visible here; use --device cpu or auto")
    model, _, _ = load_model_and_data(args.config, args.ckpt_path)
    require(model, Translates, "translate")
    if model.source_channels not in (1, 3):
        raise GenResearchError(f"translate reads images as grey (1 channel) or RGB (3); {type(model).__name__} takes {model.source_channels}")
    targets = resolve_targets(model, args.direction, args.target_domain)
    names = output_names(inputs, targets)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = model.to(device).eval()
    from gen_research.training import run_folder

    existed, created_before = bool(args.out) and Path(args.out).is_dir(), len(run_folder.CREATED_RUN_DIRS)
    out = output_folder(args)
    try:
        return _translate_into(out, args, model, inputs, targets, names, device)
    except BaseException:  # a failed run leaves no empty folder behind
        run_folder.remove_empty_run_dirs(since=created_before)
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def grid_row(images: list[Any]) -> Any:
    """[N_i, C_i, H, W] batches side by side in one batch; grey ones are repeated to 3 channels beside colour ones
    (a grey input next to its colour translation)."""
    import torch

    channels = max(image.shape[1] for image in images)
    return torch.cat([image.expand(-1, channels, -1, -1) if image.shape[1] == 1 else image for image in images])


def _chunks(inputs: list[InputImage], size: int) -> list[list[int]]:
    """Indices of consecutive inputs of one size, at most ``size`` together (tiled images go one at a time)."""
    chunks: list[list[int]] = []
    for index, item in enumerate(inputs):
        if chunks and len(chunks[-1]) < size and inputs[chunks[-1][0]].size == item.size:
            chunks[-1].append(index)
        else:
            chunks.append([index])
    return chunks


def _translate_into(out: Path, args: argparse.Namespace, model: Any, inputs: list[InputImage],
                    targets: list[tuple[int | None, str | None]], names: list[list[Path]], device: str) -> int:
    import torch
    from tqdm import tqdm

    from gen_research.data.datasets import load_image
    from gen_research.data.transforms import to_signed_unit
    from gen_research.files.image_grid import save_grid
    from gen_research.sampling.tiling import translate_tiled

    def to_unit(path: Path, grayscale: bool) -> Any:
        return to_signed_unit(load_image(str(path), grayscale=grayscale))

    one_size = len({item.size for item in inputs}) == 1  # then grid.png shows every row (kept until the end)
    rows = []
    with torch.no_grad():
        for chunk in tqdm(_chunks(inputs, 1 if args.tile else args.batch_size), desc="translating", unit="batch", disable=len(inputs) < 2):
            sources = torch.stack([to_unit(inputs[index].path, model.source_channels == 1) for index in chunk]).to(device)
            outputs = []
            for domain, _ in targets:
                def translate(images: Any, domain: int | None = domain) -> Any:
                    target = None if domain is None else torch.full((len(images),), domain, dtype=torch.long, device=device)
                    return model.translate(images, target)

                if args.tile is not None:
                    translated = translate_tiled(translate, sources, args.tile, args.overlap, args.batch_size)
                else:
                    translated = translate(sources)
                if translated.shape[0] != len(sources) or translated.shape[-2:] != sources.shape[-2:]:
                    raise RuntimeError(f"{type(model).__name__}.translate returned {tuple(translated.shape)} for {tuple(sources.shape)}")
                outputs.append(translated.float().clamp(-1, 1).cpu())
            for position, index in enumerate(chunk):
                item, paths = inputs[index], names[index]
                row = [sources[position : position + 1].cpu(), *(output[position : position + 1] for output in outputs)]
                for output, path in zip(row[1:], paths):
                    save_grid(output, out / path, nrow=1, padding=0)
                if item.target is not None:
                    row.append(to_unit(item.target, grayscale=outputs[0].shape[1] == 1)[None])
                shown = grid_row(row)
                save_grid(shown, out / paths[-1], nrow=len(row))
                if one_size:
                    rows.append(shown)

    def count(number: int, noun: str) -> str:
        return f"{number} {noun}{'s' if number != 1 else ''}"

    written = [count(len(inputs) * len(targets), "translation"), count(len(inputs), "grid")]
    if one_size:
        save_grid(grid_row(rows), out / "grid.png", nrow=len(rows[0]))
        written.append("grid.png")
    written_text = ", ".join(written[:-1]) + " and " + written[-1]
    into = "" if targets[0][1] is None else " into " + ", ".join(str(domain) for _, domain in targets)
    print(f"translated {count(len(inputs), 'image')}{into}: {written_text} in {out}")
    return 0


__all__ = ["InputImage", "build_parser", "find_inputs", "grid_row", "output_names", "resolve_targets", "translate_command"]
