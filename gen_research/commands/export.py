"""``python -m gen_research export``: a diffusion checkpoint as a diffusers pipeline folder.

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

# sampler name -> the diffusers pipeline that runs it
PIPELINES = {"ddpm": "DDPMPipeline", "ddim": "DDIMPipeline"}


def export_command(argv: list[str]) -> int:
    parser = OneLineArgumentParser(prog="python -m gen_research export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", required=True)
    parser.add_argument("--out", required=True, help="new or empty folder")
    parser.add_argument("--sampler", default="ddim", choices=sorted(PIPELINES), help="which diffusers pipeline and scheduler to write")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise GenResearchError(f"--out {out} is not empty; pass a new folder (an export never writes over files)")

    import diffusers

    from gen_research.commands.evaluate import load_model_and_data
    from gen_research.registry import load_builtins
    from gen_research.sampling.diffusion import make_scheduler

    load_builtins()
    model, _, _ = load_model_and_data(args.config, args.ckpt_path)
    if not getattr(model, "is_diffusion", False):
        raise GenResearchError(f"export writes diffusion pipelines; {type(model).__name__} is not a diffusion model")
    if getattr(model, "null_label", None) is not None:
        raise GenResearchError("export: this model is class-conditional, and diffusers' UNet pipelines take no class labels; sample it with gen_research")
    scheduler = make_scheduler(args.sampler, model.noise_scheduler.config)
    pipeline = getattr(diffusers, PIPELINES[args.sampler])(unet=model.unet.eval(), scheduler=scheduler)
    pipeline.save_pretrained(out)
    how = ", then call it with use_clipped_model_output=True (as gen_research's ddim)" if args.sampler == "ddim" else ""
    print(f"diffusers pipeline ({PIPELINES[args.sampler]}) in {out}: DiffusionPipeline.from_pretrained({str(out)!r}){how}")
    return 0
