"""A thin Weights & Biases wrapper that never needs a network or an API key by default.

``logger.name = "none"`` -> no wandb import at all (metrics are kept in memory only).
``logger.name = "wandb"`` -> ``wandb.init(mode=...)`` with mode "offline" (default; sync later with
``wandb sync <dir>``), "disabled" or "online".  ``WANDB_MODE`` in the environment overrides the
configured mode (so ``WANDB_MODE=disabled`` silences every run).

    run = start(cfg_dict, LoggerConfig(name="wandb"), run_dir=".")
    log(run, {"train/loss": 0.3}, step=10)
    finish(run)        # -> {"name": ..., "mode": ..., "dir": ...} for the notes
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from crystaljax.config import LoggerConfig  # the schema lives in crystaljax.config



_MODES = ("offline", "disabled", "online")


@dataclass
class Run:
    """A tracking run.  ``wandb_run`` is None for ``logger=none``; ``history`` keeps every logged row."""

    cfg: LoggerConfig
    mode: str  # "none" or the wandb mode actually used
    wandb_run: Any = None
    history: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        if self.wandb_run is None:
            return None
        # offline runs have no display name; fall back to the run id
        return getattr(self.wandb_run, "name", None) or getattr(self.wandb_run, "id", None)

    @property
    def dir(self) -> str | None:
        """The wandb run directory (offline runs: sync it with ``wandb sync``)."""
        if self.wandb_run is None or self.mode == "disabled":
            return None
        d = getattr(self.wandb_run, "dir", None)
        # run.dir is <...>/wandb/offline-run-*/files; the syncable directory is its parent.
        return str(Path(d).parent) if d else None

    def info(self) -> dict:
        return {"logger": self.cfg.name, "mode": self.mode, "name": self.name, "dir": self.dir}


def _plain(v):
    """JSON/wandb-friendly scalar from numpy/jax scalars."""
    if hasattr(v, "shape") and np.ndim(v) == 0:
        return np.asarray(v).item()
    return v


def start(cfg_dict: Mapping[str, Any] | None, logger_cfg: LoggerConfig | Mapping[str, Any] | None = None,
          run_dir: str | os.PathLike | None = None) -> Run:
    """Begin a run.  cfg_dict: the resolved experiment config (stored with the run).

    run_dir: directory for the wandb files (ignored for ``logger=none``).
    """
    cfg = logger_cfg if isinstance(logger_cfg, LoggerConfig) else LoggerConfig.from_dict(logger_cfg)
    if cfg.name in ("none", None, "", "null"):
        return Run(cfg=cfg, mode="none")
    if cfg.name != "wandb":
        raise ValueError(f"unknown logger {cfg.name!r}; choose 'none' or 'wandb'")
    mode = os.environ.get("WANDB_MODE", cfg.mode) or "offline"
    if mode == "dryrun":
        mode = "offline"
    if mode not in _MODES:
        raise ValueError(f"unknown wandb mode {mode!r}; choose one of {_MODES}")
    import wandb

    wdir = cfg.dir or (str(run_dir) if run_dir is not None else None)
    if wdir is not None:
        Path(wdir).mkdir(parents=True, exist_ok=True)
    wrun = wandb.init(
        project=cfg.project, entity=cfg.entity, group=cfg.group, tags=list(cfg.tags) or None,
        name=cfg.run_name, dir=wdir, mode=mode, config=dict(cfg_dict or {}), reinit="finish_previous",
    )
    return Run(cfg=cfg, mode=mode, wandb_run=wrun)


def log(run: Run | None, metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Record scalar metrics (numpy/jax scalars are converted) at ``step``."""
    if run is None:
        return
    row = {k: _plain(v) for k, v in metrics.items()}
    run.history.append({"step": step, **row})
    if run.wandb_run is not None:
        run.wandb_run.log(row, step=step)


def log_image(run: Run | None, key: str, path: str | os.PathLike, step: int | None = None) -> None:
    """Attach an image file (e.g. a confusion-matrix PNG) to the run."""
    if run is None or run.wandb_run is None or run.mode == "disabled":
        return
    import wandb

    run.wandb_run.log({key: wandb.Image(str(path))}, step=step)


def set_summary(run: Run | None, metrics: Mapping[str, Any]) -> None:
    """Final metrics (shown in the run summary)."""
    if run is None:
        return
    row = {k: _plain(v) for k, v in metrics.items()}
    run.summary.update(row)
    if run.wandb_run is not None:
        for k, v in row.items():
            run.wandb_run.summary[k] = v


def finish(run: Run | None) -> dict:
    """Close the run; returns ``run.info()`` (logger, mode, name, offline dir) for the notes."""
    if run is None:
        return {"logger": "none", "mode": "none", "name": None, "dir": None}
    info = run.info()
    if run.wandb_run is not None:
        run.wandb_run.finish()
    return info


class Tracker:
    """Object form of the functions above: ``with Tracker(cfg_dict, logger_cfg, run_dir) as t: t.log(...)``."""

    def __init__(self, cfg_dict=None, logger_cfg=None, run_dir=None):
        self.run = start(cfg_dict, logger_cfg, run_dir)
        self.info: dict | None = None

    def log(self, metrics, step=None):
        log(self.run, metrics, step)

    def log_image(self, key, path, step=None):
        log_image(self.run, key, path, step)

    def set_summary(self, metrics):
        set_summary(self.run, metrics)

    def finish(self) -> dict:
        if self.info is None:
            self.info = finish(self.run)
        return self.info

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()
        return False


__all__ = ["LoggerConfig", "Run", "Tracker", "start", "log", "log_image", "set_summary", "finish"]
