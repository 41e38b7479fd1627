"""Users' own images for image-to-image translation: paired (pix2pix), unpaired (CycleGAN) and multi-domain (StarGAN)
folder layouts, with the batch fields of gen_research/data/translation_datasets.py."""

from __future__ import annotations

import csv
import os

import torch
from torch import Tensor

from gen_research.data.base import SPLITS, ImageDataModule, Splits
from gen_research.data.datasets import FileImageDataset, load_image
from gen_research.data.folder import IMAGE_EXTENSIONS, check_image_files, find_images
from gen_research.data.translation_datasets import DIRECTIONS, MultiDomainDataset, PairedDataset, UnpairedDataset
from gen_research.errors import GenResearchError
from gen_research.registry import DATA

_SHOWN = 5  # unmatched or missing names listed in an error


def _listing(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")


class _TranslationFolderData(ImageDataModule):
    """What the folder layouts share: the root, one-line layout errors, the first image's shape, file checks."""

    layout = ""  # the expected layout, named in errors

    def _root(self, root: str) -> str:
        shown = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(shown):
            self._fail(f"no such folder {shown!r} (expected {self.layout})", "root")
        return shown

    def _images(self, folder: str) -> list[str]:
        if not os.path.isdir(folder):
            self._fail(f"no folder {folder!r} (expected {self.layout})", "root")
        paths = find_images(folder)
        if not paths:
            self._fail(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder!r} (expected {self.layout})", "root")
        return paths

    def _check_direction(self, name: str, value: str) -> None:
        if value not in DIRECTIONS:
            self._fail(f"{name} must be one of {', '.join(DIRECTIONS)}, got {value!r}", name)

    def _stored_shape(self, path: str, grayscale: bool) -> tuple[int, int, int]:
        """(C, H, W) of the file ``path`` before any geometry; opens it, so a bad folder fails at construction."""
        c, h, w = load_image(path, grayscale).shape
        return int(c), int(h), int(w)

    def _raw_shape(self) -> tuple[int, int, int]:
        return self._target_raw_shape

    @property
    def source_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the ``source`` images in a batch (after resize and crops)."""
        return self.geometry_shape(self._source_raw_shape)

    def _check_files(self, paths: list[str], folder: str) -> None:
        check_image_files(paths, self.resize, self.center_crop, self.data_name, folder)

    def _same_size(self, shapes: dict[str, tuple[int, int, int]]) -> None:
        """Paired images must come out the same height and width (channels may differ: grayscale_a/grayscale_b)."""
        sizes = {name: shape[1:] for name, shape in shapes.items()}
        if len(set(sizes.values())) > 1:
            shown = " vs ".join(f"{name} {h}x{w}" for name, (h, w) in sizes.items())
            self._fail(f"paired images come out in different sizes ({shown}); give A/ and B/ one image size, or crop "
                       "both to one square", "center_crop")


@DATA.register("paired_folder", "your own paired images: root/A/ and root/B/ with matching file names (pix2pix)")
class PairedFolderData(_TranslationFolderData):
    """Pairs of images for pix2pix: ``root/A/x.jpg`` pairs with ``root/B/x.png`` (matched on the path relative to the
    folder, without extension; subfolders allowed). Items of every split: ``{"source": A, "target": B, "image": B,
    "label": 0}`` (``direction: BtoA`` swaps the roles, as the reference's ``--direction``).

    The reference's side-by-side layout (facades' ``train/1.jpg`` holding A|B in one file) is not read; split such
    files once, e.g. with this command (one line, run after ``mkdir A B``): ``python -c "import sys,PIL.Image as I,
    pathlib as p;[(lambda im:(im.crop((0,0,im.width//2,im.height)).save(f'A/{f.name}'),im.crop((im.width//2,0,
    im.width,im.height)).save(f'B/{f.name}')))(I.open(f)) for f in p.Path(sys.argv[1]).glob('*.jpg')]" facades/train``.

    Args:
        root: the folder holding A/ and B/.
        grayscale_a: load the images of A/ with 1 channel (default RGB); follows the folder, whatever the direction.
        grayscale_b: the same for B/.
        direction: AtoB translates A/ into B/; BtoA translates B/ into A/.
        test_fraction: share of the pairs held out as the test split (seeded by split_seed).
    """

    data_name = "paired_folder"
    batch_fields = ("image", "label", "source", "target")
    layout = "root/A/ and root/B/ holding images with matching file names"

    def __init__(
        self,
        root: str,
        grayscale_a: bool = False,
        grayscale_b: bool = False,
        direction: str = "AtoB",
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        resize: int | None = None,
        center_crop: int | None = None,
        random_crop: int | None = None,
        random_flip: bool = False,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed, resize=resize,
            center_crop=center_crop, random_crop=random_crop, random_flip=random_flip, num_workers=num_workers,
            pin_memory=pin_memory, persistent_workers=persistent_workers,
        )  # fmt: skip
        self._check_fraction("test_fraction", test_fraction)
        self._check_direction("direction", direction)
        self.root, self.direction, self.test_fraction = root, direction, test_fraction
        self.grayscale_a, self.grayscale_b = grayscale_a, grayscale_b
        shown = self._root(root)
        a_paths, b_paths = self._match(os.path.join(shown, "A"), os.path.join(shown, "B"))
        grey = {"A": grayscale_a, "B": grayscale_b}
        paths = {"A": a_paths, "B": b_paths}
        self.source_folder, self.target_folder = ("A", "B") if direction == "AtoB" else ("B", "A")
        self.source_paths, self.target_paths = paths[self.source_folder], paths[self.target_folder]
        self.source_grayscale, self.target_grayscale = grey[self.source_folder], grey[self.target_folder]
        self._target_raw_shape = self._stored_shape(self.target_paths[0], self.target_grayscale)
        self._source_raw_shape = self._stored_shape(self.source_paths[0], self.source_grayscale)
        self._same_size({self.source_folder: self.source_shape, self.target_folder: self.image_shape})

    def _match(self, a_folder: str, b_folder: str) -> tuple[list[str], list[str]]:
        """The files of A/ and B/ paired by their path without extension, in sorted order."""
        keyed = {}
        for name, folder in (("A", a_folder), ("B", b_folder)):
            by_key: dict[str, str] = {}
            for path in self._images(folder):
                key = os.path.splitext(os.path.relpath(path, folder))[0]
                if key in by_key:
                    self._fail(f"{name}/ holds two images named {key!r} ({os.path.basename(by_key[key])}, "
                               f"{os.path.basename(path)}); pairs match on the name without extension: keep one", "root")
                by_key[key] = path
            keyed[name] = by_key
        only_a = sorted(set(keyed["A"]) - set(keyed["B"]))
        only_b = sorted(set(keyed["B"]) - set(keyed["A"]))
        if only_a or only_b:
            self._fail(f"{len(only_a)} images in A/ have no match in B/ ({_listing(only_a)}) and {len(only_b)} in B/ none "
                       f"in A/ ({_listing(only_b)}); pairs match on the path without extension (A/x.jpg with B/x.png): "
                       "add or remove files under the root", "root")
        keys = sorted(keyed["A"])
        return [keyed["A"][k] for k in keys], [keyed["B"][k] for k in keys]

    def _build_splits(self) -> Splits:
        self._check_files(self.source_paths, os.path.join(self.root, self.source_folder))
        self._check_files(self.target_paths, os.path.join(self.root, self.target_folder))
        labels = torch.zeros(len(self.source_paths), dtype=torch.int64)
        dataset = PairedDataset(
            FileImageDataset(self.source_paths, labels, self.resize, self.center_crop, self.source_grayscale),
            FileImageDataset(self.target_paths, labels, self.resize, self.center_crop, self.target_grayscale),
        )
        return self.split_pool(dataset, labels, self.test_fraction)


@DATA.register("unpaired_folder", "your own unpaired images: root/trainA/, root/trainB/, optional testA/, testB/ (CycleGAN)")
class UnpairedFolderData(_TranslationFolderData):
    """Two domains of images without pairs, in the reference CycleGAN layout: ``root/trainA/``, ``root/trainB/`` and
    optionally ``root/testA/``, ``root/testB/`` (then the test split; otherwise a seeded test split of train).
    Items: ``{"source": A, "image": B, "label": 0, "domain": 0, "target_domain": 1}``, with no pairing between A
    and B (translation_datasets.UnpairedDataset); crops and flips draw separately for A and B, as the reference's.

    Args:
        root: the folder holding trainA/ and trainB/ (and testA/, testB/).
        grayscale_a: load the images of trainA/ and testA/ with 1 channel (default RGB), whatever the direction.
        grayscale_b: the same for trainB/ and testB/.
        direction: AtoB: domain A is trainA/; BtoA swaps the folders for the whole data.
        eval_direction: AtoB: validation and test items translate A -> B; BtoA: ``{"source": B, "image": A,
            "label": 0, "domain": 1, "target_domain": 0}``, so evaluation measures the B -> A generator. Training
            items always have an A source.
        test_fraction: share of trainA/ and trainB/ held out as the test split when testA/, testB/ are absent.
    """

    data_name = "unpaired_folder"
    batch_fields = ("image", "label", "source", "domain", "target_domain")
    joint_geometry = False
    layout = "root/trainA/ and root/trainB/ of images, optionally root/testA/ and root/testB/"
    domain_names = ("A", "B")

    def __init__(
        self,
        root: str,
        grayscale_a: bool = False,
        grayscale_b: bool = False,
        direction: str = "AtoB",
        eval_direction: str = "AtoB",
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        resize: int | None = None,
        center_crop: int | None = None,
        random_crop: int | None = None,
        random_flip: bool = False,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed, resize=resize,
            center_crop=center_crop, random_crop=random_crop, random_flip=random_flip, num_workers=num_workers,
            pin_memory=pin_memory, persistent_workers=persistent_workers,
        )  # fmt: skip
        self._check_fraction("test_fraction", test_fraction)
        self._check_direction("direction", direction)
        self._check_direction("eval_direction", eval_direction)
        self.root, self.direction, self.eval_direction, self.test_fraction = root, direction, eval_direction, test_fraction
        self.grayscale_a, self.grayscale_b = grayscale_a, grayscale_b
        shown = self._root(root)
        tests = [os.path.isdir(os.path.join(shown, name)) for name in ("testA", "testB")]
        if tests[0] != tests[1]:
            self._fail(f"{shown!r} has {'testA/' if tests[0] else 'testB/'} but not {'testB/' if tests[0] else 'testA/'}; "
                       "give both test folders or neither", "root")
        self.has_test_folders = tests[0]
        a_name, b_name = ("A", "B") if direction == "AtoB" else ("B", "A")
        grey = {"A": grayscale_a, "B": grayscale_b}
        self.a_grayscale, self.b_grayscale = grey[a_name], grey[b_name]
        #: split name -> folder -> image paths; "train" lists trainA/trainB (val and maybe test are cut from it)
        self.folders: dict[str, dict[str, str]] = {
            part: {role: os.path.join(shown, f"{part}{name}") for role, name in (("A", a_name), ("B", b_name))}
            for part in (("train", "test") if self.has_test_folders else ("train",))
        }
        self.paths = {part: {role: self._images(folder) for role, folder in roles.items()}
                      for part, roles in self.folders.items()}
        self._target_raw_shape = self._stored_shape(self.paths["train"]["B"][0], self.b_grayscale)
        self._source_raw_shape = self._stored_shape(self.paths["train"]["A"][0], self.a_grayscale)
        self.image_shape, self.source_shape  # noqa: B018 - a random_crop larger than either domain fails now

    def _files(self, paths: list[str], grayscale: bool) -> FileImageDataset:
        return FileImageDataset(paths, torch.zeros(len(paths), dtype=torch.int64), self.resize, self.center_crop, grayscale)

    def _build_splits(self) -> Splits:
        for part, roles in self.folders.items():
            for role, folder in roles.items():
                self._check_files(self.paths[part][role], folder)
        test_fraction = 0.0 if self.has_test_folders else self.test_fraction
        chosen: dict[str, dict[str, list[str]]] = {name: {} for name in SPLITS}
        for role in ("A", "B"):
            pool = self.paths["train"][role]
            for name, indices in zip(SPLITS, self.seeded_split(len(pool), test_fraction)):
                chosen[name][role] = [pool[i] for i in indices.tolist()]
            if self.has_test_folders:
                chosen["test"][role] = self.paths["test"][role]
        splits: Splits = {}
        for offset, name in enumerate(SPLITS):
            a, b = chosen[name]["A"], chosen[name]["B"]
            if bool(a) != bool(b):
                self._fail(f"the {name} split has {len(a)} A and {len(b)} B images; both domains need some: add images "
                           f"or change data.init_args.val_fraction / test_fraction", "val_fraction")
            reverse = name != "train" and self.eval_direction == "BtoA"
            dataset = UnpairedDataset(self._files(a, self.a_grayscale), self._files(b, self.b_grayscale),
                                      seed=self.split_seed * 3 + offset, reverse=reverse)
            splits[name] = (dataset, torch.zeros(len(dataset), dtype=torch.int64))
        return splits


@DATA.register("multidomain_folder", "your own images in several domains: root/<domain>/ or an attribute CSV (StarGAN)")
class MultiDomainFolderData(_TranslationFolderData):
    """Images of several domains for StarGAN. Single-label: ``root/<domain>/...``, one subfolder per domain (their
    sorted names are the domains). Multi-label: ``attributes_csv`` with a header row, the first column an image path
    relative to root and the others attributes valued 1 / -1 (or 1 / 0), as CelebA's list_attr_celeba (the Kaggle
    CSV copy; convert the original whitespace-separated .txt first); ``attributes`` chooses the columns (StarGAN's
    ``selected_attrs``).

    Items of every split: ``{"image": x, "domain": own, "target_domain": t, "label": 0}``: own is an
    int64 id (single-label) or a float32 0/1 vector [K] (multi-label); the item at position k of its split asks for
    t = ``(own + 1 + k % (K - 1)) % K`` (every other domain in turn) or own with attribute ``k % K`` flipped.

    Args:
        root: the folder of domain subfolders, or of the images the CSV names.
        attributes_csv: the attribute CSV (multi-label); a path, or a file name inside root.
        attributes: the CSV columns that are the domains (required with attributes_csv).
        grayscale: load images with 1 channel instead of 3 (RGB).
        test_fraction: share of the images held out as the test split (seeded by split_seed).
    """

    data_name = "multidomain_folder"
    batch_fields = ("image", "label", "domain", "target_domain")
    layout = "root/<domain>/ image subfolders (one per domain), or attributes_csv naming images under root"

    def __init__(
        self,
        root: str,
        attributes_csv: str | None = None,
        attributes: list[str] | None = None,
        grayscale: bool = False,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        resize: int | None = None,
        center_crop: int | None = None,
        random_crop: int | None = None,
        random_flip: bool = False,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, val_fraction=val_fraction, split_seed=split_seed, resize=resize,
            center_crop=center_crop, random_crop=random_crop, random_flip=random_flip, num_workers=num_workers,
            pin_memory=pin_memory, persistent_workers=persistent_workers,
        )  # fmt: skip
        self._check_fraction("test_fraction", test_fraction)
        self.root, self.grayscale, self.test_fraction = root, grayscale, test_fraction
        self.attributes_csv, self.attributes = attributes_csv, list(attributes) if attributes else None
        shown = self._root(root)
        if attributes_csv is None:
            if attributes:
                self._fail("attributes choose columns of an attribute CSV; set attributes_csv too (or drop attributes "
                           "for one subfolder per domain)", "attributes_csv")
            self.paths, self.domains, names = self._scan_subfolders(shown)
        else:
            if not attributes:
                self._fail("an attribute CSV needs the columns that are the domains, e.g. attributes: [Black_Hair, "
                           "Blond_Hair]", "attributes")
            self.paths, self.domains, names = self._read_csv(shown, attributes_csv, list(attributes))
        self.domain_names: tuple[str, ...] = tuple(names)
        self.multi_label = attributes_csv is not None
        self._target_raw_shape = self._source_raw_shape = self._stored_shape(self.paths[0], grayscale)
        self.image_shape  # noqa: B018 - a random_crop larger than the images fails now

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    def _scan_subfolders(self, root: str) -> tuple[list[str], Tensor, list[str]]:
        subfolders = sorted(e for e in os.listdir(root) if not e.startswith(".") and os.path.isdir(os.path.join(root, e)))
        per_domain = {name: find_images(os.path.join(root, name)) for name in subfolders}
        per_domain = {name: paths for name, paths in per_domain.items() if paths}
        if len(per_domain) < 2:
            self._fail(f"{root!r} has {len(per_domain)} subfolders with images; one subfolder per domain needs at least "
                       f"2 (expected {self.layout})", "root")
        names = sorted(per_domain)
        paths = [p for name in names for p in per_domain[name]]
        domains = torch.tensor([i for i, name in enumerate(names) for _ in per_domain[name]], dtype=torch.int64)
        return paths, domains, names

    def _read_csv(self, root: str, csv_path: str, attributes: list[str]) -> tuple[list[str], Tensor, list[str]]:
        path = os.path.expanduser(csv_path)
        if not os.path.isfile(path) and os.path.isfile(os.path.join(root, csv_path)):
            path = os.path.join(root, csv_path)
        if not os.path.isfile(path):
            self._fail(f"no attribute CSV {os.path.abspath(path)!r}", "attributes_csv")
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
        if len(rows) < 2:
            self._fail(f"{path!r} needs a header row and at least one image row", "attributes_csv")
        header = [name.strip() for name in rows[0]]
        missing = [name for name in attributes if name not in header[1:]]
        if missing:
            self._fail(f"{path!r} has no column {', '.join(missing)}; its attribute columns are {', '.join(header[1:])}",
                       "attributes")
        columns = [header.index(name) for name in attributes]
        values = {"1": 1.0, "-1": 0.0, "0": 0.0}
        paths, domains = [], []
        for line, row in enumerate(rows[1:], start=2):
            cells = [row[c].strip() if c < len(row) else "" for c in columns]
            if any(cell not in values for cell in cells):
                self._fail(f"{path!r} line {line}: attribute values must be 1, -1 or 0, got {cells}; fix the CSV",
                           "attributes_csv")
            domains.append([values[cell] for cell in cells])
            paths.append(os.path.join(root, row[0].strip()))
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            self._fail(f"{len(absent)} images named in {path!r} are not under the root (first: {absent[0]!r}); fix the "
                       "CSV or data.init_args.root", "root")
        return paths, torch.tensor(domains, dtype=torch.float32), attributes

    def _build_splits(self) -> Splits:
        self._check_files(self.paths, self.root)
        splits: Splits = {}
        for name, indices in zip(SPLITS, self.seeded_split(len(self.paths), self.test_fraction)):
            chosen = indices.tolist()
            labels = torch.zeros(len(chosen), dtype=torch.int64)
            images = FileImageDataset([self.paths[i] for i in chosen], labels, self.resize, self.center_crop, self.grayscale)
            splits[name] = (MultiDomainDataset(images, self.domains[indices], self.num_domains, self.multi_label), labels)
        return splits
