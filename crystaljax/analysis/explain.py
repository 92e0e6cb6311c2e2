"""Opening the black box: attentive response maps, class templates and gradient probing.

Attentive response maps (the paper's Fig. 5a).  For one fingerprint and one convolutional layer,
the ``k`` filters with the largest activation (mean or max over the feature map) are chosen, and
each filter's activation map is back-projected into image space by the deconvnet technique of
Zeiler & Fergus: every other filter of that layer is set to zero and the signal travels back
through the network, each convolution replaced by its transpose (the same kernels, flipped),
each max-pool by un-pooling through the forward max-pool switches (the arg-max locations), and
a ReLU applied on the way back.  The transposed path is exactly the reverse-mode derivative
(``jax.vjp``) of the forward feature map, with only the ReLU's backward rule changed:

    rule="gradient":  g * [x > 0]           plain vjp (a saliency map of the activation)
    rule="deconvnet": relu(g)               Zeiler & Fergus: rectify the backward signal
    rule="guided":    relu(g) * [x > 0]     both (what the reference implementation of the paper
                                            does: forward ReLU switches, then the activation on
                                            the way back); the default

Biases are not used on the way back.  The map of a filter is linear in the seed for
rule="gradient" and positively homogeneous (scale by c > 0 -> scaled by c) for the other two.
The back-projection is signed; the attentive response map is its positive part (brighter =
more important; negative values are not shown, as in the paper's figures).  Each map has the
three colour channels of the input (rotations about x, y, z).

Class templates (Fig. 5b): the sum of the last-conv-layer response maps of an image, averaged
over the images of each class.

Gradient probing (beyond the paper), through the whole differentiable pipeline
structure -> fingerprint -> ConvNet -> softmax:

* :func:`probability_saliency`: d p(class) / d positions, (n_max, 3) in 1/Å of the *scaled*
  cluster (mean nearest-neighbour distance 1 Å; divide by ``structure.nn_distance`` for 1/Å of
  the physical structure); :func:`atom_saliency` is its norm over xyz, zero on masked rows.
* :func:`occupancy_saliency`: d p(class) / d mask, (n_max,): the mask is the atom's weight in
  the scattering sum, so this says how p(class) would change if the atom were (partly) removed
  (present atoms) or put back (vacancies).  The fingerprint is normalised by its brightest pixel,
  so scaling every weight leaves p unchanged: sum_j w_j d p / d w_j = 0 (only relative weights
  matter).
* :func:`fingerprint_sensitivity`: per atom s_j = ||d fingerprint / d x_j||_F, (n_max,): the
  Frobenius norm of the (64*64*3, 3) Jacobian block of atom j, i.e. the L2 change of the whole
  normalised image per Å (scaled) of displacement, root-sum-squared over the three directions
  (a small random-direction step delta of atom j changes the image by ~ s_j delta / sqrt 3).
  Exact (forward mode, 3 n_max Jacobian-vector products) or a Hutchinson estimate from random
  image-space probes v ~ N(0, I), E ||J_j^T v||^2 = ||J_j||_F^2.
* :func:`wavelength_derivative`: d fingerprint / d wavelength, (64, 64, 3) per picometre.

Every model-facing function takes a :class:`Net` (graphdef, params, batch_stats); :func:`as_net`
makes one from a ConvNet, a loaded ``Predictor`` or such a triple.  All of them work for any
weights (a freshly initialised model included).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

import jax
import jax.numpy as jnp
from flax import nnx

from crystaljax.learn.evaluate import save_figure
from crystaljax.learn.model import POOL_AFTER, ConvNet, ModelConfig, build_model
from crystaljax.structure import Structure

log = logging.getLogger(__name__)

LAYERS: tuple[int, ...] = (0, 2, 5)
"""The paper's first, third and last convolutional layers (0-based indices)."""
TOP_K = 4
RULES = ("guided", "deconvnet", "gradient")
SELECT = ("mean", "max")
KEEP = ("map", "max")
CHANNEL_NAMES = ("R (rot. x)", "G (rot. y)", "B (rot. z)")

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

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "default"


# --------------------------------------------------------------------------------------------
# the model as pure pytrees


class Net(NamedTuple):
    """A ConvNet as (static graphdef, params pure dict, batch_stats pure dict)."""

    graphdef: Any
    params: Any
    batch_stats: Any


def as_net(model) -> Net:
    """A :class:`Net` from a ``ConvNet``, a ``train.Predictor``, a ``Net`` or a (graphdef, params, batch_stats)."""
    from crystaljax.learn.train import split_model

    if isinstance(model, Net):
        return model
    if isinstance(model, ConvNet):
        return Net(*split_model(model))
    if all(hasattr(model, a) for a in ("graphdef", "params", "batch_stats")):
        return Net(model.graphdef, model.params, model.batch_stats)
    if isinstance(model, (tuple, list)) and len(model) == 3:
        return Net(*model)
    raise TypeError(f"cannot make a Net from {type(model).__name__}")


def n_conv_layers(net: Net) -> int:
    return len(_model(net).convs)


def _model(net: Net) -> ConvNet:
    return nnx.merge(net.graphdef, net.params, net.batch_stats)


