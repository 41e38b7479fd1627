"""Experiment loggers: Weights & Biases (offline automatically when it cannot reach a server) and CSV.

Both write into the run folder; the CLI fills in ``save_dir``. The W&B run id is stored in the run
folder, so a resumed or requeued run continues the same W&B run instead of starting a new one.
"""

from __future__ import annotations

import netrc
import os
import socket
import uuid
from pathlib import Path
from typing import Literal

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from gen_research.files.atomic import atomic_write_text
from gen_research.registry import LOGGERS

WANDB_HOST = "api.wandb.ai"
RUN_ID_FILE = "wandb_run_id"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _server_reachable(host: str, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def choose_wandb_mode(mode: str) -> str:
    """``auto``: honour WANDB_MODE, else online only with an API key and a reachable server."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return "disabled"
    host = os.environ.get("WANDB_BASE_URL", WANDB_HOST).split("://")[-1].split("/")[0].split(":")[0]
    return "online" if _has_api_key() and _server_reachable(host) else "offline"


def _run_id_for(save_dir: Path) -> str:
    """The W&B run id of this run folder: the one a previous attempt recorded, else a new one."""
    id_file = save_dir / RUN_ID_FILE
    recorded = id_file.read_text(errors="replace").strip() if id_file.is_file() else ""
    if recorded:  # an empty file (written by an older, non-atomic version when killed) counts as none
        return recorded
    return os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:12]


@LOGGERS.register("wandb", "Weights & Biases; offline when there is no API key or network (WANDB_MODE honoured)")
class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger with automatic offline mode and a run id kept in the run folder."""

    def __init__(
        self,
        project: str = "gen_research",
        save_dir: str | None = None,
        name: str | None = None,
        mode: Literal["auto", "online", "offline", "disabled"] = "auto",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        log_model: bool = False,
    ) -> None:
        directory = Path(save_dir or ".")
        resolved_mode = choose_wandb_mode(mode)
        self.resolved_mode = resolved_mode
        if name is None and save_dir is not None:
            name = f"{directory.parent.name}/{directory.name}"  # <experiment>/<run id>
        extra = {"mode": resolved_mode} if resolved_mode == "disabled" else {}
        super().__init__(
            name=name,
            save_dir=str(directory),
            id=_run_id_for(directory),
            offline=resolved_mode == "offline",
            project=project,
            log_model=log_model,
            entity=entity,
            group=group,
            tags=tags,
            notes=notes,
            resume="allow",
            **extra,
        )
        self._run_id_file = directory / RUN_ID_FILE

    @property
    def experiment(self):  # type: ignore[override]
        run = LightningWandbLogger.experiment.fget(self)
        # Recorded only once the W&B run really starts: a command that fails earlier writes nothing. Lightning
        # touches `experiment` on every rank; only global rank 0 has the real run (srun sets no LOCAL_RANK).
        if not self._run_id_file.exists() and rank_zero_only.rank == 0:
            # Atomic: a kill mid-write never leaves an empty id that would make the resumed run a new W&B run.
            atomic_write_text(self._run_id_file, f"{self.version}\n")
        return run


@LOGGERS.register("csv", "metrics.csv in the run folder (Lightning's CSVLogger)")
class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger writing ``metrics.csv`` straight into the run folder."""

    def __init__(self, save_dir: str | None = None, name: str = "", version: str = "", flush_logs_every_n_steps: int = 50) -> None:
        super().__init__(save_dir=save_dir or ".", name=name, version=version, flush_logs_every_n_steps=flush_logs_every_n_steps)
