"""Guided-backprop attentive response maps and class templates (the paper's Fig. 5), with a
randomised-weights control.

For one fingerprint and one convolutional layer, the ``k`` filters with the largest activation
(mean or max over the feature map) are chosen and each filter's activation map is back-projected
into image space: every other filter of that layer is zeroed and the signal travels back through
the network, each convolution replaced by its transpose and each max-pool by un-pooling through
the forward switches.  That path is the reverse-mode derivative (``jax.vjp``) of the feature map
with only the ReLU's backward rule changed:

    rule="gradient":  g * [x > 0]           plain vjp (a saliency map of the activation)
    rule="deconvnet": relu(g)               Zeiler & Fergus's deconvnet
    rule="guided":    relu(g) * [x > 0]     guided backpropagation (Springenberg et al.; what the
                                            paper's reference implementation does); the default

The attentive response map is the positive part of the back-projection, one per colour channel
of the input.  Class templates (Fig. 5b): the sum of the last-layer maps of an image, averaged
over each class.  :func:`randomized_classifier` gives the same network with freshly initialised
weights: maps that survive randomisation describe the input and architecture, not what was learnt.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

import jax
import jax.numpy as jnp
from flax import nnx

from crystaljax.learn.model import POOL_AFTER

log = logging.getLogger(__name__)

LAYERS: tuple[int, ...] = (0, 2, 5)
"""The paper's first, third and last convolutional layers (0-based)."""
TOP_K = 4
RULES = ("guided", "deconvnet", "gradient")
SELECT = ("mean", "max")
KEEP = ("map", "max")

#: One pristine example per class: the AFLOW library structure of the class's first prototype.
REPRESENTATIVES: dict[str, tuple[str, str]] = {
    "bct_139": ("A_tI2_139_a", "In"),
    "bct_141": ("A_tI4_141_a", "Sn"),
    "hex/rh": ("A_hP2_194_c", "Mg"),
    "sc": ("A_cP1_221_a", "Po"),
    "fcc": ("A_cF4_225_a", "Cu"),
    "diam": ("A_cF8_227_a", "C"),
    "bcc": ("A_cI2_229_a", "W"),
}


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(choices)}")
    return value


def _variables(clf):
    ck = clf.checkpoint
    return ck.graphdef, ck.params, ck.batch_stats


def n_conv_layers(clf) -> int:
    return len(clf.checkpoint.model().convs)


def _n_filters(clf, layer: int) -> int:
    return int(clf.checkpoint.model().convs[layer].out_features)


def _check_layer(clf, layer: int) -> int:
    n = n_conv_layers(clf)
    if not 0 <= int(layer) < n:
        raise ValueError(f"layer {layer} out of range: the model has {n} convolutional layers (0..{n - 1})")
    return int(layer)


def _relu(rule: str) -> Callable:
    """ReLU whose backward pass follows ``rule`` (module docstring)."""
    if rule == "gradient":
        return jax.nn.relu

    @jax.custom_vjp
    def relu(x):
        return jax.nn.relu(x)

    def fwd(x):
        return jax.nn.relu(x), x

    def bwd(x, g):
        back = jax.nn.relu(g)
        if rule == "guided":
            back = jnp.where(x > 0, back, jnp.zeros_like(back))
        return (back,)

    relu.defvjp(fwd, bwd)
    return relu


def _features(model, images, layer: int, relu: Callable = jax.nn.relu):
    """images (B, H, W, C) -> post-ReLU feature map of conv ``layer``, (B, h, w, F)."""
    x = images
    for i in range(layer + 1):
        x = relu(model.convs[i](x))
        if i in POOL_AFTER and i < layer:
            x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    return x


def _seeds(features, filters, keep: str):
    """(h, w, F) activations, (k,) filter indices -> (k, h, w, F) back-projection seeds."""
    onehot = jax.nn.one_hot(filters, features.shape[-1], dtype=features.dtype)
    seeds = features[None] * onehot[:, None, None, :]
    if keep == "max":  # Zeiler & Fergus: only the strongest activation of the map
        flat = seeds.reshape(seeds.shape[0], -1)
        flat = flat * jax.nn.one_hot(jnp.argmax(flat, axis=-1), flat.shape[-1], dtype=flat.dtype)
        seeds = flat.reshape(seeds.shape)
    return seeds


