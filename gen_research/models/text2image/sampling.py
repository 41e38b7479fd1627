"""The sampling side of ``text2image`` under the model contract: its options (prompts, negative prompt, size, depth,
low-resolution input, refiner), their rules, and ``sample`` itself.

``sample`` follows diffusers' StableDiffusionPipeline step for step (start noise drawn first from the generator,
classifier-free guidance ``uncond + g * (cond - uncond)`` with the negative prompt's embedding as ``uncond``, the
latents divided by the latent scale and decoded), so an exported pipeline draws the same images from the same seed.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch

from gen_research.errors import GenResearchError
from gen_research.models.contract import ModelFamily, SamplingContext, SamplingOption, SamplingPlan
from gen_research.models.diffusion.sampling_contract import SAMPLER_DESCRIPTIONS, DiffusionSamplingContract
from gen_research.models.text2image import conditioning as C
from gen_research.models.text2image.lora import has_lora, merged_copy, save_lora
from gen_research.sampling import diffusion as diffusion_sampling

DEFAULT_NOISE_LEVEL = 20  # diffusers' StableDiffusionUpscalePipeline default
DEFAULT_REFINER_START = 0.8  # SDXL's base-to-refiner hand-over (denoising_end 0.8)
TEXT_OPTIONS = (
    SamplingOption("prompt", str, "text-to-image: the prompt of every image (default: the empty prompt)"),
    SamplingOption("negative_prompt", str, "text-to-image: what to steer away from (guidance's unconditional input; default the empty prompt)"),
    SamplingOption("prompts_file", str, "text-to-image: a text file with one prompt per line, cycled over --num-images"),
    SamplingOption("height", int, "text-to-image: image height in pixels (default: the training size)", low=1),
    SamplingOption("width", int, "text-to-image: image width in pixels (default: the training size)", low=1),
    SamplingOption("depth", str, "depth-conditioned text2image: depth maps: a data split (its depth field) or a folder of grey images"),
    SamplingOption("low_res", str, "text2image upscaler: low-resolution images: a data split (downsampled) or a folder"),
    SamplingOption("noise_level", int, f"text2image upscaler: noise level added to the low-resolution input (default {DEFAULT_NOISE_LEVEL})", low=0),
    SamplingOption("refiner_ckpt", str, "text2image: a refiner checkpoint (trained with max_train_timestep) that finishes the denoising"),
    SamplingOption("refiner_start", float, f"text2image refiner: share of the noise schedule the base model runs (default {DEFAULT_REFINER_START})",
                   low=0.0, high=1.0, low_inclusive=False, high_inclusive=False),
)
_NOT_FOR_TEXT = ("classifier_ckpt", "classifier_scale")


class TextToImageSampling(ModelFamily):
    """The contract side of :class:`~gen_research.models.text2image.TextToImage` (list it before LatentDiffusion)."""

    SAMPLING_OPTIONS: ClassVar[tuple[SamplingOption, ...]] = tuple(
        o for o in DiffusionSamplingContract.SAMPLING_OPTIONS if o.name not in _NOT_FOR_TEXT) + TEXT_OPTIONS
    SAMPLERS: ClassVar[dict[str, str]] = SAMPLER_DESCRIPTIONS
    export_samplers: ClassVar[tuple[str, ...]] = ("dpm-solver++", "ddim", "euler", "ddpm")

    hparams: Any
    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]

    @property
    def conditioning_classes(self) -> int | None:
        return None  # conditioned on prompts, not classes

    def sampling_defaults(self) -> dict[str, Any]:
        hp = self.hparams
        defaults: dict[str, Any] = {o.name: None for o in self.SAMPLING_OPTIONS}
        defaults.update(sampler=hp.sampler, steps=hp.sampling_steps, eta=float(hp.eta), guidance_scale=float(hp.guidance_scale), strength=1.0,
                        prompt="", negative_prompt="", height=self.image_shape[1], width=self.image_shape[2])
        if hp.concat_conditioning == "low_res":
            defaults["noise_level"] = DEFAULT_NOISE_LEVEL
        return defaults

    @property
    def latent_factor(self) -> int:
        """Pixels per latent along a side: the first stage's down-sampling factor."""
        return self.image_shape[1] // self.latent_shape[1]

    def size_multiple(self) -> int:
        """Image sides must be multiples of this: the first stage's factor times the UNet's down-sampling."""
        return self.latent_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)  # type: ignore[attr-defined]

    def check_sampling_options(self, options: dict[str, Any], context: SamplingContext | None = None) -> None:
        hp = self.hparams
        if options.get("prompt") is not None and options.get("prompts_file"):
            raise GenResearchError("--prompt and --prompts-file both give prompts; pass one")
        multiple = self.size_multiple()
        for name in ("height", "width"):
            value = options.get(name)
            if value is not None and value % multiple:
                raise GenResearchError(f"--{name} {value}: must be a multiple of {multiple} (the first stage's factor x the UNet's down-sampling); "
                                       f"try {max(multiple, round(value / multiple) * multiple)}")
        if options.get("input") and (options.get("height") or options.get("width")):
            raise GenResearchError("--height/--width do not apply with --input (img2img and inpainting keep the input's size); drop them")
        concat = hp.concat_conditioning
        for name, needs in (("depth", "depth"), ("low_res", "low_res")):
            flag = "--" + name.replace("_", "-")
            if options.get(name) and concat != needs:
                raise GenResearchError(f"{flag} applies to a text2image model trained with concat_conditioning: {needs}; this one has {concat}")
            if concat == needs and not options.get(name):
                raise GenResearchError(f"this text2image model is conditioned on {needs.replace('_', '-')} inputs; pass {flag} SPLIT|FOLDER")
        if options.get("noise_level") is not None:
            if concat != "low_res":
                raise GenResearchError("--noise-level applies to a text2image upscaler (concat_conditioning: low_res)")
            if options["noise_level"] > hp.max_noise_level:
                raise GenResearchError(f"--noise-level {options['noise_level']}: the upscaler was trained on levels 0..{hp.max_noise_level}")
        if options.get("refiner_start") is not None and not options.get("refiner_ckpt"):
            raise GenResearchError("--refiner-start needs --refiner-ckpt")
        train_steps = int(hp.num_train_timesteps)
        if options.get("steps") is not None and options["steps"] > train_steps:
            raise GenResearchError(f"--steps {options['steps']} is more than the {train_steps} noise levels the model was trained on; pass --steps <= {train_steps}")
        if "sampler" in options:
            diffusion_sampling.make_scheduler(options["sampler"], self.noise_scheduler.config)  # type: ignore[attr-defined]
        if bool(options.get("mask") or options.get("strength") is not None) != bool(options.get("input")):
            raise GenResearchError("--mask (inpainting) and --strength (img2img) need --input, and --input needs one of them")
        if options.get("strength") is not None:
            diffusion_sampling.start_index(options.get("steps") or hp.sampling_steps, options["strength"])
        for name in ("prompt", "negative_prompt"):
            if options.get(name) is not None:
                self._prompt_encoders.check_prompts([options[name]], "--" + name.replace("_", "-"))  # type: ignore[attr-defined]
        ModelFamily.check_sampling_options(self, options, context)  # --class is refused: prompts, not classes

    def prepare_sampling(self, options: dict[str, Any], context: SamplingContext) -> SamplingPlan:
        from gen_research.sampling.inputs import input_images

        own = ("prompts_file", "depth", "low_res", "refiner_ckpt")
        plan = DiffusionSamplingContract.prepare_sampling(self, {k: v for k, v in options.items() if k not in own}, context)  # type: ignore[arg-type]
        n = context.num_images
        if options.get("prompts_file"):
            plan.per_image["prompts"] = read_prompts(options["prompts_file"], n, self._prompt_encoders)  # type: ignore[attr-defined]
        h, w = options.get("height") or self.image_shape[1], options.get("width") or self.image_shape[2]
        if options.get("depth"):
            depth = input_images(options["depth"], n, context.datamodule, (1, h, w), field="depth", flag="--depth").to(context.device)
            plan.per_image["depth"] = depth
            plan.shown_inputs = depth
        if options.get("low_res"):
            low = input_images(options["low_res"], n, context.datamodule, (self.image_shape[0], h, w), flag="--low-res").to(context.device)
            plan.per_image["low_res"] = low
            plan.shown_inputs = C.low_resolution(low, (h // self.latent_factor, w // self.latent_factor))  # what the UNet sees
        if options.get("refiner_ckpt"):
            plan.options["refiner"] = self.load_refiner(options["refiner_ckpt"])
        return plan

    def load_refiner(self, path: str) -> Any:
        """A refiner checkpoint of this family that shares this model's latent space and noise schedule."""
        from gen_research.training.run_folder import read_checkpoint

        saved = (read_checkpoint(Path(path)).get("hyper_parameters") or {}).get("_class_path", "")
        if saved and not saved.endswith(type(self).__name__):
            raise GenResearchError(f"--refiner-ckpt {path} holds a {saved.rpartition('.')[2]}; a refiner is a {type(self).__name__} checkpoint")
        refiner = type(self).load_from_checkpoint(path, map_location="cpu", weights_only=True)
        mine, theirs = self.noise_scheduler.alphas_cumprod, refiner.noise_scheduler.alphas_cumprod  # type: ignore[attr-defined]
        if mine.shape != theirs.shape or not torch.allclose(mine, theirs) or refiner.hparams.prediction_type != self.hparams.prediction_type:
            raise GenResearchError(f"--refiner-ckpt {path}: the refiner was trained on another noise schedule or prediction type; train it with this model's")
        same_stage = refiner.hparams.first_stage == self.hparams.first_stage and math.isclose(refiner.latent_scale, self.latent_scale) and all(  # type: ignore[attr-defined]
            torch.equal(a, b) for a, b in zip(refiner.first_stage.state_dict().values(), self.first_stage.state_dict().values()))  # type: ignore[attr-defined]
        if not same_stage:
            raise GenResearchError(f"--refiner-ckpt {path}: the refiner works in another first stage's latent space; train it on this model's first stage")
        device = next(self.parameters()).device  # type: ignore[attr-defined]
        return refiner.to(device).eval()

    # ---- sampling ---------------------------------------------------------------------------------
    def prompt_denoiser(self, prompts: list[str], negative_prompt: str, scale: float, size: tuple[int, int], **inputs: Any) -> Any:
        """``denoise(x, t)`` with classifier-free guidance between the prompts and the negative prompt."""
        n = len(prompts)
        cond = self.condition(prompts, size, **inputs)  # type: ignore[attr-defined]
        negative = self._prompt_encoders.encode([negative_prompt] * n, self.device)  # type: ignore[attr-defined]
        uncond = dict(cond, hidden=negative["hidden"], pooled=negative["pooled"] if cond.get("pooled") is not None else None)
        dtype = next(self.unet.parameters()).dtype  # type: ignore[attr-defined]
        return lambda x, t: diffusion_sampling.guided(self, x.to(dtype), t, cond, uncond, scale)

    @torch.no_grad()
    def sample(self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None, *,
               prompts: list[str] | None = None, prompt: str | None = None, negative_prompt: str | None = None,
               sampler: str | None = None, steps: int | None = None, eta: float | None = None, guidance_scale: float | None = None,
               height: int | None = None, width: int | None = None, init_images: torch.Tensor | None = None, strength: float = 1.0,
               known_mask: torch.Tensor | None = None, depth: torch.Tensor | None = None, low_res: torch.Tensor | None = None,
               noise_level: int | None = None, refiner: Any = None, refiner_start: float | None = None) -> torch.Tensor:
        """``num_samples`` images in [-1, 1] for ``prompts`` (one each) or one ``prompt`` (default: the empty prompt,
        i.e. unconditional), guided away from ``negative_prompt``; the other options as ``ddpm``'s, plus the size, the
        depth maps / low-resolution images of conditioned models, and a refiner for the last ``1 - refiner_start``."""
        hp = self.hparams
        if labels is not None:
            raise GenResearchError("text2image is conditioned on prompts, not classes; pass prompts (sample --prompt / --prompts-file)")
        if math.isnan(self.latent_scale):  # type: ignore[attr-defined]
            raise GenResearchError("text2image: this model has not trained (its latent scale factor is unset); fit it first")
        if prompts is None and not prompt:  # evaluate / sample grids ask without prompts: say what the images are
            warnings.warn("text2image: no prompt given: sampling with the empty prompt, i.e. the unconditional model "
                          "(pass --prompt or --prompts-file for prompted images)", stacklevel=2)
        prompts = list(prompts) if prompts is not None else [prompt or ""] * num_samples
        if len(prompts) != num_samples:
            raise GenResearchError(f"text2image: got {len(prompts)} prompts for {num_samples} images")
        encoders = self._prompt_encoders  # type: ignore[attr-defined]
        prompts = encoders.check_prompts(prompts, "prompt")
        negative = encoders.check_prompts([negative_prompt or ""], "--negative-prompt")[0]
        size = (height or self.image_shape[1], width or self.image_shape[2])
        if size[0] % self.size_multiple() or size[1] % self.size_multiple():
            raise GenResearchError(f"text2image: {size[0]}x{size[1]} images: sides must be multiples of {self.size_multiple()}")
        scale = float(hp.guidance_scale if guidance_scale is None else guidance_scale)
        steps = int(hp.sampling_steps if steps is None else steps)
        scheduler = diffusion_sampling.make_scheduler(hp.sampler if sampler is None else sampler, self.noise_scheduler.config)  # type: ignore[attr-defined]
        inputs: dict[str, Any] = {"depth": depth, "low_res": low_res, "generator": generator}
        if hp.concat_conditioning == "low_res":
            inputs["noise_level"] = torch.full((num_samples,), DEFAULT_NOISE_LEVEL if noise_level is None else int(noise_level))
        denoise = self.prompt_denoiser(prompts, negative, scale, size, **inputs)
        if refiner is not None:
            base, refine = denoise, refiner.prompt_denoiser(prompts, negative, scale, size, **inputs)
            start = DEFAULT_REFINER_START if refiner_start is None else float(refiner_start)
            switch = int(hp.num_train_timesteps) * (1.0 - start)  # SDXL: the base denoises t >= 1000 * (1 - denoising_end)
            denoise = lambda x, t: (base if float(t) >= switch else refine)(x, t)  # noqa: E731
        shape = (num_samples, self.latent_shape[0], size[0] // self.latent_factor, size[1] // self.latent_factor)
        latent_init, latent_mask = self.latent_inputs(init_images, known_mask)  # type: ignore[attr-defined]
        z = diffusion_sampling.sample(denoise, scheduler, shape, steps, generator, self.device, eta=float(hp.eta if eta is None else eta),  # type: ignore[attr-defined]
                                      init_images=latent_init, strength=strength, known_mask=latent_mask, clip=False)
        images = self.first_stage.decode_latents(z / self.latent_scale).clamp(-1.0, 1.0)  # type: ignore[attr-defined]
        return self.paste_known(images, init_images, known_mask)  # type: ignore[attr-defined]

    # ---- export -----------------------------------------------------------------------------------
    def diffusers_pipeline(self, sampler: str) -> Any:
        """A StableDiffusionPipeline (two text encoders: StableDiffusionXLPipeline) of this model, EMA weights when loaded."""
        from gen_research.models.text2image.sd_format import stable_diffusion_pipeline

        hp = self.hparams
        if hp.concat_conditioning:
            raise GenResearchError(f"export: a text2image model with concat_conditioning {hp.concat_conditioning!r} has no Stable Diffusion pipeline "
                                   "gen_research can write (diffusers' depth and upscale pipelines need their own estimator and schedulers); sample it with gen_research")
        if math.isnan(self.latent_scale):  # type: ignore[attr-defined]
            raise GenResearchError("export: this text2image model has not trained (its latent scale factor is unset)")
        scheduler = diffusion_sampling.make_scheduler(sampler, self.noise_scheduler.config)  # type: ignore[attr-defined]
        encoders = self._prompt_encoders.encoders  # type: ignore[attr-defined]
        second = {"text_encoder_2": encoders[1].model, "tokenizer_2": encoders[1].tokenizer} if len(encoders) > 1 else {}
        unet = merged_copy(self.unet) if has_lora(self.unet) else self.unet  # type: ignore[attr-defined]
        return stable_diffusion_pipeline(unet, self.first_stage.diffusers_autoencoder(), encoders[0].model, encoders[0].tokenizer,  # type: ignore[attr-defined]
                                         scheduler, self.latent_scale, **second)  # type: ignore[attr-defined]

    def export_extras(self, folder: Path) -> str:
        """A LoRA fine-tune also writes its adapters alone (diffusers' LoRA format) into ``folder``/lora."""
        if not has_lora(self.unet):  # type: ignore[attr-defined]
            return ""
        file = save_lora(self.unet, Path(folder) / "lora")  # type: ignore[attr-defined]
        return (f"; the pipeline's UNet has the LoRA adapters merged in, and {file.relative_to(folder)} holds them alone for the "
                "base model: pipe = StableDiffusionPipeline.from_pretrained(BASE); pipe.load_lora_weights(DIR/lora)")

    def export_note(self, sampler: str) -> str:
        return " (StableDiffusionPipeline.from_pretrained: call it with prompt=..., guidance_scale=..., height/width)"


def read_prompts(path: str, count: int, encoders: Any) -> list[str]:
    """``count`` prompts from a text file (one per line, blank lines skipped), cycled; one-line errors."""
    file = Path(path)
    if not file.is_file():
        raise GenResearchError(f"--prompts-file {path}: no such file; pass a text file with one prompt per line")
    try:
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise GenResearchError(f"--prompts-file {path}: cannot read it as UTF-8 text ({type(error).__name__})") from None
    prompts = [line for line in lines if line]
    if not prompts:
        raise GenResearchError(f"--prompts-file {path} has no prompts; write one prompt per line")
    prompts = encoders.check_prompts(prompts, f"--prompts-file {path}")
    return [prompts[i % len(prompts)] for i in range(count)]


__all__ = ["TEXT_OPTIONS", "TextToImageSampling", "read_prompts"]
