"""LPIPS (Zhang et al. 2018) with its ImageNet backbone read ONLY from a local torchvision checkpoint.

Shared by the ``lpips``/``ppl`` metrics (gen_research/evaluation/specs/perceptual.py) and the first-stage autoencoders'
perceptual loss (gen_research/models/first_stage_ae/losses.py), so a model never imports evaluation code.

torchmetrics' LPIPS downloads its backbone through torchvision; here the backbone is built randomly and then
overwritten from the official torchvision file (never a silent random or substitute network). The file is looked
up at ``$GEN_RESEARCH_LPIPS_BACKBONE`` (a file or a folder), then in ``torch.hub.get_dir()/checkpoints``, under
torchvision's name, and its sha256 prefix (the part of the name after the last "-") is checked. The LPIPS linear
calibration layers ship inside torchmetrics and are loaded from there. ``GEN_RESEARCH_LPIPS_NET`` = alex (default)
| vgg | squeeze chooses the backbone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image.lpips import _NoTrainLpips

from gen_research.errors import GenResearchError
from gen_research.files.safe_load import load_plain

# torchvision's file names; the part after the last "-" is the sha256 prefix of the file.
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
DOWNLOAD_URL = "https://download.pytorch.org/models/{}"
VERIFY_BACKBONE_HASH = True  # tests switch this off to load a random checkpoint saved under the official name
MIN_SIZE = 64  # smaller images are upsampled to 64x64: AlexNet needs >= 32 px, and 64 is torch-fidelity's PPL size


def lpips_net_name() -> str:
    """The backbone named by ``GEN_RESEARCH_LPIPS_NET`` (alex when unset)."""
    net = os.environ.get("GEN_RESEARCH_LPIPS_NET", "alex").strip() or "alex"
    if net not in BACKBONE_FILES:
        raise GenResearchError(f"GEN_RESEARCH_LPIPS_NET={net!r} is not an LPIPS backbone; use alex, vgg or squeeze")
    return net


def backbone_path(net: str, verify_hash: bool | None = None) -> Path:
    """The local torchvision checkpoint of ``net``'s backbone, hash-checked (``verify_hash`` None: the module's
    :data:`VERIFY_BACKBONE_HASH`); GenResearchError if it is missing or not the official file."""
    name = BACKBONE_FILES[net]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    tried: list[Path] = []
    explicit = os.environ.get("GEN_RESEARCH_LPIPS_BACKBONE")
    if explicit:
        path = Path(explicit).expanduser()
        tried.append(path / name if path.is_dir() else path)
    tried.append(hub / name)
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        raise GenResearchError(
            f"LPIPS ({net}) needs the torchvision backbone weights {name}, not found at {', '.join(map(str, tried))} "
            f"(nothing is downloaded); on a machine with internet download {DOWNLOAD_URL.format(name)} and copy it "
            f"into {hub}, or set GEN_RESEARCH_LPIPS_BACKBONE to its path")
    if VERIFY_BACKBONE_HASH if verify_hash is None else verify_hash:
        expected = name.rsplit("-", 1)[1].split(".")[0]
        digest = hashlib.sha256()
        with open(found, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if not digest.hexdigest().startswith(expected):
            raise GenResearchError(
                f"{found} is not the official {name}: its sha256 starts with {digest.hexdigest()[:8]}, not {expected}; "
                f"download it again from {DOWNLOAD_URL.format(name)}")
    return found


def load_lpips(net: str = "alex", resize: int | None = None, verify_hash: bool | None = None) -> _NoTrainLpips:
    """torchmetrics' LPIPS module (frozen, eval mode) with its packaged linear layers and the backbone from the
    local checkpoint."""
    path = backbone_path(net, verify_hash)  # fail before building anything
    # pnet_rand: torchvision builds the backbone with random weights (no download); fork_rng: that random
    # initialisation must not move the global RNG (sampling elsewhere stays reproducible).
    with torch.random.fork_rng(devices=[]):
        module = _NoTrainLpips(pretrained=True, net=net, pnet_rand=True, resize=resize)
    try:
        checkpoint = load_plain(path, "LPIPS backbone")  # weights_only: a file needing pickled objects is refused
    except GenResearchError:
        raise
    except Exception as err:  # a truncated or foreign file: say which one
        raise GenResearchError(f"cannot read LPIPS backbone {path} ({type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}); replace the file "
                               f"with {DOWNLOAD_URL.format(BACKBONE_FILES[net])}") from None
    # The slices keep torchvision's indices: slice1.0.weight / slices.0.0.weight <- features.0.weight.
    wanted = {}
    for key in module.net.state_dict():
        rest = key.split(".", 2)[2] if key.startswith("slices.") else key.split(".", 1)[1]
        source = checkpoint.get(f"features.{rest}") if isinstance(checkpoint, dict) else None
        if source is None:
            raise GenResearchError(f"{path} is not a torchvision {net} checkpoint (no features.{rest}); replace it "
                                   f"with {DOWNLOAD_URL.format(BACKBONE_FILES[net])}")
        wanted[key] = source
    module.net.load_state_dict(wanted, strict=True)
    module.requires_grad_(False)
    return module.eval()


def prepare_lpips_input(images: Tensor, clamp: bool = True) -> Tensor:
    """[-1, 1] images as LPIPS wants them: float, 3 channels (grey repeated), at least MIN_SIZE px (bilinear).
    A training loss passes ``clamp=False``: clamping would cut the gradient of decoder outputs beyond [-1, 1]."""
    images = images.float()
    images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    images = images.clamp(-1.0, 1.0) if clamp else images
    if min(images.shape[-2:]) < MIN_SIZE:
        images = F.interpolate(images, size=(MIN_SIZE, MIN_SIZE), mode="bilinear", align_corners=False)
    return images


__all__ = ["BACKBONE_FILES", "DOWNLOAD_URL", "MIN_SIZE", "VERIFY_BACKBONE_HASH", "backbone_path", "load_lpips", "lpips_net_name",
           "prepare_lpips_input"]