def _backproject(model, image, layer: int, seeds, rule: str):
    """vjp of the layer's feature map at ``image`` (H, W, C) applied to seeds (k, h, w, F) -> (k, H, W, C)."""
    relu = _relu(rule)
    _, vjp = jax.vjp(lambda x: _features(model, x[None], layer, relu)[0], image)
    return jax.vmap(lambda s: vjp(s)[0])(seeds)


def conv_features(clf, images, layer: int) -> jax.Array:
    """Activations of conv ``layer`` (after its ReLU), (B, h, w, F) for images (B, H, W, C)."""
    layer = _check_layer(clf, layer)
    graphdef, params, stats = _variables(clf)
    f = jax.jit(lambda p, b, x: _features(nnx.merge(graphdef, p, b), x, layer))
    return f(params, stats, jnp.asarray(images, jnp.float32))


def filter_scores(features, select: str = "mean") -> jax.Array:
    """Per-filter activation score of a feature map (..., h, w, F) -> (..., F): mean or max over h, w."""
    _check_choice("select", select, SELECT)
    return (jnp.mean if select == "mean" else jnp.max)(features, axis=(-3, -2))


def top_filters(clf, image, layer: int, k: int = TOP_K, select: str = "mean"):
    """The ``k`` most activated filters of conv ``layer`` for one image (H, W, C): (indices (k,), scores (k,))."""
    feats = conv_features(clf, jnp.asarray(image)[None], layer)[0]
    scores, idx = jax.lax.top_k(filter_scores(feats, select), int(k))
    return idx, scores


def backproject(clf, image, layer: int, seeds, *, rule: str = "guided") -> jax.Array:
    """Back-project feature-map seeds (h, w, F) or (k, h, w, F) of conv ``layer`` into image space
    (signed): (H, W, C) or (k, H, W, C).  rule="gradient" is exactly ``jax.vjp`` of the feature map."""
    layer = _check_layer(clf, layer)
    _check_choice("rule", rule, RULES)
    graphdef, params, stats = _variables(clf)
    seeds = jnp.asarray(seeds, jnp.float32)
    single = seeds.ndim == 3
    f = jax.jit(lambda p, b, x, s: _backproject(nnx.merge(graphdef, p, b), x, layer, s, rule))
    out = f(params, stats, jnp.asarray(image, jnp.float32), seeds[None] if single else seeds)
    return out[0] if single else out


class ResponseMaps(NamedTuple):
    """Guided-backprop response maps of one image at one conv layer.

    maps: (k, H, W, C) float32 >= 0.  filters: (k,) int32, most activated first.  scores: (k,) float32.
    """

    maps: Any
    filters: Any
    scores: Any


