"""lpips, ppl: perceptual metrics whose ImageNet backbone is read ONLY from a local torchvision checkpoint.

torchmetrics' LPIPS downloads its backbone through torchvision; here the backbone is built randomly and then
overwritten from the official torchvision file (never a silent random or substitute network). The file is looked
up at ``$GEN_RESEARCH_LPIPS_BACKBONE`` (a file or a folder), then in ``torch.hub.get_dir()/checkpoints``, under
torchvision's name, and its sha256 prefix (the part of the name after the last "-") is checked. The LPIPS linear
calibration layers ship inside torchmetrics and are loaded from there. The loading itself is
gen_research/nets/lpips.py (the first-stage autoencoders' perceptual loss uses it too).

Environment: ``GEN_RESEARCH_LPIPS_NET`` = alex (default) | vgg | squeeze chooses the backbone (EvalOptions has no
field for it); ``GEN_RESEARCH_PPL_SAMPLES`` overrides the number of latent pairs of ppl (default 1000).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.image.lpips import _lpips_update, _NoTrainLpips
from torchmetrics.functional.image.perceptual_path_length import perceptual_path_length
from torchmetrics.image import PerceptualPathLength

from gen_research.errors import GenResearchError
from gen_research.models.contract import LatentPrior, StyleSpace, can
from gen_research.evaluation.base import EvalOptions, FeatureExtractor, as_rgb
from gen_research.evaluation.specs._common import Spec, to_float
from gen_research.registry import METRICS
from gen_research.nets import lpips as lpips_nets
from gen_research.nets.lpips import BACKBONE_FILES, DOWNLOAD_URL, MIN_SIZE, lpips_net_name, prepare_lpips_input  # noqa: F401  (public names)

# The backbone loading lives in gen_research/nets/lpips.py (models use it too); these names stay importable here.
VERIFY_BACKBONE_HASH = True  # tests switch this off to load a random checkpoint saved under the official name
PPL_SAMPLES = 1000


def backbone_path(net: str) -> Path:
    """The local torchvision checkpoint of ``net``'s backbone, hash-checked unless VERIFY_BACKBONE_HASH is off."""
    return lpips_nets.backbone_path(net, verify_hash=VERIFY_BACKBONE_HASH)


def load_lpips(net: str = "alex", resize: int | None = None) -> _NoTrainLpips:
    """torchmetrics' LPIPS module with its packaged linear layers and the backbone from the local checkpoint."""
    return lpips_nets.load_lpips(net, resize=resize, verify_hash=VERIFY_BACKBONE_HASH)


def prepare(images: Tensor) -> Tensor:
    """[-1, 1] images as LPIPS wants them: float, 3 channels, at least MIN_SIZE px (bilinear upsampling)."""
    return prepare_lpips_input(images)


