"""A prior over a VQ-VAE's codes: an autoregressive transformer (transformers' GPT-2) over the raster-ordered code grid
of a frozen Quantizes first stage, as taming-transformers' Net2NetTransformer (a class token as the start token when
class-conditional, cross-entropy of the next code), so the VQ-VAE can generate (van den Oord et al. 2017 used a
PixelCNN; a transformer is the later standard and transformers provides it with a KV cache)."""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar, Literal

import lightning.pytorch as L
import torch
import torch.nn.functional as F

from gen_research.errors import GenResearchError
from gen_research.models.common import check_number, check_optimizer_settings, check_widths
from gen_research.models.contract import ModelFamily, Quantizes, SamplingOption
from gen_research.models.first_stage import FrozenFirstStage, build_first_stage
from gen_research.registry import MODELS
from gen_research.training.optimizers import AdamWImplementation, IMPLEMENTATION_HPARAM, build_adamw, spec_from_hparams


def top_k_logits(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """``logits [N, K]`` with all but the ``top_k`` largest of each row set to -inf (0 or >= K keeps all)."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@MODELS.register("vq_prior", "autoregressive GPT-2 prior over a frozen VQ-VAE's codes (class-conditional optionally); temperature and top-k sampling")
class VQPrior(FrozenFirstStage, ModelFamily, L.LightningModule):
    """p(codes) = prod_i p(code_i | codes_<i, start token) over the first stage's code grid in raster order.

    The vocabulary is the ``codebook_size`` codes followed by the start tokens (one per class when
    ``class_conditional``, else one BOS token); only codes are ever predicted. The first stage is frozen and stored
    in this model's checkpoint (gen_research/models/first_stage.py), so the checkpoint alone samples.

    Contract: Generates (``conditioning_classes``: the classes when class-conditional, else None)."""

    SAMPLING_OPTIONS: ClassVar[tuple[SamplingOption, ...]] = (
        SamplingOption("temperature", float, "divides the logits before sampling each code (< 1: sharper)", default=1.0, low=0.0, low_inclusive=False),
        SamplingOption("top_k", int, "sample each code from the k most likely only (0: all codes; 1: greedy)", default=0, low=0),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int | None = None,
        first_stage_ckpt: str | None = None,
        first_stage: dict[str, Any] | None = None,
        class_conditional: bool = False,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.1,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        optimizer_implementation: AdamWImplementation = "auto",
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
    ) -> None:
        """``first_stage_ckpt``: the VQ-VAE checkpoint to train on (a two-stage experiment fills it in);
        ``first_stage``: its stored spec (set by this model, do not write it by hand). ``n_layer``/``n_head``/
        ``n_embd``/``dropout``: the GPT2Config's (``dropout`` sets its residual, embedding and attention dropout,
        0.1 as GPT-2's). ``optimizer_implementation``: AdamW kernel: auto (fused where the device supports it), fused,
        foreach or for_loop; the same update up to rounding, see docs/results.md (Speed)."""
        super().__init__()
        check_optimizer_settings("vq_prior", lr, weight_decay, warmup_steps, optimizer_implementation)
        for name, value in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
            check_widths("vq_prior", name, value)
        if n_embd % n_head:
            raise GenResearchError(f"vq_prior: model.init_args.n_embd={n_embd} must be a multiple of model.init_args.n_head={n_head}")
        check_number("vq_prior", "dropout", dropout, low=0.0, high=1.0, high_inclusive=False, hint="a fraction in [0, 1), e.g. 0.1")
        if class_conditional and not num_classes:
            raise GenResearchError("vq_prior: class_conditional needs num_classes (a labelled data module such as mnist5k) or set model.init_args.class_conditional: false")
        self.first_stage, spec = build_first_stage("vq_prior", first_stage_ckpt, first_stage, Quantizes)
        self.save_hyperparameters()
        self.hparams.first_stage = spec
        self.image_shape = tuple(image_shape)
        self.codebook_size = int(self.first_stage.codebook_size)
        self.code_grid = tuple(self.first_stage.code_grid)
        made = tuple(self.first_stage.decode_codes(torch.zeros(1, *self.code_grid, dtype=torch.long)).shape[1:])
        if made != self.image_shape:
            raise GenResearchError(f"vq_prior: the first stage makes {'x'.join(map(str, made))} images, the data gives "
                                   f"{'x'.join(map(str, self.image_shape))}; train the prior on the first stage's data")
        self.num_start_tokens = int(num_classes) if class_conditional else 1
        if class_conditional:
            self.BATCH_FIELDS = ("image", "label")  # the contract: this model trains on labels too
        from transformers import GPT2Config, GPT2LMHeadModel  # here, not at import: transformers takes ~8 s to import

        config = GPT2Config(vocab_size=self.codebook_size + self.num_start_tokens, n_positions=self.sequence_length + 1,
                            n_embd=n_embd, n_layer=n_layer, n_head=n_head, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                            bos_token_id=self.codebook_size, eos_token_id=self.codebook_size)
        self.transformer = GPT2LMHeadModel(config)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> "VQPrior":  # type: ignore[override]
        """Lightning's loader, minus ``first_stage_ckpt``: the first stage is rebuilt from the stored spec and its
        weights come from this checkpoint, so the first stage's own file may be gone."""
        kwargs.setdefault("first_stage_ckpt", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    @property
    def sequence_length(self) -> int:
        return self.code_grid[0] * self.code_grid[1]

    @property
    def conditioning_classes(self) -> int | None:
        return int(self.hparams.num_classes) if self.hparams.class_conditional else None

    # ---- tokens -------------------------------------------------------------------------------------
    def start_tokens(self, labels: torch.Tensor | None, count: int) -> torch.Tensor:
        """``[count, 1]`` start token ids: codebook_size + class (class-conditional) or codebook_size (BOS)."""
        if self.hparams.class_conditional:
            if labels is None:
                raise GenResearchError("vq_prior: a class-conditional prior needs labels in every batch")
            return (self.codebook_size + labels.long().to(self.device)).view(count, 1)
        return torch.full((count, 1), self.codebook_size, dtype=torch.long, device=self.device)

    def compute_losses(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Mean cross-entropy (nats) of each code given the codes before it, and the same in bits."""
        with torch.no_grad():
            codes = self.first_stage.encode_codes(x).flatten(1)
        inputs = torch.cat([self.start_tokens(labels, len(x)), codes[:, :-1]], dim=1)
        logits = self.transformer(input_ids=inputs).logits[..., : self.codebook_size]
        loss = F.cross_entropy(logits.float().flatten(0, 1), codes.flatten())
        return {"loss": loss, "bits_per_code": loss / math.log(2)}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch["image"], batch.get("label"))
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(batch["image"]))
        self.log("train/bits_per_code", losses["bits_per_code"], batch_size=len(batch["image"]))
        return losses["loss"]

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        losses = self.compute_losses(batch["image"], batch.get("label"))
        self.log_dict({f"{stage}/{k}": v for k, v in losses.items()}, prog_bar=stage == "val", on_epoch=True,
                      sync_dist=True, batch_size=len(batch["image"]))
        return losses

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, scheduler = build_adamw(self.transformer.parameters(), spec_from_hparams(self.hparams), self,  # not the frozen first stage
                                           key=f"model.init_args.{IMPLEMENTATION_HPARAM}")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def sampling_network(self) -> torch.nn.Module:
        return self.transformer

    # ---- the contract: Generates --------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float | None = None, top_k: int | None = None) -> torch.Tensor:
        """``num_samples`` images in [-1, 1]: codes drawn one at a time (KV cache) with ``torch.multinomial`` from
        ``generator``, then decoded by the first stage. Labels cycle 0..C-1 when None (class-conditional)."""
        temperature = 1.0 if temperature is None else float(temperature)
        top_k = 0 if top_k is None else int(top_k)
        if not temperature > 0:
            raise GenResearchError(f"vq_prior: --temperature {temperature} must be > 0")
        classes = self.conditioning_classes
        if classes is None:
            if labels is not None:
                raise GenResearchError("vq_prior: labels given to an unconditional prior; train it with class_conditional: true")
        else:
            labels = torch.arange(num_samples) % classes if labels is None else torch.as_tensor(labels, dtype=torch.long)
            if len(labels) != num_samples:
                raise GenResearchError(f"vq_prior: got {len(labels)} labels for {num_samples} samples")
            if bool((labels < 0).any() or (labels >= classes).any()):
                raise GenResearchError(f"vq_prior: labels must be classes 0..{classes - 1}")
        was_training = self.transformer.training
        self.transformer.eval()  # no dropout while sampling
        tokens = self.start_tokens(labels, num_samples)
        # transformers 5 renamed the KV cache argument and output past_key_values to cache; take whichever it has.
        cache_name = "cache" if "cache" in inspect.signature(self.transformer.forward).parameters else "past_key_values"
        past, codes = None, []
        for _ in range(self.sequence_length):
            out = self.transformer(input_ids=tokens, use_cache=True, **{cache_name: past})
            past = out[cache_name]
            logits = top_k_logits(out.logits[:, -1, : self.codebook_size].float() / temperature, top_k)
            probs = logits.softmax(-1)
            if generator is not None:
                probs = probs.to(generator.device)
            tokens = torch.multinomial(probs, 1, generator=generator).to(self.device)
            codes.append(tokens)
        self.transformer.train(was_training)
        grid = torch.cat(codes, dim=1).view(num_samples, *self.code_grid)
        return self.first_stage.decode_codes(grid)


__all__ = ["VQPrior", "top_k_logits"]
