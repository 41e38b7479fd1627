"""Picture logging: samples from fixed noise, reconstructions of fixed images, latent interpolations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_only

from gen_research.files.image_grid import save_grid
from gen_research.models.contract import Generates, Interpolates, LatentPrior, Reconstructs, Translates, can, check_sampling_options
from gen_research.registry import CALLBACKS

SAMPLES_DIR = "samples"


@CALLBACKS.register("sample_grid", "PNG grids of samples, reconstructions and interpolations each epoch (run folder + loggers)")
class SampleGridLogger(Callback):
    """Every ``every_n_epochs`` validation epochs, draws grids with the weights used for validation (EMA if on):
    samples of a model that Generates, translations (source row, translated row) of one that Translates, else
    reconstructions of one that Reconstructs, and interpolations of one that Interpolates.

    Samples come from the same noise every epoch (a generator seeded with ``seed``) and reconstructions
    from the same validation images, so grids from different epochs can be compared. The grids are made
    inside validation (on its first batch), when an EMA callback has swapped its weights in.
    """

    def __init__(
        self,
        num_samples: int = 64,
        num_reconstructions: int = 32,
        interpolation_pairs: int = 8,
        interpolation_steps: int = 10,
        every_n_epochs: int = 1,
        seed: int = 1234,
        sample_options: dict[str, Any] | None = None,
    ) -> None:
        """``sample_options``: the family's declared sampling options the sample grid is drawn with (checked at setup)."""
        self.num_samples = num_samples
        self.num_reconstructions = num_reconstructions
        self.interpolation_pairs = interpolation_pairs
        self.interpolation_steps = interpolation_steps
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.sample_options = dict(sample_options or {})
        self.saved: list[Path] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.sample_options:  # a typo fails before training, in one line
            self.sample_options = check_sampling_options(pl_module, self.sample_options)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0 and not trainer.is_last_batch:
            return
        fields = batch if isinstance(batch, dict) else {"image": batch[0] if isinstance(batch, (tuple, list)) else batch}
        # dict batches: gen_research/data/batch.py
        self.log_grids(trainer, pl_module, fields["image"], fields.get("source"), fields.get("target_domain"))

    @rank_zero_only
    @torch.no_grad()
    def log_grids(self, trainer: pl.Trainer, pl_module: pl.LightningModule, images: torch.Tensor, sources: torch.Tensor | None = None,
                  target_domains: torch.Tensor | None = None) -> None:
        """Grids of what the model can do (gen_research/models/contract.py): samples, translations of ``sources``
        (into the batch's ``target_domains`` when it names them), of a multi-domain model's ``images`` into every
        domain (its data has no separate sources), or reconstructions of ``images``, interpolations between ``images`` (between prior latents for a model without
        an encoder)."""
        was_training = pl_module.training
        pl_module.eval()
        grids: dict[str, tuple[torch.Tensor, int | None]] = {}  # kind -> (images, images per row)
        if can(pl_module, Generates) and self.num_samples > 0:  # unconditional, or the model's own choice of classes
            generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
            grids["samples"] = (pl_module.sample(self.num_samples, generator=generator, **self.sample_options), None)
        originals = images[: self.num_reconstructions]
        row = min(8, len(originals))
        domains = pl_module.target_domains if can(pl_module, Translates) else None
        if can(pl_module, Translates) and domains and sources is None:  # the images are the sources: StarGAN's figure
            shown = images[: min(8, self.num_reconstructions)]
            columns = [pl_module.translate(shown, torch.full((len(shown),), k, device=shown.device)) for k in range(domains)]
            grids["translations"] = (torch.stack(_same_channels([shown, *columns]), dim=1).flatten(0, 1), domains + 1)
        elif can(pl_module, Translates) and sources is not None and self.num_reconstructions > 0:  # rows of sources, then translations
            shown = sources[: self.num_reconstructions]
            row = min(8, len(shown))
            translated = pl_module.translate(shown, None if target_domains is None else target_domains[: len(shown)])
            grids["translations"] = (_interleave_rows(*_same_channels([shown, translated]), row), row)
        elif can(pl_module, Reconstructs) and self.num_reconstructions > 0:
            grids["reconstructions"] = (_interleave_rows(originals, pl_module.reconstruct(originals), row), row)
        pairs = min(self.interpolation_pairs, len(images) // 2)
        if can(pl_module, Interpolates) and pairs > 0 and self.interpolation_steps > 1:
            path_images = pl_module.interpolate(images[:pairs], images[pairs : 2 * pairs], self.interpolation_steps)
            grids["interpolations"] = (path_images, self.interpolation_steps)
        elif can(pl_module, LatentPrior) and self.interpolation_pairs > 0 and self.interpolation_steps > 1:
            # No encoder (a GAN): linear paths between fixed prior latents z_a -> z_b (as in the DCGAN paper's walks).
            generator = torch.Generator(device=pl_module.device).manual_seed(self.seed + 1)
            ends = torch.randn(2, self.interpolation_pairs, pl_module.latent_dim, generator=generator, device=pl_module.device)
            t = torch.linspace(0.0, 1.0, self.interpolation_steps, device=pl_module.device)[None, :, None]
            z = ends[0][:, None] * (1 - t) + ends[1][:, None] * t
            grids["latent_interpolations"] = (pl_module.decode(z.flatten(0, 1)), self.interpolation_steps)
        epoch = trainer.current_epoch
        out_dir = Path(trainer.default_root_dir) / SAMPLES_DIR
        for kind, (grid_images, nrow) in grids.items():
            path = out_dir / f"epoch{epoch:03d}-{kind}.png"
            array = save_grid(grid_images, path, nrow=nrow)
            self.saved.append(path)
            for logger in trainer.loggers:
                if hasattr(logger, "log_image"):
                    logger.log_image(key=f"images/{kind}", images=[array], step=trainer.global_step, caption=[f"epoch {epoch}"])
        pl_module.train(was_training)


def _same_channels(batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Grey batches repeated to RGB when some batch of one grid is RGB (a grey -> colour translator's grid)."""
    widest = max(batch.shape[1] for batch in batches)
    return [batch.expand(-1, widest, -1, -1) if batch.shape[1] == 1 else batch for batch in batches]


def _interleave_rows(originals: torch.Tensor, reconstructions: torch.Tensor, row: int) -> torch.Tensor:
    """Rows of ``row`` originals followed by a row of their reconstructions."""
    usable = (len(originals) // row) * row
    chunks = []
    for start in range(0, usable, row):
        chunks += [originals[start : start + row], reconstructions[start : start + row]]
    return torch.cat(chunks)