class GuidedBackprop:
    """Response maps of one model for fixed options; build once, call on many images (one compilation
    per layer).  ``rule``/``select``/``keep``: see the module docstring and :func:`response_maps`."""

    def __init__(self, clf, k: int = TOP_K, *, rule: str = "guided", select: str = "mean", keep: str = "map"):
        self.clf, self.k = clf, int(k)
        self.rule = _check_choice("rule", rule, RULES)
        self.select = _check_choice("select", select, SELECT)
        self.keep = _check_choice("keep", keep, KEEP)
        self._fns: dict[int, Callable] = {}

    def _fn(self, layer: int) -> Callable:
        layer = _check_layer(self.clf, layer)
        if layer not in self._fns:
            graphdef, _, _ = _variables(self.clf)
            k = min(self.k, _n_filters(self.clf, layer))
            rule, select, keep = self.rule, self.select, self.keep

            def f(params, stats, image):
                model = nnx.merge(graphdef, params, stats)
                feats = _features(model, image[None], layer)[0]
                scores, filters = jax.lax.top_k(filter_scores(feats, select), k)
                back = _backproject(model, image, layer, _seeds(feats, filters, keep), rule)
                return ResponseMaps(jax.nn.relu(back), filters.astype(jnp.int32), scores)

            self._fns[layer] = jax.jit(f)
        return self._fns[layer]

    def maps(self, image, layer: int) -> ResponseMaps:
        """:class:`ResponseMaps` of the top-k filters of conv ``layer`` for one image (H, W, C)."""
        _, params, stats = _variables(self.clf)
        return self._fn(layer)(params, stats, jnp.asarray(image, jnp.float32))

    def layers(self, image, layers: Iterable[int] = LAYERS) -> dict[int, ResponseMaps]:
        return {int(l): self.maps(image, int(l)) for l in layers}

    def template(self, image, layer: int | None = None) -> jax.Array:
        """Sum of the top-k maps of one image at ``layer`` (default the last conv) -> (H, W, C)."""
        layer = n_conv_layers(self.clf) - 1 if layer is None else int(layer)
        return jnp.sum(self.maps(image, layer).maps, axis=0)


def response_maps(clf, image, layer: int, k: int = TOP_K, *, select: str = "mean", rule: str = "guided",
                  keep: str = "map") -> ResponseMaps:
    """Guided-backprop response maps of the top-``k`` filters of conv ``layer`` for one image (H, W, C).

    select: rank filters by the "mean" or "max" of their activation map.  keep: back-project the
    whole activation "map" of a filter or only its strongest activation ("max").  k is capped at the
    layer's number of filters.  Returns maps (k, H, W, C) >= 0.
    """
    return GuidedBackprop(clf, k, rule=rule, select=select, keep=keep).maps(image, layer)


def attentive_response_maps(clf, image, layers: Iterable[int] = LAYERS, k: int = TOP_K,
                            **kwargs) -> dict[int, ResponseMaps]:
    """:func:`response_maps` for several layers: {layer: ResponseMaps}."""
    return GuidedBackprop(clf, k, **kwargs).layers(image, layers)


def class_templates(clf, images, labels, n_classes: int | None = None, *, layer: int | None = None,
                    k: int | None = TOP_K, **kwargs):
    """Class templates (Fig. 5b): per class, the mean over its images of the summed last-layer maps.

    images (N, H, W, C); labels (N,) in [0, n_classes).  k=None sums every filter of the layer.
    Returns (templates (n_classes, H, W, C) float32, counts (n_classes,)); empty classes get zeros.
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    n_classes = clf.n_classes if n_classes is None else int(n_classes)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    layer = n_conv_layers(clf) - 1 if layer is None else int(layer)
    gb = GuidedBackprop(clf, _n_filters(clf, layer) if k is None else k, **kwargs)
    sums = np.zeros((n_classes,) + images.shape[1:], np.float64)
    counts = np.zeros(n_classes, np.int64)
    for image, label in zip(images, labels):
        sums[label] += np.asarray(gb.template(image, layer), np.float64)
        counts[label] += 1
    return (sums / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32), counts


def randomized_classifier(clf, seed: int = 0):
    """The same architecture, fingerprint settings and classes with freshly initialised weights (the
    randomised-weights control of the response maps)."""
    from crystaljax.learn.checkpoint import Checkpoint
    from crystaljax.learn.classifier import Classifier
    from crystaljax.learn.model import build_model

    ck = clf.checkpoint
    _, params, rest = nnx.split(build_model(ck.config, int(seed)), nnx.Param, ...)
    card = dict(ck.card, randomized_weights={"seed": int(seed)})
    return Classifier(Checkpoint(ck.graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest), ck.config, card))


def map_similarity(a, b) -> float:
    """Rank correlation (Spearman) of two response maps (any equal shapes): 1 = same ordering of pixels."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def peak_overlap(maps: np.ndarray, image: np.ndarray, threshold: float) -> dict:
    """Share of response-map mass on fingerprint peaks (pixels > threshold * max) vs the peaks' area.

    maps (k, H, W, C) >= 0; image (H, W, C); per channel the peak mask is that channel's."""
    peaks = image > threshold * max(float(image.max()), 1e-30)
    total = maps.sum()
    return {"mass_on_peaks": float((maps * peaks[None]).sum() / total) if total > 0 else 0.0,
            "peak_area": float(peaks.mean())}


