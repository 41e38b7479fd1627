"""What the diffusion family declares under the model contract (gen_research/models/contract.py): its sampling
options and their rules, its samplers, the NFE network, and export to a diffusers pipeline.

These rules used to live in the ``sample`` and ``export`` commands and the sampler grid; they belong to the family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from gen_research.errors import GenResearchError
from gen_research.models.contract import ModelFamily, SamplingContext, SamplingOption, SamplingPlan
from gen_research.sampling import diffusion as diffusion_sampling

SAMPLER_DESCRIPTIONS = diffusion_sampling.SCHEDULER_DESCRIPTIONS

# sampler name -> the diffusers pipeline that runs it (export)
PIPELINES = {"ddim": "DDIMPipeline", "ddpm": "DDPMPipeline"}


class DiffusionSamplingContract(ModelFamily):
    """The contract side of :class:`~gen_research.models.diffusion.DDPM` (it provides hparams, unet, noise_scheduler)."""

    SAMPLING_OPTIONS: ClassVar[tuple[SamplingOption, ...]] = (
        SamplingOption("sampler", str, "diffusion sampler (python -m gen_research list samplers); default: the model's", choices=tuple(SAMPLER_DESCRIPTIONS)),
        SamplingOption("steps", int, "sampling steps (at most the noise levels trained on); default: the model's sampling_steps", low=1),
        SamplingOption("eta", float, "DDIM eta (0: deterministic); default: the model's", low=0.0),
        SamplingOption("guidance_scale", float, "classifier-free guidance scale (class-conditional models); default: the model's", low=0.0),
        SamplingOption("classifier_ckpt", str, "classifier guidance: a noisy_classifier checkpoint trained on the model's noise schedule"),
        SamplingOption("classifier_scale", float, "classifier guidance scale s (default 1); needs --classifier-ckpt", low=0.0),
        SamplingOption("input", str, "images to complete or transform: a data split (train, val, test) or a folder"),
        SamplingOption("mask", str, "inpainting: built-in region to generate (center, left, right, top, bottom) or a PNG, white = generate"),
        SamplingOption("strength", float, "img2img / SDEdit: the fraction of steps run from the noised --input", low=0.0, low_inclusive=False, high=1.0),
    )
    SAMPLERS: ClassVar[dict[str, str]] = SAMPLER_DESCRIPTIONS
    export_samplers: ClassVar[tuple[str, ...]] = tuple(PIPELINES)

    hparams: Any
    unet: nn.Module
    noise_scheduler: Any
    image_shape: tuple[int, int, int]
    null_label: int | None

    @property
    def conditioning_classes(self) -> int | None:
        return int(self.hparams.num_classes) if self.null_label is not None else None

    def sampling_defaults(self) -> dict[str, Any]:
        hp = self.hparams
        return {"sampler": hp.sampler, "steps": hp.sampling_steps, "eta": float(hp.eta), "guidance_scale": float(hp.guidance_scale),
                "classifier_ckpt": None, "classifier_scale": 1.0, "input": None, "mask": None, "strength": 1.0}

    def sampling_network(self) -> nn.Module:
        return self.unet  # however forward reaches it, the UNet's calls are the NFE

    def check_sampling_options(self, options: dict[str, Any], context: SamplingContext | None = None) -> None:
        train_steps = int(self.hparams.num_train_timesteps)
        if options.get("steps") is not None and options["steps"] > train_steps:
            raise GenResearchError(f"--steps {options['steps']} is more than the {train_steps} noise levels the model was trained on; pass --steps <= {train_steps}")
        if "sampler" in options:  # a sampler that cannot step this prediction type fails now, not mid-sampling
            diffusion_sampling.make_scheduler(options["sampler"], self.noise_scheduler.config)
        scale = options.get("guidance_scale")
        if scale is not None and self.null_label is None and scale != float(self.hparams.guidance_scale):
            raise GenResearchError("--guidance-scale (classifier-free guidance) needs a class-conditional model; use --classifier-ckpt for an unconditional one")
        if options.get("classifier_scale") is not None and not options.get("classifier_ckpt"):
            raise GenResearchError("--classifier-scale needs --classifier-ckpt (a noisy_classifier checkpoint)")
        if bool(options.get("mask") or options.get("strength") is not None) != bool(options.get("input")):
            raise GenResearchError("--mask (inpainting) and --strength (img2img) need --input, and --input needs one of them")
        if options.get("strength") is not None:  # a strength that leaves no step fails here, before any sampling
            diffusion_sampling.start_index(options.get("steps") or self.hparams.sampling_steps, options["strength"])
        label = context.class_label if context is not None else None
        if label is not None and not options.get("classifier_ckpt"):  # with a classifier, its classes decide (prepare_sampling)
            ModelFamily.check_sampling_options(self, options, context)

    def prepare_sampling(self, options: dict[str, Any], context: SamplingContext) -> SamplingPlan:
        """Load the classifier, the input images and the mask that options name; the rest passes through."""
        from gen_research.sampling.inputs import input_images, known_mask

        plan = SamplingPlan(options={k: v for k, v in options.items() if k not in ("classifier_ckpt", "input", "mask")})
        if options.get("classifier_ckpt"):
            classifier = load_noisy_classifier(options["classifier_ckpt"], self.image_shape)
            classes = int(classifier.hparams.num_classes)
            if context.class_label is not None and not 0 <= context.class_label < classes:
                raise GenResearchError(f"--class {context.class_label} is not a class of the classifier (0..{classes - 1})")
            plan.options["classifier"] = classifier
        if options.get("input"):
            images = input_images(options["input"], context.num_images, context.datamodule, self.image_shape).to(context.device)
            plan.per_image["init_images"] = images
            plan.shown_inputs = images
        if options.get("mask"):
            mask = known_mask(options["mask"], self.image_shape).to(context.device)
            plan.options["known_mask"] = mask
            plan.shown_inputs = plan.shown_inputs * mask  # what the model was given: masked-out pixels grey
        return plan

    def diffusers_pipeline(self, sampler: str) -> Any:
        """A diffusers pipeline of this model (EMA weights when they were loaded) with scheduler ``sampler``."""
        import diffusers

        if sampler not in PIPELINES:
            raise GenResearchError(f"export --sampler {sampler!r}: a diffusion pipeline is written with one of {', '.join(PIPELINES)}")
        if self.null_label is not None:
            raise GenResearchError("export: this model is class-conditional, and diffusers' UNet pipelines take no class labels; sample it with gen_research")
        scheduler = diffusion_sampling.make_scheduler(sampler, self.noise_scheduler.config)
        return getattr(diffusers, PIPELINES[sampler])(unet=self.unet.eval(), scheduler=scheduler)


    def export_extras(self, folder: Path) -> str:
        return ""  # the pipeline folder holds the whole model

    def export_note(self, sampler: str) -> str:
        # Our DDIM steps with the epsilon consistent with the clipped x0; diffusers' DDIMPipeline does so when asked.
        return ", then call it with use_clipped_model_output=True (as gen_research's ddim)" if sampler == "ddim" else ""


def load_noisy_classifier(path: str, image_shape: tuple[int, int, int]) -> Any:
    """A noisy_classifier checkpoint for classifier guidance, refused in one line if it is another model or shape."""
    from gen_research.models.diffusion.noisy_classifier import NoisyClassifier
    from gen_research.training.run_folder import read_checkpoint

    saved = (read_checkpoint(Path(path)).get("hyper_parameters") or {}).get("_class_path", "")
    if saved and not saved.endswith("NoisyClassifier"):
        raise GenResearchError(f"--classifier-ckpt {path} holds a {saved.rpartition('.')[2]}; classifier guidance needs a noisy_classifier checkpoint")
    classifier = NoisyClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    if tuple(classifier.hparams.image_shape) != tuple(image_shape):
        raise GenResearchError(f"--classifier-ckpt {path} classifies {tuple(classifier.hparams.image_shape)} images; the model makes {tuple(image_shape)}")
    return classifier


__all__ = ["DiffusionSamplingContract", "PIPELINES", "SAMPLER_DESCRIPTIONS", "load_noisy_classifier"]
