"""Tests for crystaljax.analysis.sweeps: defect levels really applied, spglib baseline, Table 1 schema, windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jax.numpy as jnp

from crystaljax.analysis import sweeps
from crystaljax.structures.dataset import CLASSES

SYMPRECS = ["0.1", "0.01", "0.001", "1e-05"]


@pytest.fixture(scope="module")
def ds():
    """The data=tiny set (4 per class, 1 test structure per class), built in ~1 s."""
    return sweeps.load_dataset({"name": "tiny"}, seed=0)


@pytest.fixture(scope="module")
def test_idx(ds):
    idx = sweeps.select_indices(ds, "test")
    assert sorted(np.asarray(ds.labels)[idx].tolist()) == list(range(len(CLASSES)))
    return idx


@pytest.fixture(scope="module")
def supercells(ds, test_idx):
    return sweeps.build_supercells(ds, test_idx)


def constant_predictor(cls: int = 0):
    """images (B, H, W, 3) -> one-hot probabilities of class ``cls``."""
    def predict(images):
        p = np.zeros((len(images), len(CLASSES)), np.float32)
        p[:, cls] = 1.0
        return p
    return predict


def stand_in_fingerprint(s):
    """A cheap (4, 4, 3) image (the sweeps only pass it on to the predictor)."""
    return jnp.zeros((4, 4, 3)) + jnp.sum(s.mask)


# ------------------------------------------------------------------ the defects really applied


@pytest.mark.parametrize("fraction", [0.01, 0.25, 0.6])
def test_vacancy_count_clusters_and_supercells(ds, test_idx, supercells, fraction):
    clusters = sweeps._take(ds.structures, test_idx)
    for batch in (clusters, supercells.structures):
        n = np.asarray(batch.mask).sum(1)
        out = sweeps.defect_batch(batch, "vacancies", fraction, 0, test_idx)
        want = n - np.round(np.float32(fraction) * n.astype(np.float32))
        np.testing.assert_array_equal(out.mask.sum(1), want)
        assert np.all(out.mask <= batch.mask)  # only present atoms are removed
        assert np.all(want < n)  # at least one vacancy even at 1 %


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_displacement_scale_is_physical_angstrom(ds, test_idx, supercells, sigma):
    clusters = sweeps._take(ds.structures, test_idx)
    out = sweeps.defect_batch(clusters, "displacement", sigma, 1, test_idx)
    m = np.asarray(clusters.mask) > 0
    phys = (out.positions - clusters.positions) * np.asarray(clusters.nn_distance)[:, None, None]
    assert abs(phys[m].std() / sigma - 1) < 0.05
    assert np.all(out.positions[~m] == clusters.positions[~m])
    # the same sigma on the supercells (positions in physical Å) and in the spglib cells
    cells = sweeps.defective_cells(supercells, "displacement", sigma, 1)
    d = []
    for k, (lat, frac, _) in enumerate(cells):
        n = len(frac)
        d.append(frac @ lat - supercells.positions[k, :n])
    d = np.concatenate(d)
    assert abs(d.std() / sigma - 1) < 0.05


def test_substitution_count_and_species(ds, test_idx):
    clusters = sweeps._take(ds.structures, test_idx)
    elements = sweeps.substitution_elements(ds, test_idx, seed=3)
    host = np.asarray(ds.meta["element"])[test_idx]
    assert np.all(elements != host[:, None]) and np.all(elements[:, 0] != elements[:, 1])
    for alloy, n_new in (("binary", 1), ("ternary", 2)):
        out = sweeps.defect_batch(clusters, "substitution", f"{alloy}_0.25", 3, test_idx, elements=elements)
        for k in range(len(test_idx)):
            m = clusters.mask[k] > 0
            n = int(m.sum())
            changed = out.numbers[k][m] != host[k]
            assert changed.sum() == round(0.25 * n)
            assert set(np.unique(out.numbers[k][m][changed])) <= set(elements[k, :n_new].tolist())
        assert not np.isin(out.numbers, [95, 96]).any()  # placeholders never leak


def test_draws_do_not_depend_on_the_batch(ds, test_idx):
    full = sweeps.defect_batch(sweeps._take(ds.structures, test_idx), "vacancies", 0.3, 0, test_idx)
    one = sweeps.defect_batch(sweeps._take(ds.structures, test_idx[2:3]), "vacancies", 0.3, 0, test_idx[2:3])
    np.testing.assert_array_equal(full.mask[2], one.mask[0])
    other = sweeps.defect_batch(sweeps._take(ds.structures, test_idx), "vacancies", 0.3, 1, test_idx)
    assert not np.array_equal(full.mask, other.mask)  # another seed, another draw


@pytest.fixture(scope="module")
def bcc_batch():
    """bcc prototype clusters (body centres tagged 1) of two elements."""
    return sweeps.bcc_clusters(["Fe", "W"])


def test_renormalize_after_full_sublattice_removal(bcc_batch):
    assert sweeps.tagged_bcc(bcc_batch).all()
    out = sweeps.defect_batch(bcc_batch, "sublattice", 1.0, 0, [0, 1], renormalize=True)
    from scipy.spatial import cKDTree

    for k in range(2):
        p = out.positions[k][out.mask[k] > 0]
        assert len(p) == int(((bcc_batch.tags[k] == 0) & (bcc_batch.mask[k] > 0)).sum())
        d, _ = cKDTree(p).query(p, k=2)
        assert abs(d[:, 1].mean() - 1.0) < 1e-5  # a proper sc cluster, unit nn distance
        # bcc nn = a sqrt(3)/2 -> sc nn = a: the physical scale grows by 2/sqrt(3)
        ratio = out.nn_distance[k] / bcc_batch.nn_distance[k]
        assert abs(ratio - 2 / np.sqrt(3)) < 1e-4
    half = sweeps.defect_batch(bcc_batch, "sublattice", 0.5, 0, [0, 1])
    n = bcc_batch.mask.sum(1)
    n_tagged = ((bcc_batch.tags == 1) & (bcc_batch.mask > 0)).sum(1)
    np.testing.assert_array_equal(half.mask.sum(1), n - np.round(0.5 * n_tagged))


# ------------------------------------------------------------------ spglib


def test_spglib_pristine_supercell_gives_parent_at_every_symprec(supercells):
    cells = sweeps.defective_cells(supercells, "vacancies", 0.0, 0)
    for cell, parent in zip(cells, supercells.spacegroup):
        assert len(cell[1]) >= 200
        assert sweeps.spacegroups(cell, sweeps.SYMPRECS) == (parent,) * len(sweeps.SYMPRECS)


def test_spglib_fails_on_one_percent_vacancies_at_tight_symprec(supercells):
    cells = sweeps.defective_cells(supercells, "vacancies", 0.01, 0)
    for cell, parent, full in zip(cells, supercells.spacegroup, supercells.structures.mask.sum(1)):
        assert len(cell[1]) < full
        assert sweeps.spacegroups(cell, [1e-5])[0] != parent


# ------------------------------------------------------------------ Table 1 results


def test_table1_schema_markdown_and_plot(ds, test_idx, tmp_path):
    levels = {"displacement": [0.001, 0.06], "vacancies": [0.4], "substitution": ["binary_0.25", "ternary_0.25"]}
    models = {"convnet": (constant_predictor(0), stand_in_fingerprint),
              "convnet_augmented": (constant_predictor(CLASSES.index("bcc")), stand_in_fingerprint)}
    results, details = sweeps.table1(models, ds, levels, seeds=[0, 1], indices=test_idx,
                                     spglib_indices=test_idx[:2], batch_size=4)
    results = json.loads(json.dumps(results))  # JSON-serialisable
    assert set(results) == {"convnet", "convnet_augmented", "spglib", "n_structures", "seeds"}
    assert results["n_structures"] == len(test_idx) and results["seeds"] == [0, 1]
    for name in ("convnet", "convnet_augmented"):
        block = results[name]
        assert list(block["displacement"]) == ["0.001", "0.06"]
        assert list(block["vacancies"]) == ["0.4"]
        assert list(block["substitution"]) == ["binary_0.25", "ternary_0.25"]
        # one test structure per class, a constant prediction -> exactly 1/7 everywhere
        for kind in ("displacement", "vacancies", "substitution"):
            assert all(v == pytest.approx(1 / 7) for v in block[kind].values())
        assert block["pristine"] == pytest.approx(1 / 7)
    assert list(results["spglib"]) == SYMPRECS
    for sp in SYMPRECS:
        block = results["spglib"][sp]
        assert block["pristine"] == 1.0
        assert set(block) == {"pristine", "displacement", "vacancies", "substitution"}
        assert all(0.0 <= v <= 1.0 for kind in ("displacement", "vacancies", "substitution")
                   for v in block[kind].values())
    assert results["spglib"]["1e-05"]["vacancies"]["0.4"] == 0.0
    rep = details["convnet"]["convnet"]["vacancies"]["0.4"]
    assert np.asarray(rep["confusion"]).sum() == 2 * len(test_idx)
    assert rep["per_class"]["bct_139"] == 1.0 and rep["per_class"]["bcc"] == 0.0
    assert details["n_structures_spglib"] == 2

    md = sweeps.table1_markdown(results, details)
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + 1 + 2 + 1 + 2  # header, rule, pristine, levels
    assert "ConvNet (augmented)" in lines[0] and "spglib 1e-05 Å" in lines[0]
    assert "| Pristine |  | 100.00 | 100.00 | 100.00 | 100.00 | 14.29 | 14.29 |" in md
    png = sweeps.plot_table1(results, tmp_path / "t.png")
    assert png.stat().st_size > 1000


def test_convnet_defect_accuracy_single_kind(ds, test_idx):
    res = sweeps.convnet_defect_accuracy(constant_predictor(CLASSES.index("sc")), ds, "vacancies", [0.1, 0.5],
                                         seeds=[0], fingerprint_fn=stand_in_fingerprint, indices=test_idx)
    assert res["accuracy"] == {"0.1": pytest.approx(1 / 7), "0.5": pytest.approx(1 / 7)}
    assert res["per_class"]["0.1"]["sc"] == 1.0 and res["n_structures"] == 7 and res["seeds"] == [0]


def test_levels_and_keys():
    assert sweeps.level_key(1e-5) == "1e-05" and sweeps.level_key(0.06) == "0.06"
    assert sweeps.level_key("ternary_0.5") == "ternary_0.5"
    assert sweeps.parse_substitution(("binary", 0.1)) == ("binary", 0.1)
    with pytest.raises(ValueError, match="alloy"):
        sweeps.parse_substitution("quaternary_0.1")
    with pytest.raises(ValueError, match="kind"):
        sweeps.defect_keys(0, "melting", 0.1, [0])


# ------------------------------------------------------------------ transitions


def test_class_windows():
    mu = np.linspace(0.0, 1.0, 11)  # grid step 0.1
    pred = ["bcc", "bcc", "hex/rh", "hex/rh", "sc", "sc", "sc", "hex/rh", "hex/rh", "fcc", "hex/rh"]
    w = sweeps.class_windows(mu, pred, {"bcc": 0.0, "sc": 0.52, "fcc": 0.9})
    assert w["special"]["bcc"]["width"] == pytest.approx(0.15)  # [0, 0.15]: clipped at the path start
    assert w["special"]["sc"]["window"] == pytest.approx([0.35, 0.65])
    assert w["special"]["sc"]["predicted"] == "sc" and w["special"]["sc"]["n_points"] == 3
    assert w["special"]["fcc"]["width"] == pytest.approx(0.1)
    assert w["total_width"]["hex/rh"] == pytest.approx(0.45)
    w = sweeps.class_windows(mu, pred, {"fcc": 0.3})
    assert w["special"]["fcc"]["predicted"] == "hex/rh" and w["special"]["fcc"]["width"] == 0.0


def wiring_fingerprint(s):
    """A stand-in image that sees the mask, the positions and the species of a Structure."""
    m = s.mask
    v = jnp.stack([jnp.sum(m), jnp.sum(m[:, None] * s.positions ** 2), jnp.sum(m * s.numbers)])
    return jnp.broadcast_to(v, (2, 2, 3))


@pytest.mark.parametrize("kind,level", [("vacancies", 0.3), ("displacement", 0.05), ("substitution", "ternary_0.5"),
                                        ("sublattice", 0.6)])
def test_sweep_images_are_of_the_defective_structures(ds, test_idx, bcc_batch, kind, level):
    if kind == "sublattice":
        batch, idx = bcc_batch, np.arange(2)
    else:
        batch, idx = sweeps._take(ds.structures, test_idx), test_idx
    value, n_new = sweeps._level_value(kind, level)
    elements = sweeps.substitution_elements(ds, test_idx, 2)[: len(idx)]
    fn = sweeps.make_images_fn(wiring_fingerprint, kind, n_new)
    images = np.asarray(fn(sweeps.defect_keys(2, kind, level, idx), batch, jnp.float32(value), jnp.asarray(elements)))
    defective = sweeps.defect_batch(batch, kind, level, 2, idx, elements=elements)
    want = np.stack([np.asarray(wiring_fingerprint(sweeps._take(defective, k))) for k in range(len(idx))])
    np.testing.assert_allclose(images, want, rtol=1e-6)
    pristine = np.stack([np.asarray(wiring_fingerprint(sweeps._take(batch, k))) for k in range(len(idx))])
    assert np.all(np.any(np.abs(images - pristine) > 1e-6 * np.abs(pristine), axis=(1, 2, 3)))


def test_rhombohedral_primitive_cell():
    from crystaljax.structures.prototypes import MU_BCC, MU_FCC, MU_SC, rhombohedral_path

    from crystaljax.structures.dataset import spacegroup_number

    for mu, sg, angle in ((MU_SC, 221, 90.0), (MU_FCC, 225, 60.0), (MU_BCC, 229, 109.4712), (1.8, 166, None)):
        hexa = rhombohedral_path(mu)
        prim = sweeps.rhombohedral_primitive(hexa)
        assert len(prim) == 1 and abs(prim.get_volume() * 3 - hexa.get_volume()) < 1e-8
        par = prim.cell.cellpar()
        assert np.allclose(par[:3], par[0]) and np.allclose(par[3:], par[3])
        if angle is not None:
            assert abs(par[3] - angle) < 1e-3
        assert spacegroup_number(prim.cell.array, prim.get_scaled_positions(), prim.numbers, 1e-5) == sg
