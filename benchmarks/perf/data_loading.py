"""Section ``data_loading`` of ``make bench``: how fast the data modules hand out batches of 64, and what it does
to a short training run of the quickstart VAE, side by side (A B A B ..., ctx.pairs rounds, medians).

Loaders (the training split, ``ResumableOrder`` as in training, batch 64; each measurement builds a fresh loader,
runs one warm-up epoch, which includes starting the worker processes and is reported as ``first_epoch_s``, then
times ``EPOCHS`` more; batches/s are over those, with torch.cuda.synchronize() before every clock read on a GPU):

    mnist5k       per-item __getitem__ + collate (the old path) vs one tensor index per batch (BatchedView, the
                  new default), each with 0, 1 and 2 persistent workers; on CUDA also data_on_device=true
                  (the set on the GPU). On CUDA every batch is moved to the device as Lightning does
                  (``.to(device, non_blocking=True)``), from pinned memory where the loader pins.
    digits-png    image_folder: 2,000 mnist5k digits written as 28x28 grayscale PNGs, 0 / 1 / 2 workers
    rgb64-png     image_folder: 2,000 64x64 RGB PNG crops of scikit-learn's two sample photos, 0 / 1 / 2 workers

Training (in-process ``Trainer.fit`` of the quickstart's VAE, configs/model/vae.yaml, batch 64, fp32, no
validation, no callbacks): steps/s from the start of step ``WARM_STEPS`` to the end of the run, the same seeded
run with only the data path swapped: mnist5k old vs new path (on CUDA also on the device), and digits-png with
0 / 1 / 2 workers (the folder default's justification: on a 2-core machine the workers share the cores with the
training step).

With ctx.quick: 64-image folders, one timed epoch, 3 training steps; it measures nothing.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: harness

from harness import REPO, alternate, machine_line, markdown_table, ratio  # noqa: E402

BATCH = 64
FOLDER_IMAGES = 2000
EPOCHS = 3  # timed epochs per loader measurement, after the warm-up one
TRAIN_STEPS = 60  # per training measurement, of which the first WARM_STEPS are not timed
WARM_STEPS = 10
OLD = "per-item + collate"
NEW = "batched index"
DEVICE = "on device"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ---- data sets ---------------------------------------------------------------------------------------------
def write_folders(root: Path, count: int) -> dict[str, Path]:
    """Two folders of ``count`` PNGs each (written once; reused when present with as many files)."""
    import numpy as np
    from PIL import Image

    from gen_research.data.embedded import _mnist5k_arrays

    folders = {"digits-png": root / f"digits-png-{count}", "rgb64-png": root / f"rgb64-png-{count}"}
    digits = folders["digits-png"]
    if len(list(digits.glob("*.png"))) != count:
        digits.mkdir(parents=True, exist_ok=True)
        images = _mnist5k_arrays()[0][:: 5000 // count][:count, 0].numpy()
        for i, image in enumerate(images):
            Image.fromarray(image).save(digits / f"{i:05d}.png")
    photos = folders["rgb64-png"]
    if len(list(photos.glob("*.png"))) != count:
        from sklearn.datasets import load_sample_images

        photos.mkdir(parents=True, exist_ok=True)
        sources = load_sample_images().images  # two 427x640 RGB photos
        rng = np.random.default_rng(0)
        for i in range(count):
            source = sources[i % 2]
            top, left = rng.integers(0, source.shape[0] - 64), rng.integers(0, source.shape[1] - 64)
            Image.fromarray(source[top : top + 64, left : left + 64]).save(photos / f"{i:05d}.png")
    return folders


def make_data(name: str, folders: dict[str, Path], **options: Any) -> Any:
    """A set-up data module: mnist5k or one of the PNG folders, batch 64, ``options`` for the loaders."""
    from gen_research.data import ImageFolderData, MNIST5k

    if name == "mnist5k":
        dm = MNIST5k(batch_size=BATCH, **options)
    else:
        dm = ImageFolderData(root=str(folders[name]), grayscale=name == "digits-png", batch_size=BATCH, **options)
    dm.setup("fit")
    return dm


# ---- loaders -----------------------------------------------------------------------------------------------
def loader_variants(ctx: Any) -> dict[str, dict[str, Any]]:
    """name -> (set, path, workers, data module options)."""
    variants: dict[str, dict[str, Any]] = {}
    for path, batched in ((OLD, False), (NEW, True)):
        for workers in (0, 1, 2):
            variants[f"mnist5k | {path} | {workers}"] = {"set": "mnist5k", "path": path, "workers": workers,
                                                         "batched": batched, "options": {"num_workers": workers, "data_on_device": False}}
    if ctx.device.startswith("cuda"):
        variants[f"mnist5k | {DEVICE} | 0"] = {"set": "mnist5k", "path": DEVICE, "workers": 0, "batched": True,
                                               "options": {"num_workers": 0, "data_on_device": True}}
    for name in ("digits-png", "rgb64-png"):
        for workers in (0, 1, 2):
            variants[f"{name} | per-item | {workers}"] = {"set": name, "path": "per-item (files)", "workers": workers,
                                                         "batched": True, "options": {"num_workers": workers}}
    return variants


def loader_measure(ctx: Any, spec: dict[str, Any], folders: dict[str, Path], record: dict[str, list[float]],
                   epochs: int) -> Callable[[], float]:
    import torch

    device = torch.device(ctx.device)
    dm = make_data(spec["set"], folders, **spec["options"])
    dm.batched_indexing = spec["batched"]
    dm.training_device = lambda: device  # what the trainer's root device would be (no trainer here)

    def measure() -> float:
        loader = dm.train_dataloader()

        def epoch(number: int) -> int:
            loader.sampler.set_epoch(number)
            count = 0
            for batch in loader:
                if device.type == "cuda":  # as Lightning's batch transfer
                    batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                count += 1
            _sync(ctx.device)
            return count

        start = time.perf_counter()
        epoch(0)  # warm-up: starts the workers (persistent ones stay for the timed epochs)
        first = time.perf_counter() - start
        start = time.perf_counter()
        count = sum(epoch(number) for number in range(1, epochs + 1))
        rate = count / (time.perf_counter() - start)
        record.setdefault("first_epoch_s", []).append(first)
        del loader  # stops persistent workers before the next variant runs
        return rate

    return measure


# ---- training ----------------------------------------------------------------------------------------------
def train_variants(ctx: Any) -> dict[str, dict[str, Any]]:
    variants = {
        f"mnist5k | {OLD}": {"set": "mnist5k", "batched": False, "options": {"num_workers": 0, "data_on_device": False}},
        f"mnist5k | {NEW}": {"set": "mnist5k", "batched": True, "options": {"num_workers": 0, "data_on_device": False}},
    }
    if ctx.device.startswith("cuda"):
        variants[f"mnist5k | {DEVICE}"] = {"set": "mnist5k", "batched": True, "options": {"num_workers": 0, "data_on_device": True}}
    for workers in (0, 1, 2):
        variants[f"digits-png | {workers} workers"] = {"set": "digits-png", "batched": True, "options": {"num_workers": workers}}
    return variants


def vae_args() -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load((REPO / "configs" / "model" / "vae.yaml").read_text())["model"]["init_args"])


def train_measure(ctx: Any, spec: dict[str, Any], folders: dict[str, Path], steps: int, warm: int) -> Callable[[], float]:
    import lightning.pytorch as pl

    from gen_research.registry import MODELS, load_builtins

    load_builtins()
    family, args = MODELS.get("vae"), vae_args()

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.start = self.end = 0.0

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step == warm:
                _sync(ctx.device)
                self.start = time.perf_counter()

        def on_train_end(self, trainer: Any, module: Any) -> None:
            _sync(ctx.device)
            self.end = time.perf_counter()

    def measure() -> float:
        pl.seed_everything(0, verbose=False)
        dm = make_data(spec["set"], folders, **spec["options"])
        dm.batched_indexing = spec["batched"]
        model = family(image_shape=dm.image_shape, **args)
        clock = Clock()
        trainer = pl.Trainer(
            max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
            accelerator="gpu" if ctx.device.startswith("cuda") else "cpu", devices=1, precision="32-true",
        )  # fmt: skip
        trainer.fit(model, dm)
        return (steps - warm) / (clock.end - clock.start)

    return measure


# ---- the section -------------------------------------------------------------------------------------------
def run(ctx: Any) -> dict[str, Any]:
    _quiet()
    started = time.perf_counter()
    count = 64 if ctx.quick else FOLDER_IMAGES
    folders = write_folders(Path(ctx.out) / "data_loading", count)
    epochs = 1 if ctx.quick else EPOCHS
    specs = loader_variants(ctx)
    if ctx.quick:  # a few of each kind: the machinery, not a measurement
        specs = {name: spec for name, spec in specs.items()
                 if name in (f"mnist5k | {OLD} | 0", f"mnist5k | {NEW} | 0", f"mnist5k | {NEW} | 1", "digits-png | per-item | 0")
                 or spec["path"] == DEVICE}
    records: dict[str, dict[str, list[float]]] = {name: {} for name in specs}
    measures = {name: loader_measure(ctx, spec, folders, records[name], epochs) for name, spec in specs.items()}
    timed = alternate(measures, pairs=ctx.pairs)
    loaders = []
    for name, spec in specs.items():
        first = records[name]["first_epoch_s"]
        loaders.append({"name": name, "set": spec["set"], "path": spec["path"], "workers": spec["workers"],
                        "batches_per_s": timed[name]["median"], "runs": timed[name]["runs"],
                        "first_epoch_s": sorted(first)[len(first) // 2]})
    loaders_wall = time.perf_counter() - started
    steps, warm = (3, 1) if ctx.quick else (TRAIN_STEPS, WARM_STEPS)
    tspecs = train_variants(ctx)
    if ctx.quick:
        tspecs = {name: spec for name, spec in tspecs.items() if name.endswith(NEW)}
    trained = alternate({name: train_measure(ctx, spec, folders, steps, warm) for name, spec in tspecs.items()}, pairs=ctx.pairs)
    training = [{"name": name, "steps_per_s": trained[name]["median"], "runs": trained[name]["runs"]} for name in tspecs]
    return {"device": ctx.device, "batch": BATCH, "folder_images": count, "timed_epochs": epochs, "train_steps": steps,
            "warm_steps": warm, "loaders": loaders, "training": training, "loaders_wall_s": loaders_wall,
            "training_wall_s": time.perf_counter() - started - loaders_wall}


def tables(result: dict[str, Any], machine: dict[str, Any]) -> dict[str, str]:
    device = "cuda" if str(result.get("device", machine.get("device", "cpu"))).startswith("cuda") else "cpu"
    base = {row["set"]: row for row in result["loaders"] if row["workers"] == 0 and row["path"] in (OLD, "per-item (files)")}
    rows = [[row["set"], row["path"], row["workers"], row["batches_per_s"], 1000 / row["batches_per_s"],
             row["first_epoch_s"], ratio(row["batches_per_s"], base[row["set"]]["batches_per_s"]) if row["set"] in base else None]
            for row in result["loaders"]]
    loader_table = markdown_table(["set", "batches drawn by", "workers", "batches/s", "ms/batch",
                                   "first epoch s (incl. worker start)", "vs 0 workers, per item"], rows)
    train_base = {name.split(" | ")[0]: row for row in result["training"] for name in [row["name"]]
                  if name.endswith(OLD) or name.endswith("| 0 workers")}
    train_rows = [[row["name"].split(" | ")[0], row["name"].split(" | ")[1], row["steps_per_s"],
                   ratio(row["steps_per_s"], train_base[row["name"].split(" | ")[0]]["steps_per_s"])
                   if row["name"].split(" | ")[0] in train_base else None]
                  for row in result["training"]]
    train_table = markdown_table(["data", "loader", "steps/s", "vs first row of the set"], train_rows)
    body = "\n".join([
        machine_line(machine),
        "",
        f"Loaders: training split, batch {result['batch']}, medians of {len(result['loaders'][0]['runs'])} alternating "
        f"rounds of {result['timed_epochs']} epochs after a warm-up epoch; workers are persistent. PNG folders: "
        f"{result['folder_images']} images each.",
        "",
        loader_table,
        "",
        f"Training: the quickstart VAE (configs/model/vae.yaml), batch {result['batch']}, fp32, steps/s over steps "
        f"{result['warm_steps']}..{result['train_steps']}, only the data path differing.",
        "",
        train_table,
    ])
    return {f"data-loading-{device}": body}
