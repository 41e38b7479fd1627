"""``dinov2``: DINOv2 ViT CLS features (FD-DINOv2) from a local transformers ``Dinov2Model`` folder.

Stein et al., "Exposing flaws of generative model evaluation metrics and their unfair treatment of diffusion models"
(NeurIPS 2023) recommend DINOv2 ViT-L/14 (Oquab et al. 2023) over InceptionV3 as the feature space of FID and of
the other distribution metrics; their code, dgm-eval (layer6ai-labs/dgm-eval, ``dgm_eval/models/dinov2.py``), is the
convention followed here, so that numbers agree with it:

- images are read as uint8 RGB (ours: ``[-1, 1] -> round((x + 1) * 127.5)``), resized to 224 x 224 and divided by 255,
  then normalised with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225);
- the resize is ``resize_images(images, (224, 224), mode)`` (extractors/resize.py). Default ``clean``: Pillow bicubic
  (antialiased) per channel on float32, clipped to 0..255 = dgm-eval's ``--clean_resize``. dgm-eval's default,
  torchvision ``Resize((224, 224), BICUBIC)`` on the PIL image, is the same Pillow filter run on uint8 (each of its
  two passes rounded and clipped to 0..255): on photo crops it differs from ``clean`` by about 0.3/255 per pixel on
  average, up to ~5/255 at sharp edges (random noise, all edges, up to ~22/255). ``legacy_tensorflow`` and
  ``legacy_pytorch`` append ``-<mode>`` to the name;
- features = the CLS token after the final LayerNorm: ``Dinov2Model(pixel_values).pooler_output``, which is what the
  torch.hub model returns in eval mode (``head(x_norm_clstoken)`` with an identity head) and what dgm-eval takes;
- position embeddings: the published models hold a 37 x 37 table (trained at 518 px). The torch.hub model resamples it
  for a 16 x 16 patch grid with ``interpolate(bicubic, scale_factor=(16 + 0.1) / 37)`` (the "+0.1" offset of DINO),
  while transformers' Dinov2 uses ``size=(16, 16)``: the two sample the table at different points, so features
  differ. The table is resampled once here the hub's way (:func:`hub_position_embeddings`) and stored as the
  model's 16 x 16 table; ``Dinov2Model`` then uses it unchanged at 224 px and its ``pooler_output`` is the hub's.

Weights: ``weights`` = a folder with ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``, or a sharded
index) of a Dinov2Model, or a Hugging Face cache folder ``models--facebook--dinov2-*``; ``$GEN_RESEARCH_DINOV2`` when
weights is None. Loaded with ``local_files_only`` (``HF_HUB_OFFLINE=1``): never a download, never another network.
The config must be one of the published ViT-S/B/L/g 14 architectures. The sha256 of the weights file(s) is in
``cache_key()``; files whose hash is in :data:`OFFICIAL_SHA256` get the plain name (``dinov2-vitl14``), any other
weights ``dinov2-vitl14-<8 hex of sha256>`` (and a warning), so numbers of unverified weights never carry the name of
the published network. Only the files published on the Hub have these hashes: re-saving the model
(``save_pretrained``) writes different bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import as_rgb
from gen_research.evaluation.extractors.common import FrozenExtractor, reject, sha256_file
from gen_research.evaluation.extractors.resize import DESCRIPTIONS, check_resize_mode, resize_images
from gen_research.registry import FEATURES

ENV_VAR = "GEN_RESEARCH_DINOV2"
IMAGE_SIZE = 224  # dgm-eval's input size
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESIZE_MODE = "clean"
HUB_INTERPOLATE_OFFSET = 0.1  # dinov2 hubconf: interpolate_offset=0.1, interpolate_antialias=False
HOW_TO_GET = (
    "on a machine with internet run huggingface_hub.snapshot_download('facebook/dinov2-large', local_dir=FOLDER, "
    "allow_patterns=['config.json', 'model.safetensors']) (the published file, whose hash names the metrics dinov2-vitl14; "
    "Dinov2Model.from_pretrained('facebook/dinov2-large').save_pretrained(FOLDER) also works but its hash is not the "
    f"published one), copy FOLDER here and pass --feature-weights FOLDER (or set ${ENV_VAR})"
)

# The published architectures (facebook/dinov2-{small,base,large,giant} config.json = dinov2 hubconf dinov2_vit*14).
PUBLISHED = {
    "vits14": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "use_swiglu_ffn": False},
    "vitb14": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "use_swiglu_ffn": False},
    "vitl14": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "use_swiglu_ffn": False},
    "vitg14": {"hidden_size": 1536, "num_hidden_layers": 40, "num_attention_heads": 24, "use_swiglu_ffn": True},
}
COMMON = {"patch_size": 14, "mlp_ratio": 4, "image_size": 518, "num_channels": 3, "hidden_act": "gelu",
          "qkv_bias": True, "layer_norm_eps": 1e-6}
HUB_NAMES = {"vits14": "facebook/dinov2-small", "vitb14": "facebook/dinov2-base", "vitl14": "facebook/dinov2-large",
             "vitg14": "facebook/dinov2-giant"}

# sha256 of the published model.safetensors files, as the Hugging Face Hub lists them ("Git LFS Details"
# on huggingface.co/facebook/dinov2-*/blob/main/model.safetensors, seen 2026-11; giant at commit 3fadae3).
OFFICIAL_SHA256 = {
    "ae1e99fcefd534ed978cdeb8326f08030c96e28b7a81ffcbc98a857c84d14be1": "vits14",  # facebook/dinov2-small, 88.2 MB
    "d73036b56966966d07975d696bde331762f37297e2f095de8cea0040c3aa0841": "vitb14",  # facebook/dinov2-base, 346 MB
    "399fba97a95f22c36834418bc69373364a99af3a1153da1c0fb31db567c92e23": "vitl14",  # facebook/dinov2-large, 1.22 GB
    "917d3c470db999d32a312f8542149be91c7cbac61ee8fb4b67ae3d82b79ce21f": "vitg14",  # facebook/dinov2-giant, 4.55 GB
}


def find_folder(weights: str | None) -> Path:
    """The model folder: ``weights``, else $GEN_RESEARCH_DINOV2; a Hub cache folder resolves to its snapshot."""
    given = weights if weights is not None else os.environ.get(ENV_VAR)
    if not given:
        raise GenResearchError(f"the dinov2 extractor needs weights=<folder with a saved Dinov2Model>; {HOW_TO_GET}")
    folder = Path(given).expanduser()
    if not (folder / "config.json").is_file() and (folder / "refs" / "main").is_file():  # models--facebook--dinov2-*
        folder = folder / "snapshots" / (folder / "refs" / "main").read_text().strip()
    if not (folder / "config.json").is_file():
        raise GenResearchError(f"no DINOv2 model folder at {folder} (config.json missing); nothing is downloaded: {HOW_TO_GET}")
    return folder


def weight_files(folder: Path) -> tuple[list[Path], bool]:
    """(the files transformers will read, whether they are safetensors): safetensors first, as from_pretrained does."""
    for index_name, single, safetensors in (("model.safetensors.index.json", "model.safetensors", True),
                                            ("pytorch_model.bin.index.json", "pytorch_model.bin", False)):
        if (folder / single).is_file():
            return [folder / single], safetensors
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as error:
                raise GenResearchError(f"cannot read {index} ({type(error).__name__}); {HOW_TO_GET}") from None
            missing = [name for name in shards if not (folder / name).is_file()]
            if missing:
                raise GenResearchError(f"{index} names shard {missing[0]} that is not in {folder}; copy the whole folder")
            return [folder / name for name in shards], safetensors
    raise GenResearchError(f"no weights in {folder} (model.safetensors or pytorch_model.bin missing); {HOW_TO_GET}")


def weights_sha256(files: list[Path]) -> str:
    """sha256 of the one weights file; for shards, sha256 of their ``name sha256`` lines."""
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{path.name} {sha256_file(path)}\n" for path in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _value(config: object, key: str) -> object:
    value = getattr(config, key, None)
    if key == "patch_size" and isinstance(value, (list, tuple)) and len(set(value)) == 1:
        return value[0]
    return value


def architecture(config: object, folder: Path) -> str:
    """``vits14|vitb14|vitl14|vitg14`` for a published DINOv2 config, else a one-line error naming what differs."""
    model_type = getattr(config, "model_type", None)
    if model_type != "dinov2":
        raise GenResearchError(f"{folder} holds a {model_type!r} model, not a DINOv2 (model_type 'dinov2', without registers); {HOW_TO_GET}")
    hidden = _value(config, "hidden_size")
    for arch, fields in PUBLISHED.items():
        if fields["hidden_size"] != hidden:
            continue
        expected = {**COMMON, **fields}
        wrong = [f"{key}={_value(config, key)!r} (published: {want!r})" for key, want in expected.items() if _value(config, key) != want]
        if wrong:
            raise GenResearchError(f"{folder} is not the published DINOv2 ViT-{arch[3].upper()}/14 ({HUB_NAMES[arch]}): {', '.join(wrong)}")
        return arch
    sizes = ", ".join(f"{fields['hidden_size']} ({arch})" for arch, fields in PUBLISHED.items())
    raise GenResearchError(f"{folder}: hidden_size={hidden!r} is none of the published DINOv2 ViTs ({sizes}); use a facebook/dinov2-* model")


def hub_position_embeddings(table: Tensor, grid: int, offset: float = HUB_INTERPOLATE_OFFSET) -> Tensor:
    """[1, 1 + M*M, D] -> [1, 1 + grid*grid, D] as the torch.hub DINOv2 resamples it (vision_transformer.py
    ``interpolate_pos_encoding``): bicubic, ``scale_factor = (grid + offset) / M``, no antialiasing, in float32."""
    class_position, patch_positions = table[:, :1], table[:, 1:]
    side = int(math.sqrt(patch_positions.shape[1]))
    if side * side != patch_positions.shape[1]:
        raise GenResearchError(f"DINOv2 position table of {patch_positions.shape[1]} patches is not a square grid")
    if side == grid:
        return table
    dim = table.shape[-1]
    scale = float(grid + offset) / side
    resized = F.interpolate(patch_positions.float().reshape(1, side, side, dim).permute(0, 3, 1, 2),
                            scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if tuple(resized.shape[-2:]) != (grid, grid):
        raise GenResearchError(f"DINOv2 position resampling gave a {tuple(resized.shape[-2:])} grid, expected {grid}x{grid}")
    resized = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat((class_position.float(), resized), dim=1).to(table.dtype)


@FEATURES.register("dinov2", "DINOv2 ViT-S/B/L/g 14 CLS features at 224 px as dgm-eval (FD-DINOv2, Stein et al. 2023); local Dinov2Model folder only")
class DINOv2Features(FrozenExtractor):
    """CLS features [N, hidden size] of a published DINOv2 ViT, preprocessed as dgm-eval (see the module docstring).

    ``weights``: a local Dinov2Model folder or $GEN_RESEARCH_DINOV2. ``resize`` is refused (always 224 x 224);
    ``resize_mode``: ``clean`` (default), ``legacy_tensorflow`` or ``legacy_pytorch``. ``verify_hash=False`` (tests
    only) silences the warning about unpublished weights; their name still carries the hash.
    """

    num_logits = None

    def __init__(
        self,
        weights: str | None = None,
        resize: int | None = None,
        resize_mode: str | None = None,
        image_shape: tuple[int, int, int] | None = None,
        verify_hash: bool = True,
    ) -> None:
        super().__init__()
        reject("dinov2", "resize", resize, f"DINOv2 is evaluated at {IMAGE_SIZE}x{IMAGE_SIZE}, as dgm-eval does; leave resize out")
        check_resize_mode(resize_mode, "dinov2")
        if image_shape is not None and int(image_shape[0]) not in (1, 3):
            raise GenResearchError(f"dinov2 reads grey or RGB images, got {image_shape[0]} channels")
        folder = find_folder(weights)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never reach the Hub
        from transformers import Dinov2Config, Dinov2Model

        try:
            config = Dinov2Config.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise GenResearchError(f"cannot read {folder / 'config.json'} ({first}); {HOW_TO_GET}") from None
        self.arch = architecture(config, folder)
        files, safetensors = weight_files(folder)
        self.weights_files = files
        self.weights_sha256 = weights_sha256(files)
        try:
            model, info = Dinov2Model.from_pretrained(str(folder), config=config, local_files_only=True, dtype=torch.float32,
                                                      use_safetensors=safetensors, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise GenResearchError(f"cannot load a Dinov2Model from {folder} ({first}); {HOW_TO_GET}") from None
        missing = list(info.get("missing_keys") or []) + [str(entry) for entry in info.get("mismatched_keys") or []]
        if missing:  # transformers would fill them with random values: never evaluate with those
            raise GenResearchError(f"{folder}: the weights lack {len(missing)} tensors of {HUB_NAMES[self.arch]} (e.g. {missing[0]}); copy the complete model.safetensors")
        grid = IMAGE_SIZE // int(_value(config, "patch_size"))
        with torch.no_grad():  # the hub's 16 x 16 positions, used by Dinov2Model unchanged at 224 px (module docstring)
            table = model.embeddings.position_embeddings
            model.embeddings.position_embeddings = torch.nn.Parameter(hub_position_embeddings(table.data, grid), requires_grad=False)
        self.model = model.float()
        self.num_features = int(config.hidden_size)
        self.resize_mode = resize_mode or DEFAULT_RESIZE_MODE
        self.official = self.weights_sha256 in OFFICIAL_SHA256 and OFFICIAL_SHA256[self.weights_sha256] == self.arch
        name = f"dinov2-{self.arch}" + ("" if self.official else f"-{self.weights_sha256[:8]}")
        self.name = name + ("" if self.resize_mode == DEFAULT_RESIZE_MODE else f"-{self.resize_mode}")
        if verify_hash and not self.official:
            warnings.warn(
                f"DINOv2 weights {', '.join(map(str, files))} (sha256 {self.weights_sha256[:12]}...) are not the published "
                f"{HUB_NAMES[self.arch]} model.safetensors: metrics are named {self.name}, not dinov2-{self.arch}", stacklevel=2)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[None, :, None, None]
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.freeze()

    def preprocess(self, images: Tensor) -> Tensor:
        """[-1, 1] images of any size -> normalised [N, 3, 224, 224] float32 pixel values (dgm-eval's transform)."""
        x = resize_images(images, (IMAGE_SIZE, IMAGE_SIZE), self.resize_mode).to(self.mean.device)  # 0..255 float32
        return (as_rgb(x) / 255.0 - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise GenResearchError(f"{self.name}: expected grey or RGB images [N, 1|3, H, W], got shape {tuple(images.shape)}")
        pixel_values = self.preprocess(images)
        return {"features": self.model(pixel_values=pixel_values).pooler_output.float()}

    def cache_key(self) -> dict[str, str]:
        return {
            "extractor": self.name,
            "extractor_weights": f"sha256:{self.weights_sha256}",
            "extractor_resize": f"{IMAGE_SIZE}x{IMAGE_SIZE}",
            "extractor_resize_mode": self.resize_mode,
            "extractor_input": (f"[-1,1]->uint8; {DESCRIPTIONS[self.resize_mode]}; grey->RGB; /255; ImageNet mean/std; "
                                f"DINOv2 {self.arch} CLS after final LayerNorm; hub position resampling (offset {HUB_INTERPOLATE_OFFSET})"),
        }


__all__ = ["DINOv2Features", "ENV_VAR", "OFFICIAL_SHA256", "PUBLISHED", "find_folder", "hub_position_embeddings"]
