"""What the image-to-image families share: the Translates contract, padding to the networks' size multiple, channel
matching, the references' optimizer defaults and the data checks.

Each family (pix2pix.py, cyclegan.py, stargan.py) builds its networks (networks.py) and implements
``training_iteration`` through the multi-network support (gen_research/training/multi_network.py: one batch is one
training step, each network steps its own Adam and LR schedule), plus ``_translate`` on inputs already padded to its
size multiple.

Optimizer defaults are the references': Adam(2e-4, betas 0.5/0.999) for pix2pix and CycleGAN (``--lr 0.0002
--beta1 0.5``), held for the first half of the run and decayed linearly to 0 over the second (``--lr_policy linear``,
n_epochs 100 + n_epochs_decay 100); StarGAN sets its own (1e-4, decay over the last half). The schedule position is
part of the checkpoint (the reference restarts it on resume unless ``--epoch_count`` is given by hand).
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.models.common import SeededEvaluation, check_number
from gen_research.models.contract import ModelFamily
from gen_research.models.translation.networks import n_layers_for_receptive_field
from gen_research.training.multi_network import MultiNetworkTraining

#: The references' Adam and linear decay (the second half of the run), for every network of pix2pix and CycleGAN.
REFERENCE_OPTIMIZER = {"lr": 2e-4, "betas": [0.5, 0.999], "lr_schedule": "linear", "decay_fraction": 0.5}
#: ITU-R 601 luma, PIL's "L" conversion: a colour image given to a grey generator.
LUMA = (0.299, 0.587, 0.114)


def match_channels(images: Tensor, channels: int) -> Tensor:
    """``images`` with ``channels`` channels: grey repeated to RGB, RGB to grey by luma (exact for grey RGB files)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    raise GenResearchError(f"cannot give {have}-channel images to a network that takes {channels} channels")


def pad_to_multiple(images: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """``images`` padded on the bottom and right to a multiple of ``multiple`` (reflection, or edge replication where
    an image is too small to reflect), and the original (H, W) to crop back to."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
    return images, (height, width)


def patchgan_depth(family: str, ngf: int, ndf: int, n_layers_d: int, receptive_field: int | None) -> int:
    """pix2pix's and CycleGAN's shared checks of the network widths, and the PatchGAN's depth: ``n_layers_d``, or the
    smallest one whose receptive field covers ``receptive_field`` pixels when that is given."""
    for name, value in (("ngf", ngf), ("ndf", ndf), ("n_layers_d", n_layers_d)):
        check_number(family, name, value, low=1, hint="a positive integer")
    return n_layers_for_receptive_field(receptive_field) if receptive_field is not None else n_layers_d


class TranslationBase(ModelFamily, MultiNetworkTraining, SeededEvaluation, L.LightningModule):
    """Shared image-to-image behaviour. Contract: Translates (``translate``, ``target_domains``, ``domain_names``,
    ``source_channels``); any input size (padded to :attr:`size_multiple` and cropped back)."""

    CHECKPOINT_MONITOR: ClassVar[tuple[str, str] | None] = None
    target_domains: int | None = None
    domain_names: tuple[str, ...] | None = None

    #: Channels of the images ``translate`` takes (the widest of the source domains: see :func:`match_channels`).
    source_channels: int
    #: Networks need H and W to be multiples of this; ``translate`` pads.
    size_multiple: int = 1

    # ---- contract: Translates ------------------------------------------------------------------------
    def translate(self, images: Tensor, target: Tensor | None = None, **options: Any) -> Tensor:
        """Translations in [-1, 1] of ``images`` [B, C, H, W] (any H, W) into ``target`` (see the family)."""
        if options:
            raise GenResearchError(f"{type(self).__name__.lower()} takes no translation options; got {', '.join(sorted(options))}")
        target = self.check_target(target, len(images))
        return self.padded(lambda x: self._translate(x, target), images.to(self.device)).clamp(-1.0, 1.0)

    def padded(self, network: Any, images: Tensor) -> Tensor:
        """``network(images)`` on images padded to :attr:`size_multiple` (training and translation alike: 28x28
        digits go through a 32x32 U-Net), cropped back to their size."""
        padded, (height, width) = pad_to_multiple(images, self.size_multiple)
        return network(padded)[..., :height, :width]

    def check_target(self, target: Tensor | None, count: int) -> Tensor | None:
        """The target as the family takes it; one-direction families refuse one."""
        if self.target_domains is None:
            if target is not None:
                raise GenResearchError(f"{type(self).__name__.lower()} translates in the one direction it was trained in; pass no target domain")
            return None
        if target is None:
            raise GenResearchError(f"{type(self).__name__.lower()} translates into a domain: pass a target ({', '.join(self.domain_names or ())})")
        target = target.to(self.device)
        if len(target) != count:
            raise GenResearchError(f"got {count} images but {len(target)} target domains")
        if not target.is_floating_point():
            if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.target_domains):
                raise GenResearchError(f"target domains must be ids in 0..{self.target_domains - 1} ({', '.join(self.domain_names or ())})")
        return target

    def _translate(self, images: Tensor, target: Tensor | None) -> Tensor:
        raise NotImplementedError

    # ---- data checks ---------------------------------------------------------------------------------
    def check_source_channels(self, datamodule: Any, data_name: str, expected: int, key: str = "source_channels") -> None:
        """The data's source images must have the channels the generator was built for."""
        shape = getattr(datamodule, "source_shape", None)
        if shape is not None and int(shape[0]) != expected:
            raise GenResearchError(f"{data_name}'s source images have {int(shape[0])} channels but the model was built for {expected}; "
                                   f"set model.init_args.{key}: {int(shape[0])}")

    def log_losses(self, stage: str, losses: dict[str, Tensor], batch_size: int) -> None:
        on_step = stage == "train"
        self.log_dict({f"{stage}/{k}": v.detach() for k, v in losses.items()}, prog_bar=on_step, on_step=on_step, on_epoch=not on_step,
                      sync_dist=not on_step, batch_size=batch_size)

    def _held_out_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        losses = self.held_out_losses(batch)
        self.log_losses(stage, losses, len(next(iter(batch.values()))))
        return losses

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._held_out_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._held_out_step(batch, "test")

    def held_out_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Deterministic losses of a validation/test batch (the family's)."""
        raise NotImplementedError


__all__ = ["LUMA", "REFERENCE_OPTIMIZER", "TranslationBase", "match_channels", "pad_to_multiple", "patchgan_depth"]
