"""The model contract: everything a command, callback or metric may ask a model, in one file.

A family is a LightningModule that mixes in :class:`ModelFamily` and implements the capabilities it has. Each
capability is a small Protocol; code outside ``gen_research/models/`` asks ``can(model, Generates)`` (or
:func:`require`, which fails in one line) and then calls only what the Protocol lists. Nothing outside
``models/`` probes a model's internals (its UNet, its noise scheduler, its hyperparameters).

=====================  =====================================================  ==============================
capability             what the model provides                                who asks
=====================  =====================================================  ==============================
:class:`Generates`     ``sample(n, labels=None, generator=None, **options)``  sample, evaluate, sample grids,
                       -> images in [-1, 1]; ``conditioning_classes``         evaluation callback, sampler grid
:class:`Reconstructs`  ``reconstruct(images)`` -> images                      evaluation (ssim/psnr/lpips), grids
:class:`Interpolates`  ``interpolate(a, b, num_steps)``                       sample grids
:class:`LatentPrior`   ``latent_dim`` and ``decode(z)`` for z ~ N(0, I)       ppl, latent walks, arithmetic
:class:`StyleSpace`    ``to_w(z)`` -> per-layer styles, ``synthesize(ws)``      ppl in W, style mixing, W walks
:class:`Translates`    ``translate(images, target=None)``; ``target_domains``  evaluate, sample grids
:class:`ExportsDiffusers` ``diffusers_pipeline(sampler)``; ``export_samplers`` export
:class:`ExportsFolder` ``export_folder(folder)`` (e.g. a transformers folder)  export
:class:`FirstStage`    ``encode_moments``/``decode_latents``; latent shape    ldm (a second stage), export
:class:`Quantizes`     ``encode_codes``/``decode_codes``; ``codebook_size``   vq_prior (a prior over codes)
=====================  =====================================================  ==============================

and, on every family (class attributes of :class:`ModelFamily`, read without building a model):

- ``SAMPLING_OPTIONS``: the options ``sample``/``translate`` take beyond the standard ones, each a
  :class:`SamplingOption` (name, type, range, help, default). ``sample --help`` lists the options of every
  registered family; a given option the loaded model does not declare is refused in one line.
- ``SAMPLERS``: what the family's ``--sampler`` option accepts (name -> one line), shown by ``list samplers``.
- ``BATCH_FIELDS``: the batch fields training needs (``image``, ``label``, ``caption``, ``source``/``target``,
  ``domain``, ``target_domain``); a data module that does not provide them is refused before training
  (:func:`check_batch_fields`).
- ``CHECKPOINT_MONITOR``: the (metric, mode) the default checkpoint callback ranks checkpoints by, or None.

A family may also override :meth:`ModelFamily.check_data` (facts of the data its networks were built for, e.g. a
translator's source channels or domain names, compared before training), :meth:`ModelFamily.check_sampling_options` (rules between options, e.g. "guidance
needs a class-conditional model"), :meth:`ModelFamily.prepare_sampling` (turn options naming files into tensors:
a mask, input images, a classifier), :meth:`ModelFamily.sampling_defaults` and :meth:`ModelFamily.sampling_network`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gen_research.errors import GenResearchError
from gen_research.models.sampling_option import SamplingOption  # noqa: F401  (defined without torch: sample --help)

#: The batch fields a data module may provide (a dict per batch, see gen_research/data/base.py):
#:
#: - ``image``: a real image of the domain the model produces (for paired data: the target);
#: - ``label``: the item's class (for a translator: the class of its ``source``, which a translation should keep);
#: - ``caption``: the item's text;
#: - ``source``: a translator's input image; ``target``: its paired ground truth (paired data only);
#: - ``domain``: the domain of the item's ``source`` (or of ``image`` when there is no source): int64 ids, or float
#:   0/1 attribute vectors for multi-label domains (StarGAN's CelebA attributes);
#: - ``target_domain``: the domain an evaluation item asks its source to be translated into (same encoding);
#: - ``depth``: a depth-like map [B, 1, H, W] in [-1, 1] (1 = near) of the item's ``image`` (SD2-style depth conditioning);
#: - ``original_size`` (h, w) and ``crop_coords`` (top, left): int64 [B, 2], the image's size before resizing and where it
#:   was cropped (SDXL's micro-conditioning).
BATCH_FIELDS = ("image", "label", "caption", "source", "target", "domain", "target_domain", "depth", "original_size", "crop_coords")


@dataclass
class SamplingContext:
    """What :meth:`ModelFamily.prepare_sampling` may use: how many images, where, the data, the requested class."""

    num_images: int
    device: torch.device | str = "cpu"
    datamodule: Any = None
    class_label: int | None = None


@dataclass
class SamplingPlan:
    """Keywords for every ``sample`` call, per-image tensors (sliced along dim 0 per batch), and the inputs to show."""

    options: dict[str, Any] = field(default_factory=dict)
    per_image: dict[str, Tensor] = field(default_factory=dict)
    shown_inputs: Tensor | None = None  # saved as input.png by the sample command (what the model was given)


# ---- capabilities -------------------------------------------------------------------------------------
@runtime_checkable
class Generates(Protocol):
    """Draws new images. ``conditioning_classes``: how many classes ``labels=`` may name (None: unconditional)."""

    conditioning_classes: int | None

    def sample(self, num_samples: int, labels: Tensor | None = None, generator: torch.Generator | None = None, **options: Any) -> Tensor: ...


@runtime_checkable
class Reconstructs(Protocol):
    """Maps images to their reconstructions (autoencoders): the pairs of ssim/psnr/lpips and the fakes of a model that cannot sample."""

    def reconstruct(self, images: Tensor) -> Tensor: ...


@runtime_checkable
class Interpolates(Protocol):
    """Paths between images: ``[len(a) * num_steps, C, H, W]``, row i runs a[i] -> b[i]."""

    def interpolate(self, a: Tensor, b: Tensor, num_steps: int) -> Tensor: ...


@runtime_checkable
class LatentPrior(Protocol):
    """A decoder of z ~ N(0, I) in ``latent_dim`` dimensions (perceptual path length). ``latent_prior`` names the
    prior ("standard_normal"); an autoencoder's decoder has no prior, so it does not declare one."""

    latent_dim: int
    latent_prior: str

    def decode(self, z: Tensor, **options: Any) -> Tensor:
        """Images in [-1, 1] of ``z``; ``options`` are the family's declared sampling options that apply to a
        latent (a GAN's ``truncation_psi``), passed only when given."""
        ...