def _check_layer(net: Net, layer: int) -> int:
    n = n_conv_layers(net)
    layer = int(layer)
    if not 0 <= layer < n:
        raise ValueError(f"layer {layer} out of range: the model has {n} convolutional layers (0..{n - 1})")
    return layer


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(choices)}")
    return value


@functools.lru_cache(maxsize=None)
def _relu(rule: str) -> Callable:
    """ReLU whose backward pass follows ``rule`` (see the module docstring)."""
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


def _features(model: ConvNet, images, layer: int, rule: str = "gradient"):
    """images (B, H, W, C) -> post-ReLU feature map of conv ``layer``, (B, h, w, F) (before any pool)."""
    relu = _relu(rule)
    x = images
    for i in range(layer + 1):
        x = relu(model.convs[i](x))
        if i in POOL_AFTER and i < layer:
            x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    return x


def conv_features(net: Net, images, layer: int) -> jax.Array:
    """Activations of conv ``layer`` (after its ReLU), (B, h, w, F) for images (B, H, W, C)."""
    net = as_net(net)
    layer = _check_layer(net, layer)
    return _features_jit(net.graphdef, layer)(net.params, net.batch_stats, jnp.asarray(images, jnp.float32))


@functools.lru_cache(maxsize=64)
def _features_jit(graphdef, layer: int):
    def f(params, batch_stats, images):
        return _features(nnx.merge(graphdef, params, batch_stats), images, layer)

    return jax.jit(f)


# --------------------------------------------------------------------------------------------
# attentive response maps


def filter_scores(features, select: str = "mean") -> jax.Array:
    """Per-filter activation score of a feature map (..., h, w, F) -> (..., F): mean or max over h, w."""
    _check_choice("select", select, SELECT)
    reduce = jnp.mean if select == "mean" else jnp.max
    return reduce(features, axis=(-3, -2))


def top_filters(net: Net, image, layer: int, k: int = TOP_K, select: str = "mean"):
    """The ``k`` most activated filters of conv ``layer`` for one image (H, W, C).

    Returns (indices (k,) int32, scores (k,) float32), highest score first.
    """
    feats = conv_features(net, jnp.asarray(image)[None], layer)[0]
    scores, idx = jax.lax.top_k(filter_scores(feats, select), int(k))
    return idx, scores


def _seeds(features, filters, keep: str):
    """(h, w, F) activations, (k,) filter indices -> (k, h, w, F) back-projection seeds."""
    onehot = jax.nn.one_hot(filters, features.shape[-1], dtype=features.dtype)  # (k, F)
    seeds = features[None] * onehot[:, None, None, :]
    if keep == "max":  # Zeiler & Fergus: only the strongest activation of the map
        flat = seeds.reshape(seeds.shape[0], -1)
        best = jnp.argmax(flat, axis=-1)
        flat = flat * jax.nn.one_hot(best, flat.shape[-1], dtype=flat.dtype)
        seeds = flat.reshape(seeds.shape)
    return seeds


def _backproject(model: ConvNet, image, layer: int, seeds, rule: str):
    """vjp of the layer's feature map at ``image`` (H, W, C) applied to seeds (k, h, w, F) -> (k, H, W, C)."""
    forward = lambda x: _features(model, x[None], layer, rule)[0]
    _, vjp = jax.vjp(forward, image)
    return jax.vmap(lambda s: vjp(s)[0])(seeds)


@functools.lru_cache(maxsize=64)
def _backproject_jit(graphdef, layer: int, rule: str):
    def f(params, batch_stats, image, seeds):
        return _backproject(nnx.merge(graphdef, params, batch_stats), image, layer, seeds, rule)

    return jax.jit(f)


def backproject(net: Net, image, layer: int, seeds, *, rule: str = "guided") -> jax.Array:
    """Back-project feature-map seeds of conv ``layer`` into image space (signed, not rectified).

    image: (H, W, C).  seeds: (h, w, F) or (k, h, w, F), a signal on the layer's post-ReLU feature
    map.  Returns (H, W, C) or (k, H, W, C), float32.  rule: "guided" | "deconvnet" | "gradient".
    With rule="gradient" this is exactly ``jax.vjp`` of the feature map (linear in the seeds).
    """
    net = as_net(net)
    layer = _check_layer(net, layer)
    _check_choice("rule", rule, RULES)
    seeds = jnp.asarray(seeds, jnp.float32)
    single = seeds.ndim == 3
    out = _backproject_jit(net.graphdef, layer, rule)(net.params, net.batch_stats, jnp.asarray(image, jnp.float32),
                                                      seeds[None] if single else seeds)
    return out[0] if single else out


class ResponseMaps(NamedTuple):
    """Attentive response maps of one image at one conv layer.

    maps:    (k, H, W, C) float32 >= 0, the positive part of each filter's back-projection.
    filters: (k,) int32, the filter indices, most activated first.
    scores:  (k,) float32, their activation scores (mean or max of the post-ReLU map).
    """

    maps: Any
    filters: Any
    scores: Any


