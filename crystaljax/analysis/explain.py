"""``crystaljax explain FILE``: why a structure got its class.

For every frame of a structure file: the fingerprint, the guided-backprop response maps of a few
conv layers, this structure's last-layer map sum next to the template of the predicted class (from
its pristine representative) and per-atom saliencies |d p / d x| and |d logit / d x| (extxyz + PNG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

import jax

from crystaljax.analysis.attention import LAYERS, REPRESENTATIVES, TOP_K, GuidedBackprop, representative_atoms
from crystaljax.analysis.saliency import SaliencyProbe, atom_saliency


def explain_file(path, out_dir, model_dir=None, *, index=":", target: int | None = None, scale: str = "robust",
                 layers: Sequence[int] = LAYERS, k: int = TOP_K, rule: str = "guided", select: str = "mean") -> dict:
    """Explain the classification of every frame of a structure file; writes into ``out_dir``:

    [frameNNNN_]fingerprint.png          the input fingerprint (prefix only for multi-frame files)
    [frameNNNN_]response_maps.png        top-k guided-backprop maps of conv ``layers`` (+1 in titles)
    [frameNNNN_]template.png             last-layer map sum vs the predicted class's template
    [frameNNNN_]saliency.extxyz / .png   per-atom |d p(predicted) / d x| (arrays 'saliency',
                                         'saliency_grad', 'occupancy_saliency', 'saliency_logit'),
                                         positions in Å of the scaled cluster
    [frameNNNN_]saliency_logit.png       |d logit(predicted) / d x| (does not saturate at p ~ 1)
    explain.json                         predictions, top filters and file list

    model_dir: a Classifier, a shipped model's name or a model directory (None: ``default``).
    target: cluster size in atoms (default the model's).  scale: the length-scale estimator of the clusters
    (``crystaljax.structures.cluster.SCALES``, as ``crystaljax classify --scale``).  Raises InputFileError /
    StructureError for unreadable input.  Returns the summary (also in explain.json).
    """
    from crystaljax.analysis import report
    from crystaljax.learn.classifier import Classifier
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structure import take
    from crystaljax.structures.io import read_structures

    frames = read_structures(path, index=index)
    clf = model_dir if isinstance(model_dir, Classifier) else Classifier.load(model_dir)
    target = clf.spec.cluster_target if target is None else int(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = clf.classes
    image_fn = jax.jit(clf.fingerprint_fn)
    gb = GuidedBackprop(clf, k, rule=rule, select=select)
    probe, probe_logit = SaliencyProbe(clf), SaliencyProbe(clf, "logit")
    batch = prepare_structures(frames, target=target, scale=scale)
    summary = {"file": str(path), "model": clf.card.get("path"), "classes": list(classes),
               "method": "guided backprop response maps; gradients of p and of the logit", "frames": []}
    templates: dict[int, np.ndarray] = {}
    for i in range(len(frames)):
        s = take(batch, i)
        tag = "" if len(frames) == 1 else f"frame{i:04d}_"
        image = np.asarray(image_fn(s))
        sal = probe(s)
        probs = np.asarray(sal.probabilities)
        pred = int(np.argmax(probs))
        maps = gb.layers(image, layers)
        label = f"{Path(path).name}[{i}]"
        files = {
            "fingerprint": report.plot_fingerprint(image, out / f"{tag}fingerprint.png", title=label),
            "response_maps": report.plot_response_maps(
                maps, out / f"{tag}response_maps.png", image=image,
                title=f"{label}: guided-backprop response maps (predicted {classes[pred]}, p={probs[pred]:.3f})"),
        }
        own = np.asarray(gb.template(image))
        if pred not in templates and classes[pred] in REPRESENTATIVES:
            ref = take(prepare_structures([representative_atoms(classes[pred])], target=target, scale=scale), 0)
            templates[pred] = np.asarray(gb.template(np.asarray(image_fn(ref))))
        tiles = [own] + ([templates[pred]] if pred in templates else [])
        names = ["this structure"] + ([f"{classes[pred]} template ({REPRESENTATIVES[classes[pred]][1]})"]
                                      if pred in templates else [])
        files["template"] = report.plot_class_templates(np.stack(tiles), names, out / f"{tag}template.png",
                                                        title=f"last-layer map sum vs the {classes[pred]} template")
        grad = np.asarray(sal.positions[pred])
        per_atom = np.asarray(atom_saliency(grad, s.mask))
        per_atom_logit = np.asarray(atom_saliency(np.asarray(probe_logit(s).positions[pred]), s.mask))
        files["saliency_extxyz"] = report.write_saliency_extxyz(
            s, per_atom, out / f"{tag}saliency.extxyz", gradient=grad,
            arrays={"occupancy_saliency": np.asarray(sal.occupancy[pred]), "saliency_logit": per_atom_logit},
            info={"predicted": classes[pred], "probability": float(probs[pred])})
        files["saliency_png"] = report.plot_saliency(
            s, per_atom, out / f"{tag}saliency.png", title=f"|d p({classes[pred]}) / d x| per atom (p={probs[pred]:.3f})",
            label="|dp/dx| (1/Å, scaled)")
        files["saliency_logit_png"] = report.plot_saliency(
            s, per_atom_logit, out / f"{tag}saliency_logit.png",
            title=f"|d logit({classes[pred]}) / d x| per atom (does not saturate at p ~ 1)",
            label="|d logit/dx| (1/Å, scaled)")
        present = np.asarray(s.mask) > 0.5
        summary["frames"].append({
            "frame": i, "predicted": classes[pred], "probabilities": {c: float(p) for c, p in zip(classes, probs)},
            "top_filters": {f"conv{l + 1}": [int(x) for x in np.asarray(m.filters)] for l, m in maps.items()},
            "saliency_max": float(per_atom.max()), "saliency_mean": float(per_atom[present].mean()),
            "saliency_logit_mean": float(per_atom_logit[present].mean()),
            "files": {key: str(v) for key, v in files.items()},
        })
    report.write_json(summary, out / "explain.json")
    return summary


__all__ = ["explain_file"]
