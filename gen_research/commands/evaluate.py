"""``python -m gen_research evaluate``: metrics of a checkpoint's samples, or of two folders of images.

    evaluate --config EXP --ckpt_path CKPT [--split val]      samples (EMA weights) vs the data module's split
    evaluate --real DIR --fake DIR                            two folders, like torch-fidelity's command line
    evaluate --config EXP --ckpt_path CKPT --samplers ddim,dpm-solver++ --steps 10,20,50 --guidance-scales 1,2,4
                                                              sampler sweep of a diffusion checkpoint
    evaluate --config EXP --ckpt_path CKPT --truncation-psis 0.5,0.7,1.0
                                                              truncation grid of a GAN checkpoint
    evaluate --compare A.json B.json [--force]                two results side by side, refused (one line naming the
                                                              field) when their provenance differs, unless --force

Every number is keyed ``<metric>/<extractor>``; ``--json PATH`` writes them as one flat JSON object, with one more
key, ``provenance``: what they were measured with (gen_research.evaluation.provenance). The
sampler sweep (any of --samplers/--steps/--guidance-scales; the others take the model's defaults) writes
sweep.csv, sweep.json, fid_vs_nfe.png, guidance.png and sample grids into --out (gen_research.evaluation.sampler_grid).
The truncation grid writes psi.csv, psi.json, metrics_vs_psi.png and a sample grid per psi the same way.

Truncation is off (psi 1, the fair setting for comparing models) in a plain evaluate and in the evaluation
callback unless asked for: --truncation-psi P here, sample_options: {truncation_psi: P} in the callback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gen_research.files.atomic import atomic_write_text
from gen_research.errors import GenResearchError, OneLineArgumentParser


# Declared sampling options evaluate does not take: the sweep's own axes, and inputs that evaluation has none of.
EVALUATE_EXCLUDED_OPTIONS = ("sampler", "steps", "guidance_scale", "eta", "input", "mask", "strength", "classifier_ckpt", "classifier_scale")


def build_parser() -> argparse.ArgumentParser:
    from gen_research.evaluation.options import EvalOptions

    parser = OneLineArgumentParser(prog="python -m gen_research evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("what to evaluate (one of the two forms)")
    source.add_argument("--config", help="experiment YAML whose model and data to use")
    source.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", help="checkpoint of that experiment")
    source.add_argument("--split", default="val", choices=("train", "val", "test"), help="reference split of the data module (default val)")
    source.add_argument("--real", help="folder of reference images")
    source.add_argument("--fake", help="folder of generated images")
    source.add_argument("--train", help="folder of training images (memorization metrics in folder mode)")
    source.add_argument("--image-size", type=int, help="resize and center-crop folder images to this size")
    source.add_argument("--captions", help="clip_score: JSON file mapping each --fake image's file name to its caption")
    source.add_argument("--compare", nargs="+", metavar="RESULT_JSON",
                        help="print evaluate --json results side by side (no evaluation); refused when their provenance differs")
    source.add_argument("--force", action="store_true", help="--compare: show results whose provenance differs anyway (with warnings)")
    features = parser.add_argument_group("features and metrics")
    features.add_argument("--features", default="pixels", help="feature extractor: pixels, classifier, inception, clip, dinov2 (python -m gen_research list features)")
    features.add_argument("--feature-weights", help="classifier checkpoint, Inception weights file, CLIP or DINOv2 model folder")
    features.add_argument("--resize", type=int, help="pixels extractor: resize images to N x N before flattening; classifier: N = its side, to read other sizes (e.g. 32x32 GANs on the 28x28 MNIST classifier)")
    features.add_argument("--resize-mode", choices=("clean", "legacy_tensorflow", "legacy_pytorch"),
                          help="how the extractor resizes (clean-fid's modes; default: the extractor's own, e.g. inception: legacy_tensorflow); "
                               "a non-default mode is part of the extractor name (fid/inception-clean)")
    features.add_argument("--clip-model", help="clip_score: local CLIP folder (model and tokenizer)")
    features.add_argument("--metrics", default="fid,kid,precision,recall,density,coverage", help="comma-separated (python -m gen_research list metrics)")
    features.add_argument("--num-images", type=int, help="images per set (default: every reference image; as many samples)")
    defaults = EvalOptions()  # the metric defaults live in one place
    features.add_argument("--kid-subset-size", type=int, default=defaults.kid_subset_size)
    features.add_argument("--kid-subsets", type=int, default=defaults.kid_subsets)
    features.add_argument("--nearest-k", type=int, default=defaults.nearest_k, help="k of precision/recall/density/coverage")
    features.add_argument("--is-splits", type=int, default=defaults.is_splits)
    features.add_argument("--alpha-steps", type=int, default=defaults.alpha_steps, help="alpha_precision/beta_recall: grid size of alpha and beta")
    features.add_argument("--alpha-embedding", default=defaults.alpha_embedding, choices=("features", "oneclass"),
                          help="alpha_precision/beta_recall: the extractor's features or a one-class (Deep SVDD) embedding of them")
    features.add_argument("--vendi-q", type=float, default=defaults.vendi_q, help="vendi: order q of the entropy (1: Shannon)")
    features.add_argument("--critic-epochs", type=int, default=defaults.critic_epochs, help="nnd: epochs of the real-vs-generated critic")
    features.add_argument("--fid-infinity-points", type=int, default=defaults.fid_infinity_points, help="fid_infinity: number of N values")
    features.add_argument("--fid-infinity-min-fraction", type=float, default=defaults.fid_infinity_min_fraction,
                          help="fid_infinity: the smallest N as a fraction of the generated images (default 0.1, the paper's 5k of 50k)")
    features.add_argument("--plots", help="folder (new or empty) for the curves of the metrics that have them (fid_infinity: FID vs 1/N; "
                                          "alpha_precision: the alpha/beta curves)")
    features.add_argument("--seed", type=int, default=0, help="seeds sampling and the metrics' subset draws")
    sweep = parser.add_argument_group("sampler sweep (diffusion checkpoints; any of the first three turns it on) and truncation grid (GANs)")
    sweep.add_argument("--samplers", help="comma-separated diffusion samplers, e.g. ddim,dpm-solver++ (default: the model's)")
    sweep.add_argument("--steps", help="comma-separated step counts, e.g. 10,20,50 (default: the model's sampling_steps)")
    sweep.add_argument("--guidance-scales", dest="guidance_scales", help="comma-separated classifier-free guidance scales, e.g. 1,2,4 (default: the model's)")
    sweep.add_argument("--eta", type=float, help="DDIM eta at every grid point (default: the model's)")
    sweep.add_argument("--truncation-psis", dest="truncation_psis",
                       help="comma-separated truncation psi values, e.g. 0.5,0.7,1 (1 = off): a truncation grid of a GAN checkpoint, "
                            "instead of one --truncation-psi; not with the sampler sweep's options")
    sweep.add_argument("--out", help="grid output folder (new or empty); default runs/<experiment>/<timestamp>-sampler-sweep "
                                     "or <timestamp>-psi-grid")
    from gen_research.commands.sampling_options import add_family_options

    # The family's declared sampling options (e.g. a vae's --temperature) shape the generated set; the sampler
    # sweep's axes and diffusion's input options are not among them (the sweep sets the first, evaluation has no input).
    parser.set_defaults(family_options=add_family_options(parser, exclude=EVALUATE_EXCLUDED_OPTIONS))
    run = parser.add_argument_group("running")
    run.add_argument("--batch-size", type=int, default=250)
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    run.add_argument("--no-cache", action="store_true", help="recompute reference statistics instead of reading the cache")
    run.add_argument("--cache-dir", help="reference-statistics cache (default $GEN_RESEARCH_CACHE or ~/.cache/gen_research)")
    run.add_argument("--json", help="write the results to this JSON file (must not exist)")
    return parser


def check_numbers(args: argparse.Namespace) -> None:
    """Counts and sizes that cannot work, refused before anything is loaded (0 never means "all")."""
    for option in ("batch_size", "num_images", "kid_subset_size", "kid_subsets", "nearest_k", "is_splits", "image_size", "resize",
                   "alpha_steps", "critic_epochs", "fid_infinity_points"):
        value = getattr(args, option)
        if value is not None and value < 1:
            flag = "--" + option.replace("_", "-")
            default = " (leave it out to use every reference image)" if option == "num_images" else ""
            raise GenResearchError(f"{flag} {value}: must be at least 1{default}")
    if not 0 < args.fid_infinity_min_fraction < 1:
        raise GenResearchError(f"--fid-infinity-min-fraction {args.fid_infinity_min_fraction}: must lie between 0 and 1 (e.g. 0.1)")
    if args.eta is not None and not args.eta >= 0:
        raise GenResearchError(f"--eta {args.eta}: must be >= 0 (0: deterministic DDIM)")


def evaluate_command(argv: list[str]) -> int:
    from gen_research.commands.sampling_options import register_experiment_families

    register_experiment_families(argv)  # a family registered by the experiment's imports: brings its options
    args = build_parser().parse_args(argv)
    from gen_research.evaluation.sampler_grid import check_arguments, parse_axes, parse_truncation_psis

    if args.compare:
        others = [flag for flag, value in (("--config", args.config), ("--ckpt_path", args.ckpt_path), ("--real", args.real),
                                           ("--fake", args.fake), ("--json", args.json)) if value]
        if others:
            raise GenResearchError(f"--compare only reads result files; leave out {', '.join(others)}")
        from gen_research.evaluation.provenance import compare_results

        return compare_results(args.compare, force=args.force)
    if args.force:
        raise GenResearchError("--force applies to --compare only")
    check_numbers(args)
    from gen_research.commands.sampling_options import check_given_values

    check_given_values(args, args.family_options)
    given = [f"--{name.replace('_', '-')}" for name in args.family_options if getattr(args, name) is not None]
    if given and (args.real or args.fake):
        raise GenResearchError(f"{', '.join(given)} shape(s) a checkpoint's samples; folders (--real/--fake) take no sampling options")
    from gen_research.assets import resolve_asset

    args.feature_weights = resolve_asset(args.feature_weights)  # package://NAME: a file shipped with gen_research
    folder_mode = bool(args.real or args.fake)
    axes = parse_axes(args)  # None unless a sampler sweep was asked for
    psis = parse_truncation_psis(args)  # None unless a truncation grid was asked for
    check_arguments(args, axes, folder_mode, psis)
    if psis is not None:
        from gen_research.evaluation.sampler_grid.psi_grid import check_psis_alone

        check_psis_alone(psis)
    if folder_mode == bool(args.config or args.ckpt_path) or (folder_mode and not (args.real and args.fake)) or (not folder_mode and not (args.config and args.ckpt_path)):
        raise GenResearchError("evaluate needs either --config EXP --ckpt_path CKPT, or --real DIR --fake DIR")
    if args.json and Path(args.json).exists():
        raise GenResearchError(f"{args.json} already exists; pass another --json path (results are never overwritten)")
    if args.plots and Path(args.plots).exists() and any(Path(args.plots).iterdir()):
        raise GenResearchError(f"--plots {args.plots} holds files; pass a new or empty folder (plots are never overwritten)")

    import torch
    from tqdm import tqdm

    from gen_research.evaluation.evaluator import Evaluator, parse_metric_names
    from gen_research.registry import FEATURES, load_builtins

    load_builtins()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    options = eval_options(args)

    def make_evaluator(image_shape: tuple[int, int, int], num_classes: int | None = None) -> Evaluator:
        options.num_classes = num_classes
        extractor = FEATURES.get(args.features)(weights=args.feature_weights, resize=args.resize, resize_mode=args.resize_mode,
                                                image_shape=image_shape)
        return Evaluator(extractor, args.metrics, options, device=device)

    from gen_research.registry import METRICS

    names = parse_metric_names(args.metrics)  # unknown names fail before any data is read
    args.metric_names, args.options = names, options  # for the set-size checks (gen_research.evaluation.set_sizes)
    FEATURES.entry(args.features)
    args.with_labels = any(getattr(METRICS.get(name), "needs_labels", False) for name in names)
    args.needs_generator = any(getattr(METRICS.get(name), "needs_generator", False) for name in names)
    cache = None
    if not args.no_cache:
        from gen_research.evaluation.cache import ReferenceCache

        cache = ReferenceCache(args.cache_dir)
    bar = lambda what: (lambda iterable: tqdm(iterable, desc=what, unit="batch", leave=False))  # noqa: E731
    if axes is not None:
        if given:
            raise GenResearchError(f"{', '.join(given)} do(es) not apply to the sampler sweep; it varies the sampler, steps and guidance scale only")
        from gen_research.commands.loading import load_model_and_data
        from gen_research.evaluation.sampler_grid import run_sampler_sweep

        return run_sampler_sweep(args, axes, names, options, cache, bar, device, load_model_and_data(args.config, args.ckpt_path))
    if psis is not None:
        from gen_research.commands.loading import load_model_and_data
        from gen_research.evaluation.sampler_grid import run_psi_grid

        fixed = {name: getattr(args, name) for name in args.family_options if getattr(args, name) is not None}  # the same at every point
        return run_psi_grid(args, psis, fixed, names, options, cache, bar, device, load_model_and_data(args.config, args.ckpt_path))
    if folder_mode:
        evaluator, context = _evaluate_folders(args, make_evaluator, cache, bar)
    else:
        evaluator, context = _evaluate_checkpoint(args, make_evaluator, cache, bar, device)
    results = evaluator.compute()
    settings = context.pop("sampling", {})
    provenance = context.pop("provenance")
    print_results(results, context)
    results.update({f"sampling/{name}": value for name, value in settings.items()})  # e.g. the truncation psi used
    if args.plots:
        from gen_research.evaluation.plots import plot_curves

        written = plot_curves(evaluator.curves, args.plots)
        print(f"Plots: {', '.join(map(str, written))}" if written else "Plots: none of the requested metrics has a curve")
    if args.json:
        payload = {**results, "provenance": provenance}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")  # all or nothing, temp file beside it
        print(f"Results: {args.json}")
    return 0


def eval_options(args: argparse.Namespace) -> Any:
    """The metric options of the command line (one place: the plain evaluation and the grids)."""
    from gen_research.evaluation.base import EvalOptions

    return EvalOptions(kid_subset_size=args.kid_subset_size, kid_subsets=args.kid_subsets, nearest_k=args.nearest_k,
                       is_splits=args.is_splits, seed=args.seed, clip_model=args.clip_model, alpha_steps=args.alpha_steps,
                       alpha_embedding=args.alpha_embedding, vendi_q=args.vendi_q, critic_epochs=args.critic_epochs,
                       fid_infinity_points=args.fid_infinity_points, fid_infinity_min_fraction=args.fid_infinity_min_fraction)


def _feed_reference(evaluator: Any, batches: Any, key_parts: dict[str, Any], cache: Any, bar: Any, role: str,
                    dataset: Any, num_images: int | None = None) -> dict[str, Any]:
    """Reference outputs (cached under a key that fingerprints every image of ``dataset`` fed) into the metrics;
    returns the set's provenance entry (dataset, split, images, fingerprint)."""
    from gen_research.evaluation.evaluator import batched, reference_outputs
    from gen_research.evaluation.sources import dataset_fingerprint

    fingerprint = dataset_fingerprint(dataset, num_images)  # for the cache key and the provenance alike
    outputs = reference_outputs(evaluator, batches, key_parts, cache, progress=bar(f"features of {role} images"), fingerprint=fingerprint)
    for chunk in batched(outputs, 1000):
        evaluator.add_outputs(chunk, role)
    count = len(next(iter(outputs.values())))
    return {"dataset": key_parts["dataset"], "split": key_parts["split"], "num_images": count,
            "preprocessing": key_parts["preprocessing"], "fingerprint": fingerprint}


