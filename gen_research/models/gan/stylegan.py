"""``stylegan``: StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN") on GANBase's
training, faithful to NVlabs' stylegan2-ada-pytorch (``training/loss.py``, ``training_loop.py``, ``train.py``).

Per batch (one training step): a discriminator step (non-saturating logistic loss), lazy R1 every ``r1_interval``
(16) batches as its own D step weighted by the interval, a generator step, and lazy path-length regularization
every ``pl_interval`` (4) batches as its own G step (weight 2, on half the batch, ``pl_mean`` tracked with decay
0.01). Each lazily regularized network's Adam lr and betas are adjusted by k / (k + 1) (regularizers.
lazy_regularization). Every generator forward in training maps z to W (updating ``w_avg``, beta 0.995) and, with
probability 0.9, takes the styles from a crossover index on from a second z (style mixing regularization).
Everything a resume needs is a buffer (``w_avg``, ``pl_mean``, ``noise_const``), an optimizer or the checkpointed
global RNG (z, noise, crossover draws).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.models.common import check_number
from gen_research.models.contract import SamplingContext, SamplingOption
from gen_research.models.gan.family import GANBase, Loss
from gen_research.models.gan.losses import generator_loss
from gen_research.models.gan.regularizers import lazy_regularization
from gen_research.models.gan.stylegan_networks import StyleGANDiscriminator, StyleGANGenerator
from gen_research.registry import MODELS

#: NVlabs' optimizers for both networks (train.py): Adam lr 0.0025, betas (0, 0.99), eps 1e-8 (AdamW, no decay).
STYLEGAN_OPTIMIZER = {"lr": 0.0025, "betas": [0.0, 0.99]}


def draw_crossover(num_ws: int, probability: float, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> int:
    """Style mixing's crossover index, drawn as NVlabs' ``loss.py`` does: a cutoff uniform in [1, num_ws), kept with
    ``probability``, else ``num_ws`` (no mixing). Two draws from ``generator`` (None: the global, checkpointed RNG,
    so a resumed run repeats them)."""
    if generator is not None:
        device = generator.device
    cutoff = torch.empty([], dtype=torch.int64, device=device).random_(1, num_ws, generator=generator)
    keep = torch.rand([], device=device, generator=generator) < probability
    return int(cutoff) if bool(keep) else num_ws


def mix_styles(first: Tensor, second: Tensor, crossover: int) -> Tensor:
    """Styles [N, num_ws, w_dim]: layers before ``crossover`` from ``first``, from ``crossover`` on from ``second``."""
    return torch.cat([first[:, :crossover], second[:, crossover:]], dim=1)


@MODELS.register("stylegan", "StyleGAN2 (Karras et al. 2020): mapping network, modulated convs, noise, style mixing, lazy R1 + path length, truncation in W")
class StyleGAN(GANBase):
    """StyleGAN2 with NVlabs' defaults (their ``stylegan2`` config; see configs/model/stylegan.yaml).

    Contract: Generates (``sample`` with ``truncation_psi`` and ``truncation_cutoff`` applied in W, ``noise_mode``),
    LatentPrior (``decode(z)`` with constant noise), StyleSpace (``w_dim``, ``num_ws``, ``style_mixing_crossover``,
    ``to_w``, ``synthesize``). ``image_shape`` must be square with a power-of-2 side >= 4.
    """

    SAMPLING_OPTIONS = (
        SamplingOption("truncation_psi", float, "truncation in W: w_avg + psi (w - w_avg) (1 = off; metrics use 1)",
                       default=1.0, low=0.0, high=1.0),
        SamplingOption("truncation_cutoff", int, "truncate only the first N styles (the coarse layers); default all", default=None, low=1),
        SamplingOption("noise_mode", str, "per-pixel noise: random (as NVlabs' metrics), const (fixed per layer), none",
                       default="random", choices=("random", "const", "none")),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int | None = None,
        latent_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        mapping_lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.995,
        channel_base: int = 32768,
        channel_max: int = 512,
        discriminator_architecture: Literal["resnet", "orig"] = "resnet",
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
        loss: Loss = "non_saturating",
        r1_gamma: float | Literal["auto"] = 10.0,
        r1_interval: int = 16,
        style_mixing_probability: float = 0.9,
        pl_weight: float = 2.0,
        pl_interval: int = 4,
        pl_batch_shrink: int = 2,
        pl_decay: float = 0.01,
        class_conditional: bool = False,
        optimizers: dict[str, dict[str, Any]] | None = None,
        diffaugment: str | None = None,
        ada: dict[str, float] | None = None,
    ) -> None:
        super().__init__(image_shape, num_classes, latent_dim, loss, 1, 0.0, r1_gamma, r1_interval, class_conditional,
                         with_defaults(optimizers, self.NETWORKS), diffaugment, ada)
        self.save_hyperparameters()
        channels, height, width = self.image_shape
        if height != width or height < 4 or height & (height - 1):
            raise GenResearchError(f"stylegan: image_shape {list(self.image_shape)} must be square with a power-of-2 side >= 4; "
                                   "set data.init_args.resize to e.g. 32")
        for name, value, low, hint in (("w_dim", w_dim, 1, "e.g. 512"), ("mapping_layers", mapping_layers, 1, "8 (NVlabs) or 2 (cifar)"),
                                       ("channel_base", channel_base, 1, "32768 (NVlabs)"), ("channel_max", channel_max, 1, "512"),
                                       ("mbstd_group_size", mbstd_group_size, 1, "4 (NVlabs) or 32 (cifar)"),
                                       ("mbstd_num_channels", mbstd_num_channels, 0, "1 (NVlabs) or 0 (off)"),
                                       ("pl_interval", pl_interval, 1, "4 (NVlabs)"), ("pl_batch_shrink", pl_batch_shrink, 1, "2 (NVlabs)")):
            if isinstance(value, bool) or not isinstance(value, int):
                raise GenResearchError(f"stylegan: model.init_args.{name}={value!r} must be an integer; set it to {hint}")
            check_number("stylegan", name, value, low=low, hint=hint)
        check_number("stylegan", "mapping_lr_multiplier", mapping_lr_multiplier, low=0.0, low_inclusive=False, hint="0.01 (NVlabs)")
        check_number("stylegan", "w_avg_beta", w_avg_beta, low=0.0, high=1.0, hint="0.995 (NVlabs)")
        check_number("stylegan", "style_mixing_probability", style_mixing_probability, low=0.0, high=1.0, hint="0.9 (NVlabs) or 0 (off)")
        check_number("stylegan", "pl_weight", pl_weight, low=0.0, hint="2 (NVlabs) or 0 (off)")
        check_number("stylegan", "pl_decay", pl_decay, low=0.0, high=1.0, hint="0.01 (NVlabs)")
        if mbstd_num_channels and channel_widths_at_4(channel_base, channel_max) % mbstd_num_channels:
            raise GenResearchError(f"stylegan: mbstd_num_channels={mbstd_num_channels} must divide D's 4x4 width; set it to 1")
        self.style_mixing_probability, self.pl_weight, self.pl_interval = style_mixing_probability, pl_weight, pl_interval
        self.pl_batch_shrink, self.pl_decay = pl_batch_shrink, pl_decay
        classes = self.num_classes or 0
        self.generator = StyleGANGenerator(latent_dim, classes, w_dim, self.image_shape, mapping_layers, mapping_lr_multiplier,
                                           w_avg_beta, channel_base, channel_max)
        self.discriminator = StyleGANDiscriminator(self.image_shape, classes, channel_base, channel_max, discriminator_architecture,
                                                   mbstd_group_size, mbstd_num_channels)
        # StyleSpace: styles per synthesis layer; the default style-mixing crossover ends the coarse styles at 8x8
        # (4x4 conv, 8x8 convs: indices 0-2, the paper's "coarse"), at most half the styles for tiny images.
        self.w_dim, self.num_ws = w_dim, self.generator.num_ws
        self.style_mixing_crossover = min(3, self.num_ws // 2)
        if pl_weight and pl_interval > 1:  # lazy path length: G's lr and betas adjusted as D's are for lazy R1
            spec = self.optimizer_specs["generator"]
            lr, betas = lazy_regularization(spec.lr, tuple(spec.betas), pl_interval)
            self.optimizer_specs["generator"] = dataclasses.replace(spec, lr=lr, betas=betas)
        self.register_buffer("pl_mean", torch.zeros([]))  # the path-length target (NVlabs loss.pl_mean), checkpointed

    # ---- contract: StyleSpace, Generates, LatentPrior -------------------------------------------------
    def _default_labels(self, count: int, labels: Tensor | None) -> Tensor | None:
        if not self.num_classes:
            if labels is not None:
                raise GenResearchError("StyleGAN samples without classes; train with class_conditional: true to pass labels")
            return None
        return torch.arange(count, device=self.device) % self.num_classes if labels is None else labels.to(self.device)

    def to_w(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> Tensor:
        """[N, num_ws, w_dim]: mapped w (``w_avg`` untouched), moved towards ``w_avg`` by ``truncation_psi`` on the
        first ``truncation_cutoff`` styles (all when None), as NVlabs' MappingNetwork. A conditional model draws
        classes 0, 1, ..., C-1 in turn when ``labels`` is None."""
        return self.generator.mapping(z.to(self.device), self._default_labels(len(z), labels), truncation_psi=truncation_psi,
                                      truncation_cutoff=truncation_cutoff, update_w_avg=False)

    def synthesize(self, ws: Tensor, noise_mode: str = "const", generator: torch.Generator | None = None) -> Tensor:
        """Images in [-1, 1] from styles [N, num_ws, w_dim]; "random" noise is drawn with ``generator``."""
        return self.generator.synthesis(ws.to(self.device), noise_mode=noise_mode, generator=generator).clamp(-1.0, 1.0)

    def decode(self, z: Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> Tensor:
        """synthesize(to_w(z)) with the constant noise: a deterministic function of z (PPL, latent walks)."""
        return self.synthesize(self.to_w(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff), noise_mode="const")

    @torch.no_grad()
    def sample(self, num_samples: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               truncation_psi: float = 1.0, truncation_cutoff: int | None = None, noise_mode: str = "random") -> Tensor:
        """``num_samples`` images from z ~ N(0, I) drawn with ``generator``, truncated in W (not z) towards ``w_avg``."""
        ws = self.to_w(self.latents(num_samples, generator), labels, truncation_psi, truncation_cutoff)
        return self.synthesize(ws, noise_mode=noise_mode, generator=generator)

    def check_sampling_options(self, options: dict[str, Any], context: SamplingContext | None = None) -> None:
        super().check_sampling_options(options, context)
        cutoff = options.get("truncation_cutoff")
        if cutoff is not None and cutoff > self.num_ws:
            raise GenResearchError(f"--truncation-cutoff {cutoff}: this model has {self.num_ws} styles; choose 1..{self.num_ws}")

    # ---- training -------------------------------------------------------------------------------------
    def training_styles(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """The styles of a training forward (NVlabs ``run_G``): mapped w (``w_avg`` updated), and with probability
        ``style_mixing_probability`` the styles from a random crossover on taken from a second z (no w_avg update)."""
        ws = self.generator.mapping(z, labels)
        if self.style_mixing_probability > 0:
            crossover = draw_crossover(self.num_ws, self.style_mixing_probability, device=ws.device)
            ws = mix_styles(ws, self.generator.mapping(torch.randn_like(z), labels, update_w_avg=False), crossover)
        return ws

    def path_length_due(self) -> bool:
        return bool(self.pl_weight) and self.global_step % self.pl_interval == 0

    def path_length_penalty(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """Per-image (|J_w^T y| - a)^2 with y ~ N(0, I) / sqrt(pixels) and a the running mean ``pl_mean`` (decay
        ``pl_decay``), as NVlabs' ``Gpl``: gradients of the image-noise product with respect to the styles."""
        ws = self.training_styles(z, labels)
        images = self.generator.synthesis(ws)
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        pl_mean = self.pl_mean.lerp(lengths.mean(), self.pl_decay)
        self.pl_mean.copy_(pl_mean.detach())
        return (lengths - pl_mean).square()

    def on_fit_start(self) -> None:
        """Say once which lr and betas the lazy regularization left each network (they differ from the YAML)."""
        effective = {f"lazy_regularization/{name}": {"lr": spec.lr, "betas": [round(b, 6) for b in spec.betas]}
                     for name, spec in self.optimizer_specs.items()}
        rank_zero_info(f"stylegan: effective optimizers after lazy regularization (R1 every {self.r1_interval}, path length every "
                       f"{self.pl_interval}): " + ", ".join(f"{k.split('/')[1]} lr {v['lr']:.6g} betas {v['betas']}" for k, v in effective.items()))
        for logger in self.trainer.loggers:
            logger.log_hyperparams(effective)

    def training_fakes(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return self.generator.synthesis(self.training_styles(z, labels))

    def generator_steps(self, count: int, labels: Tensor | None, logged: dict[str, Tensor]) -> None:
        """The G step (path length folded in when its interval is 1), then the lazy path-length step when due:
        its own G step on ``count / pl_batch_shrink`` latents, weighted by the interval."""
        z = self.latents(count)
        folded_pl = self.path_length_due() and self.pl_interval == 1

        def g_loss() -> Tensor:
            loss = generator_loss(self.loss_kind, self.critic(self.training_fakes(z, labels), labels))
            logged["loss_g"] = loss.detach()
            if folded_pl:
                loss = loss + self.pl_weight * self._logged_pl(logged, z, labels)
            return loss

        self.step_network("generator", g_loss)
        if self.path_length_due() and self.pl_interval > 1:
            shrunk = max(1, count // self.pl_batch_shrink)
            z_pl = self.latents(shrunk)
            pl_labels = labels[:shrunk] if labels is not None else None
            logged["pl_weighted"] = self.step_network(
                "generator", lambda: self.pl_weight * self.pl_interval * self._logged_pl(logged, z_pl, pl_labels))
        if self.pl_weight:
            logged["pl_mean"] = self.pl_mean.detach().clone()

    def _logged_pl(self, logged: dict[str, Tensor], z: Tensor, labels: Tensor | None) -> Tensor:
        penalty = self.path_length_penalty(z, labels).mean()
        logged["pl_penalty"] = penalty.detach()
        return penalty

    def eval_fakes(self, count: int, labels: Tensor | None) -> Tensor:
        """z and the per-pixel noise both from the seeded evaluation generator (the training stream is never touched)."""
        return self.sample(count, labels, generator=self.eval_generator())


def with_defaults(optimizers: Any, networks: tuple[str, ...]) -> Any:
    """NVlabs' optimizer under each network's YAML settings (anything malformed passes through, for GANBase's error)."""
    if optimizers is not None and not isinstance(optimizers, Mapping):
        return optimizers
    given = dict(optimizers or {})
    merged = {name: {**STYLEGAN_OPTIMIZER, **given[name]} if isinstance(given.get(name), Mapping) else given.get(name, dict(STYLEGAN_OPTIMIZER))
              for name in networks}
    return {**given, **merged}


def channel_widths_at_4(channel_base: int, channel_max: int) -> int:
    return max(1, min(channel_base // 4, channel_max))


__all__ = ["STYLEGAN_OPTIMIZER", "StyleGAN", "draw_crossover", "mix_styles"]
