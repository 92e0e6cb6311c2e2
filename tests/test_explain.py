"""Guided-backprop response maps, class templates, the randomised-weights control, saliency,
sensitivity, writers, explain_file and the attention / sensitivity experiments.

Most tests use a tiny randomly drawn ConvNet (a Classifier with a 16-pixel detector) on a 27-atom
cluster, with independent NumPy / lax references.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crystaljax.analysis import attention as att
from crystaljax.analysis import report
from crystaljax.analysis import saliency as sal
from crystaljax.analysis.explain import explain_file
from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, ModelConfig
from crystaljax.learn.checkpoint import Checkpoint
from crystaljax.learn.classifier import Classifier
from crystaljax.learn.model import ConvNet
from crystaljax.physics.fingerprint import make_fingerprint_fn
from crystaljax.structure import from_arrays

from conftest import lattice_cluster
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_DET = DetectorConfig(name="tiny", n_pixels=16, pixel_size=1.6e-3, distance=0.1, inner_mask_radius=1.5)
FILTERS = (6, 6, 5, 5, 4, 4)
TINY_CFG = ModelConfig(n_classes=7, filters=FILTERS, kernel=3, dense=8, image_size=16)


def tiny_classifier(seed: int = 3) -> Classifier:
    """A tiny ConvNet (the layer pattern of Table 2) with NumPy-drawn weights and the 16-pixel detector."""
    from crystaljax.structures.dataset import CLASSES

    abstract = nnx.eval_shape(lambda: ConvNet.from_config(TINY_CFG, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    rng = np.random.default_rng(seed)

    def draw(path, x):
        name = str(path[-1].key)
        if name == "kernel":
            return jnp.asarray(rng.normal(size=x.shape) / np.sqrt(np.prod(x.shape[:-1])), jnp.float32)
        if name == "bias" and path[0].key != "bn":
            return jnp.asarray(0.05 * rng.normal(size=x.shape), jnp.float32)
        return jnp.ones(x.shape, jnp.float32) if name in ("scale", "var") else jnp.zeros(x.shape, jnp.float32)

    fill = lambda tree: jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(tree))  # noqa: E731
    card = {"classes": list(CLASSES), "detector": dataclasses.asdict(TINY_DET)}
    return Classifier(Checkpoint(graphdef, fill(params), fill(rest), TINY_CFG, card))


@pytest.fixture(scope="module")
def clf():
    return tiny_classifier()


@pytest.fixture(scope="module")
def tiny_model_dir(clf, tmp_path_factory):
    """The tiny model saved in the shipped format, with the 16-pixel detector in its card."""
    from crystaljax.learn.checkpoint import save

    ck = clf.checkpoint
    return save(tmp_path_factory.mktemp("tiny_model"), ck.params, ck.batch_stats, TINY_CFG, ck.card)


@pytest.fixture(scope="module")
def fp_fn(clf):
    return clf.fingerprint_fn


@pytest.fixture(scope="module")
def probe(clf):
    """The float32 probability-saliency probe, compiled once for every n_max = 32 structure of the module."""
    return sal.SaliencyProbe(clf)


@pytest.fixture(scope="module")
def structure():
    """A jittered 3x3x3 simple-cubic Fe cluster (27 atoms) padded to 32 rows."""
    pos = lattice_cluster([[0, 0, 0]], np.eye(3), (3, 3, 3), jitter=0.05, seed=1)
    tags = np.arange(len(pos)) % 2
    return from_arrays(pos, np.full(len(pos), 26), n_max=32, tags=tags, nn_distance=2.5)


@pytest.fixture(scope="module")
def image(fp_fn, structure):
    return np.asarray(jax.jit(fp_fn)(structure))


# ----------------------------------------------------------------------------------------------
# independent references


def _conv_same_np(x, w, b):
    """NumPy 'SAME' cross-correlation, x (H, W, Cin), w (k, k, Cin, Cout) -> (H, W, Cout)."""
    k = w.shape[0]
    p = k // 2
    xp = np.pad(x, ((p, p), (p, p), (0, 0)))
    h, wd = x.shape[:2]
    out = np.zeros((h, wd, w.shape[-1]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("yxc,co->yxo", xp[i:i + h, j:j + wd], w[i, j])
    return out + b


def _conv_same_T_np(g, w):
    """Adjoint of _conv_same_np (no bias): g (H, W, Cout) -> (H, W, Cin)."""
    k = w.shape[0]
    p = k // 2
    h, wd = g.shape[:2]
    out = np.zeros((h + 2 * p, wd + 2 * p, w.shape[2]))
    for i in range(k):
        for j in range(k):
            out[i:i + h, j:j + wd] += np.einsum("yxo,co->yxc", g, w[i, j])
    return out[p:p + h, p:p + wd]


def _pool_np(x):
    """2x2 max-pool with switches: (H, W, C) -> pooled (H/2, W/2, C), switch mask (H, W, C)."""
    h, w, c = x.shape
    blocks = x.reshape(h // 2, 2, w // 2, 2, c).transpose(0, 2, 4, 1, 3).reshape(h // 2, w // 2, c, 4)
    arg = blocks.argmax(-1)
    onehot = np.eye(4)[arg].reshape(h // 2, w // 2, c, 2, 2).transpose(0, 3, 1, 4, 2).reshape(h, w, c)
    return blocks.max(-1), onehot


def _unpool_np(g, switches):
    return np.repeat(np.repeat(g, 2, axis=0), 2, axis=1) * switches


def _weights(clf, i):
    conv = clf.checkpoint.params["convs"][i]
    return np.asarray(conv["kernel"], np.float64), np.asarray(conv["bias"], np.float64)


def _forward_np(clf, image, layer):
    """Pre-activations and post-ReLU maps of layers 0..layer, plus pool switches (NumPy, float64)."""
    x = np.asarray(image, np.float64)
    pre, switches = [], {}
    for i in range(layer + 1):
        w, b = _weights(clf, i)
        z = _conv_same_np(x, w, b)
        pre.append(z)
        x = np.maximum(z, 0.0)
        if i in (1, 3) and i < layer:
            x, switches[i] = _pool_np(x)
    return pre, x, switches


def _backproject_np(clf, image, layer, seed, rule):
    """The deconvnet / guided back-projection written out layer by layer in NumPy."""
    pre, _, switches = _forward_np(clf, image, layer)
    g = np.asarray(seed, np.float64)
    for i in range(layer, -1, -1):
        if i in switches:
            g = _unpool_np(g, switches[i])
        g = np.maximum(g, 0.0)
        if rule == "guided":
            g = g * (pre[i] > 0)
        g = _conv_same_T_np(g, _weights(clf, i)[0])
    return g


def _lax_features(params, image, layer):
    """Feature map of ``layer`` with plain lax ops on the params dict (independent of the NNX module)."""
    x = image[None]
    for i in range(layer + 1):
        w, b = params["convs"][i]["kernel"], params["convs"][i]["bias"]
        x = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
        x = jax.nn.relu(x)
        if i in (1, 3) and i < layer:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return x[0]


# ----------------------------------------------------------------------------------------------
# attentive response maps


def test_response_maps_shape_nonnegative_finite(clf, image):
    maps = att.attentive_response_maps(clf, image, layers=(0, 2, 5), k=4)
    assert sorted(maps) == [0, 2, 5]
    for layer, r in maps.items():
        m = np.asarray(r.maps)
        assert m.shape == (4, 16, 16, 3)
        assert np.all(np.isfinite(m)) and m.min() >= 0.0
        assert m.max() > 0.0, f"layer {layer}: all response maps vanish"
        assert len(set(np.asarray(r.filters).tolist())) == 4
    # k larger than the layer is clipped to its number of filters
    assert att.response_maps(clf, image, 5, k=10).maps.shape == (4, 16, 16, 3)
    with pytest.raises(ValueError, match="layer 6 out of range"):
        att.response_maps(clf, image, 6)


# each rule on the first layer, after one pooling and after both (the last layer)
@pytest.mark.parametrize("layer,select", [(0, "mean"), (2, "max"), (5, "mean"), (5, "max")])
def test_top_filters_are_the_most_activated(clf, image, layer, select):
    feats = np.asarray(_lax_features(clf.checkpoint.params, jnp.asarray(image), layer), np.float64)
    direct = feats.mean(axis=(0, 1)) if select == "mean" else feats.max(axis=(0, 1))
    k = 3
    idx, scores = att.top_filters(clf, image, layer, k=k, select=select)
    np.testing.assert_allclose(np.asarray(scores), np.sort(direct)[::-1][:k], rtol=1e-4, atol=1e-7)
    assert set(np.asarray(idx).tolist()) == set(np.argsort(direct)[::-1][:k].tolist())
    r = att.response_maps(clf, image, layer, k=k, select=select)
    np.testing.assert_array_equal(np.asarray(r.filters), np.asarray(idx))


@pytest.mark.parametrize("layer", [1, 5])  # before any pooling, after both
def test_gradient_rule_is_the_vjp_and_linear(clf, image, layer):
    img = jnp.asarray(image)
    feats, vjp = jax.vjp(lambda x: _lax_features(clf.checkpoint.params, x, layer), img)
    keys = jax.random.split(jax.random.key(layer), 2)
    s1, s2 = (jax.random.normal(k, feats.shape) for k in keys)
    got = np.asarray(att.backproject(clf, img, layer, jnp.stack([s1, s2, 2.0 * s1 - 3.0 * s2]), rule="gradient"))
    want = np.asarray(vjp(s1)[0])
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got[0], want, atol=1e-5 * scale)
    np.testing.assert_allclose(got[1], np.asarray(vjp(s2)[0]), atol=1e-5 * scale)
    np.testing.assert_allclose(got[2], 2.0 * got[0] - 3.0 * got[1], atol=1e-5 * scale)


@pytest.mark.parametrize("rule,layer",
                         [("deconvnet", 1), ("guided", 1), ("guided", 2), ("guided", 5)])
def test_backprojection_matches_numpy_deconvnet(clf, image, rule, layer):
    """Transposed convolutions, un-pooling through the max switches and the backward ReLU, written in NumPy."""
    feats = np.asarray(att.conv_features(clf, jnp.asarray(image)[None], layer)[0])
    f = int(np.argmax(feats.mean(axis=(0, 1))))
    seed = np.zeros_like(feats)
    seed[..., f] = feats[..., f]
    want = _backproject_np(clf, image, layer, seed, rule)
    got = np.asarray(att.backproject(clf, image, layer, seed, rule=rule))
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got, want, atol=2e-5 * scale)
    # positively homogeneous in the seed
    np.testing.assert_allclose(np.asarray(att.backproject(clf, image, layer, 2.5 * seed, rule=rule)), 2.5 * got,
                               atol=2e-5 * scale)
    # and the response map is the positive part of the back-projection of that filter's map
    r = att.response_maps(clf, image, layer, k=1, rule=rule)
    assert int(r.filters[0]) == f
    np.testing.assert_allclose(np.asarray(r.maps[0]), np.maximum(got, 0.0), atol=2e-5 * scale)


def test_keep_max_backprojects_a_single_activation(clf, image):
    layer = 2
    r = att.response_maps(clf, image, layer, k=1, keep="max", rule="guided")
    feats = np.asarray(att.conv_features(clf, jnp.asarray(image)[None], layer)[0])
    f = int(r.filters[0])
    seed = np.zeros_like(feats)
    y, x = np.unravel_index(np.argmax(feats[..., f]), feats.shape[:2])
    seed[y, x, f] = feats[y, x, f]
    want = np.maximum(_backproject_np(clf, image, layer, seed, "guided"), 0.0)
    np.testing.assert_allclose(np.asarray(r.maps[0]), want, atol=2e-5 * max(want.max(), 1e-12))


def test_class_templates(clf, image, tmp_path):
    images = np.stack([image, image[::-1], image[:, ::-1]])
    labels = np.array([2, 2, 5])
    templates, counts = att.class_templates(clf, images, labels, n_classes=7, k=4)
    assert templates.shape == (7, 16, 16, 3) and counts.tolist() == [0, 0, 2, 0, 0, 1, 0]
    gb = att.GuidedBackprop(clf, 4)  # the defaults of response_maps, compiled once for the three images
    per_image = [np.asarray(gb.maps(im, 5).maps).sum(0) for im in images]
    np.testing.assert_allclose(templates[2], (per_image[0] + per_image[1]) / 2, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(templates[5], per_image[2], rtol=1e-5, atol=1e-8)
    assert np.all(templates[[0, 1, 3, 4, 6]] == 0)
    with pytest.raises(ValueError):
        att.class_templates(clf, images, np.array([0, 1, 7]), n_classes=7)


# ----------------------------------------------------------------------------------------------
# gradient probing


def test_probability_saliency_matches_finite_differences(clf, probe, structure):
    cls = 4
    with jax.enable_x64(True):
        fn64 = make_fingerprint_fn(TINY_DET, BeamConfig(), FingerprintConfig())
        s64 = structure._replace(positions=np.asarray(structure.positions, np.float64))
        probe64 = sal.SaliencyProbe(clf, fingerprint_fn=fn64)  # one compiled function gives p and its Jacobian
        grad = np.asarray(probe64(s64).positions[cls])
        assert grad.dtype == np.float64 and grad.shape == (32, 3)
        prob = lambda pos: float(probe64(s64._replace(positions=pos)).probabilities[cls])  # noqa: E731
        h = 1e-5
        for atom, axis in [(0, 0), (5, 1), (13, 2), (26, 0)]:
            plus, minus = (np.array(s64.positions) for _ in range(2))
            plus[atom, axis] += h
            minus[atom, axis] -= h
            fd = (prob(plus) - prob(minus)) / (2 * h)
            assert abs(fd - grad[atom, axis]) <= 1e-4 * np.abs(grad).max() + 1e-3 * abs(fd), (atom, axis, fd)
    # the float32 production path is close to float64
    g32 = np.asarray(probe(structure).positions[cls])
    assert g32.dtype == np.float32
    assert np.linalg.norm(g32 - grad) <= 0.05 * np.linalg.norm(grad)


def test_masked_atoms_have_zero_saliency(clf, probe, fp_fn, structure):
    mask = np.array(structure.mask)
    mask[[2, 7]] = 0.0  # two vacancies; rows 27..31 are padding
    s = structure._replace(mask=mask)
    res = probe(s)
    grads = np.asarray(res.positions)  # (7, n_max, 3), raw gradients, no explicit masking
    gone = mask == 0
    assert np.all(grads[:, gone] == 0.0)
    assert np.abs(grads[:, ~gone]).max() > 0
    per_atom = np.asarray(sal.atom_saliency(grads, mask))
    assert per_atom.shape == (7, 32) and np.all(per_atom[:, gone] == 0) and np.all(per_atom[:, ~gone] > 0)
    occ = np.asarray(res.occupancy)
    assert np.all(occ[:, 27:] == 0.0), "padding rows (Z = 0) scatter nothing"
    assert np.all(np.abs(occ[:, [2, 7]]).max(axis=1) > 0), "a vacancy can be refilled"
    # the fingerprint is normalised: scaling every weight changes nothing, so sum_j w_j dp/dw_j = 0
    euler = (occ * mask).sum(axis=1)
    assert np.all(np.abs(euler) <= 1e-3 * np.abs(occ * mask).sum(axis=1))
    # single-class gradient = that row of the all-class Jacobian
    np.testing.assert_allclose(np.asarray(sal.probability_saliency(clf, s, 3)), grads[3], rtol=1e-5,
                               atol=1e-6 * np.abs(grads[3]).max())
    sens = np.asarray(sal.fingerprint_sensitivity(fp_fn, s, method="hutchinson", key=jax.random.key(1), n_probes=256))
    assert np.all(sens[gone] == 0) and np.all(sens[~gone] > 0)


def test_logit_saliency_obeys_the_softmax_chain_rule(clf, probe, structure):
    """d p_c = p_c (d l_c - sum_k p_k d l_k): the probability and logit Jacobians must agree."""
    sp = probe(structure)
    sl = sal.saliency(clf, structure, output="logit")
    p = np.asarray(sl.probabilities, np.float64)
    np.testing.assert_allclose(p, np.asarray(sp.probabilities), rtol=1e-6)
    for field in ("positions", "occupancy"):
        dl = np.asarray(getattr(sl, field), np.float64)
        want = p.reshape((-1,) + (1,) * (dl.ndim - 1)) * (dl - np.tensordot(p, dl, axes=1)[None])
        got = np.asarray(getattr(sp, field))
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    with pytest.raises(ValueError, match="unknown output"):
        sal.saliency(clf, structure, output="loss")


def test_fingerprint_sensitivity_exact_and_hutchinson(fp_fn, structure):
    with jax.enable_x64(True):
        fn64 = make_fingerprint_fn(TINY_DET)
        s64 = structure._replace(positions=np.asarray(structure.positions, np.float64))
        exact = np.asarray(sal.fingerprint_sensitivity(fn64, s64, method="exact", chunk=16))
        f = jax.jit(fn64)
        atom, h = 4, 1e-6
        cols = []
        for axis in range(3):
            plus, minus = (np.array(s64.positions) for _ in range(2))
            plus[atom, axis] += h
            minus[atom, axis] -= h
            cols.append((np.asarray(f(s64._replace(positions=plus))) - np.asarray(f(s64._replace(positions=minus))))
                        / (2 * h))
        fd = np.sqrt(sum(np.sum(c * c) for c in cols))
        np.testing.assert_allclose(exact[atom], fd, rtol=1e-4)
    est = np.asarray(sal.fingerprint_sensitivity(fp_fn, structure, method="hutchinson",
                                                key=jax.random.key(0), n_probes=256))
    present = np.asarray(structure.mask) > 0
    # relative error of a 256-probe estimate of s^2 is ~ sqrt(2/256) ~ 9 %
    assert np.abs(est[present] / exact[present] - 1).mean() < 0.1
    with pytest.raises(ValueError, match="needs a jax.random key"):
        sal.fingerprint_sensitivity(fn64, structure, method="hutchinson")


def test_wavelength_derivative_matches_finite_differences(structure):
    with jax.enable_x64(True):
        s64 = structure._replace(positions=np.asarray(structure.positions, np.float64))
        lam = 5e-12
        image, d = sal.wavelength_derivative(s64, lam, detector=TINY_DET)
        fn = jax.jit(make_fingerprint_fn(TINY_DET, wavelength_arg=True))
        h = 1e-16  # metres = 1e-4 pm
        fd = (np.asarray(fn(s64, lam + h)) - np.asarray(fn(s64, lam - h))) / (2 * h * 1e12)
        np.testing.assert_allclose(np.asarray(image), np.asarray(fn(s64, lam)), atol=1e-12)
        np.testing.assert_allclose(np.asarray(d), fd, atol=1e-5 * np.abs(fd).max())
        assert np.abs(fd).max() > 0


# ----------------------------------------------------------------------------------------------
# writers


def test_extxyz_round_trip(structure, tmp_path):
    import ase.io

    mask = np.array(structure.mask)
    mask[3] = 0.0
    s = structure._replace(mask=mask)
    values = np.arange(32, dtype=np.float64) * 0.5 + 1.0
    grad = np.random.default_rng(0).normal(size=(32, 3))
    path = report.write_saliency_extxyz(s, values, tmp_path / "sal.extxyz", gradient=grad, info={"p": 0.5})
    atoms = ase.io.read(path)
    keep = mask > 0
    assert len(atoms) == 26
    np.testing.assert_allclose(atoms.arrays["saliency"], values[keep], atol=1e-7)
    np.testing.assert_allclose(atoms.arrays["saliency_grad"], grad[keep], atol=1e-7)
    np.testing.assert_allclose(atoms.positions, np.asarray(s.positions, np.float64)[keep], atol=1e-6)
    assert atoms.info["p"] == 0.5 and atoms.info["nn_distance"] == pytest.approx(2.5)
    # every real site, flagged, in physical Å
    atoms = ase.io.read(report.write_saliency_extxyz(s, values, tmp_path / "all.extxyz", include_masked=True,
                                                 physical=True))
    assert len(atoms) == 27 and atoms.arrays["present"].tolist() == keep[:27].astype(int).tolist()
    np.testing.assert_allclose(atoms.positions, np.asarray(s.positions, np.float64)[:27] * 2.5, atol=1e-5)
    np.testing.assert_allclose(atoms.arrays["saliency"], values[:27])
    with pytest.raises(ValueError, match="rows"):
        report.write_saliency_extxyz(s, values[:5], tmp_path / "bad.extxyz")


def test_plots_write_pngs(clf, image, structure, tmp_path):
    maps = att.attentive_response_maps(clf, image, layers=(0, 5), k=2)
    paths = [
        report.plot_response_maps(maps, tmp_path / "maps.png", image=image, title="t"),
        report.plot_response_maps({0: np.asarray(maps[0].maps)}, tmp_path / "maps_raw.png"),
        report.plot_class_templates(np.random.default_rng(0).random((3, 16, 16, 3)), ["a", "b", "c"],
                                tmp_path / "templates.png", counts=[1, 2, 3]),
        report.plot_saliency(structure._replace(mask=np.where(np.arange(32) == 1, 0.0, structure.mask)),
                         np.linspace(0, 1, 32), tmp_path / "sal.png", title="s", highlight=np.arange(32) % 3 == 0),
        report.plot_fingerprint(image, tmp_path / "fp.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000


def test_randomized_weights_control_changes_the_maps(clf, image):
    """The control keeps architecture, classes and fingerprints but not the weights, and its maps differ."""
    control = att.randomized_classifier(clf, seed=5)
    assert control.classes == clf.classes and control.spec == clf.spec
    assert jax.tree.structure(control.checkpoint.params) == jax.tree.structure(clf.checkpoint.params)
    assert not np.allclose(np.asarray(control.checkpoint.params["convs"][0]["kernel"]),
                           np.asarray(clf.checkpoint.params["convs"][0]["kernel"]))
    for layer in (0, 5):
        a = np.asarray(att.response_maps(clf, image, layer, 2).maps).sum(0)
        b = np.asarray(att.response_maps(control, image, layer, 2).maps).sum(0)
        assert a.max() > 0 and b.max() > 0
        assert np.abs(a / a.max() - b / b.max()).max() > 0.1
        assert att.map_similarity(a, b) < 0.99
    assert att.map_similarity(a, 3.0 * a) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# the CLI helper and the experiments (the tiny model in the shipped format keeps the runs small)


def test_explain_file(tiny_model_dir, clf, tmp_path):
    from crystaljax.errors import InputFileError

    loaded = Classifier.load(tiny_model_dir)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded.checkpoint.params),
                                                    jax.tree.leaves(clf.checkpoint.params)))
    assert loaded.spec.detector == TINY_DET
    with pytest.raises(InputFileError):
        explain_file(ROOT / "crystaljax" / "examples" / "Cu_fcc.cif", tmp_path / "x", model_dir=tmp_path)
    summary = explain_file(ROOT / "crystaljax" / "examples" / "Fe_bcc.POSCAR", tmp_path / "out",
                           model_dir=tiny_model_dir, target=30, layers=(5,), k=2)
    (frame,) = summary["frames"]
    assert frame["predicted"] in summary["classes"]
    assert abs(sum(frame["probabilities"].values()) - 1) < 1e-4
    for key in ("fingerprint", "response_maps", "template", "saliency_extxyz", "saliency_png", "saliency_logit_png"):
        assert Path(frame["files"][key]).stat().st_size > 0
    import ase.io

    atoms = ase.io.read(frame["files"]["saliency_extxyz"])
    assert "saliency" in atoms.arrays and np.all(atoms.arrays["saliency"] >= 0)
    # every atom matters except one on the cluster's inversion centre (|F|^2 changes at second order)
    off_centre = np.linalg.norm(atoms.positions - atoms.positions.mean(0), axis=1) > 1e-3
    assert np.all(atoms.arrays["saliency_logit"][off_centre] > 0)
    assert (tmp_path / "out" / "explain.json").is_file()


def test_explain_scale_option_sets_the_cluster_scale(tiny_model_dir, tmp_path, capsys):
    """``crystaljax explain --scale`` as ``classify --scale``: robust (the default) keeps the crystal's
    nearest-neighbour distance under displacements, mean shortens it; an unknown estimator is one line."""
    import ase.io
    from ase.build import bulk

    from crystaljax.cli import build_parser, main
    from crystaljax.structures.cluster import prepare

    noisy = tmp_path / "noisy.extxyz"
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True).repeat((4, 4, 4))
    atoms.rattle(0.12, seed=0)  # Gaussian displacements, 0.12 Å per component
    ase.io.write(noisy, atoms, format="extxyz")
    assert build_parser().parse_args(["explain", str(noisy), "--out", "x"]).scale == "robust"
    assert main(["explain", str(noisy), "--out", str(tmp_path / "mean"), "--model", str(tiny_model_dir),
                 "--scale", "mean"]) == 0
    nn_mean = ase.io.read(tmp_path / "mean" / "saliency.extxyz").info["nn_distance"]
    nn = {s: prepare(atoms.copy(), scale=s).info["nn_distance"] for s in ("robust", "mean")}
    assert nn["robust"] == pytest.approx(3.615 / np.sqrt(2), rel=0.02)
    assert nn_mean == pytest.approx(nn["mean"], rel=1e-5) and nn_mean < 0.95 * nn["robust"]
    capsys.readouterr()
    assert main(["explain", str(noisy), "--out", str(tmp_path / "bad"), "--scale", "median"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--scale" in err and "'median'" in err


def _config(name, *overrides):
    from crystaljax.config import compose

    return compose(name, ["run=smoke", *overrides])


@pytest.mark.slow
def test_attention_run(tiny_model_dir, tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)  # save_docs also writes docs/results/attention_config.yaml under the launch directory
    out = tmp_path / "attention"
    cfg = _config("attention", f"model_dir={tiny_model_dir}", f"docs_dir={tmp_path / 'docs'}", "save_docs=true")
    att.run(cfg, out)
    summary = json.loads((out / "attention.json").read_text())
    assert summary["smoke"] and summary["classes"] == ["sc", "bcc"] and "guided backprop" in summary["method"]
    for name in ("response_maps_sc.png", "response_maps_bcc_random.png", "class_templates.png", "attention.npz"):
        assert (out / name).stat().st_size > 0
    assert (tmp_path / "docs" / "attention_class_templates.png").is_file()
    npz = np.load(out / "attention.npz")
    assert npz["maps/sc/conv1"].shape == (4, 16, 16, 3) and npz["templates"].shape == (7, 16, 16, 3)
    assert not np.allclose(npz["maps/sc/conv6"], npz["maps_random/sc/conv6"])
    assert np.all(npz["maps/bcc/conv6"] >= 0) and npz["template_counts"].tolist() == [0, 0, 0, 1, 0, 0, 1]
    layer = summary["results"]["bcc"]["layers"]["conv6"]
    assert len(layer["filters"]) == 4 and -1 <= layer["random_weights"]["rank_correlation_of_summed_maps"] <= 1


@pytest.mark.slow
def test_sensitivity_run(tiny_model_dir, tmp_path):
    import json

    import ase.io

    out = tmp_path / "sensitivity"
    sal.run(_config("sensitivity", f"model_dir={tiny_model_dir}"), out)
    summary = json.loads((out / "sensitivity.json").read_text())
    rows = summary["sublattice"]["rows"]
    assert [r["fraction"] for r in rows] == [0.0, 1.0]
    assert rows[0]["n_body_centre"] > 0 and rows[1]["n_body_centre"] == 0
    atoms = ase.io.read(out / "sublattice" / "bcc_remove_100.extxyz")
    gone = atoms.arrays["present"] == 0
    assert gone.any() and np.all(atoms.get_tags()[gone] == 1)
    off_centre = np.linalg.norm(atoms.positions - atoms.positions[~gone].mean(0), axis=1) > 1e-3
    assert np.all(atoms.arrays["saliency_bcc"][gone] == 0)
    assert np.all(atoms.arrays["saliency_sc"][~gone & off_centre] > 0)
    disp = summary["displacement"]["results"]["bcc"]["rows"]
    assert [r["sigma"] for r in disp] == [0.0, 0.1]
    assert disp[0]["delta_fingerprint"] == 0.0 and disp[1]["delta_fingerprint"] > 0
    for name in ("sublattice.png", "displacement.png"):
        assert (out / name).stat().st_size > 0