@functools.lru_cache(maxsize=64)
def _response_jit(graphdef, layer: int, k: int, select: str, rule: str, keep: str):
    def f(params, batch_stats, image):
        model = nnx.merge(graphdef, params, batch_stats)
        feats = _features(model, image[None], layer)[0]
        scores, filters = jax.lax.top_k(filter_scores(feats, select), k)
        back = _backproject(model, image, layer, _seeds(feats, filters, keep), rule)
        return ResponseMaps(jax.nn.relu(back), filters.astype(jnp.int32), scores)

    return jax.jit(f)


def response_maps(net: Net, image, layer: int, k: int = TOP_K, *, select: str = "mean", rule: str = "guided",
                  keep: str = "map") -> ResponseMaps:
    """Attentive response maps of the top-``k`` filters of conv ``layer`` for one image (H, W, C).

    select: rank filters by the "mean" (= the reference's sum) or "max" of their activation map.
    keep: back-project the whole activation "map" of the filter, or only its strongest activation
    ("max", as in Zeiler & Fergus).  rule: the backward ReLU rule (module docstring).
    Returns :class:`ResponseMaps` with maps (k, H, W, C) >= 0.
    """
    net = as_net(net)
    layer = _check_layer(net, layer)
    _check_choice("select", select, SELECT)
    _check_choice("rule", rule, RULES)
    _check_choice("keep", keep, KEEP)
    n_filters = int(_model(net).convs[layer].out_features)
    k = min(int(k), n_filters)
    fn = _response_jit(net.graphdef, layer, k, select, rule, keep)
    return fn(net.params, net.batch_stats, jnp.asarray(image, jnp.float32))


def attentive_response_maps(net: Net, image, layers: Iterable[int] = LAYERS, k: int = TOP_K,
                            **kwargs) -> dict[int, ResponseMaps]:
    """:func:`response_maps` for several layers: {layer: ResponseMaps with maps (k, H, W, C)}."""
    net = as_net(net)
    return {int(layer): response_maps(net, image, int(layer), k, **kwargs) for layer in layers}


def image_template(net: Net, image, layer: int | None = None, k: int | None = TOP_K, **kwargs) -> jax.Array:
    """Sum of the top-``k`` response maps of one image (H, W, C) at ``layer`` (default: the last conv)
    -> (H, W, C).  k=None sums over every filter of the layer."""
    net = as_net(net)
    layer = n_conv_layers(net) - 1 if layer is None else int(layer)
    if k is None:
        k = int(_model(net).convs[layer].out_features)
    return jnp.sum(response_maps(net, image, layer, k, **kwargs).maps, axis=0)


def class_templates(net: Net, images, labels, n_classes: int | None = None, *, layer: int | None = None,
                    k: int | None = TOP_K, **kwargs):
    """Class templates (Fig. 5b): per class, the mean over its images of the summed last-layer maps.

    images: (N, H, W, C); labels: (N,) ints in [0, n_classes).  Returns (templates (n_classes, H, W, C)
    float32, counts (n_classes,) int); a class without images gets a zero template.
    """
    net = as_net(net)
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if n_classes is None:
        n_classes = int(_model(net).out.out_features)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    sums = np.zeros((n_classes,) + images.shape[1:], np.float64)
    counts = np.zeros(n_classes, np.int64)
    for image, label in zip(images, labels):
        sums[label] += np.asarray(image_template(net, image, layer, k, **kwargs), np.float64)
        counts[label] += 1
    templates = sums / np.maximum(counts, 1)[:, None, None, None]
    return templates.astype(np.float32), counts


# --------------------------------------------------------------------------------------------
# gradient probing through fingerprint + network


def _as_structure(structure: Structure) -> Structure:
    s = Structure(*(jnp.asarray(x) for x in structure))
    if s.positions.ndim != 2:
        raise ValueError(f"expected one unbatched Structure, got positions of shape {s.positions.shape}")
    return s


def class_probabilities(net: Net, images) -> jax.Array:
    """Eval-mode class probabilities for images (B, H, W, C) -> (B, n_classes) (jitted per model graph)."""
    net = as_net(net)
    return _probabilities_jit(net.graphdef)(net.params, net.batch_stats, jnp.asarray(images))


@functools.lru_cache(maxsize=16)
def _probabilities_jit(graphdef):
    def f(params, batch_stats, images):
        logits = nnx.merge(graphdef, params, batch_stats)(images, train=False)
        return jax.nn.softmax(logits, axis=-1)

    return jax.jit(f)


OUTPUTS = ("probability", "logit")


def make_probability_fn(net: Net, fingerprint_fn: Callable, output: str = "probability") -> Callable:
    """``fn(params, batch_stats, structure) -> (n_classes,)``: fingerprint + ConvNet (eval mode), traceable.

    output="probability": softmax probabilities; "logit": the logits (their gradients do not
    vanish when the softmax saturates at p ~ 1, where d p / d x ~ p (1 - p) does).
    """
    _check_choice("output", output, OUTPUTS)
    graphdef = as_net(net).graphdef

    def fn(params, batch_stats, structure):
        image = fingerprint_fn(structure)
        logits = nnx.merge(graphdef, params, batch_stats)(image[None], train=False)[0]
        return jax.nn.softmax(logits) if output == "probability" else logits

    return fn