def representative_atoms(class_name: str):
    """The pristine periodic example of a class (:data:`REPRESENTATIVES`) as ``ase.Atoms``."""
    from crystaljax.structures.prototypes import build

    name, element = REPRESENTATIVES[class_name]
    return build(name, element)


def class_examples(class_name: str, n: int, seed: int = 0) -> list:
    """``n`` pristine periodic structures of a class (``ase.Atoms``): the representative first, then
    spglib-checked random draws of the class's prototypes (random element and free parameters)."""
    from crystaljax.structures import dataset
    from crystaljax.structures.prototypes import atomic_number

    out = [representative_atoms(class_name)][: max(n, 0)]
    rng = np.random.default_rng([int(seed), dataset.CLASSES.index(class_name)])
    names = dataset.CLASS_PROTOTYPES[class_name]
    elements = [atomic_number(e) for e in dataset.default_elements()]
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        name = names[len(out) % len(names)]
        rec, _ = dataset.sample_candidate(name, elements[int(rng.integers(len(elements)))], rng)
        if rec is not None:
            atoms = rec.atoms()
            atoms.info.update(prototype=rec.prototype, params=dict(rec.params))
            out.append(atoms)
    return out


def _slug(name: str) -> str:
    return name.replace("/", "_")


def run(cfg, workdir) -> dict:
    """Fig. 5 from an ``AttentionConfig`` (or a DictConfig with its keys): per class, the guided-backprop
    maps of the representative under the trained and the randomised-weights model, and the class
    templates.  Writes response_maps_<class>.png, response_maps_<class>_random.png,
    class_templates.png, attention.npz and attention.json into ``workdir``; returns the summary."""
    from pathlib import Path

    from hydra.utils import to_absolute_path

    from crystaljax.analysis import report
    from crystaljax.analysis.defect_sweeps import command_line, config_dict, load_model
    from crystaljax.config import start_experiment
    from crystaljax.learn import tracking
    from crystaljax.structures.dataset import CLASSES

    workdir = Path(workdir)
    start_experiment(cfg, workdir, "attention")
    opts = cfg.attention
    classes = list(opts.classes or CLASSES)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; choose from {CLASSES}")
    layers = [int(l) for l in opts.layers]
    k, thr = int(opts.top_k), float(opts.peak_threshold)
    clf = load_model(cfg.model_dir)
    control = randomized_classifier(clf, int(cfg.seed))
    kw = dict(rule=str(opts.rule), select=str(opts.select), keep=str(opts.keep))
    gb, gb_random = GuidedBackprop(clf, k, **kw), GuidedBackprop(control, k, **kw)
    images_fn = jax.jit(jax.vmap(clf.fingerprint_fn))

    run_ = tracking.start(config_dict(cfg), config_dict(cfg.logger), workdir)
    results, arrays, figures, images, labels = {}, {}, [], [], []
    try:
        for step, cls in enumerate(classes):
            from crystaljax.pipeline import prepare_structures

            examples = class_examples(cls, max(int(opts.n_per_class), 1), seed=int(cfg.seed))
            fps = np.asarray(images_fn(prepare_structures(examples, target=int(opts.target))))
            image = fps[0]  # the representative
            probs = np.asarray(clf.apply(image[None]))[0]
            pred = clf.classes[int(np.argmax(probs))]
            maps, random_maps = gb.layers(image, layers), gb_random.layers(image, layers)
            proto, element = REPRESENTATIVES[cls]
            for tag, m in (("", maps), ("_random", random_maps)):
                title = (f"{cls} ({element}, {proto}): top-{k} guided-backprop maps, predicted {pred} (p={probs.max():.2f})"
                         if not tag else f"{cls}: the same maps with randomised weights (control)")
                png = report.plot_response_maps(m, workdir / f"response_maps_{_slug(cls)}{tag}.png", image=image,
                                                title=title)
                figures.append(png)
                tracking.log_image(run_, f"attention/response_maps_{_slug(cls)}{tag}", png, step=step)
            results[cls] = {
                "prototype": proto, "element": element, "n_template_structures": len(fps), "predicted": pred,
                "probabilities": {c: float(p) for c, p in zip(clf.classes, probs)},
                "layers": {f"conv{l + 1}": {
                    "filters": [int(f) for f in np.asarray(m.filters)], "scores": [float(s) for s in np.asarray(m.scores)],
                    **peak_overlap(np.asarray(m.maps), image, thr),
                    "random_weights": {"filters": [int(f) for f in np.asarray(random_maps[l].filters)],
                                       "rank_correlation_of_summed_maps": map_similarity(
                                           np.asarray(m.maps).sum(0), np.asarray(random_maps[l].maps).sum(0)),
                                       **peak_overlap(np.asarray(random_maps[l].maps), image, thr)}}
                    for l, m in maps.items()},
            }
            for l, m in maps.items():
                arrays[f"maps/{cls}/conv{l + 1}"] = np.asarray(m.maps)
                arrays[f"maps_random/{cls}/conv{l + 1}"] = np.asarray(random_maps[l].maps)
                arrays[f"filters/{cls}/conv{l + 1}"] = np.asarray(m.filters)
                arrays[f"scores/{cls}/conv{l + 1}"] = np.asarray(m.scores)
            arrays[f"fingerprint/{cls}"] = image
            images.extend(fps)
            labels.extend([CLASSES.index(cls)] * len(fps))
            p_true = float(probs[list(clf.classes).index(cls)]) if cls in clf.classes else float("nan")
            tracking.log(run_, {f"attention/p_true/{cls}": p_true}, step=step)
        templates, counts = class_templates(clf, np.stack(images), np.asarray(labels), len(CLASSES), k=k, **kw)
        shown = [CLASSES.index(c) for c in classes]
        png = report.plot_class_templates(templates[shown], [CLASSES[i] for i in shown], workdir / "class_templates.png",
                                          counts=counts[shown],
                                          title=f"class templates: sum of top-{k} last-conv-layer guided-backprop maps")
        figures.append(png)
        tracking.log_image(run_, "attention/class_templates", png, step=len(classes))
        arrays["templates"], arrays["template_counts"] = templates, counts
        np.savez_compressed(workdir / "attention.npz", **arrays)
    finally:
        info = tracking.finish(run_)
    copied = []
    if bool(cfg.save_docs):
        copied = [str(p) for p in report.copy_figures(figures, to_absolute_path(str(cfg.docs_dir)), "attention_")]
    summary = {"command": command_line("attention.py"), "smoke": bool(cfg.smoke), "model": clf.card.get("path"),
               "method": f"guided backprop (rule={opts.rule}); control: randomised weights (seed {int(cfg.seed)})",
               "classes": classes, "layers": layers, "top_k": k, "rule": str(opts.rule), "select": str(opts.select),
               "keep": str(opts.keep), "target": int(opts.target), "n_per_class": int(opts.n_per_class),
               "template_counts": {CLASSES[i]: int(c) for i, c in enumerate(counts)}, "results": results,
               "figures": [str(p) for p in figures], "docs": copied, "tracking": info}
    report.write_json(summary, workdir / "attention.json")
    return summary


__all__ = [
    "LAYERS", "TOP_K", "RULES", "REPRESENTATIVES", "n_conv_layers", "conv_features", "filter_scores", "top_filters",
    "backproject", "ResponseMaps", "GuidedBackprop", "response_maps", "attentive_response_maps", "class_templates",
    "randomized_classifier", "map_similarity", "peak_overlap", "representative_atoms", "class_examples", "run",
]