class LocalLPIPS(Metric):
    """Mean LPIPS distance of image pairs (sum and count states: exact under any batching and DDP)."""

    higher_is_better = False
    full_state_update = False
    feature_network = "net"

    def __init__(self, net: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        scores = _lpips_update(prepare(preds), prepare(target), net=self.net, normalize=False).reshape(-1)
        self.total += scores.double().sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class LPIPS(Spec):
    """Mean LPIPS (Zhang et al. 2018) of image pairs, [-1, 1] images; backbone from GEN_RESEARCH_LPIPS_NET."""

    name = "lpips"

    def feature_name(self, extractor: FeatureExtractor) -> str:
        """Keys name the LPIPS backbone (``lpips/alex``), not the evaluation extractor, which LPIPS does not use."""
        return lpips_net_name()
    paired: ClassVar[bool] = True
    needs_reals: ClassVar[bool] = False

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        return LocalLPIPS(load_lpips(lpips_net_name()))

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        raise TypeError(f"metric {self.name!r} compares image pairs; feed it with update_pairs(metric, preds, target)")

    def update_pairs(self, metric: Metric, preds: Tensor, target: Tensor) -> None:
        with torch.no_grad():
            metric.update(preds, target)

    def compute(self, metric: Metric) -> dict[str, float]:
        return {self.name: to_float(metric.compute())}


class LPIPSDistance(nn.Module):
    """LPIPS as PPL's similarity network: [-1, 1] image pairs (grey allowed) -> [N] distances."""

    def __init__(self, lpips: nn.Module) -> None:
        super().__init__()
        self.lpips = lpips

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.lpips(as_rgb(a.float()), as_rgb(b.float())).reshape(-1)


class LatentGenerator(nn.Module):
    """torchmetrics' generator interface over a model with a latent prior, in [0, 255].

    Paths are in z (``decode(z)``), or in W for a model with a style space (StyleGAN): ``sample`` maps z to w and the
    images are synthesized from w with constant noise, as the StyleGAN papers' W-space PPL (NVlabs' ``ppl_wend``:
    end-point sampling, which torchmetrics' t = 0 with epsilon 1e-4 is). The model is held outside the module tree so
    that torchmetrics' ``generator.to(device)`` never moves it.
    """

    def __init__(self, model: Any, generator: torch.Generator) -> None:
        super().__init__()
        self.__dict__["model"] = model
        self.rng = generator
        params = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
        self.model_device = params.device if params is not None else torch.device("cpu")
        self.space = "w" if can(model, StyleSpace) else "z"

    def sample(self, num_samples: int) -> Tensor:
        z = torch.randn(num_samples, int(self.model.latent_dim), generator=self.rng, device=self.rng.device).to(self.model_device)
        return self.model.to_w(z)[:, 0] if self.space == "w" else z

    def forward(self, codes: Tensor) -> Tensor:
        codes = codes.to(self.model_device)
        if self.space == "w":
            images = self.model.synthesize(codes[:, None].expand(-1, int(self.model.num_ws), -1), noise_mode="const")
        else:
            images = self.model.decode(codes)
        return (images.float().clamp(-1.0, 1.0) + 1.0) * 127.5


class LocalPPL(PerceptualPathLength):
    """torchmetrics' PPL, computed in ``update`` on the model's device; each DDP rank computes the same numbers."""

    def __init__(self, sim_net: nn.Module, num_samples: int) -> None:
        # lerp, eps 1e-4, 1%/99% discards: torchmetrics' (and torch-fidelity's) defaults; no sync: nothing to gather.
        super().__init__(num_samples=num_samples, sim_net=sim_net, batch_size=64, sync_on_compute=False)
        self.values: tuple[Tensor, Tensor] | None = None

    def update(self, generator: LatentGenerator) -> None:  # type: ignore[override]
        mean, std, _ = perceptual_path_length(
            generator, num_samples=self.num_samples, batch_size=self.batch_size,
            interpolation_method=self.interpolation_method, epsilon=self.epsilon, resize=self.resize,
            lower_discard=self.lower_discard, upper_discard=self.upper_discard, sim_net=self.net,
            device=generator.model_device)
        self.values = (mean.to(self.device), std.to(self.device))

    def compute(self) -> tuple[Tensor, Tensor]:
        if self.values is None:
            raise GenResearchError("ppl was never given a model: the evaluator must call "
                                   "update_generator(metric, model, generator)")
        return self.values

    def reset(self) -> None:
        super().reset()
        self.values = None


class PPL(Spec):
    """Perceptual path length (Karras et al. 2019) of a latent-variable model's decoder, z ~ N(0, I); in W for a
    model with a style space (StyleGAN), as its papers report it (the key stays ``ppl``).

    Needs the model, not features: the evaluator calls ``update_generator(metric, model, generator)`` once.
    ``sim_net`` (an nn.Module mapping two [-1, 1] image batches to [N] distances) replaces LPIPS, for tests;
    None (what the evaluator uses) means LPIPS with the local backbone of GEN_RESEARCH_LPIPS_NET.
    """

    name = "ppl"
    needs_reals: ClassVar[bool] = False
    needs_generator: ClassVar[bool] = True

    def __init__(self, sim_net: nn.Module | None = None, num_samples: int | None = None) -> None:
        self.sim_net = sim_net
        self.num_samples = num_samples

    def feature_name(self, extractor: FeatureExtractor) -> str:
        """Keys name the similarity network (``ppl/lpips-alex``), not the evaluation extractor."""
        return f"lpips-{lpips_net_name()}" if self.sim_net is None else type(self.sim_net).__name__.lower()

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        samples = self.num_samples or int(os.environ.get("GEN_RESEARCH_PPL_SAMPLES", PPL_SAMPLES))
        # resize=64 as in torchmetrics' own PPL-with-LPIPS.
        sim_net = self.sim_net if self.sim_net is not None else LPIPSDistance(load_lpips(lpips_net_name(), resize=64))
        metric = LocalPPL(sim_net, samples)
        metric.seed = options.seed
        return metric

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        """Extractor outputs are not used (an evaluator unaware of needs_generator may still feed them)."""

    def update_generator(self, metric: Metric, model: Any, generator: torch.Generator | None = None) -> None:
        """PPL of ``model``; latents drawn with ``generator`` (None: a CPU generator seeded with options.seed)."""
        if not can(model, LatentPrior):  # the contract: latent_dim, latent_prior and decode(z) (gen_research/models/contract.py)
            raise GenResearchError(f"ppl samples z ~ N(0, I) and decodes it: it needs a model with a latent prior (a vae); "
                                   f"{type(model).__name__} has none: drop ppl from --metrics for this model")
        rng = generator if generator is not None else torch.Generator().manual_seed(getattr(metric, "seed", 0))
        was_training = model.training if isinstance(model, nn.Module) else False
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        try:
            if isinstance(model, nn.Module):
                model.eval()
            # fork_rng: the global RNG state is left exactly as it was (the latents use their own generator).
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                metric.update(LatentGenerator(model, rng))
        finally:
            if isinstance(model, nn.Module):
                model.train(was_training)

    def compute(self, metric: Metric) -> dict[str, float]:
        mean, std = metric.compute()
        return {"ppl": to_float(mean), "ppl_std": to_float(std)}


METRICS.add("lpips", LPIPS, "LPIPS perceptual distance of generated/reconstructed images to their paired originals")
METRICS.add("ppl", PPL, "perceptual path length of a latent-variable model's decoder (LPIPS, local backbone weights)")