@functools.lru_cache(maxsize=32)
def _saliency_jit(graphdef, fingerprint_fn, output: str):
    logit_fn = make_probability_fn(Net(graphdef, None, None), fingerprint_fn, "logit")

    def f(params, batch_stats, structure):
        def wrt(positions, mask):
            logits = logit_fn(params, batch_stats, structure._replace(positions=positions, mask=mask))
            return (jax.nn.softmax(logits) if output == "probability" else logits), logits

        pos, mask = structure.positions, structure.mask.astype(structure.positions.dtype)
        out, vjp, logits = jax.vjp(wrt, pos, mask, has_aux=True)
        d_pos, d_mask = jax.vmap(vjp)(jnp.eye(out.shape[0], dtype=out.dtype))
        return jax.nn.softmax(logits), d_pos, d_mask

    return jax.jit(f)


class Saliency(NamedTuple):
    """Gradients of every class output (probability or logit) for one structure.

    probabilities: (n_classes,) the class probabilities (whatever output was differentiated).
    positions:     (n_classes, n_max, 3) d output / d positions, 1/Å of the scaled cluster.
    occupancy:     (n_classes, n_max) d output / d mask (the atom's weight in the scattering sum).
    """

    probabilities: Any
    positions: Any
    occupancy: Any


def saliency(net: Net, fingerprint_fn: Callable, structure: Structure, output: str = "probability") -> Saliency:
    """All-class probabilities and the gradients of every class output w.r.t. positions and mask.

    fingerprint_fn: ``make_fingerprint_fn(...)`` (Structure -> (H, W, 3)); the model must take images
    of that size.  output: "probability" (d p / d x) or "logit".  One forward pass and n_classes
    reverse passes, jitted and cached per (model graph, fingerprint_fn, output).
    """
    net = as_net(net)
    _check_choice("output", output, OUTPUTS)
    s = _as_structure(structure)
    return Saliency(*_saliency_jit(net.graphdef, fingerprint_fn, output)(net.params, net.batch_stats, s))


@functools.lru_cache(maxsize=32)
def _class_grad_jit(graphdef, fingerprint_fn):
    prob = make_probability_fn(Net(graphdef, None, None), fingerprint_fn)

    def f(params, batch_stats, structure, class_index):
        def p_class(positions):
            return prob(params, batch_stats, structure._replace(positions=positions))[class_index]

        return jax.grad(p_class)(structure.positions)

    return jax.jit(f)


def probability_saliency(net: Net, fingerprint_fn: Callable, structure: Structure, class_index) -> jax.Array:
    """d p(class_index) / d positions for one Structure, (n_max, 3), 1/Å of the scaled cluster.

    The path is structure -> fingerprint -> ConvNet (eval mode) -> softmax.  Rows with mask 0
    (padding, vacancies) are exactly zero: the mask weights the atom in the scattering sum.
    """
    net = as_net(net)
    s = _as_structure(structure)
    fn = _class_grad_jit(net.graphdef, fingerprint_fn)
    return fn(net.params, net.batch_stats, s, jnp.asarray(class_index, jnp.int32))


def occupancy_saliency(net: Net, fingerprint_fn: Callable, structure: Structure, class_index) -> jax.Array:
    """d p(class_index) / d mask, (n_max,): the response of p to (partly) removing an atom (present
    rows) or putting one back (vacancy rows).  Zero on padding rows (atomic number 0)."""
    return saliency(net, fingerprint_fn, structure).occupancy[int(class_index)]


def atom_saliency(gradient, mask) -> jax.Array:
    """Per-atom scalar saliency: ||gradient_j|| over xyz, times the mask.  (..., n_max, 3) -> (..., n_max)."""
    gradient = jnp.asarray(gradient)
    return jnp.linalg.norm(gradient, axis=-1) * (jnp.asarray(mask) > 0.5)


@functools.lru_cache(maxsize=32)
def _sensitivity_exact_jit(fingerprint_fn, chunk: int):
    def f(structure):
        n = structure.positions.shape[0]

        def image(positions):
            return fingerprint_fn(structure._replace(positions=positions))

        def sq_norm(tangent):
            _, jv = jax.jvp(image, (structure.positions,), (tangent,))
            return jnp.sum(jv * jv)

        eye = jnp.eye(3 * n, dtype=structure.positions.dtype).reshape(3 * n, n, 3)
        sq = jax.lax.map(sq_norm, eye, batch_size=chunk)  # (3n,)
        return jnp.sqrt(jnp.sum(sq.reshape(n, 3), axis=-1))

    return jax.jit(f)


@functools.lru_cache(maxsize=32)
def _sensitivity_probe_jit(fingerprint_fn, n_probes: int):
    def f(structure, key):
        image, vjp = jax.vjp(lambda p: fingerprint_fn(structure._replace(positions=p)), structure.positions)
        probes = jax.random.normal(key, (n_probes,) + image.shape, image.dtype)
        grads = jax.vmap(lambda v: vjp(v)[0])(probes)  # (n_probes, n, 3)
        return jnp.sqrt(jnp.mean(jnp.sum(grads * grads, axis=-1), axis=0))

    return jax.jit(f)


