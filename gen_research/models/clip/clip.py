"""``clip``: a local CLIP (Radford et al. 2021) trained contrastively on an image-caption data set.

A transformers ``CLIPModel`` with a small config, its symmetric InfoNCE loss (``return_loss=True``) and OpenAI CLIP's
training settings: learnable temperature initialised to ln(1/0.07) and clamped to ln(100) after every step, AdamW
(lr 5e-4, betas (0.9, 0.98), eps 1e-6, weight decay 0.2 on matrices only, as OpenAI/open_clip exclude gains, biases and
the temperature), linear warm-up then cosine. Once trained it serves as the ``clip`` feature extractor, the
``clip_score`` metric's model (:meth:`LocalCLIP.save_pretrained`) and text2image's frozen text encoder
(gen_research/models/clip/text_encoders.py).

- Tokenizer: a local CLIP tokenizer folder (``tokenizer``), or null to train a BPE tokenizer on the training split's
  captions at fit start (gen_research/models/clip/tokenizer.py). Its files travel in every checkpoint
  (``clip_tokenizer``), so ``load_from_checkpoint`` needs neither the folder nor the data.
- Pixels: data images in [-1, 1] ARE the pixel values (image_mean = image_std = 0.5, no resize or crop: the vision
  tower is built at the data's side), which is what the exported preprocessor_config.json tells CLIP image processors
  and gen_research's ``clip`` extractor. Grey data is repeated to 3 channels, as that extractor does to grey images.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.models.clip.tokenizer import (check_round_trip, clip_tokenizer_files, load_clip_tokenizer, read_tokenizer_files, train_clip_tokenizer,
                                                write_tokenizer_files)
from gen_research.models.common import check_number, check_widths
from gen_research.models.contract import ModelFamily
from gen_research.registry import MODELS
from gen_research.training.lr_schedules import WarmupCosineLR
from gen_research.training.optimizers import OptimizerSpec, schedule_length

CHECKPOINT_KEY = "clip_tokenizer"  # the tokenizer files (name -> text) in every checkpoint


def pixel_values(images: Tensor) -> Tensor:
    """CLIP pixel values of data images in [-1, 1]: the images themselves (mean 0.5, std 0.5), grey repeated to RGB."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def retrieval_hits(logits_per_image: Tensor, captions: list[str]) -> tuple[Tensor, Tensor]:
    """In-batch top-1 retrieval hits (float 0/1 per item): image -> text and text -> image. A hit is a retrieved item
    whose caption TEXT equals the query's (a batch can hold the same caption twice: either copy is right)."""
    index = {text: i for i, text in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([index[text] for text in captions], device=logits_per_image.device)
    image_to_text = (ids[logits_per_image.argmax(dim=1)] == ids).float()
    text_to_image = (ids[logits_per_image.t().argmax(dim=1)] == ids).float()
    return image_to_text, text_to_image


def training_captions(datamodule: Any) -> list[str]:
    """The training split's captions: ``datamodule.captions("train")`` when the data module offers it (no images
    decoded), else the ``caption`` field of one pass over its training loader."""
    if datamodule is None:
        raise GenResearchError("clip: training a tokenizer needs the data module's captions; fit with a captioned data module "
                               "or set model.init_args.tokenizer to a CLIP tokenizer folder")
    if callable(getattr(datamodule, "captions", None)):
        return [str(text) for text in datamodule.captions("train")]
    captions: list[str] = []
    for batch in datamodule.train_dataloader():
        if "caption" not in batch:
            raise GenResearchError("clip: the data has no caption field; use a captioned data module (e.g. captioned_digits)")
        captions.extend(str(text) for text in batch["caption"])
    return captions


@MODELS.register("clip", "local CLIP (transformers CLIPModel, contrastive loss) on captioned images; "
                 "serves the clip extractor, clip_score and text2image's text encoder")
class LocalCLIP(ModelFamily, L.LightningModule):
    """A small transformers ``CLIPModel`` trained with CLIP's symmetric contrastive loss.

    Args:
        image_shape: the data's (C, H, W), linked from the data module; H = W = the vision tower's image size.
        num_classes: unused (linked from the data module like for every model).
        tokenizer: a CLIP tokenizer folder (vocab.json + merges.txt), or null to train one on the training captions.
        vocab_size, max_length: the trained tokenizer's vocabulary (at most) and token length (begin/end included).
        text_*/vision_*: widths, depths and heads of the two transformer towers (MLPs 4x wide, as CLIP's).
        patch_size: the vision tower's patch side (must divide the image side).
        projection_dim: the shared embedding width.
        logit_scale_init, max_logit_scale: the temperature's start (ln(1/0.07), OpenAI) and clamp (100, OpenAI).
        lr, betas, eps, weight_decay, warmup_steps, lr_schedule: AdamW and its schedule (OpenAI CLIP's values).
    """

    BATCH_FIELDS = ("image", "caption")
    CHECKPOINT_MONITOR = ("val/loss", "min")

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int | None = None,
        tokenizer: str | None = None,
        vocab_size: int = 1000,
        max_length: int = 32,
        text_hidden_size: int = 128,
        text_layers: int = 3,
        text_heads: int = 4,
        vision_hidden_size: int = 128,
        vision_layers: int = 3,
        vision_heads: int = 4,
        patch_size: int = 4,
        projection_dim: int = 64,
        logit_scale_init: float = math.log(1 / 0.07),
        max_logit_scale: float = 100.0,
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.2,
        warmup_steps: int = 100,
        lr_schedule: Literal["constant", "cosine", "linear"] = "cosine",
    ) -> None:
        super().__init__()
        channels, height, width = (int(v) for v in image_shape)
        if channels not in (1, 3):
            raise GenResearchError(f"clip: the data has {channels} channels; CLIP takes grey (repeated to RGB) or RGB images")
        if height != width:
            raise GenResearchError(f"clip: the data's images are {height}x{width}; CLIP's vision tower needs square images "
                                   "(set data.init_args.center_crop)")
        check_widths("clip", "patch_size", patch_size)
        if height % patch_size:
            raise GenResearchError(f"clip: model.init_args.patch_size={patch_size} must divide the image side {height}")
        for name, hidden, heads in (("text", text_hidden_size, text_heads), ("vision", vision_hidden_size, vision_heads)):
            check_widths("clip", f"{name}_hidden_size", hidden)
            check_widths("clip", f"{name}_heads", heads)
            if hidden % heads:
                raise GenResearchError(f"clip: model.init_args.{name}_hidden_size={hidden} must be a multiple of {name}_heads={heads}")
        check_widths("clip", "text_layers", text_layers)
        check_widths("clip", "vision_layers", vision_layers)
        check_widths("clip", "projection_dim", projection_dim)
        check_number("clip", "vocab_size", vocab_size, low=514, hint="at least 514 (256 bytes, 256 word-final bytes, 2 special tokens), e.g. 1000")
        check_number("clip", "max_length", max_length, low=3, hint="the longest caption's token count + 2, e.g. 32 (CLIP: 77)")
        check_number("clip", "max_logit_scale", max_logit_scale, low=1.0, hint="100 (OpenAI CLIP)")
        check_number("clip", "logit_scale_init", logit_scale_init, low=0.0, high=math.log(max_logit_scale), hint="ln(1/0.07) = 2.6593")
        check_number("clip", "eps", eps, low=0.0, low_inclusive=False, hint="1e-6 (OpenAI CLIP)")
        self.optimizer_spec = OptimizerSpec(lr=lr, betas=tuple(betas), weight_decay=weight_decay, warmup_steps=warmup_steps, lr_schedule=lr_schedule)
        self.optimizer_spec.check("model.init_args")
        self.save_hyperparameters()
        self.hparams.image_shape = (channels, height, width)
        self.hparams.betas = list(betas)
        self.image_shape = (channels, height, width)
        self.clip: Any = None  # the CLIPModel, built once the tokenizer (hence the vocabulary) is known
        self.tokenizer: Any = None
        self.tokenizer_files: dict[str, str] = {}
        self._tokenizer_dir: tempfile.TemporaryDirectory | None = None
        if tokenizer is not None and Path(tokenizer).expanduser().is_dir():
            self.build(clip_tokenizer_files(load_clip_tokenizer(Path(tokenizer).expanduser())))
        # A folder that is gone is fine when a checkpoint brings its own tokenizer; setup("fit") says so otherwise.

    # ---- building ------------------------------------------------------------------------------------
    def clip_config(self, tokenizer: Any) -> Any:
        """The CLIPConfig of these hyperparameters for ``tokenizer`` (vocabulary, special ids, max length)."""
        from transformers import CLIPConfig

        h = self.hparams
        text = {"vocab_size": len(tokenizer), "hidden_size": h.text_hidden_size, "intermediate_size": 4 * h.text_hidden_size,
                "num_hidden_layers": h.text_layers, "num_attention_heads": h.text_heads, "max_position_embeddings": int(tokenizer.model_max_length),
                "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
        vision = {"image_size": self.image_shape[1], "patch_size": h.patch_size, "num_channels": 3, "hidden_size": h.vision_hidden_size,
                  "intermediate_size": 4 * h.vision_hidden_size, "num_hidden_layers": h.vision_layers, "num_attention_heads": h.vision_heads}
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=h.projection_dim, logit_scale_init_value=h.logit_scale_init)

    def build(self, files: dict[str, str]) -> None:
        """Load the tokenizer these files make and build a freshly initialised CLIPModel for it."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import CLIPModel

        self._tokenizer_dir = tempfile.TemporaryDirectory(prefix="clip-tokenizer-")  # removed with the module
        self.tokenizer = load_clip_tokenizer(write_tokenizer_files(files, Path(self._tokenizer_dir.name)))
        self.tokenizer_files = dict(files)
        self.clip = CLIPModel(self.clip_config(self.tokenizer))

    def require_built(self) -> Any:
        if self.clip is None:
            raise GenResearchError("clip: the model has no tokenizer yet; fit it (a tokenizer is trained on the captions), load a clip "
                                   "checkpoint, or set model.init_args.tokenizer to a CLIP tokenizer folder")
        return self.clip

    def setup(self, stage: str) -> None:
        if self.clip is not None or stage != "fit":
            return
        if self.hparams.tokenizer is not None:
            raise GenResearchError(f"clip: model.init_args.tokenizer={self.hparams.tokenizer} is not a folder; pass a CLIP tokenizer folder "
                                   "or null to train one on the captions")
        captions = training_captions(self.trainer.datamodule)
        with tempfile.TemporaryDirectory() as folder:
            train_clip_tokenizer(captions, Path(folder), self.hparams.vocab_size, self.hparams.max_length)
            files = read_tokenizer_files(Path(folder))
        files = self.trainer.strategy.broadcast(files, src=0)  # every DDP rank uses rank 0's tokenizer
        self.build(files)
        check_round_trip(self.tokenizer, captions)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = dict(self.tokenizer_files)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild from the checkpoint's tokenizer before its state_dict is loaded (the vocabulary sizes the model)."""
        files = checkpoint.get(CHECKPOINT_KEY)
        if not files:
            raise GenResearchError("clip: this checkpoint holds no tokenizer (clip_tokenizer); it was not written by the clip family")
        if self.clip is not None and files != self.tokenizer_files:
            rank_zero_warn("clip: the checkpoint's tokenizer differs from model.init_args.tokenizer's; the checkpoint's is used "
                           "(its weights were trained with it)")
        if files != self.tokenizer_files:
            self.build(files)

    # ---- the model -----------------------------------------------------------------------------------
    def tokenize(self, captions: list[str]) -> Tensor:
        """Token ids [B, max_length], padded with <|endoftext|> and truncated (CLIP uses no padding mask: the
        causal mask keeps pads from reaching the end token the pooled embedding is read at)."""
        ids = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt")
        return ids["input_ids"].to(self.device)

    def forward(self, images: Tensor, captions: list[str]) -> Any:
        """The CLIPModel output (loss, logits_per_image [B, B], embeddings) of a batch of image-caption pairs."""
        clip = self.require_built()
        return clip(input_ids=self.tokenize(captions), pixel_values=pixel_values(images), return_loss=True)

    def image_features(self, images: Tensor) -> Tensor:
        """Projected image embeddings [N, projection_dim] (not normalised), as CLIPModel.get_image_features."""
        return self.require_built().get_image_features(pixel_values=pixel_values(images)).pooler_output

    def text_features(self, captions: list[str]) -> Tensor:
        """Projected text embeddings [N, projection_dim] (not normalised), as CLIPModel.get_text_features."""
        return self.require_built().get_text_features(input_ids=self.tokenize(captions)).pooler_output

    # ---- Lightning hooks -----------------------------------------------------------------------------
    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        captions = [str(text) for text in batch["caption"]]
        output = self(batch["image"], captions)
        size = len(captions)
        on_step = stage == "train"
        self.log(f"{stage}/loss", output.loss, prog_bar=True, on_step=on_step, on_epoch=not on_step, sync_dist=not on_step, batch_size=size)
        if stage != "train":
            image_to_text, text_to_image = retrieval_hits(output.logits_per_image.detach(), captions)
            both = (image_to_text.mean() + text_to_image.mean()) / 2
            self.log(f"{stage}/retrieval_top1", both, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=size)
            self.log(f"{stage}/retrieval_top1_image_to_text", image_to_text.mean(), on_epoch=True, sync_dist=True, batch_size=size)
            self.log(f"{stage}/retrieval_top1_text_to_image", text_to_image.mean(), on_epoch=True, sync_dist=True, batch_size=size)
        else:
            self.log("train/logit_scale", self.clip.logit_scale.detach(), batch_size=size)
        return output.loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """OpenAI CLIP clamps the learned temperature after each step: logits are scaled by at most max_logit_scale."""
        with torch.no_grad():
            self.clip.logit_scale.clamp_(0.0, math.log(self.hparams.max_logit_scale))

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with weight decay on matrices only (open_clip's rule: no decay on gains, biases, the temperature)."""
        clip = self.require_built()
        decay = [p for p in clip.parameters() if p.ndim >= 2]
        no_decay = [p for p in clip.parameters() if p.ndim < 2]
        spec = self.optimizer_spec
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                      lr=spec.lr, betas=spec.betas, eps=self.hparams.eps)
        scheduler = WarmupCosineLR(optimizer, spec.warmup_steps, schedule_length(self, spec), spec.lr_schedule, spec.decay_fraction)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- export --------------------------------------------------------------------------------------
    def export_folder(self, folder: Path) -> str:
        """``export`` (the contract's ExportsFolder): the transformers CLIPModel folder of :meth:`save_pretrained`."""
        self.save_pretrained(folder)
        return (f"CLIP folder in {folder}: CLIPModel.from_pretrained({str(folder)!r}) and AutoTokenizer load it; it is the clip "
                "extractor's weights=, clip_score's --clip-model and text2image's text_encoder")

    def save_pretrained(self, folder: str | Path) -> Path:
        """A folder that transformers' ``CLIPModel.from_pretrained``, ``AutoTokenizer`` and ``CLIPImageProcessor`` load,
        and gen_research's ``clip`` extractor (weights=folder) and ``clip_score`` (--clip-model folder) use: the
        preprocessor keeps [-1, 1] images as they are (mean = std = 0.5, resize and crop at the training side)."""
        from transformers import CLIPImageProcessor

        folder = Path(folder).expanduser()
        self.require_built().save_pretrained(str(folder))
        write_tokenizer_files(self.tokenizer_files, folder)
        side = self.image_shape[1]
        CLIPImageProcessor(do_resize=True, size={"shortest_edge": side}, do_center_crop=True, crop_size={"height": side, "width": side},
                           image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(str(folder))
        return folder


__all__ = ["LocalCLIP", "pixel_values", "retrieval_hits", "training_captions"]
