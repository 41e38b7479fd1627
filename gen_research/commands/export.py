"""``python -m gen_research export``: a checkpoint as a diffusers pipeline folder (families that ExportsDiffusers), or
as the folder its library loads (ExportsFolder: a local CLIP as a transformers CLIPModel folder).

    export --config EXP --ckpt_path CKPT --out DIR [--sampler ddim]

The folder (model_index.json, unet/, scheduler/) holds the checkpoint's EMA weights when EMA was on and the
experiment's noise schedule; ``diffusers.DiffusionPipeline.from_pretrained(DIR)`` loads and samples it
without gen_research. Only unconditional models: diffusers' UNet pipelines take no class labels. Our DDIM sampler
steps with the epsilon consistent with the clipped x0: call the DDIMPipeline with ``use_clipped_model_output=True``
to get the same images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gen_research.errors import GenResearchError, OneLineArgumentParser

def export_command(argv: list[str]) -> int:
    parser = OneLineArgumentParser(prog="python -m gen_research export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", required=True)
    parser.add_argument("--out", required=True, help="new or empty folder")
    parser.add_argument("--sampler", help="which diffusers pipeline and scheduler to write (ddpm: ddim or ddpm; default: the family's first)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise GenResearchError(f"--out {out} is not empty; pass a new folder (an export never writes over files)")

    from gen_research.commands.loading import load_model_and_data
    from gen_research.models.contract import ExportsDiffusers, ExportsFolder, can, require
    from gen_research.registry import load_builtins

    load_builtins()
    model, _, _ = load_model_and_data(args.config, args.ckpt_path)
    if can(model, ExportsFolder) and not can(model, ExportsDiffusers):  # e.g. a local CLIP: a transformers folder
        if args.sampler:
            raise GenResearchError(f"--sampler does not apply to {type(model).__name__}: it is no diffusion pipeline; drop it")
        print(model.export_folder(out))
        return 0
    require(model, ExportsDiffusers, "export")
    sampler = args.sampler or model.export_samplers[0]
    if sampler not in model.export_samplers:
        raise GenResearchError(f"--sampler {sampler!r}: {type(model).__name__} exports with {', '.join(model.export_samplers)}")
    pipeline = model.diffusers_pipeline(sampler)
    pipeline.save_pretrained(out)
    extra = model.export_extras(out)
    print(f"diffusers pipeline ({type(pipeline).__name__}) in {out}: DiffusionPipeline.from_pretrained({str(out)!r}){model.export_note(sampler)}{extra}")
    return 0