def _evaluate_folders(args: argparse.Namespace, make_evaluator: Any, cache: Any, bar: Any) -> tuple[Any, dict[str, str]]:
    from gen_research.evaluation import sources
    from gen_research.evaluation.set_sizes import check_set_sizes

    if args.needs_generator:
        raise GenResearchError("ppl measures a generator: evaluate a checkpoint (--config EXP --ckpt_path CKPT), not folders")
    real_paths = sources.folder_images(args.real, "--real")
    fake_paths = sources.folder_images(args.fake, "--fake")
    grey = sources.is_grey(real_paths[0]) and sources.is_grey(fake_paths[0])
    real_labels = fake_labels = class_names = None
    if args.with_labels:  # class subfolders: real/<class>/..., fake/<class>/...
        try:
            real_classes, fake_classes = sources.folder_classes(args.real, real_paths), sources.folder_classes(args.fake, fake_paths)
        except GenResearchError as error:
            if "cfid" not in args.metric_names:
                raise
            raise GenResearchError(f"{error}; cfid of folders is conditioned on these classes (cfid given a translator's source images "
                                   "needs its checkpoint: --config EXP --ckpt_path CKPT)") from None
        class_names = sorted(set(real_classes))
        unknown = sorted(set(fake_classes) - set(class_names))
        if unknown:
            raise GenResearchError(f"--fake has class folders {unknown[:3]} that --real lacks; use the same class folder names")
        real_labels = [class_names.index(c) for c in real_classes]
        fake_labels = [class_names.index(c) for c in fake_classes]
    real_set = sources.folder_dataset(real_paths, args.image_size, grey, real_labels)
    fake_set = sources.folder_dataset(fake_paths, args.image_size, grey, fake_labels)
    num_real = args.num_images or len(real_set)
    num_fake = args.num_images or len(fake_set)
    for option, dataset in (("--real", real_set), ("--fake", fake_set)):
        if args.num_images and args.num_images > len(dataset):  # before any feature is computed
            raise GenResearchError(f"--num-images {args.num_images} is more than the {len(dataset)} images of {option} {getattr(args, option[2:])}; lower it")
    check_set_sizes(args.metric_names, args.options, num_real, num_fake, f"--real {args.real}", f"--fake {args.fake}")
    evaluator = make_evaluator(tuple(real_set[0][0].shape), len(class_names) if class_names else None)
    preprocessing = f"image_size={args.image_size},grey={grey}"
    references: dict[str, Any] = {}
    if evaluator.needs_reals:
        key = {"dataset": f"folder:{Path(args.real).resolve()}", "split": "all", "num_images": num_real, "preprocessing": preprocessing}
        references["real"] = _feed_reference(evaluator, lambda: sources.image_batches(real_set, args.batch_size, num_real, args.with_labels),
                                             key, cache, bar, "real", real_set, num_real)
    if evaluator.needs_train:
        if not args.train:
            raise GenResearchError("memorization metrics need the training images: pass --train DIR")
        train_paths = sources.folder_images(args.train, "--train")
        train_set = sources.folder_dataset(train_paths, args.image_size, grey)
        key = {"dataset": f"folder:{Path(args.train).resolve()}", "split": "all", "num_images": len(train_set), "preprocessing": preprocessing}
        references["train"] = _feed_reference(evaluator, lambda: sources.image_batches(train_set, args.batch_size), key, cache, bar, "train", train_set)
    if evaluator.needs_raw_reals:
        for images, labels in sources.image_batches(real_set, args.batch_size, num_real, with_labels=True):
            evaluator.add_raw_images(images, "real", labels if args.with_labels else None)
    captions = _captions(args, fake_paths[:num_fake]) if evaluator.needs_texts else None
    if evaluator.needs_fakes:
        start = 0
        for batch in bar("fake images")(sources.image_batches(fake_set, args.batch_size, num_fake, args.with_labels)):
            images, labels = batch if args.with_labels else (batch, None)
            texts = captions[start : start + len(images)] if captions else None
            evaluator.add_images(images, "fake", labels, texts)
            start += len(images)
    if evaluator.needs_cycle_pairs:
        raise GenResearchError("cycle_l1 translates images there and back: evaluate a translator checkpoint (--config EXP --ckpt_path CKPT), not folders")
    if evaluator.needs_pairs:
        if [Path(p).name for p in real_paths] != [Path(p).name for p in fake_paths]:
            raise GenResearchError("ssim/psnr compare images pairwise: --real and --fake must hold files with the same names")
        for generated, original in zip(sources.image_batches(fake_set, args.batch_size, num_fake), sources.image_batches(real_set, args.batch_size, num_real)):
            evaluator.add_pairs(generated, original)
    provenance = result_provenance(args, evaluator, references, num_real if evaluator.needs_reals else None,
                                   num_fake if evaluator.needs_fakes or evaluator.needs_pairs else None, {},
                                   {"fake": str(Path(args.fake).resolve()), "real": str(Path(args.real).resolve())})
    return evaluator, {"real": args.real, "fake": args.fake, "images": f"{num_real} real, {num_fake} fake", "provenance": provenance}


