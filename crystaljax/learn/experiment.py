"""``train_and_evaluate(cfg, workdir)``: the whole training experiment as one library function.

Load (or generate) the data set, train with fingerprints made inside the jitted step, evaluate on
val/test, write the confusion matrices, ``metrics.json``, the resolved config and the shippable model
(``crystaljax.learn.checkpoint.save``).  ``cfg`` is read by attribute access, so a Hydra ``DictConfig``
and the typed dataclass schemas both work; ``experiments/train.py`` is Hydra glue around this.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from crystaljax.errors import CrystalJaxError

log = logging.getLogger(__name__)


class ConfigError(CrystalJaxError, ValueError):
    """Settings that contradict each other (one-line message)."""


def plain(node) -> dict:
    """A config node (DictConfig, dataclass, mapping or None) -> a plain, resolved dict."""
    if node is None:
        return {}
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return dataclasses.asdict(node)
    if isinstance(node, Mapping) and not hasattr(node, "_get_node"):
        return dict(node)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def _get(cfg, name: str, default=None):
    """``cfg.name`` or ``default`` when the attribute/key is missing (DictConfig, dataclass or mapping)."""
    if isinstance(cfg, Mapping) and not hasattr(cfg, "_get_node"):
        return cfg.get(name, default)
    try:
        value = getattr(cfg, name)
    except (AttributeError, KeyError):
        return default
    return default if value is None and default is not None else value


def load_data(cfg):
    """The Dataset named by ``cfg.data``: ``name: tiny`` is generated on the fly (seconds); anything else is
    read from ``cfg.data.path`` (relative paths are relative to the current directory)."""
    from crystaljax.errors import InputFileError
    from crystaljax.structures import dataset

    data = plain(cfg.data)
    if data.get("name") == "tiny":
        return dataset.generate(
            seed=int(cfg.seed), per_class=int(data.get("per_class", 4)),
            elements=None if data.get("elements") is None else list(data["elements"]),
            target=int(data.get("target", 250)), splits=tuple(data.get("splits", (0.5, 0.25, 0.25))),
            progress=False, workers=1,
        )
    path = data.get("path")
    if not path or not Path(str(path)).exists():
        raise InputFileError(f"data set {path!r} not found (make it with experiments/make_dataset.py, or use data=tiny)")
    return dataset.load(str(path))


def apply_split(ds, cfg):
    """``ds`` with the split asked for by ``cfg.data.held_out_elements`` (0: unchanged), and the held-out Z."""
    from crystaljax.structures import dataset

    held_out = float(plain(cfg.data).get("held_out_elements") or 0.0)
    if held_out == 0.0:
        return ds, ()
    split, out_z = dataset.element_split(ds.labels, ds.meta["element"], held_out, ds.info.get("splits", (0.8, 0.1, 0.1)),
                                         int(cfg.seed))
    return dataclasses.replace(ds, split=split), out_z


def breakdown(correct: np.ndarray, groups: dict[str, np.ndarray]) -> dict:
    """Accuracy per value of each grouping: ``{grouping: {value: {"n", "accuracy"}}}``; correct (N,) bool."""
    out = {}
    for name, values in groups.items():
        values = np.asarray(values).astype(str)
        out[name] = {v: {"n": int((values == v).sum()), "accuracy": float(correct[values == v].mean())}
                     for v in np.unique(values)}
    return out


def build_fns(cfg):
    """``(fingerprint_fn, defect_fn or None, settings)`` from cfg.detector/beam/fingerprint/defect.

    settings: plain dicts of the detector, beam, fingerprint and defect configs (for the model card)."""
    from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, from_dict
    from crystaljax.physics.defects import DefectConfig, make_defect_fn
    from crystaljax.physics.fingerprint import make_fingerprint_fn

    detector = from_dict(DetectorConfig, plain(cfg.detector))
    beam = from_dict(BeamConfig, plain(cfg.beam))
    fp = from_dict(FingerprintConfig, plain(_get(cfg, "fingerprint")))
    defect = DefectConfig.from_dict(plain(_get(cfg, "defect")))
    defect_fn = None if defect.is_identity else make_defect_fn(defect)
    settings = {"detector": dataclasses.asdict(detector), "beam": dataclasses.asdict(beam),
                "fingerprint": dataclasses.asdict(fp), "defect": dataclasses.asdict(defect)}
    return make_fingerprint_fn(detector, beam, fp), defect_fn, settings


def train_and_evaluate(cfg, workdir, *, command: str | None = None) -> dict:
    """Train on cfg.data, evaluate, and write every artefact into ``workdir``; returns the metrics dict.

    Writes ``config_resolved.yaml``, ``metrics.json`` (per split accuracy, per-class accuracy, confusion
    matrix; per-epoch history; tracking info), ``confusion_<split>.png``, ``model/`` (load with
    ``Classifier.load(workdir / "model")``) and ``checkpoints/`` (Orbax, one per epoch; a second call
    with the same ``workdir`` resumes).  With ``cfg.export_to`` the model is also written there.
    """
    import flax
    import jax

    from crystaljax.learn import checkpoint as ckpt
    from crystaljax.learn import evaluate, tracking
    from crystaljax.learn.model import ModelConfig
    from crystaljax.learn.train import OptimConfig, fit
    from ase.data import chemical_symbols

    from crystaljax.structures.dataset import CLASSES

    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every checkpoint step at INFO
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    from crystaljax.config import resolved_yaml

    (workdir / "config_resolved.yaml").write_text(resolved_yaml(cfg))

    model_cfg = ModelConfig.from_dict(plain(cfg.model))
    optim_cfg = OptimConfig.from_dict(plain(cfg.optim))
    fingerprint_fn, defect_fn, settings = build_fns(cfg)
    n_pixels = int(settings["detector"]["n_pixels"])
    if model_cfg.image_size != n_pixels:
        raise ConfigError(f"model.image_size={model_cfg.image_size} but detector.n_pixels={n_pixels}; they must agree")
    if model_cfg.n_classes != len(CLASSES):
        raise ConfigError(f"model.n_classes={model_cfg.n_classes} but the data set has {len(CLASSES)} classes")

    seed = int(cfg.seed)
    ds, held_out_z = apply_split(load_data(cfg), cfg)
    split = np.asarray(ds.split).astype(str)
    counts = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    log.info("data: %d structures (%s), n_max=%d", len(ds), counts, ds.n_max)

    run = tracking.start(plain(cfg), plain(_get(cfg, "logger")), workdir)
    try:
        result = fit(
            model_cfg, optim_cfg, ds.structures, ds.labels, split, fingerprint_fn, defect_fn,
            seed=seed, run_dir=workdir, run=run, class_names=CLASSES,
            checkpoint=bool(_get(cfg, "checkpoint", True)), progress=bool(_get(cfg, "progress", True)),
        )
        for name in ("val", "test"):
            if name in result.metrics:
                cm = np.asarray(result.metrics[name]["confusion_matrix"])
                acc = result.metrics[name]["accuracy"]
                png = evaluate.plot_confusion(cm, CLASSES, workdir / f"confusion_{name}.png",
                                              title=f"{name}: accuracy {acc:.3f} (n={int(cm.sum())})")
                tracking.log_image(run, f"{name}/confusion", png, step=int(result.state.step))
    finally:
        info = tracking.finish(run)

    data = plain(cfg.data)
    for name, probs in result.probabilities.items():  # accuracy per prototype / representation / element
        rows = np.flatnonzero(split == name)
        correct = np.argmax(probs, axis=1) == np.asarray(ds.labels)[rows]
        groups = {k: np.asarray(ds.meta[k])[rows] for k in ("prototype", "representation", "symbol") if k in ds.meta}
        result.metrics[name]["breakdown"] = breakdown(correct, groups)
    metrics: dict[str, Any] = {
        **result.metrics,
        "history": result.history,
        "data": {"name": data.get("name"), "path": data.get("path"), "n": len(ds), "per_split": counts,
                 "n_max": ds.n_max, "held_out_elements": [chemical_symbols[z] for z in held_out_z]},
        "tracking": info,
        "command": command,
    }
    card = {
        "classes": list(CLASSES),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "seed": seed,
        "data": metrics["data"] | {"info": {k: ds.info.get(k) for k in ("seed", "per_class", "target", "splits")}},
        "metrics": {s: {k: result.metrics[s][k] for k in ("n", "accuracy", "per_class_accuracy", "confusion_matrix")}
                    for s in ("val", "test") if s in result.metrics},
        "training": {"optim": dataclasses.asdict(optim_cfg), "defect": settings["defect"],
                     "steps": result.metrics["steps"]},
        # everything needed to make fingerprints the model understands
        "detector": settings["detector"], "beam": settings["beam"], "fingerprint": settings["fingerprint"],
        "cluster_target": int(_get(cfg, "cluster_target", 250)),
        "versions": {"crystaljax": _version(), "jax": jax.__version__, "flax": flax.__version__},
    }
    state = result.state
    ckpt.save(workdir / "model", state.params, state.batch_stats, model_cfg, card)
    export_to = _get(cfg, "export_to")
    if export_to:
        out = ckpt.save(Path(str(export_to)), state.params, state.batch_stats, model_cfg, card)
        log.info("exported model to %s", out)
        metrics["exported_to"] = str(out)
    (workdir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    summary = {s: metrics[s]["accuracy"] for s in ("val", "test") if s in metrics}
    log.info("done: %s -> %s", summary, workdir)
    return metrics


def _version() -> str:
    try:
        import crystaljax

        return crystaljax.__version__
    except Exception:  # pragma: no cover
        return "unknown"


__all__ = ["ConfigError", "train_and_evaluate", "load_data", "build_fns", "plain"]
