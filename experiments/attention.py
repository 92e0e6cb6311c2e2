"""Attentive response maps and class templates (the paper's Fig. 5).

    python experiments/attention.py                                 # all seven classes, shipped model
    python experiments/attention.py smoke=true logger=none          # tiny fast run (two classes)
    python experiments/attention.py save_docs=true                  # also copy figures to docs/figures
    python experiments/attention.py model_dir=outputs/<run>/model attention.rule=deconvnet

For each class: the pristine representative structure (crystaljax.analysis.explain.REPRESENTATIVES, the
AFLOW example of the class's first prototype) is fingerprinted, and the top-k response maps of
conv layers 1, 3 and 6 are back-projected into image space; the class template is the mean over
``n_per_class`` structures of the summed last-layer response maps (Fig. 5b).

Writes into the Hydra run directory: ``response_maps_<class>.png`` (rows: layer x colour channel,
columns: input + top-k filters), ``class_templates.png``, ``attention.npz`` (maps, filters,
scores, templates, fingerprints) and ``attention.json`` (per class: prediction, top filters and
scores, and how much response-map mass falls on the diffraction peaks compared with their area).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
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


def _slug(name: str) -> str:
    return name.replace("/", "_")


def options(cfg: DictConfig) -> dict:
    """The ``attention`` block, with ``smoke_overrides`` laid over it when ``smoke=true``."""
    opts = _container(cfg.attention)
    if bool(cfg.get("smoke", False)):
        opts.update(_container(cfg.get("smoke_overrides")))
    return opts


def peak_overlap(maps: np.ndarray, image: np.ndarray, threshold: float) -> dict:
    """Share of response-map mass on fingerprint peaks (pixels > threshold * max) vs the peaks' area share.

    maps: (k, H, W, C) >= 0; image: (H, W, C).  Per channel the peak mask is that channel's.
    """
    peaks = image > threshold * max(float(image.max()), 1e-30)
    total = maps.sum()
    on = float((maps * peaks[None]).sum() / total) if total > 0 else 0.0
    return {"mass_on_peaks": on, "peak_area": float(peaks.mean())}


def run(cfg: DictConfig, run_dir: Path) -> dict:
    from crystaljax.analysis import explain as ex
    from crystaljax.learn import tracking
    from crystaljax.structures.dataset import CLASSES
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structure import take as index

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    smoke = bool(cfg.get("smoke", False))
    opts = options(cfg)
    classes = list(opts.get("classes") or CLASSES)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; choose from {CLASSES}")
    layers = [int(l) for l in opts["layers"]]
    k, rule, select, keep = int(opts["top_k"]), str(opts["rule"]), str(opts["select"]), str(opts["keep"])
    target, n_per_class = int(opts["target"]), int(opts["n_per_class"])

    net, card = ex.load_net(cfg.get("model_dir") and to_absolute_path(str(cfg.model_dir)), seed=int(cfg.seed))
    model_classes = tuple(card.get("classes", CLASSES))
    det, beam, fpc = ex.fingerprint_configs(card)
    fp_fn = ex.cached_fingerprint_fn(det, beam, fpc)

    run = tracking.start(_container(cfg), _container(cfg.logger), run_dir)
    results, arrays, figures = {}, {}, []
    try:
        images, labels = [], []
        for step, cls in enumerate(classes):
            examples = ex.class_examples(cls, max(n_per_class, 1), seed=int(cfg.seed))
            batch = prepare_structures(examples, target=target)
            fps = [ex.fingerprint(fp_fn, index(batch, i)) for i in range(len(examples))]
            image = fps[0]  # the representative
            probs = np.asarray(ex.class_probabilities(net, image[None]))[0]
            maps = ex.attentive_response_maps(net, image, layers, k, rule=rule, select=select, keep=keep)
            name = ex.REPRESENTATIVES[cls]
            pred = model_classes[int(np.argmax(probs))]
            png = ex.plot_response_maps(
                maps, run_dir / f"response_maps_{_slug(cls)}.png", image=image,
                title=f"{cls} ({name[1]}, {name[0]}): top-{k} attentive response maps, "
                      f"predicted {pred} (p={probs.max():.2f})")
            figures.append(png)
            tracking.log_image(run, f"attention/response_maps_{_slug(cls)}", png, step=step)
            thr = float(opts.get("peak_threshold", 0.1))
            results[cls] = {
                "prototype": name[0], "element": name[1], "n_template_structures": len(fps),
                "predicted": pred, "probabilities": {c: float(p) for c, p in zip(model_classes, probs)},
                "layers": {f"conv{l + 1}": {"filters": [int(f) for f in np.asarray(m.filters)],
                                           "scores": [float(s) for s in np.asarray(m.scores)],
                                           **peak_overlap(np.asarray(m.maps), image, thr)}
                           for l, m in maps.items()},
            }
            for l, m in maps.items():
                arrays[f"maps/{cls}/conv{l + 1}"] = np.asarray(m.maps)
                arrays[f"filters/{cls}/conv{l + 1}"] = np.asarray(m.filters)
                arrays[f"scores/{cls}/conv{l + 1}"] = np.asarray(m.scores)
            arrays[f"fingerprint/{cls}"] = image
            images.extend(fps)
            labels.extend([CLASSES.index(cls)] * len(fps))
            tracking.log(run, {f"attention/p_true/{cls}": float(probs[model_classes.index(cls)])
                               if cls in model_classes else float("nan")}, step=step)
            log.info("%s: predicted %s, top filters %s", cls, pred,
                     {key: v["filters"] for key, v in results[cls]["layers"].items()})

        templates, counts = ex.class_templates(net, np.stack(images), np.asarray(labels), len(CLASSES),
                                               layer=None, k=k, rule=rule, select=select, keep=keep)
        shown = [CLASSES.index(c) for c in classes]
        png = ex.plot_class_templates(templates[shown], [CLASSES[i] for i in shown],
                                      run_dir / "class_templates.png", counts=counts[shown],
                                      title=f"class templates: sum of top-{k} last-conv-layer maps, class mean")
        figures.append(png)
        tracking.log_image(run, "attention/class_templates", png, step=len(classes))
        arrays["templates"] = templates
        arrays["template_counts"] = counts
        np.savez_compressed(run_dir / "attention.npz", **arrays)
        tracking.set_summary(run, {f"p_true/{c}": results[c]["probabilities"].get(c, float("nan")) for c in classes})
    finally:
        info = tracking.finish(run)

    copied = []
    if bool(cfg.get("save_docs", False)):
        docs = Path(to_absolute_path(str(cfg.get("docs_dir", "docs/figures"))))
        docs.mkdir(parents=True, exist_ok=True)
        for png in figures:
            dest = docs / f"attention_{Path(png).name}"
            shutil.copyfile(png, dest)
            copied.append(str(dest))

    command = "python experiments/attention.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary = {
        "command": command, "smoke": smoke, "model": card.get("path", "fresh"),
        "fresh_model": bool(card.get("fresh", False)), "classes": classes, "layers": layers, "top_k": k,
        "rule": rule, "select": select, "keep": keep, "target": target, "n_per_class": n_per_class,
        "template_counts": {CLASSES[i]: int(c) for i, c in enumerate(counts)},
        "results": results, "figures": [str(p) for p in figures], "docs": copied, "tracking": info,
    }
    (run_dir / "attention.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"run_dir": str(run_dir), "figures": len(figures),
                      "predicted": {c: results[c]["predicted"] for c in classes}}))
    return summary


from crystaljax.config import register_configs  # noqa: E402

register_configs()  # the typed schemas conf/attention.yaml names in its defaults


@hydra.main(version_base="1.3", config_path="../conf", config_name="attention")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