@runtime_checkable
class StyleSpace(Protocol):
    """An intermediate latent space W (StyleGAN): a mapping network takes z to per-layer styles, a synthesis network
    draws images from them.

    - ``to_w(z, labels=None, truncation_psi=1.0, truncation_cutoff=None)`` -> ``[N, num_ws, w_dim]``: the mapped
      w broadcast to every synthesis layer, moved towards the tracked mean ``w_avg`` by ``truncation_psi`` (on the
      first ``truncation_cutoff`` layers only, when given).
    - ``synthesize(ws, noise_mode="const", generator=None)`` -> images in [-1, 1]. ``noise_mode`` "const" uses the
      fixed noise buffers (deterministic: interpolations, style-mixing grids and PPL, as NVlabs' tools do),
      "random" draws per-pixel noise with ``generator``.
    - ``style_mixing_crossover``: the default layer index where coarse styles end (rows' styles before it, columns'
      from it on, in a style-mixing grid).
    """

    w_dim: int
    num_ws: int
    style_mixing_crossover: int

    def to_w(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> Tensor: ...

    def synthesize(self, ws: Tensor, noise_mode: str = "const", generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class Translates(Protocol):
    """Image-to-image: ``translate(source images, target domains or None)`` -> images in [-1, 1], of the source's size.

    - ``target_domains``: how many domains ``target`` may name (None: one fixed direction, e.g. Pix2Pix).
    - ``domain_names``: their names, in id order (None with ``target_domains`` None); ``translate --target-domain``
      takes a name or an id.
    - ``source_channels``: the channels of the images ``translate`` takes (1 grey, 3 RGB); the ``translate`` command
      reads image files in that mode.
    - ``target``: int64 domain ids ``[B]``, or for a multi-label model float 0/1 attribute vectors ``[B, K]``.
    - Any height and width: a family whose network needs a multiple of some size pads internally and crops back.
    """

    target_domains: int | None
    domain_names: tuple[str, ...] | None
    source_channels: int

    def translate(self, images: Tensor, target: Tensor | None = None, **options: Any) -> Tensor: ...


@runtime_checkable
class ExportsDiffusers(Protocol):
    """A diffusers pipeline of the model (``export``); ``export_samplers`` names the schedulers it can be written with."""

    export_samplers: tuple[str, ...]

    def diffusers_pipeline(self, sampler: str) -> Any: ...

    def export_note(self, sampler: str) -> str:
        """What a user must know to reproduce gen_research's images with the pipeline ("" when nothing)."""
        ...

    def export_extras(self, folder: Path) -> str:
        """Write what the pipeline folder does not hold (e.g. LoRA adapters) into ``folder``; say what ("" when nothing)."""
        ...


@runtime_checkable
class ExportsFolder(Protocol):
    """Writes itself as a folder its library loads without gen_research (``export`` of a model that is no diffusers
    pipeline, e.g. a local CLIP as a transformers ``CLIPModel`` folder)."""

    def export_folder(self, folder: Path) -> str:
        """Write into ``folder`` (new or empty); return one line saying how to load it."""
        ...


@runtime_checkable
class FirstStage(Protocol):
    """An autoencoder whose latent space a second-stage model works in (latent diffusion, Rombach et al. 2022).

    - ``image_shape``: (C, H, W) of the images it encodes; ``latent_shape``: (C, h, w) of their latents.
    - ``encode_moments(images)`` -> (mean, std), each ``[B, *latent_shape]``: the encoder's posterior q(z | x) as a
      diagonal Gaussian (a KL autoencoder); a deterministic encoder (VQ: the latents before quantisation, which
      CompVis' VQ-f4 LDMs diffuse in) returns std zeros. Latents are ``mean + std * noise``.
    - ``decode_latents(z)`` -> images in [-1, 1] (a VQ first stage quantises z first).
    - ``diffusers_autoencoder()`` -> the diffusers ``AutoencoderKL`` / ``VQModel`` that does the same, for export.
    """

    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]

    def encode_moments(self, images: Tensor) -> tuple[Tensor, Tensor]: ...

    def decode_latents(self, z: Tensor) -> Tensor: ...

    def diffusers_autoencoder(self) -> Any: ...


@runtime_checkable
class Quantizes(Protocol):
    """A discrete latent space (VQ-VAE): ``encode_codes(images)`` -> int64 codes ``[B, h, w]`` in
    0..``codebook_size``-1, ``decode_codes(codes)`` -> images in [-1, 1]; ``code_grid`` is (h, w)."""

    codebook_size: int
    code_grid: tuple[int, int]

    def encode_codes(self, images: Tensor) -> Tensor: ...

    def decode_codes(self, codes: Tensor) -> Tensor: ...


CAPABILITIES: dict[type, str] = {
    Generates: "generate new images (sample)",
    Reconstructs: "reconstruct images",
    Interpolates: "interpolate between images",
    LatentPrior: "decode latents drawn from N(0, I)",
    StyleSpace: "map latents to a style space W and synthesize from it (StyleGAN)",
    Translates: "translate images (image-to-image)",
    ExportsDiffusers: "be exported as a diffusers pipeline",
    ExportsFolder: "be exported as a folder its library loads",
    FirstStage: "encode images to latents and decode them (a first-stage autoencoder)",
    Quantizes: "encode images to discrete codes and decode them (a vector-quantised autoencoder)",
}


def can(model: Any, capability: type) -> bool:
    """Whether ``model`` has ``capability`` (one of the Protocols above)."""
    return isinstance(model, capability)


def require(model: Any, capability: type, purpose: str) -> Any:
    """``model`` if it has ``capability``, else a one-line error saying what ``purpose`` needed."""
    if not can(model, capability):
        raise GenResearchError(f"{purpose} needs a model that can {CAPABILITIES[capability]}; {type(model).__name__} cannot")
    return model


def conditioning_classes(model: Any) -> int | None:
    """How many classes ``model.sample(labels=...)`` takes; None for unconditional models and non-generators."""
    classes = getattr(model, "conditioning_classes", None) if can(model, Generates) else None
    return int(classes) if classes else None


# ---- what every family declares ----------------------------------------------------------------------
class ModelFamily:
    """Mixin of every family's LightningModule (list it before ``LightningModule``): the declarations and the
    default behaviour of the contract. See the module docstring for what each attribute means."""

    SAMPLING_OPTIONS: ClassVar[tuple[SamplingOption, ...]] = ()
    SAMPLERS: ClassVar[dict[str, str]] = {}
    BATCH_FIELDS: ClassVar[tuple[str, ...]] = ("image",)
    CHECKPOINT_MONITOR: ClassVar[tuple[str, str] | None] = ("val/loss", "min")

    def check_data(self, datamodule: Any, data_name: str) -> None:
        """Refuse, in one line, data that does not fit the networks this model built (a translator's source channels,
        a multi-domain model's domain names), before training; the message names the ``model.init_args`` to set.
        The default checks nothing beyond :data:`BATCH_FIELDS` (image shape and classes are linked from the data)."""

    def check_sampling_options(self, options: dict[str, Any], context: SamplingContext | None = None) -> None:
        """Rules between options (each option alone is already checked); raise GenResearchError in one line.

        The default checks the requested class (``--class``) against :attr:`Generates.conditioning_classes`."""
        label = context.class_label if context is not None else None
        if label is None:
            return
        classes = conditioning_classes(self)
        if not classes:
            raise GenResearchError(f"--class needs a class-conditional model; {type(self).__name__} samples without classes")
        if not 0 <= label < classes:
            raise GenResearchError(f"--class {label} is not a class of this model (0..{classes - 1})")

    def prepare_sampling(self, options: dict[str, Any], context: SamplingContext) -> SamplingPlan:
        """Turn checked options into the keywords of ``sample`` (e.g. load a file an option names)."""
        return SamplingPlan(options=dict(options))

    def sampling_defaults(self) -> dict[str, Any]:
        """The value each declared option takes when not given (None where the option has no single default)."""
        return {option.name: option.default for option in self.SAMPLING_OPTIONS}

    def sampling_network(self) -> nn.Module:
        """The module whose calls count as network function evaluations (NFE) while sampling."""
        assert isinstance(self, nn.Module)
        return self


def declared_options(model_or_class: Any) -> tuple[SamplingOption, ...]:
    return tuple(getattr(model_or_class, "SAMPLING_OPTIONS", ()))


def check_sampling_options(model: Any, given: dict[str, Any], context: SamplingContext | None = None) -> dict[str, Any]:
    """The given options (None = not given, dropped), each checked against the model's declaration, then the
    family's own rules. An option the model does not declare is refused, naming the ones it does."""
    declared = {option.name: option for option in declared_options(model)}
    checked = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in declared:
            takes = ", ".join(option.flag for option in declared.values()) or "no sampling options"
            flag = "--" + name.replace("_", "-")
            raise GenResearchError(f"{flag} does not apply to {type(model).__name__}; it takes: {takes}")
        checked[name] = declared[name].check(value)
    if isinstance(model, ModelFamily):
        model.check_sampling_options(checked, context)
    return checked


def family_classes() -> list[tuple[str, type]]:
    """(registered name, class) of every registered model family, in name order."""
    from gen_research.registry import MODELS

    return [(entry.name, entry.obj) for entry in MODELS]


def options_of_all_families() -> list[tuple[SamplingOption, list[str]]]:
    """Each option name once (the first declaration), with the families declaring it: for ``sample --help``."""
    seen: dict[str, tuple[SamplingOption, list[str]]] = {}
    for name, cls in family_classes():
        for option in declared_options(cls):
            seen.setdefault(option.name, (option, []))[1].append(name)
    return list(seen.values())


def check_batch_fields(model: Any, provided: Iterable[str], data_name: str) -> None:
    """Refuse, in one line, data that lacks a batch field the model trains on."""
    needed = tuple(getattr(model, "BATCH_FIELDS", ("image",)))
    missing = [name for name in needed if name not in set(provided)]
    if missing:
        raise GenResearchError(
            f"{type(model).__name__} trains on batch fields {', '.join(needed)}, but {data_name} provides {', '.join(sorted(provided))} "
            f"(no {', '.join(missing)}); pick a data module that provides them (python -m gen_research list datamodules)"
        )


def sampler_table() -> list[tuple[str, str, str]]:
    """(family, sampler name, description) for every family that declares ``SAMPLERS``: ``list samplers``."""
    return [(name, sampler, text) for name, cls in family_classes() for sampler, text in getattr(cls, "SAMPLERS", {}).items()]


__all__ = [
    "BATCH_FIELDS",
    "CAPABILITIES",
    "ExportsDiffusers",
    "ExportsFolder",
    "FirstStage",
    "Generates",
    "Interpolates",
    "LatentPrior",
    "ModelFamily",
    "Quantizes",
    "Reconstructs",
    "StyleSpace",
    "SamplingContext",
    "SamplingOption",
    "SamplingPlan",
    "Translates",
    "can",
    "check_batch_fields",
    "check_sampling_options",
    "conditioning_classes",
    "declared_options",
    "family_classes",
    "options_of_all_families",
    "require",
    "sampler_table",
]