def result_provenance(args: argparse.Namespace, evaluator: Any, references: dict[str, Any], num_reference: int | None,
                      num_generated: int | None, sampling: dict[str, Any], subject: dict[str, Any]) -> dict[str, Any]:
    """The provenance of this evaluation (gen_research.evaluation.provenance) from what was fed."""
    from gen_research.evaluation.provenance import build_provenance

    train = references.get("train")
    return build_provenance(evaluator.extractor, options=evaluator.options, metrics=evaluator.requested, num_generated=num_generated,
                            num_reference=num_reference, reference=references.get("real") or {}, sampling=sampling,
                            num_train=train["num_images"] if train else None, train_reference=train, subject=subject)


def _captions(args: argparse.Namespace, fake_paths: list[str]) -> list[str]:
    """One caption per generated image, from the --captions JSON (keys: file names relative to --fake)."""
    if not args.captions:
        raise GenResearchError("clip_score needs one caption per generated image: pass --captions FILE (JSON: file name -> caption)")
    try:
        table = json.loads(Path(args.captions).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise GenResearchError(f"cannot read --captions {args.captions}: {error}; it must be a JSON object of file name -> caption") from None
    captions = []
    for path in fake_paths:
        relative = str(Path(path).relative_to(args.fake))
        caption = table.get(relative, table.get(Path(path).name))
        if not isinstance(caption, str):
            raise GenResearchError(f"--captions has no caption for {relative}; give every --fake image one")
        captions.append(caption)
    return captions


def _evaluate_checkpoint(args: argparse.Namespace, make_evaluator: Any, cache: Any, bar: Any, device: str) -> tuple[Any, dict[str, str]]:
    from gen_research.commands.loading import load_model_and_data
    from gen_research.evaluation.feeder import Feeder
    from gen_research.evaluation.sources import image_batches, reference_image_shape
    from gen_research.evaluation.set_sizes import check_set_sizes

    from gen_research.commands.sampling_options import sampling_plan
    from gen_research.models.contract import ModelFamily, SamplingContext

    model, datamodule, data_config = load_model_and_data(args.config, args.ckpt_path)
    model = model.to(device).eval()
    datamodule.setup("validate")
    split_set = getattr(datamodule, f"{args.split}_set")
    num_real = min(args.num_images or len(split_set), len(split_set))
    num_fake = args.num_images or num_real
    plan = sampling_plan(model, args, args.family_options, SamplingContext(num_images=num_fake, device=device, datamodule=datamodule))
    if plan.per_image:  # per-image inputs (img2img sources) have no place in an evaluation of generated sets
        raise GenResearchError(f"evaluate draws new samples; {', '.join(plan.per_image)} from the sampling options cannot apply: leave them out")
    evaluator = make_evaluator(reference_image_shape(split_set), datamodule.num_classes)
    feeder = Feeder(model, split_set, num_real, num_fake, args.batch_size, args.seed, args.with_labels, sample_options=plan.options,
                    label_field=evaluator.extractor.label_field, with_conditions=evaluator.needs_conditions)
    feeder.check(evaluator)  # before any feature is computed
    check_set_sizes(args.metric_names, args.options, num_real, feeder.num_generated, f"the {args.split} split", "the generated set")
    data_key = json.dumps(data_config, sort_keys=True)
    references: dict[str, Any] = {}
    if evaluator.needs_reals:
        key = {"dataset": data_key, "split": args.split, "num_images": num_real, "preprocessing": "datamodule"}
        references["real"] = _feed_reference(evaluator, feeder.reference_batches, key, cache, bar, "real", split_set, num_real)
    if evaluator.needs_train:
        train_set = datamodule.train_set
        key = {"dataset": data_key, "split": "train", "num_images": len(train_set), "preprocessing": "datamodule"}
        references["train"] = _feed_reference(evaluator, lambda: image_batches(train_set, args.batch_size), key, cache, bar, "train", train_set)
    feeder.feed(evaluator, progress=bar("features of generated images"))
    what = feeder.describe(args.split) if evaluator.needs_fakes else "pairs only"
    defaults = model.sampling_defaults() if isinstance(model, ModelFamily) else {}
    used = {**{k: v for k, v in defaults.items() if v is not None}, **plan.options} if evaluator.needs_fakes else {}
    if used:
        what += " with " + ", ".join(f"{name}={value}" + ("" if name in plan.options else " (default)") for name, value in used.items())
    numbers = {name: float(value) for name, value in used.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
    provenance = result_provenance(args, evaluator, references, num_real if evaluator.needs_reals else None,
                                   feeder.num_generated if evaluator.needs_fakes or evaluator.needs_pairs else None,
                                   {"mode": feeder.mode, **used}, {"checkpoint": str(Path(args.ckpt_path).resolve()), "config": args.config})
    return evaluator, {"checkpoint": args.ckpt_path, "reference": f"{args.split} split, {num_real} images", "generated": what,
                       "sampling": numbers, "provenance": provenance}


def print_results(results: dict[str, float], context: dict[str, str]) -> None:
    for key, value in context.items():
        print(f"{key:>10}: {value}")
    width = max((len(k) for k in results), default=10)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 12}")
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.6g}")
    sys.stdout.flush()
