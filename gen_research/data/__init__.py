"""Data modules yielding dicts of named batch fields (data/batch.py); importing this package registers them in DATA."""

from gen_research.data import embedded, folder, torchvision_sets  # noqa: F401  (run the @DATA.register decorators)
from gen_research.data.base import ImageDataModule
from gen_research.data.batch import IMAGE_FIELDS, collate_fields
from gen_research.data.embedded import Digits, MNIST5k
from gen_research.data.folder import ImageFolderData
from gen_research.data.resumable_order import ResumableOrder
from gen_research.data.torchvision_sets import CelebAData, CIFAR10Data, FashionMNISTData, MNISTData
from gen_research.data.transforms import flip_batch, flip_fields

__all__ = [
    "CIFAR10Data",
    "CelebAData",
    "Digits",
    "FashionMNISTData",
    "IMAGE_FIELDS",
    "ImageDataModule",
    "ImageFolderData",
    "MNIST5k",
    "MNISTData",
    "ResumableOrder",
    "collate_fields",
    "flip_batch",
    "flip_fields",
]
