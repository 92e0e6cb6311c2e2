"""Train the ConvNet on the data set, fingerprints computed on the fly inside the jitted step.

    python experiments/train.py                                   # paper settings, data=aflow_like
    python experiments/train.py data=tiny optim.epochs=1          # smoke run, data generated on the fly
    python experiments/train.py defect=mixed logger=wandb         # augmentation, offline W&B run
    python experiments/train.py +export_to=crystaljax/pretrained/default   # also write the shippable model
    python experiments/train.py -m optim.learning_rate=3e-4,1e-3 defect=none,mixed   # multirun

Writes into the Hydra run directory: ``config_resolved.yaml``, ``metrics.json`` (per split accuracy,
per-class accuracy, confusion matrix; per-epoch history; tracking info), ``confusion_<split>.png``,
``model/`` (``model.msgpack`` + ``model_card.json``, loadable with ``crystaljax.learn.train.load_model``)
and ``checkpoints/`` (Orbax, one per epoch; re-running with ``hydra.run.dir=<that dir>`` resumes).
"""

from __future__ import annotations

import datetime
import json
import logging
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from crystaljax.config import to_container

log = logging.getLogger(__name__)


def _container(node) -> dict:
    return to_container(node, default={})


def load_data(cfg: DictConfig):
    """The Dataset named by ``cfg.data``: ``data=tiny`` is generated on the fly (seconds), anything
    else is read from ``cfg.data.path`` (relative to the launch directory; make it with
    experiments/make_dataset.py)."""
    from crystaljax.structures import dataset

    data = _container(cfg.data)
    if data.get("name") == "tiny":
        dcfg = dataset.DataConfig(**{k: v for k, v in data.items() if k in dataset.DataConfig.__dataclass_fields__})
        return dataset.generate(
            seed=int(cfg.seed), per_class=int(dcfg.per_class),
            elements=None if dcfg.elements is None else list(dcfg.elements),
            target=int(dcfg.target), splits=tuple(dcfg.splits), progress=False, workers=1,
        )
    return dataset.load(to_absolute_path(str(data["path"])))


def build_fns(cfg: DictConfig):
    """(fingerprint_fn, defect_fn or None, configs dict) from the detector/beam/fingerprint/defect groups."""
    from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, from_dict
    from crystaljax.physics.defects import DefectConfig, make_defect_fn
    from crystaljax.physics.fingerprint import make_fingerprint_fn

    detector = from_dict(DetectorConfig, _container(cfg.detector))
    beam = from_dict(BeamConfig, _container(cfg.beam))
    fp = from_dict(FingerprintConfig, _container(cfg.get("fingerprint")))
    defect = DefectConfig.from_dict(_container(cfg.defect))
    pristine = (defect.displacement_sigma == 0 and defect.vacancy_fraction == 0
                and defect.substitution_fraction == 0 and defect.sublattice_fraction == 0)
    defect_fn = None if pristine else make_defect_fn(defect)
    confs = {"detector": asdict(detector), "beam": asdict(beam), "fingerprint": asdict(fp), "defect": asdict(defect)}
    return make_fingerprint_fn(detector, beam, fp), defect_fn, confs, detector


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train and write every artefact into ``run_dir``; returns the metrics dict."""
    import jax
    import flax

    from crystaljax.learn import evaluate, tracking
    from crystaljax.structures.dataset import CLASSES
    from crystaljax.learn.model import ModelConfig
    from crystaljax.learn.train import OptimConfig, fit, save_model

    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every checkpoint step at INFO
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    (run_dir / "config_resolved.yaml").write_text(resolved)
    cfg_dict = _container(cfg)

    model_cfg = ModelConfig.from_dict(_container(cfg.model))
    optim_cfg = OptimConfig.from_dict(_container(cfg.optim))
    fingerprint_fn, defect_fn, confs, detector = build_fns(cfg)
    if model_cfg.image_size != detector.n_pixels:
        log.warning("model.image_size=%d != detector.n_pixels=%d; using %d",
                    model_cfg.image_size, detector.n_pixels, detector.n_pixels)
        model_cfg = replace(model_cfg, image_size=int(detector.n_pixels))
    if model_cfg.n_classes != len(CLASSES):
        raise ValueError(f"model.n_classes={model_cfg.n_classes} but the data set has {len(CLASSES)} classes")

    ds = load_data(cfg)
    split = np.asarray(ds.split).astype(str)
    counts = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    log.info("data: %d structures (%s), n_max=%d", len(ds), counts, ds.n_max)

    run = tracking.start(cfg_dict, _container(cfg.logger), run_dir)
    try:
        result = fit(
            model_cfg, optim_cfg, ds.structures, ds.labels, split, fingerprint_fn, defect_fn,
            seed=int(cfg.seed), run_dir=run_dir, run=run, class_names=CLASSES,
            checkpoint=bool(cfg.get("checkpoint", True)), progress=bool(cfg.get("progress", True)),
        )
        pngs = {}
        for name in ("val", "test"):
            if name in result.metrics:
                cm = np.asarray(result.metrics[name]["confusion_matrix"])
                acc = result.metrics[name]["accuracy"]
                pngs[name] = evaluate.plot_confusion(cm, CLASSES, run_dir / f"confusion_{name}.png",
                                                     title=f"{name}: accuracy {acc:.3f} (n={int(cm.sum())})")
                tracking.log_image(run, f"{name}/confusion", pngs[name], step=int(result.state.step))
    finally:
        info = tracking.finish(run)

    command = "python experiments/train.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    metrics = {
        **result.metrics,
        "history": result.history,
        "data": {"name": cfg.data.get("name"), "path": cfg.data.get("path"), "n": len(ds), "per_split": counts,
                 "n_max": ds.n_max},
        "tracking": info,
        "command": command,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")

    card = {
        "classes": list(CLASSES),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "seed": int(cfg.seed),
        "data": metrics["data"] | {"info": {k: ds.info.get(k) for k in ("seed", "per_class", "target", "splits")}},
        "metrics": {s: {k: result.metrics[s][k] for k in ("n", "accuracy", "per_class_accuracy", "confusion_matrix")}
                    for s in ("val", "test") if s in result.metrics},
        "training": {"optim": asdict(optim_cfg), "defect": confs["defect"], "steps": result.metrics["steps"]},
        # everything needed to make fingerprints the model understands
        "detector": confs["detector"], "beam": confs["beam"], "fingerprint": confs["fingerprint"],
        "versions": {"crystaljax": _version(), "jax": jax.__version__, "flax": flax.__version__},
    }
    save_model(run_dir / "model", result.state, model_cfg, card)
    export_to = cfg.get("export_to")
    if export_to:
        out = save_model(Path(to_absolute_path(str(export_to))), result.state, model_cfg, card)
        log.info("exported model to %s", out)
        metrics["exported_to"] = str(out)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    summary = {s: metrics[s]["accuracy"] for s in ("val", "test") if s in metrics}
    log.info("done: %s -> %s", summary, run_dir)
    print(json.dumps({"run_dir": str(run_dir), "accuracy": summary, "steps": result.metrics["steps"],
                      "tracking": info}))
    return metrics


def _version() -> str:
    try:
        import crystaljax

        return crystaljax.__version__
    except Exception:  # pragma: no cover
        return "unknown"


from crystaljax.config import register_configs  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    # the return value is what a Hydra sweeper optimises
    return metrics.get("val", metrics.get("test", {})).get("accuracy")


if __name__ == "__main__":
    main()
