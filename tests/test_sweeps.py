"""Defect sweeps (Table 1), the spglib baseline and the transitions (Fig. 4): the defects really
applied, the vmapped sweep equal to a direct computation, schemas, intervals and windows."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from crystaljax.analysis import defect_sweeps as dsw
from crystaljax.analysis import report, spglib_baseline as spg, transitions
from crystaljax.config import DataConfig
from crystaljax.physics import defects
from crystaljax.structure import take
from crystaljax.structures.dataset import CLASSES

SYMPRECS = ["0.1", "0.01", "0.001", "1e-05"]


@pytest.fixture(scope="module")
def ds():
    """The data=tiny set (4 per class, 1 test structure per class), built in ~1 s."""
    return dsw.load_dataset(DataConfig(name="tiny", per_class=4, splits=(0.5, 0.25, 0.25), workers=1), seed=0)


@pytest.fixture(scope="module")
def test_idx(ds):
    idx = dsw.select_indices(ds, "test")
    assert sorted(np.asarray(ds.labels)[idx].tolist()) == list(range(len(CLASSES)))
    return idx


@pytest.fixture(scope="module")
def supercells(ds, test_idx):
    return spg.build_supercells(ds, test_idx)


class StandIn:
    """A model-like object (fingerprint_fn, apply) for wiring tests; spec None -> grouped by fingerprint_fn."""

    spec = None

    def __init__(self, fingerprint_fn, apply):
        self.fingerprint_fn, self.apply = fingerprint_fn, apply


def constant(cls: int, fingerprint_fn):
    return StandIn(fingerprint_fn, lambda images: jax.nn.one_hot(jnp.full(images.shape[0], cls), len(CLASSES)))


def stand_in_fingerprint(s):
    """A cheap (4, 4, 3) image (the sweeps only pass it on)."""
    return jnp.zeros((4, 4, 3)) + jnp.sum(s.mask)


def wiring_fingerprint(s):
    """A stand-in image that sees the mask, the positions and the species of a Structure."""
    m = s.mask
    v = jnp.stack([jnp.sum(m), jnp.sum(m[:, None] * s.positions ** 2), jnp.sum(m * s.numbers)])
    return jnp.broadcast_to(v, (2, 2, 3))


def linear_model(fingerprint_fn):
    """Probabilities that depend smoothly on every pixel (softmax of a fixed linear map)."""
    w = jnp.asarray(np.random.default_rng(0).normal(size=(12, len(CLASSES))), jnp.float32)
    return StandIn(fingerprint_fn, lambda images: jax.nn.softmax(
        jnp.log1p(jnp.abs(images.reshape(images.shape[0], -1))) @ w, axis=-1))


# ------------------------------------------------------------------ the defects really applied


@pytest.mark.parametrize("fraction", [0.01, 0.25, 0.6])
def test_vacancy_count_clusters_and_supercells(ds, test_idx, supercells, fraction):
    clusters = take(ds.structures, test_idx)
    for batch in (clusters, supercells.structures):
        n = np.asarray(batch.mask).sum(1)
        out = dsw.defect_batch(batch, "vacancies", fraction, 0, test_idx)
        want = n - np.round(np.float32(fraction) * n.astype(np.float32))
        np.testing.assert_array_equal(out.mask.sum(1), want)
        assert np.all(out.mask <= batch.mask) and np.all(want < n)


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_displacement_scale_is_physical_angstrom(ds, test_idx, supercells, sigma):
    clusters = take(ds.structures, test_idx)
    out = dsw.defect_batch(clusters, "displacement", sigma, 1, test_idx)
    m = np.asarray(clusters.mask) > 0
    phys = (out.positions - clusters.positions) * np.asarray(clusters.nn_distance)[:, None, None]
    assert abs(phys[m].std() / sigma - 1) < 0.05
    assert np.all(out.positions[~m] == clusters.positions[~m])
    cells = spg.defective_cells(supercells, "displacement", sigma, 1)
    d = np.concatenate([frac @ lat - supercells.positions[k, :len(frac)] for k, (lat, frac, _) in enumerate(cells)])
    assert abs(d.std() / sigma - 1) < 0.05


def test_substitution_count_and_species(ds, test_idx):
    clusters = take(ds.structures, test_idx)
    elements = dsw.substitution_elements(ds, test_idx, seed=3)
    host = np.asarray(ds.meta["element"])[test_idx]
    assert np.all(elements != host[:, None]) and np.all(elements[:, 0] != elements[:, 1])
    for alloy, n_new in (("binary", 1), ("ternary", 2)):
        out = dsw.defect_batch(clusters, "substitution", f"{alloy}_0.25", 3, test_idx, elements=elements)
        for k in range(len(test_idx)):
            m = clusters.mask[k] > 0
            changed = out.numbers[k][m] != host[k]
            assert changed.sum() == round(0.25 * int(m.sum()))
            assert set(np.unique(out.numbers[k][m][changed])) == set(elements[k, :n_new].tolist())


def test_draws_do_not_depend_on_the_batch(ds, test_idx):
    full = dsw.defect_batch(take(ds.structures, test_idx), "vacancies", 0.3, 0, test_idx)
    one = dsw.defect_batch(take(ds.structures, test_idx[2:3]), "vacancies", 0.3, 0, test_idx[2:3])
    np.testing.assert_array_equal(full.mask[2], one.mask[0])
    other = dsw.defect_batch(take(ds.structures, test_idx), "vacancies", 0.3, 1, test_idx)
    assert not np.array_equal(full.mask, other.mask)


# ------------------------------------------------------------------ the vmapped sweep = a direct computation


def _direct(kind, level, seed, s, index, elements, fingerprint_fn):
    """One structure, one level, written out with the stage functions of physics.defects directly."""
    value, n_new = dsw.level_value(kind, level)
    key = dsw.defect_keys(seed, kind, level, [index])[0]
    if kind == "displacement":
        out = defects.displace(key, s, value)
    elif kind == "vacancies":
        out = defects.vacancies(key, s, value)
    elif kind == "sublattice":
        out = defects.remove_sublattice(key, s, value, 1)
    else:
        out = defects.substitute(key, s, value, tuple(int(e) for e in elements[:n_new]))  # a static tuple
    return np.asarray(fingerprint_fn(out))


@pytest.mark.parametrize("kind,levels", [("vacancies", [0.0, 0.1, 0.5]), ("displacement", [0.0, 0.02, 0.1]),
                                         ("substitution", ["binary_0.25", "ternary_0.5", "ternary_0.1"])])
def test_sweep_equals_direct_computation(ds, test_idx, kind, levels):
    idx = test_idx[:3]
    structures = take(ds.structures, idx)
    elements = dsw.substitution_elements(ds, idx, 4)
    model = linear_model(wiring_fingerprint)
    got = dsw.defective_probabilities({"m": model}, kind, structures, idx, levels, 4, elements=elements,
                                      batch_size=4)["m"]
    assert got.shape == (3, len(levels), len(CLASSES))
    for i in range(3):
        s = take(structures, i)
        for j, level in enumerate(levels):
            image = _direct(kind, level, 4, s, idx[i], elements[i], wiring_fingerprint)
            want = np.asarray(model.apply(jnp.asarray(image)[None]))[0]
            np.testing.assert_allclose(got[i, j], want, rtol=1e-5, atol=1e-7)
    # the images are of defective structures (non-zero levels differ from the pristine ones)
    pristine = np.stack([np.asarray(wiring_fingerprint(take(structures, i))) for i in range(3)])
    if kind != "substitution":
        np.testing.assert_allclose(got[:, 0], np.asarray(model.apply(jnp.asarray(pristine))), rtol=1e-6)
    assert np.all(np.abs(got[:, -1] - np.asarray(model.apply(jnp.asarray(pristine)))).max(-1) > 0)


def test_sweep_accuracy_equals_direct_argmax_with_a_real_classifier(ds, test_idx):
    """A Classifier (tiny ConvNet, 16-pixel detector) through convnet_sweep vs fingerprint + network by hand."""
    from test_explain import tiny_classifier

    clf = tiny_classifier()
    idx = test_idx[:2]
    res = dsw.convnet_sweep({"c": clf}, ds, {"vacancies": [0.2, 0.6]}, seeds=[0], indices=idx, batch_size=4)["c"]
    labels = np.asarray(ds.labels)[idx]
    for level in (0.2, 0.6):
        probs = []
        for i, index in enumerate(idx):
            image = _direct("vacancies", level, 0, take(ds.structures, int(index)), index, None, clf.fingerprint_fn)
            probs.append(np.asarray(clf.apply(jnp.asarray(image)[None]))[0])
        want = float(np.mean(np.argmax(probs, -1) == labels))
        assert res["vacancies"][str(level)]["accuracy"] == want
        np.testing.assert_array_equal(np.asarray(res["vacancies"][str(level)]["confusion"]).sum(), len(idx))


# ------------------------------------------------------------------ spglib


def test_spglib_pristine_supercell_gives_parent_at_every_symprec(supercells):
    cells = spg.defective_cells(supercells, "vacancies", 0.0, 0)
    for cell, parent in zip(cells, supercells.spacegroup):
        assert len(cell[1]) >= 200
        assert spg.spacegroups(cell, dsw.SYMPRECS) == (parent,) * len(dsw.SYMPRECS)


def test_spglib_fails_on_one_percent_vacancies_at_tight_symprec(supercells):
    cells = spg.defective_cells(supercells, "vacancies", 0.01, 0)
    for cell, parent, full in zip(cells, supercells.spacegroup, supercells.structures.mask.sum(1)):
        assert len(cell[1]) < full
        assert spg.spacegroups(cell, [1e-5])[0] != parent


def test_binomial_interval_covers_and_narrows():
    from scipy.stats import binomtest

    lo, hi = spg.binomial_interval(27, 30)
    assert lo < 0.9 < hi and 0 <= lo and hi <= 1
    exact = binomtest(27, 30).proportion_ci(0.95, method="wilson")
    assert (lo, hi) == pytest.approx((exact.low, exact.high), abs=1e-9)
    assert spg.binomial_interval(0, 10)[0] == 0.0 and spg.binomial_interval(10, 10)[1] == 1.0
    w30, w300 = np.diff(spg.binomial_interval(15, 30)), np.diff(spg.binomial_interval(150, 300))
    assert w300 < w30 / 2.5


# ------------------------------------------------------------------ Table 1 results


def test_table1_schema_markdown_and_plot(ds, test_idx, tmp_path):
    levels = {"displacement": [0.001, 0.06], "vacancies": [0.4], "substitution": ["binary_0.25", "ternary_0.25"]}
    models = {"convnet": constant(0, stand_in_fingerprint),
              "convnet_augmented": constant(CLASSES.index("bcc"), stand_in_fingerprint)}
    results, details = dsw.table1(models, ds, levels, seeds=[0, 1], indices=test_idx,
                                  spglib_indices=test_idx[:2], batch_size=4)
    results = json.loads(json.dumps(results))
    assert set(results) == {"convnet", "convnet_augmented", "spglib", "n_structures", "seeds"}
    assert results["n_structures"] == len(test_idx) and results["seeds"] == [0, 1]
    for name in ("convnet", "convnet_augmented"):
        block = results[name]
        assert list(block["displacement"]) == ["0.001", "0.06"] and list(block["vacancies"]) == ["0.4"]
        assert list(block["substitution"]) == ["binary_0.25", "ternary_0.25"]
        for kind in ("displacement", "vacancies", "substitution"):
            assert all(v == pytest.approx(1 / 7) for v in block[kind].values())
        assert block["pristine"] == pytest.approx(1 / 7)
    assert list(results["spglib"]) == SYMPRECS
    for sp in SYMPRECS:
        assert results["spglib"][sp]["pristine"] == 1.0
    assert results["spglib"]["1e-05"]["vacancies"]["0.4"] == 0.0
    interval = details["spglib"]["1e-05"]["vacancies"]["0.4"]["interval_95"]
    assert interval[0] == 0.0 and 0 < interval[1] < 1
    rep = details["convnet"]["convnet"]["vacancies"]["0.4"]
    assert np.asarray(rep["confusion"]).sum() == 2 * len(test_idx)
    assert rep["per_class"]["bct_139"] == 1.0 and rep["per_class"]["bcc"] == 0.0
    md = report.table1_markdown(results, details)
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + 1 + 2 + 1 + 2
    assert "| Pristine |  | 100.00 | 100.00 | 100.00 | 100.00 | 14.29 | 14.29 |" in md
    assert report.plot_table1(results, tmp_path / "t.png").stat().st_size > 1000


def test_levels_and_keys():
    assert dsw.level_key(1e-5) == "1e-05" and dsw.level_key(0.06) == "0.06"
    assert dsw.level_key("ternary_0.5") == "ternary_0.5"
    assert dsw.parse_substitution(("binary", 0.1)) == ("binary", 0.1)
    with pytest.raises(ValueError, match="alloy"):
        dsw.parse_substitution("quaternary_0.1")
    with pytest.raises(ValueError, match="kind"):
        dsw.defect_keys(0, "melting", 0.1, [0])


# ------------------------------------------------------------------ transitions


@pytest.fixture(scope="module")
def bcc_batch():
    return transitions.bcc_clusters(["Fe", "W"])


def test_renormalize_after_full_sublattice_removal(bcc_batch):
    from scipy.spatial import cKDTree

    assert transitions.tagged_bcc(bcc_batch).all()
    out = dsw.defect_batch(bcc_batch, "sublattice", 1.0, 0, [0, 1], renormalize=True)
    for k in range(2):
        p = out.positions[k][out.mask[k] > 0]
        assert len(p) == int(((bcc_batch.tags[k] == 0) & (bcc_batch.mask[k] > 0)).sum())
        d, _ = cKDTree(p).query(p, k=2)
        assert abs(np.median(d[:, 1]) - 1.0) < 1e-3  # a proper sc cluster at unit nearest-neighbour distance
        # bcc nn = a sqrt(3)/2 -> sc nn = a: the physical scale grows by 2/sqrt(3)
        assert abs(out.nn_distance[k] / bcc_batch.nn_distance[k] - 2 / np.sqrt(3)) < 1e-3
    half = dsw.defect_batch(bcc_batch, "sublattice", 0.5, 0, [0, 1])
    n_tagged = ((bcc_batch.tags == 1) & (bcc_batch.mask > 0)).sum(1)
    np.testing.assert_array_equal(half.mask.sum(1), bcc_batch.mask.sum(1) - np.round(0.5 * n_tagged))


def test_bcc_sc_sweep_equals_direct_computation(bcc_batch):
    model = linear_model(wiring_fingerprint)
    fractions = [0.0, 0.5, 1.0]
    res = transitions.bcc_sc_sweep(model, bcc_batch, fractions, seeds=[0, 3], indices=[7, 9], renormalize=False)
    b = CLASSES.index("bcc")
    for j, f in enumerate(fractions):
        probs = [np.asarray(model.apply(jnp.asarray(_direct("sublattice", f, seed, take(bcc_batch, i), index, None,
                                                            wiring_fingerprint))[None]))[0]
                 for seed in (0, 3) for i, index in enumerate((7, 9))]
        assert res["p_bcc_mean"][j] == pytest.approx(float(np.mean([p[b] for p in probs])), rel=1e-5)


def test_class_windows():
    mu = np.linspace(0.0, 1.0, 11)
    pred = ["bcc", "bcc", "hex/rh", "hex/rh", "sc", "sc", "sc", "hex/rh", "hex/rh", "fcc", "hex/rh"]
    w = transitions.class_windows(mu, pred, {"bcc": 0.0, "sc": 0.52, "fcc": 0.9})
    assert w["special"]["bcc"]["width"] == pytest.approx(0.15)
    assert w["special"]["sc"]["window"] == pytest.approx([0.35, 0.65])
    assert w["special"]["sc"]["predicted"] == "sc" and w["special"]["sc"]["n_points"] == 3
    assert w["special"]["fcc"]["width"] == pytest.approx(0.1)
    assert w["total_width"]["hex/rh"] == pytest.approx(0.45)
    w = transitions.class_windows(mu, pred, {"fcc": 0.3})
    assert w["special"]["fcc"]["predicted"] == "hex/rh" and w["special"]["fcc"]["width"] == 0.0


def test_rhombohedral_primitive_cell():
    from crystaljax.structures.dataset import spacegroup_number
    from crystaljax.structures.prototypes import MU_BCC, MU_FCC, MU_SC, rhombohedral_path

    for mu, sg, angle in ((MU_SC, 221, 90.0), (MU_FCC, 225, 60.0), (MU_BCC, 229, 109.4712), (1.8, 166, None)):
        hexa = rhombohedral_path(mu)
        prim = transitions.rhombohedral_primitive(hexa)
        assert len(prim) == 1 and abs(prim.get_volume() * 3 - hexa.get_volume()) < 1e-8
        par = prim.cell.cellpar()
        assert np.allclose(par[:3], par[0]) and np.allclose(par[3:], par[3])
        if angle is not None:
            assert abs(par[3] - angle) < 1e-3
        assert spacegroup_number(prim.cell.array, prim.get_scaled_positions(), prim.numbers, 1e-5) == sg