def fingerprint_sensitivity(fingerprint_fn: Callable, structure: Structure, *, method: str = "exact",
                            key=None, n_probes: int = 16, chunk: int = 24) -> jax.Array:
    """Per-atom sensitivity s_j = ||d fingerprint / d x_j||_F of one Structure, (n_max,).

    Units: change of the normalised (64, 64, 3) image (L2 over all its values) per Å of the scaled
    cluster; divide by ``nn_distance`` for per physical Å.  Zero on masked rows.
    method="exact": 3 n_max forward-mode products in chunks of ``chunk``;
    method="hutchinson": unbiased estimate of s_j^2 from ``n_probes`` random image-space probes
    (needs ``key``; relative error ~ sqrt(2 / n_probes)).
    """
    s = _as_structure(structure)
    if method == "exact":
        out = _sensitivity_exact_jit(fingerprint_fn, int(chunk))(s)
    elif method == "hutchinson":
        if key is None:
            raise ValueError("method='hutchinson' needs a jax.random key")
        out = _sensitivity_probe_jit(fingerprint_fn, int(n_probes))(s, key)
    else:
        raise ValueError(f"unknown method {method!r}; choose 'exact' or 'hutchinson'")
    return out * (s.mask > 0.5)


@functools.lru_cache(maxsize=16)
def _wavelength_jit(detector, beam, fp):
    from crystaljax.physics.fingerprint import make_fingerprint_fn

    fn = make_fingerprint_fn(detector, beam, fp, wavelength_arg=True)

    def f(structure, wavelength_pm):
        image = lambda lam_pm: fn(structure, lam_pm * 1e-12)
        return jax.jvp(image, (wavelength_pm,), (jnp.ones_like(wavelength_pm),))

    return jax.jit(f)


def wavelength_derivative(structure: Structure, wavelength: float | None = None, *, detector=None, beam=None,
                          fp=None):
    """d fingerprint / d wavelength for one Structure: (fingerprint (H, W, 3), derivative (H, W, 3) per pm).

    wavelength: metres (default: the beam's, 5e-12 m).  Forward mode, one pass.
    """
    from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig

    detector = detector or DetectorConfig()
    beam = beam or BeamConfig()
    fp = fp or FingerprintConfig()
    lam = beam.wavelength if wavelength is None else float(wavelength)
    s = _as_structure(structure)
    return _wavelength_jit(detector, beam, fp)(s, jnp.asarray(lam * 1e12, s.positions.dtype))


# --------------------------------------------------------------------------------------------
# writers


def write_saliency_extxyz(structure: Structure, saliency, path, *, gradient=None,
                          arrays: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
                          include_masked: bool = False, physical: bool = False) -> Path:
    """Write one Structure as extended XYZ with a per-atom float array ``saliency`` (ASE/OVITO readable).

    saliency: (n_max,) per-atom values; gradient: optional (n_max, 3) written as ``saliency_grad``;
    arrays: further per-atom (n_max,) or (n_max, 3) arrays.  Rows written: atoms with mask 1, or
    with ``include_masked`` every non-padding row (numbers > 0) plus an int array ``present``.
    Positions in Å of the scaled cluster, or physical Å (times ``nn_distance``) if ``physical``.
    ``info`` entries go to the comment line (with nn_distance).
    """
    import ase.io
    from ase import Atoms

    numbers = np.asarray(structure.numbers)
    mask = np.asarray(structure.mask) > 0.5
    keep = (numbers > 0) if include_masked else mask
    scale = float(np.asarray(structure.nn_distance)) if physical else 1.0
    atoms = Atoms(numbers=numbers[keep], positions=np.asarray(structure.positions, np.float64)[keep] * scale,
                  tags=np.asarray(structure.tags)[keep], pbc=False)
    per_atom = {"saliency": saliency}
    if gradient is not None:
        per_atom["saliency_grad"] = gradient
    per_atom.update(arrays or {})
    for name, values in per_atom.items():
        values = np.asarray(values, np.float64)
        if values.shape[0] != len(numbers):
            raise ValueError(f"array {name!r} has {values.shape[0]} rows, the structure {len(numbers)}")
        atoms.set_array(name, values[keep])
    if include_masked:
        atoms.set_array("present", mask[keep].astype(np.int64))
    atoms.info["nn_distance"] = float(np.asarray(structure.nn_distance))
    atoms.info["units"] = "physical_A" if physical else "scaled_A"
    for k, v in (info or {}).items():
        atoms.info[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, default=float)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, atoms, format="extxyz")
    return path


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=100)


def _channel_cmap(c: int):
    from matplotlib.colors import LinearSegmentedColormap

    colour = [(1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.2, 0.4, 1.0)][c]
    return LinearSegmentedColormap.from_list(f"ch{c}", [(0, 0, 0), colour])


def _rgb(image) -> np.ndarray:
    """(H, W, 3) >= 0 -> displayable RGB in [0, 1], each channel scaled to its own max."""
    x = np.clip(np.asarray(image, np.float64), 0.0, None)
    peak = x.reshape(-1, x.shape[-1]).max(axis=0)
    return x / np.where(peak > 0, peak, 1.0)


