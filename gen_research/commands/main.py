"""``python -m gen_research``: fit | validate | test | predict (LightningCLI) and list.

Nothing model-specific lives here: the CLI resolves registry names, composes YAML files, chooses the run
folder, wires loggers and standard callbacks to it, checks checkpoints, and turns user errors into one
line with exit status 2.
"""

from __future__ import annotations

import difflib
import os
import sys

from gen_research.errors import GenResearchError

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = LIGHTNING_SUBCOMMANDS + ("evaluate", "sample", "translate", "export", "sweep", "submit", "rate", "list")
USAGE = """usage: python -m gen_research {fit,validate,test,predict,evaluate,sample,translate,export,sweep,submit,rate,list} ...

  fit       train:      --config experiments/quickstart.yaml [--model.init_args.beta=4] [--ckpt_path last]
  validate  validate a checkpoint: --config EXP --ckpt_path CKPT
  test      test a checkpoint:     --config EXP --ckpt_path CKPT
  predict   run predict_step:      --config EXP --ckpt_path CKPT
  evaluate  metrics (FID, KID, precision/recall, ...): --config EXP --ckpt_path CKPT | --real DIR --fake DIR
  sample    images from a checkpoint:  --config EXP --ckpt_path CKPT [--num-images N --seed S --out DIR]
  translate your images through a translator: --config EXP --ckpt_path CKPT --input DIR_OR_IMAGE [--out DIR]
            [--direction AtoB | --target-domain K|NAME|all] [--tile N --overlap M] [--targets DIR]
  export    a diffusion checkpoint as a diffusers pipeline folder: --config EXP --ckpt_path CKPT --out DIR
  sweep     a W&B sweep file, run locally: FILE [--count N --seed S --shard i/K] [--dry-run]
  submit    a fit as a SLURM job:      --config EXP [--nodes N --gpus-per-node G --time HH:MM:SS ...] [--dry-run]
            sweep agents as a SLURM array: --sweep FILE_OR_WANDB_ID --array K [--count-per-task N] [--dry-run]
  rate      people rate images on a local web page (MOS, 2AFC): --real DIR --fake DIR [--fake DIR2] --out DIR
            [--mode mos|2afc] [--pairs real|models] [--num-trials N]; --out DIR alone resumes, --summary reports
  list      registered names:      list [models|datamodules|samplers|features|metrics|callbacks|loggers|presets]

  python -m gen_research fit --help   shows every option of a subcommand."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = argv[0]
    try:
        if command == "list":
            return list_command(argv[1:])
        if command == "submit":
            from gen_research.launch.slurm import submit_command

            return submit_command(argv[1:])
        if command == "sweep":
            from gen_research.commands.sweep import sweep_command

            return sweep_command(argv[1:])
        if command == "rate":
            from gen_research.commands.rate import rate_command

            return rate_command(argv[1:])
        if command in ("evaluate", "sample", "translate", "export"):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            if command == "evaluate":
                from gen_research.commands.evaluate import evaluate_command

                return evaluate_command(argv[1:])
            if command == "export":
                from gen_research.commands.export import export_command

                return export_command(argv[1:])
            if command == "translate":
                from gen_research.commands.translate import translate_command

                return translate_command(argv[1:])
            from gen_research.commands.sample import sample_command

            return sample_command(argv[1:])
        if command in LIGHTNING_SUBCOMMANDS:
            return run_lightning(argv)
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise GenResearchError(f"unknown command {command!r}; {hint}use one of: {', '.join(COMMANDS)}")
    except GenResearchError as error:
        print(f"gen_research: error: {error}", file=sys.stderr)
        return 2


def list_command(args: list[str]) -> int:
    from gen_research.registry import REGISTRIES, load_names

    load_names()  # from the index of built-ins: nothing heavy is imported (tests/test_cli_startup.py)
    kinds = [*REGISTRIES, "samplers"]
    wanted = args or kinds
    for kind in wanted:
        if kind in ("samplers", "sampler"):
            _list_samplers()
            continue
        registry = REGISTRIES.get(kind, REGISTRIES.get(kind + "s"))
        if registry is None:
            raise GenResearchError(f"nothing called {kind!r} to list; choose from: {', '.join(kinds)}")
        print(f"{registry.kind}s: {registry.description}")
        if not len(registry):
            print("  (none registered yet)")
        width = max((len(entry.name) for entry in registry), default=0)
        for entry in registry:
            print(f"  {entry.name:<{width}}  {entry.description}")
        print()
    return 0


def _list_samplers() -> None:
    """What each family's ``--sampler`` accepts (declared by the family: gen_research/models/contract.py)."""
    from gen_research.registry_index import sampler_rows

    table = sampler_rows()
    print("samplers: what `sample --sampler` (and `evaluate --samplers`) accepts, per model family")
    width = max((len(f"{family}: {name}") for family, name, _ in table), default=0)
    for family, name, text in table:
        print(f"  {f'{family}: {name}':<{width}}  {text}")
    print("  (other families sample without a --sampler choice; their options: python -m gen_research sample --help)")
    print()


def run_lightning(argv: list[str]) -> int:
    """Fit the stages a two-stage experiment names (gen_research/config/stages.py), then run the command itself."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the hub: nothing is downloaded at run time
    from gen_research.registry import load_names

    # Names only (the index of built-ins): the config's own errors are reported before torch and lightning are
    # imported; jsonargparse imports the classes the config names, and a registry entry imports its module on use.
    load_names()
    from gen_research.config.stages import stages_resolved

    with stages_resolved(argv, fit=run_lightning) as resolved:
        return _run_lightning_command(resolved)


def _run_lightning_command(argv: list[str]) -> int:
    """Expand configs and names, then hand over to :class:`GenResearchCLI`."""
    from gen_research.config.files import expand_argv

    subcommand, rest = argv[0], argv[1:]
    expanded, experiment_name = expand_argv(rest)
    defaults = [f"--name={experiment_name}"] if experiment_name else []
    from gen_research.training import run_folder
    from gen_research.commands.lightning import GenResearchCLI

    inherited_run_dir = os.environ.get(run_folder.RUN_DIR_ENV)
    created_before = len(run_folder.CREATED_RUN_DIRS)
    try:
        GenResearchCLI(args=[subcommand, *defaults, *expanded])
    except GenResearchError:
        run_folder.remove_empty_run_dirs(since=created_before)
        raise
    finally:
        if inherited_run_dir is None:  # the folder was chosen by this command; the next one chooses anew
            os.environ.pop(run_folder.RUN_DIR_ENV, None)
    return 0
