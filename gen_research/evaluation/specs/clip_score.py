"""clip_score: CLIP score (Hessel et al. 2021) of generated images against their captions, local CLIP folder only.

score = mean over image-caption pairs of ``100 * max(cos(E_image, E_text), 0)``, with E the projection embeddings
of a transformers ``CLIPModel`` (``get_image_features`` / ``get_text_features``), as torchmetrics' CLIPScore
defines it. Images are preprocessed with the clip extractor's torch ops (folder's preprocessor_config.json, else
CLIP defaults); captions with the folder's tokenizer, truncated to the text tower's max length.

The CLIP folder is ``EvalOptions.clip_model`` (``--clip-model DIR``), else ``$GEN_RESEARCH_CLIP_MODEL``, else the
folder of the evaluation extractor when it is the ``clip`` extractor. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.extractors.clip import HOW_TO_GET, CLIPFeatures, _Preprocess
from gen_research.evaluation.specs._common import Spec, to_float
from gen_research.registry import METRICS

ENV_VAR = "GEN_RESEARCH_CLIP_MODEL"
NO_FOLDER = (
    "clip_score needs a local CLIP model: pass --clip-model DIR (a local CLIP folder, e.g. saved with "
    f"CLIPModel.save_pretrained plus its tokenizer), set {ENV_VAR}, or evaluate with the clip extractor"
)
NO_CAPTIONS = "clip_score needs one caption per generated image: pass --captions FILE (JSON: file name -> caption)"


def clip_folder(extractor: FeatureExtractor | None, options: EvalOptions | None) -> Path | None:
    """options.clip_model, else $GEN_RESEARCH_CLIP_MODEL, else the clip extractor's folder; None when none is known."""
    chosen = getattr(options, "clip_model", None) or os.environ.get(ENV_VAR, "").strip() or None
    if chosen is None and isinstance(extractor, CLIPFeatures):
        # CLIPFeatures keeps its folder only if it records it (folder / weights attribute).
        chosen = next((getattr(extractor, a) for a in ("folder", "weights", "weights_path") if getattr(extractor, a, None)), None)
    return None if chosen is None else Path(str(chosen)).expanduser()


def load_clip(folder: Path) -> tuple[nn.Module, Any]:
    """(CLIPModel in eval mode, its tokenizer) from a local folder; GenResearchError saying what to fix."""
    if not (folder / "config.json").is_file():
        raise GenResearchError(f"no CLIP model folder at {folder} (config.json missing) for clip_score: pass --clip-model DIR; {HOW_TO_GET}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never reach the Hub
    from transformers import AutoTokenizer, CLIPModel

    try:
        model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise GenResearchError(f"cannot load a CLIPModel from {folder} ({first}); {HOW_TO_GET}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise GenResearchError(
            f"cannot load the CLIP tokenizer from {folder} ({first}); save it next to the model with "
            "CLIPTokenizer.from_pretrained(NAME).save_pretrained(FOLDER)") from None
    model.requires_grad_(False)
    return model.eval(), tokenizer


class CLIPScoreMetric(Metric):
    """Sum of ``100 * max(cos, 0)`` over image-caption pairs and their count (exact under any batching and DDP)."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, model: nn.Module, tokenizer: Any, preprocess: _Preprocess, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    @torch.no_grad()
    def scores(self, images: Tensor, texts: list[str]) -> Tensor:
        """[N] per-pair scores ``100 * max(cos(E_image, E_text), 0)``."""
        self.model.eval()
        device = images.device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        dtype = self.model.visual_projection.weight.dtype
        image = self.model.get_image_features(pixel_values=self.preprocess(images).to(dtype))
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        text = self.model.get_text_features(input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device))
        image = getattr(image, "pooler_output", image).float()  # transformers 5: an output object
        text = getattr(text, "pooler_output", text).float()
        return 100.0 * F.cosine_similarity(image, text, dim=-1).clamp(min=0.0)

    def update(self, images: Tensor, texts: list[str]) -> None:
        scores = self.scores(images, texts)
        self.total += scores.double().sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class CLIPScore(Spec):
    """CLIP score (Hessel et al. 2021) of generated images and their captions: mean 100 * max(cos, 0)."""

    name = "clip_score"
    needs_images: ClassVar[bool] = True
    needs_texts: ClassVar[bool] = True
    needs_reals: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    paired: ClassVar[bool] = False
    needs_generator: ClassVar[bool] = False

    def __init__(self) -> None:
        self.folder: Path | None = None

    def feature_name(self, extractor: FeatureExtractor) -> str:
        """Keys name the CLIP folder (``clip_score/clip-<folder>``), not the evaluation extractor."""
        folder = self.folder or clip_folder(extractor, None)
        if folder is None:
            raise GenResearchError(NO_FOLDER)
        return f"clip-{folder.resolve().name}"

    def build(self, extractor: FeatureExtractor, options: EvalOptions) -> Metric:
        folder = clip_folder(extractor, options)
        if folder is None:
            raise GenResearchError(NO_FOLDER)
        model, tokenizer = load_clip(folder)
        self.folder = folder
        return CLIPScoreMetric(model, tokenizer, _Preprocess(folder, int(model.config.vision_config.image_size)))

    def update(self, metric: Metric, outputs: dict[str, Tensor], real: bool) -> None:
        """Extractor outputs are not used (clip_score is fed raw images through update_images)."""

    def update_images(self, metric: Metric, images: Tensor, labels: Tensor | None, texts: list[str] | None, real: bool) -> None:
        if real:
            return
        if texts is None or len(texts) != images.shape[0] or any(t is None for t in texts):
            raise GenResearchError(NO_CAPTIONS)
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise GenResearchError(f"clip_score: expected grey or RGB images [N, 1|3, H, W], got shape {tuple(images.shape)}")
        with torch.no_grad():
            metric.update(images.float(), [str(t) for t in texts])

    def compute(self, metric: Metric) -> dict[str, float]:
        return {self.name: to_float(metric.compute())}


METRICS.add("clip_score", CLIPScore, "CLIP score of generated images and their captions (local CLIP folder: --clip-model DIR)")