def _off(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def plot_response_maps(maps: Mapping[int, ResponseMaps | Any], path, *, image=None, title: str | None = None) -> Path:
    """Grid PNG of response maps: one row per (layer, colour channel), one column per top filter;
    an optional first column shows the input fingerprint channel.  Each tile is scaled to its own max.

    maps: {layer: ResponseMaps or (k, H, W, C) array}.
    """
    layers = sorted(maps)
    arrs = {l: np.asarray(m.maps if isinstance(m, ResponseMaps) else m) for l, m in maps.items()}
    filt = {l: (np.asarray(m.filters) if isinstance(m, ResponseMaps) else None) for l, m in maps.items()}
    k = max(a.shape[0] for a in arrs.values())
    n_ch = next(iter(arrs.values())).shape[-1]
    extra = 1 if image is not None else 0
    rows, cols = len(layers) * n_ch, k + extra
    fig = _figure((1.45 * cols + 0.6, 1.45 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for li, layer in enumerate(layers):
        for c in range(n_ch):
            r = li * n_ch + c
            cmap = _channel_cmap(c) if n_ch == 3 else "hot"
            if image is not None:
                ax = axes[r, 0]
                ax.imshow(np.sqrt(np.clip(np.asarray(image)[..., c], 0, None)), cmap=cmap, origin="lower")
                _off(ax)
                if r == 0:
                    ax.set_title("input (sqrt)", fontsize=8)
                ax.set_ylabel(f"conv {layer + 1}\n{CHANNEL_NAMES[c] if n_ch == 3 else c}", fontsize=7)
            for j in range(cols - extra):
                ax = axes[r, j + extra]
                _off(ax)
                if j >= arrs[layer].shape[0]:
                    ax.set_visible(False)
                    continue
                tile = arrs[layer][j, ..., c]
                vmax = float(tile.max())
                ax.imshow(tile, cmap=cmap, vmin=0.0, vmax=vmax if vmax > 0 else 1.0, origin="lower")
                if c == 0:
                    name = f"filter {int(filt[layer][j])}" if filt[layer] is not None else f"map {j}"
                    ax.set_title(f"conv {layer + 1}: {name}", fontsize=7)
                if extra == 0 and j == 0:
                    ax.set_ylabel(f"conv {layer + 1}\n{CHANNEL_NAMES[c] if n_ch == 3 else c}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_class_templates(templates, class_names: Sequence[str], path, *, counts=None, title: str | None = None) -> Path:
    """Class-template PNG: columns = classes; rows = RGB composite, then the R, G, B channels.

    templates: (n_classes, H, W, 3) >= 0.  Each tile scaled to its own max.
    """
    templates = np.asarray(templates)
    n, n_ch = templates.shape[0], templates.shape[-1]
    rows = 1 + n_ch
    fig = _figure((max(1.6 * n + 0.6, 6.0), 1.6 * rows + 0.8))
    axes = fig.subplots(rows, n, squeeze=False)
    for i in range(n):
        t = templates[i]
        label = class_names[i] if i < len(class_names) else str(i)
        if counts is not None:
            label += f" (n={int(np.asarray(counts)[i])})"
        ax = axes[0, i]
        ax.imshow(_rgb(t) if n_ch == 3 else t[..., 0], origin="lower")
        ax.set_title(label, fontsize=8)
        _off(ax)
        for c in range(n_ch):
            ax = axes[1 + c, i]
            vmax = float(t[..., c].max())
            ax.imshow(t[..., c], cmap=_channel_cmap(c) if n_ch == 3 else "hot", vmin=0.0,
                      vmax=vmax if vmax > 0 else 1.0, origin="lower")
            _off(ax)
            if i == 0:
                ax.set_ylabel(CHANNEL_NAMES[c] if n_ch == 3 else str(c), fontsize=7)
    axes[0, 0].set_ylabel("RGB", fontsize=7)
    fig.suptitle(title or "class templates: sum of last-conv-layer response maps", fontsize=10)
    return save_figure(fig, path)


def plot_saliency(structure: Structure, saliency, path, *, title: str | None = None, label: str = "saliency",
                  show_masked: bool = True, highlight=None, highlight_label: str = "highlighted") -> Path:
    """3-D scatter PNG of the atoms coloured by a per-atom value (n_max,); removed atoms (mask 0,
    numbers > 0) as small grey crosses if ``show_masked``; present atoms where the boolean (n_max,)
    ``highlight`` is true get a red ring.  Positions in Å of the scaled cluster."""
    pos = np.asarray(structure.positions, np.float64)
    mask = np.asarray(structure.mask) > 0.5
    real = np.asarray(structure.numbers) > 0
    vals = np.asarray(saliency, np.float64)
    fig = _figure((6.0, 5.0))
    ax = fig.add_subplot(projection="3d")
    p = pos[mask]
    sc = ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=vals[mask], cmap="viridis", s=18, depthshade=False,
                    edgecolors="none")
    gone = real & ~mask
    legend = False
    if show_masked and gone.any():
        q = pos[gone]
        ax.scatter(q[:, 0], q[:, 1], q[:, 2], c="0.6", marker="x", s=8, depthshade=False, label="removed")
        legend = True
    if highlight is not None and (np.asarray(highlight, bool) & mask).any():
        q = pos[np.asarray(highlight, bool) & mask]
        ax.scatter(q[:, 0], q[:, 1], q[:, 2], facecolors="none", edgecolors="red", s=60, linewidths=0.8,
                   depthshade=False, label=highlight_label)
        legend = True
    if legend:
        ax.legend(loc="upper left", fontsize=7)
    fig.colorbar(sc, ax=ax, shrink=0.7, pad=0.12, label=label)
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_zlabel("z (Å)")
    if title:
        ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_fingerprint(image, path, *, title: str | None = None) -> Path:
    """PNG of one (H, W, 3) fingerprint (square-root scaled so weak peaks show)."""
    fig = _figure((3.2, 3.4))
    ax = fig.add_subplot()
    ax.imshow(np.sqrt(np.clip(np.asarray(image, np.float64), 0.0, 1.0)), origin="lower")
    _off(ax)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# loading a model and its fingerprint settings


def load_net(model_dir=None, *, seed: int = 0, allow_fresh: bool = True) -> tuple[Net, dict]:
    """(Net, model card) from ``model_dir`` (default: the shipped crystaljax/pretrained/default).

    If no model is found there and ``allow_fresh`` (and no ``model_dir`` was named), a freshly
    initialised ConvNet (``seed``) is returned with card ``{"fresh": True, ...}`` and a warning;
    otherwise :class:`crystaljax.errors.InputFileError` (an OSError) with a one-line message.
    """
    from crystaljax.errors import InputFileError
    from crystaljax.learn.train import MODEL_CARD, load_model

    directory = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    if (directory / MODEL_CARD).is_file():
        predictor, card = load_model(directory)
        card = dict(card)
        card.setdefault("path", str(directory))
        return as_net(predictor), card
    if model_dir is not None or not allow_fresh:
        raise InputFileError(f"{directory}: no trained crystaljax model here (missing {MODEL_CARD})")
    log.warning("no trained model in %s: using a freshly initialised ConvNet (seed %d); "
                "response maps and saliencies then describe random weights", directory, seed)
    return as_net(build_model(ModelConfig(), int(seed))), {"fresh": True, "seed": int(seed),
                                                           "model_config": ModelConfig().to_dict()}


def fingerprint_configs(card: Mapping[str, Any] | None = None):
    """(DetectorConfig, BeamConfig, FingerprintConfig) recorded in a model card (defaults where absent)."""
    from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, from_dict

    card = card or {}
    return (from_dict(DetectorConfig, card.get("detector")), from_dict(BeamConfig, card.get("beam")),
            from_dict(FingerprintConfig, card.get("fingerprint")))


@functools.lru_cache(maxsize=16)
def cached_fingerprint_fn(detector, beam, fp) -> Callable:
    """``make_fingerprint_fn`` cached per configuration (a stable object, so jitted callers are reused)."""
    from crystaljax.physics.fingerprint import make_fingerprint_fn

    return make_fingerprint_fn(detector, beam, fp)


@functools.lru_cache(maxsize=16)
def _jit_fingerprint(fn):
    return jax.jit(fn)


def fingerprint(fingerprint_fn: Callable, structure: Structure) -> np.ndarray:
    """One (H, W, 3) fingerprint (jitted, cached per fingerprint_fn) as numpy."""
    return np.asarray(_jit_fingerprint(fingerprint_fn)(_as_structure(structure)))


def representative_atoms(class_name: str):
    """The pristine periodic example structure of a class (see ``REPRESENTATIVES``) as ``ase.Atoms``."""
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


# --------------------------------------------------------------------------------------------
# the CLI helper


def explain_file(path, out_dir, model_dir=None, *, index=":", target: int | None = None,
                 layers: Sequence[int] = LAYERS, k: int = TOP_K, rule: str = "guided", select: str = "mean",
                 allow_fresh: bool = False, seed: int = 0) -> dict:
    """Explain the classification of every frame of a structure file; writes into ``out_dir``:

    [frameNNNN_]fingerprint.png          the input fingerprint (prefix only for multi-frame files)
    [frameNNNN_]response_maps.png        top-k response maps of conv layers ``layers`` (+1 in titles)
    [frameNNNN_]template.png             this structure's last-layer map sum next to the template of
                                         the predicted class (from its pristine representative)
    [frameNNNN_]saliency.extxyz / .png   per-atom |d p(predicted) / d x| (array 'saliency', vector
                                         'saliency_grad', 'occupancy_saliency', and 'saliency_logit' =
                                         |d logit / d x|), positions in Å of the scaled cluster
    [frameNNNN_]saliency_logit.png       |d logit(predicted) / d x| (p saturates for confident
                                         predictions, and d p / d x ~ p (1 - p) with it)
    explain.json                         predictions, top filters and file list

    model_dir: a directory written by ``train.save_model`` (default: the shipped model).  Without a
    model: InputFileError, unless ``allow_fresh`` (then random weights, flagged ``fresh_model``).
    target: cluster size in atoms (default: the model card's ``cluster_target``, else 250).
    Returns the summary dict (also in explain.json).  Raises InputFileError / StructureError for
    unreadable input.
    """
    from crystaljax.structures.dataset import CLASSES
    from crystaljax.structures.io import read_structures
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structure import take

    frames = read_structures(path, index=index)
    net, card = load_net(model_dir, seed=seed, allow_fresh=allow_fresh)
    target = int(card.get("cluster_target", 250)) if target is None else int(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = tuple(card.get("classes", CLASSES))
    det, beam, fpc = fingerprint_configs(card)
    fp_fn = cached_fingerprint_fn(det, beam, fpc)
    batch = prepare_structures(frames, target=target)
    summary = {"file": str(path), "model": card.get("path", "fresh"), "fresh_model": bool(card.get("fresh", False)),
               "classes": list(classes), "frames": []}
    reference_templates: dict[int, np.ndarray] = {}
    for i in range(len(frames)):
        s = take(batch, i)
        tag = "" if len(frames) == 1 else f"frame{i:04d}_"
        image = fingerprint(fp_fn, s)
        sal = saliency(net, fp_fn, s)
        probs = np.asarray(sal.probabilities)
        pred = int(np.argmax(probs))
        maps = attentive_response_maps(net, image, layers, k, rule=rule, select=select)
        label = f"{Path(path).name} {tag.rstrip('_')}".strip()
        files = {
            "fingerprint": plot_fingerprint(image, out / f"{tag}fingerprint.png", title=label),
            "response_maps": plot_response_maps(
                maps, out / f"{tag}response_maps.png", image=image,
                title=f"{label}: attentive response maps (predicted {classes[pred]}, p={probs[pred]:.3f})"),
        }
        own = np.asarray(image_template(net, image, rule=rule, select=select, k=k))
        if pred not in reference_templates and classes[pred] in REPRESENTATIVES:
            ref = take(prepare_structures([representative_atoms(classes[pred])], target=target), 0)
            reference_templates[pred] = np.asarray(image_template(net, fingerprint(fp_fn, ref), rule=rule,
                                                                  select=select, k=k))
        tiles = [own] + ([reference_templates[pred]] if pred in reference_templates else [])
        names = ["this structure"] + ([f"{classes[pred]} template ({REPRESENTATIVES[classes[pred]][1]})"]
                                      if pred in reference_templates else [])
        files["template"] = plot_class_templates(np.stack(tiles), names, out / f"{tag}template.png",
                                                 title=f"last-layer map sum vs the {classes[pred]} template")
        grad = np.asarray(sal.positions[pred])
        per_atom = np.asarray(atom_saliency(grad, s.mask))
        grad_logit = np.asarray(saliency(net, fp_fn, s, output="logit").positions[pred])
        per_atom_logit = np.asarray(atom_saliency(grad_logit, s.mask))
        files["saliency_extxyz"] = write_saliency_extxyz(
            s, per_atom, out / f"{tag}saliency.extxyz", gradient=grad,
            arrays={"occupancy_saliency": np.asarray(sal.occupancy[pred]), "saliency_logit": per_atom_logit},
            info={"predicted": classes[pred], "probability": float(probs[pred])})
        files["saliency_png"] = plot_saliency(s, per_atom, out / f"{tag}saliency.png",
                                              title=f"|d p({classes[pred]}) / d x| per atom (p={probs[pred]:.3f})",
                                              label="|dp/dx| (1/Å, scaled)")
        files["saliency_logit_png"] = plot_saliency(
            s, per_atom_logit, out / f"{tag}saliency_logit.png",
            title=f"|d logit({classes[pred]}) / d x| per atom (does not saturate at p ~ 1)",
            label="|d logit/dx| (1/Å, scaled)")
        summary["frames"].append({
            "frame": i, "predicted": classes[pred],
            "probabilities": {c: float(p) for c, p in zip(classes, probs)},
            "top_filters": {f"conv{l + 1}": [int(x) for x in np.asarray(m.filters)] for l, m in maps.items()},
            "saliency_max": float(per_atom.max()), "saliency_mean": float(per_atom[np.asarray(s.mask) > 0.5].mean()),
            "saliency_logit_mean": float(per_atom_logit[np.asarray(s.mask) > 0.5].mean()),
            "files": {key: str(v) for key, v in files.items()},
        })
    (out / "explain.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = [
    "LAYERS", "TOP_K", "RULES", "REPRESENTATIVES", "Net", "as_net", "n_conv_layers", "conv_features",
    "filter_scores", "top_filters", "backproject", "ResponseMaps", "response_maps", "attentive_response_maps",
    "image_template", "class_templates", "class_probabilities", "OUTPUTS", "make_probability_fn", "Saliency",
    "saliency",
    "probability_saliency", "occupancy_saliency", "atom_saliency", "fingerprint_sensitivity",
    "wavelength_derivative", "write_saliency_extxyz", "plot_response_maps", "plot_class_templates",
    "plot_saliency", "plot_fingerprint", "load_net", "fingerprint_configs", "cached_fingerprint_fn",
    "fingerprint", "representative_atoms", "class_examples", "explain_file",
]
