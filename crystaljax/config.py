"""Typed, frozen configuration schemas.

Library code takes these dataclasses, never a Hydra ``DictConfig``; the entry points in
``experiments/`` convert with :func:`from_dict`.  ``register_configs`` puts the schemas in
Hydra's ConfigStore so YAML files under ``conf/`` are type-checked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class DetectorConfig:
    """Flat square detector normal to the beam (+z), centred on it.

    n_pixels: pixels per side.  pixel_size: metres.  distance: sample-detector distance, metres.
    inner_mask_radius / outer_mask_radius: pixels from the image centre; intensity is zeroed for
    r <= inner and (if set) r >= outer.
    """

    name: str = "paper"
    n_pixels: int = 64
    pixel_size: float = 4.0e-4
    distance: float = 0.1
    inner_mask_radius: float = 5.0
    outer_mask_radius: float | None = None


@dataclass(frozen=True)
class BeamConfig:
    """Incident plane wave along +z.  wavelength in metres."""

    wavelength: float = 5.0e-12


@dataclass(frozen=True)
class FingerprintConfig:
    """How the three RGB channels are made.

    angle: rotation angle in degrees; each channel is I(+angle) + I(-angle) about x, y, z.
    z_shift: added to Z before the form factor is looked up (the paper uses +2: H -> Li).
    unroll: atoms per unrolled step of the scan over atoms (a speed knob; results are identical).
    """

    angle: float = 45.0
    z_shift: int = 2
    unroll: int = 16


DETECTOR_PRESETS: dict[str, DetectorConfig] = {
    "paper": DetectorConfig(),
    "ai4materials": DetectorConfig(name="ai4materials", inner_mask_radius=10.0, outer_mask_radius=30.0),
}


def detector_preset(name: str) -> DetectorConfig:
    """The named detector preset ('paper' or 'ai4materials')."""
    try:
        return DETECTOR_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTOR_PRESETS)}") from None


def from_dict(cls, values: Mapping[str, Any] | None):
    """Build dataclass ``cls`` from a mapping (e.g. an OmegaConf container), ignoring unknown keys."""
    if values is None:
        return cls()
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(values).items() if k in names})


def to_container(node, default=None):
    """A plain (resolved) dict or list from an OmegaConf node; ``default`` when the node is None."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else default


def experiment_output_dir(cfg, run_dir, docs_dir: str = "docs/results"):
    """Where an experiment writes its results: ``cfg.out_dir`` if set, else ``docs_dir`` (relative to the
    launch directory) with ``save_docs=true``, else the Hydra run directory."""
    from pathlib import Path

    from hydra.utils import to_absolute_path

    if cfg.get("out_dir"):
        return Path(to_absolute_path(str(cfg.out_dir)))
    if cfg.get("save_docs"):
        return Path(to_absolute_path(docs_dir))
    return Path(run_dir)


def start_experiment(cfg, run_dir, name: str, docs_dir: str = "docs/results"):
    """Create the run and output directories and write the resolved config into both; returns the output
    directory (see :func:`experiment_output_dir`)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    out = experiment_output_dir(cfg, run_dir, docs_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    (run_dir / "config_resolved.yaml").write_text(resolved)
    if out != run_dir:
        (out / f"{name}_config.yaml").write_text(resolved)
    return out


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (called by the experiment entry points)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="detector", name="schema_detector", node=DetectorConfig)
    cs.store(group="beam", name="schema_beam", node=BeamConfig)


__all__ = [
    "DetectorConfig",
    "BeamConfig",
    "FingerprintConfig",
    "DETECTOR_PRESETS",
    "detector_preset",
    "from_dict",
    "to_container",
    "experiment_output_dir",
    "start_experiment",
    "register_configs",
    "field",
]
