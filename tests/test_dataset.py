"""Data set: spglib-consistent labels, balance, determinism, split, storage, exclusion of library structures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crystaljax.structures import dataset as D
from crystaljax.structures import prototypes as P
from crystaljax.structures import symmetry
from crystaljax.structures.aflow_library import get_entry
from crystaljax.structure import Structure

REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "prototypes"  # see tests/data/README.md
FULL_SET = Path(__file__).resolve().parents[1] / "data" / "generated" / "aflow_like_seed0.npz"
PER_CLASS = 10


@pytest.fixture(scope="module")
def ds():
    return D.generate(seed=0, per_class=PER_CLASS, progress=False, workers=1)


def _sg(atoms, symprec):
    return symmetry.spacegroup_number(atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers, symprec)


def test_spglib_failures_are_none_without_warnings():
    """spglib in exception mode: a failure (atoms closer than symprec) is None, and no call warns."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert symmetry.spacegroup_number(3 * np.eye(3), [[0, 0, 0], [0, 0, 1e-4]], [1, 1], 1e-3) is None
        assert symmetry.spacegroup_number(3 * np.eye(3), [[0, 0, 0]], [1], 1e-3) == 221
        assert symmetry.spacegroup_number(3 * np.eye(3), [[0, 0, 0], [0.5, 0.5, 0.5]], [1, 1], 1e-3) == 229
        with pytest.raises(symmetry.SpglibError):
            symmetry.find_primitive(3 * np.eye(3), [[0, 0, 0], [0, 0, 1e-4]], [1, 1], 1e-3)


def test_labels_agree_with_spglib(ds):
    assert len(ds) == 7 * PER_CLASS
    for i in range(len(ds)):
        atoms = D.to_atoms(ds, i)
        got = _sg(atoms, 1e-3)
        assert got == int(ds.meta["spacegroup"][i]), i
        assert P.CLASSES.index(P.SPACEGROUP_CLASS[got]) == int(ds.labels[i]), i
        name = str(ds.meta["prototype"][i])
        expected = P.PROTOTYPES[name].spacegroup if name in P.PROTOTYPES else get_entry(name).spacegroup
        assert expected == got
        if got not in (166, 194):
            assert _sg(atoms, 1e-9) == got
        assert set(atoms.numbers) == {int(ds.meta["element"][i])}


def test_shapes_dtypes_and_clusters(ds):
    n = len(ds)
    s = ds.structures
    assert isinstance(s, Structure)
    assert ds.n_max % 16 == 0
    assert s.positions.shape == (n, ds.n_max, 3) and s.positions.dtype == np.float32
    assert s.numbers.shape == (n, ds.n_max) and s.numbers.dtype == np.int32
    assert s.mask.shape == (n, ds.n_max) and s.mask.dtype == np.float32
    assert s.tags.shape == (n, ds.n_max) and s.nn_distance.shape == (n,)
    assert ds.labels.dtype == np.int32 and ds.labels.shape == (n,)
    assert ds.meta["params"].shape == (n, 3)
    sizes = s.mask.sum(1)
    assert sizes.min() >= 200 and sizes.max() <= ds.n_max and ds.n_max - sizes.max() < 16
    # padding rows are empty; numbers equal the element; clusters centred, unit mean nn distance
    for i in range(n):
        k = int(sizes[i])
        assert np.all(s.numbers[i, :k] == ds.meta["element"][i]) and np.all(s.numbers[i, k:] == 0)
        pos = s.positions[i, :k].astype(np.float64)
        assert np.allclose(pos.mean(0), 0.0, atol=1e-4)
        # physical nn distance = the conventional cell's (all prototypes here have one nn distance
        # except the dimerised hR2/hR3 and the bct ones, for which the mean is >= the minimum)
        cell_nn = P._min_distance(D.to_atoms(ds, i))
        assert float(s.nn_distance[i]) >= cell_nn * (1 - 1e-5)
        if ds.meta["prototype"][i] in ("A_cP1_221_a", "A_cF4_225_a", "A_cI2_229_a", "A_cF8_227_a"):
            assert float(s.nn_distance[i]) == pytest.approx(cell_nn, rel=1e-5)
    # bcc: the body-centre sublattice (tag 1) is half of the cluster; no other class has tags
    # (a primitive bcc cell has one atom: no sublattice to tag)
    bcc = (ds.labels == P.CLASSES.index("bcc")) & (ds.meta["representation"] != "primitive")
    # balls of whole shells hold the two sublattices in nearly (not exactly) equal numbers
    assert bcc.any() and np.all(np.abs(s.tags[bcc].sum(1) * 2 - sizes[bcc]) <= 0.1 * sizes[bcc])
    assert not s.tags[~bcc].any()
    # conventional cells: tags too
    assert np.all(ds.cells["tags"][bcc].sum(1) == 1)


def test_realistic_sizes_and_parameters(ds):
    for i in range(len(ds)):
        z = int(ds.meta["element"][i])
        nn = P._min_distance(D.to_atoms(ds, i))
        assert 0.9 * P.nn_distance(z) * (1 - 1e-9) <= nn <= 1.1 * P.nn_distance(z) * (1 + 1e-9)
        a, ca, x = ds.meta["params"][i]
        assert a == pytest.approx(np.linalg.norm(ds.cells["cell"][i, 0]))
        name = str(ds.meta["prototype"][i])
        if name not in P.PROTOTYPES:  # a library prototype: c/a within the stretch of its example's
            e = get_entry(name)
            ca0 = np.linalg.norm(e.cell[2]) / np.linalg.norm(e.cell[0])
            assert np.isnan(x) and (np.isnan(ca) or abs(ca / ca0 - 1) <= 0.05 + 1e-9)
            continue
        proto = P.PROTOTYPES[name]
        assert np.isnan(ca) == ("c/a" not in proto.defaults) and np.isnan(x) == ("x" not in proto.defaults)
        params = {k: v for k, v in (("c/a", ca), ("x", x)) if not np.isnan(v)}
        assert not any(w.contains(params) for w in proto.windows)


def test_balance_and_element_coverage():
    small = D.tiny(seed=0, per_class=4)
    assert np.bincount(small.labels, minlength=7).tolist() == [4] * 7
    ds = D.generate(seed=1, per_class=15, elements=["Cu", "Fe", "Bi"], progress=False, workers=1)
    assert np.bincount(ds.labels, minlength=7).tolist() == [15] * 7
    assert set(ds.meta["symbol"].tolist()) == {"Cu", "Fe", "Bi"}
    counts = np.unique(ds.meta["element"][ds.meta["prototype"] == "A_cF4_225_a"], return_counts=True)[1]
    assert counts.tolist() == [5, 5, 5]
    protos = set(ds.meta["prototype"][ds.labels == P.CLASSES.index("hex/rh")].tolist())
    assert set(D.CLASS_PROTOTYPES["hex/rh"]) <= protos and len(D.CLASS_PROTOTYPES["hex/rh"]) == 5
    assert protos <= set(D.sources()) and protos - set(D.CLASS_PROTOTYPES["hex/rh"])   # library ones too
    assert len(D.default_elements()) == 83


def test_determinism():
    a = D.tiny(seed=5, per_class=3)
    b = D.tiny(seed=5, per_class=3)
    c = D.tiny(seed=6, per_class=3)
    for x, y in zip(a.structures, b.structures):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.split, b.split)
    np.testing.assert_array_equal(a.meta["params"], b.meta["params"])
    np.testing.assert_array_equal(a.cells["cell"], b.cells["cell"])
    assert not np.array_equal(a.meta["params"][:, 0], c.meta["params"][:, 0])


def test_parallel_equals_serial():
    """The worker pool (used above 200 structures) gives exactly the serial result."""
    serial, s1 = D.sample_cells(seed=2, per_class=30, workers=1)
    parallel, s2 = D.sample_cells(seed=2, per_class=30, workers=2)
    assert len(serial) == len(parallel) == 210 and s1 == s2
    for r, q in zip(serial, parallel):
        assert r.prototype == q.prototype and r.element == q.element and r.a == q.a
        np.testing.assert_array_equal(r.cell, q.cell)


def test_stratified_split(ds):
    for k in range(7):
        split = ds.split[ds.labels == k]
        assert [(split == s).sum() for s in ("train", "val", "test")] == [8, 1, 1]
    labels = np.repeat(np.arange(7), 40)
    paper = D.stratified_split(labels, (0.9, 0.1), seed=3)
    for k in range(7):
        s = paper[labels == k]
        assert [(s == n).sum() for n in ("train", "val", "test")] == [36, 0, 4]
    other = D.stratified_split(labels, (0.9, 0.1), seed=4)
    assert not np.array_equal(paper, other)
    with pytest.raises(ValueError, match="splits"):
        D.stratified_split(labels, (0.5, -0.1, 0.6))


def test_bad_names_raise():
    with pytest.raises(ValueError, match="Zz"):
        D.generate(per_class=1, elements=["Cu", "Zz"], progress=False)
    with pytest.raises(ValueError, match="A_nope"):
        P.build("A_nope", "Cu")


def test_subset(ds):
    train = D.subset(ds, ds.split == "train")
    assert len(train) == 56 and set(train.split.tolist()) == {"train"}
    picked = ds.subset([3, 1])
    np.testing.assert_array_equal(picked.structures.positions[0], ds.structures.positions[3])
    assert picked.meta["prototype"][1] == ds.meta["prototype"][1]
    assert picked.to_atoms(0).get_volume() == pytest.approx(D.to_atoms(ds, 3).get_volume())
    with pytest.raises(ValueError):
        D.subset(ds, np.ones(3, bool))


def test_save_load_round_trip(ds, tmp_path):
    path = D.save(ds, tmp_path / "set.npz")
    back = D.load(path)
    assert len(back) == len(ds) and back.n_max == ds.n_max
    for x, y in zip(ds.structures, back.structures):
        np.testing.assert_array_equal(x, y)
        assert x.dtype == y.dtype
    np.testing.assert_array_equal(ds.labels, back.labels)
    np.testing.assert_array_equal(ds.split, back.split)
    for k in ds.meta:
        np.testing.assert_array_equal(ds.meta[k], back.meta[k])
    for k in ds.cells:
        np.testing.assert_array_equal(ds.cells[k], back.cells[k])
    assert back.info["seed"] == 0 and back.info["n_max"] == ds.n_max
    a, b = D.to_atoms(ds, 7), D.to_atoms(back, 7)
    assert np.allclose(a.positions, b.positions) and np.allclose(a.cell, b.cell)
    summary = json.loads(D.summary_path(path).read_text())
    assert summary["per_class"] == {c: PER_CLASS for c in P.CLASSES}
    with pytest.raises(FileNotFoundError):
        D.load(tmp_path / "missing.npz")


# ------------------------------------------------------------------ the AFLOW library structures are held out


def _conventional_lengths(cell, frac, numbers):
    std = symmetry.standardize(cell, frac, numbers, symprec=1e-5)
    return np.sort(np.linalg.norm(std[0], axis=1))


def _library():
    """(element Z, sorted conventional lattice lengths) of every FHI-aims file of the AFLOW library (tests/data)."""
    import ase.io

    out = []
    for path in sorted(REFERENCE_DIR.glob("*/*.in")):
        atoms = ase.io.read(path, format="aims")
        z = int(atoms.numbers[0])
        out.append((path.name, z, _conventional_lengths(atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)))
    return out


def _matches(library, z, lengths, tol=1e-3):
    return [name for name, zr, ref in library if zr == z and np.all(np.abs(ref - np.sort(lengths)) < tol)]


def test_library_structures_would_be_detected():
    """The comparison below finds a library structure when it is there (so the next tests can fail)."""
    library = _library()
    assert len(library) >= 20
    for name, sym, a, params in P.REFERENCES:
        atoms = P.build(name, sym, a=a, params=params)
        assert _matches(library, int(atoms.numbers[0]), _conventional_lengths(
            atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)), (name, sym)
        assert D.matches_reference(name, int(atoms.numbers[0]), a, {**P.PROTOTYPES[name].defaults, **params})


def test_library_structures_not_in_generated_sets(ds):
    library = _library()
    for i in range(len(ds)):
        assert not _matches(library, int(ds.meta["element"][i]), np.linalg.norm(ds.cells["cell"][i], axis=1))
    # many draws for exactly the library's (prototype, element) pairs: without the exclusion rule,
    # a few would land within 1e-3 Å of the library structure
    sampler = D._Sampler(seed=0)
    hits = 0
    for name, sym, _, _ in P.REFERENCES:
        z = P.atomic_number(sym)
        for _ in range(1500):
            rec = sampler.draw(name, z)
            hits += bool(_matches(library, z, np.linalg.norm(rec.cell, axis=1)))
    assert hits == 0
    assert sum(sampler.rejected[n].get("AFLOW library example structure", 0) for n in P.PROTOTYPES) > 0
    if FULL_SET.exists():  # the shipped full set, when it has been generated
        full = D.load(FULL_SET)
        lengths = np.linalg.norm(full.cells["cell"], axis=2)
        for _, zr, ref in library:
            sel = full.meta["element"] == zr
            close = np.all(np.abs(np.sort(lengths[sel], axis=1) - ref) < 1e-3, axis=1)
            assert not close.any()


def test_spglib_rule_rejects_higher_symmetry():
    """The label rule itself: a bct cell at c/a = 1 (really bcc) fails with a reason naming 229."""
    rec = D._Sampler(seed=0).draw("A_tI2_139_a", 49)
    cell, frac, tags = P.cell_and_positions("A_tI2_139_a", 3.2, {"c/a": 1.0})
    bad = D.Record("A_tI2_139_a", 49, 3.2, {"c/a": 1.0}, cell, frac, tags, 139, 0)
    assert "229" in D.check_record(bad)
    assert D.check_record(rec) is None
    # hex/rh uses only 1e-3 and 1e-6; everything else also 1e-9
    assert D.symprecs_for(166) == D.symprecs_for(194) == (1e-3, 1e-6)
    assert D.symprecs_for(229) == (1e-3, 1e-6, 1e-9)


def test_cell_variants_are_the_same_crystal():
    """Primitive and supercell representations keep the space group; they change the standard-cell lattice."""
    from crystaljax.structures.cell import standard_cell
    from crystaljax.structures.dataset import cell_variant, spacegroup_number
    from crystaljax.structures.prototypes import build

    rng = np.random.default_rng(0)
    for name, sg in [("A_cF4_225_a", 225), ("A_cI2_229_a", 229), ("A_tI4_141_a", 141), ("A_hR2_166_c", 166)]:
        conv = build(name, "Cu")
        cells = {}
        for rep in ("conventional", "primitive", "supercell"):
            atoms = cell_variant(conv, rep, rng)
            assert spacegroup_number(atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers, 1e-3) == sg
            density = len(atoms) / atoms.get_volume()
            assert density == pytest.approx(len(conv) / conv.get_volume(), rel=1e-6)
            cells[rep] = standard_cell(atoms).cell.lengths()
        assert not np.allclose(cells["primitive"], cells["conventional"]), name


def test_generated_set_mixes_representations():
    ds = D.generate(seed=3, per_class=12, progress=False, workers=1)
    reps = set(ds.meta["representation"].tolist())
    assert reps == {"conventional", "primitive", "supercell", "finite"}
    assert sum(ds.info["representations"].values()) == len(ds)


def test_finite_variant_is_oriented_like_the_primitive_cell():
    """A randomly rotated ball of a crystal, through the pipeline, images like its primitive cell."""
    import crystaljax
    from crystaljax.structures.dataset import cell_variant
    from crystaljax.structures.prototypes import build

    rng = np.random.default_rng(1)
    for name in ("A_cF4_225_a", "A_cI2_229_a"):
        conv = build(name, "Fe")
        ball = cell_variant(conv, "finite", rng)
        assert not ball.pbc.any() and 200 <= len(ball) <= 650
        images = crystaljax.fingerprints([ball, cell_variant(conv, "primitive", rng)])
        corr = np.corrcoef(images[0].ravel(), images[1].ravel())[0, 1]
        assert corr > 0.9, (name, corr)


def test_make_dataset_entry_point_smoke(tmp_path):
    """One tiny run of the Hydra entry point: the data set, its summary and the resolved config are written."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "tiny.npz"
    proc = subprocess.run([sys.executable, str(root / "experiments" / "make_dataset.py"), "data=tiny", "data.per_class=2",
                           f"data.path={out}", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ds = D.load(out)
    assert len(ds) == 14 and sorted(np.bincount(ds.labels).tolist()) == [2] * 7
    assert D.summary_path(out).is_file()


def test_element_split_holds_out_whole_elements():
    rng = np.random.default_rng(0)
    elements = rng.choice([3, 11, 13, 26, 29, 47, 74, 79, 82, 50], size=700)
    labels = rng.integers(0, len(D.CLASSES), size=700)
    split, out_z = D.element_split(labels, elements, held_out=0.3, splits=(0.8, 0.1, 0.1), seed=4)
    assert len(out_z) == 3 and set(out_z) <= set(elements.tolist())
    test = split == "test"
    assert set(elements[test].tolist()) == set(out_z)                  # every item of a held-out element is test
    assert not set(elements[~test].tolist()) & set(out_z)             # and no other split sees those elements
    train, val = (split == "train").sum(), (split == "val").sum()
    assert abs(train / (train + val) - 0.8 / 0.9) < 0.02 and val > 0
    again, again_z = D.element_split(labels, elements, held_out=0.3, seed=4)
    assert again_z == out_z and np.array_equal(again, split)
    with pytest.raises(ValueError, match="held_out"):
        D.element_split(labels, elements, held_out=1.0)


def test_experiment_applies_the_element_split(ds):
    from omegaconf import OmegaConf

    from crystaljax.learn.experiment import apply_split

    cfg = OmegaConf.create({"seed": 0, "data": {"held_out_elements": 0.25}})
    out, out_z = apply_split(ds, cfg)
    assert out_z and set(np.asarray(out.meta["element"])[np.asarray(out.split) == "test"].tolist()) == set(out_z)
    same, none = apply_split(ds, OmegaConf.create({"seed": 0, "data": {"held_out_elements": 0.0}}))
    assert same is ds and none == ()


def test_library_sources_cover_the_in_class_prototype_space():
    """Every in-class elemental entry of the AFLOW library is sampled: by a family whose ranges hold its
    axial ratio, as a library source, or listed as excluded with a reason."""
    from crystaljax.structures import aflow_library as L

    entries = L.in_class_entries()
    assert len(entries) >= 20
    sources = D.sources()
    for e in entries:
        covered = e.name in sources or e.name in D.LIBRARY_EXCLUDED or D._family_covers(e)
        assert covered, e.name
    names = {L.get_entry(n).mineral.lower() for n in D.library_sources()}
    assert {"graphite", "lonsdaleite", "beta oxygen", "rhombohedral graphite"} <= names
    # too few primitive cells in a 250-atom cluster: left out, with the count in the reason
    assert {"A_hR105_166_bc9h4i-B", "A_cF136_227_aeg-Si", "A_hR12_166_2h-B"} == set(D.LIBRARY_EXCLUDED)
    assert D.primitive_cells_in_cluster("cF136") == pytest.approx(250 / 34)
    assert D.primitive_cells_in_cluster("hR12") == pytest.approx(250 / 12)
    assert D.primitive_cells_in_cluster("tI8", 100) == pytest.approx(25.0)
    # quotas: each class gets exactly per_class, families twice a library prototype's share
    q = D._quotas(1500, np.random.default_rng(0))
    for c in P.CLASSES:
        assert sum(k for n, k in q.items() if sources[n][0] == c) == 1500
    assert abs(q["A_hP2_194_c"] - 2 * q["A_hP4_194_bc-C"]) <= 1


def test_perturbed_library_members_keep_space_group_and_vary():
    from crystaljax.structures import aflow_library as L

    rng = np.random.default_rng(3)
    for name in ("A_hP4_194_bc-C", "A_hR12_166_2h-B", "A_tI4_139_e-Si"):
        e = L.get_entry(name)
        ratios = []
        for _ in range(3):
            cell, frac = L.perturbed_cell(e, rng)
            for symprec in (1e-5, 1e-3):
                assert symmetry.spacegroup_number(cell, frac, np.ones(len(frac), int), symprec) == e.spacegroup
            ratios.append(np.linalg.norm(cell[2]) / np.linalg.norm(cell[0]))
            moved = frac @ cell - e.frac @ cell
            assert np.abs(moved - np.round(moved)).max() < 0.5        # small moves, not a reshuffle
        assert np.ptp(ratios) > 1e-3                                    # c/a varies
    # the symmetrised displacement of a symmetric field is the field itself; a random one loses its
    # components that break the symmetry (zero for every atom of a site without free coordinates)
    fcc = L.get_entry("A_cF4_225_a-Cu")
    d = np.random.default_rng(0).normal(size=(fcc.n_atoms, 3))
    assert np.allclose(L.symmetrize_displacements(fcc.name, fcc.cell, d), 0.0, atol=1e-12)
    gr = L.get_entry("A_hP4_194_bc-C")
    sym = L.symmetrize_displacements(gr.name, gr.cell, np.random.default_rng(1).normal(size=(gr.n_atoms, 3)))
    assert np.allclose(L.symmetrize_displacements(gr.name, gr.cell, sym), sym, atol=1e-12)   # a projection


def test_out_of_scope_elementals_are_the_library_entries_outside_the_classes():
    from crystaljax.structures import out_of_scope

    kinds = out_of_scope.elemental_kinds()
    assert len(kinds) >= 30 and "A_oC8_64_f-Ga" in kinds and "A_cI58_217_ac2g-Mn" in kinds
    atoms = out_of_scope.elemental_out_of_scope(np.random.default_rng(0), per_kind=1)
    assert len(atoms) == len(kinds)
    for a in atoms:
        sg = _sg(a, 1e-3)
        assert sg is not None and sg not in P.SPACEGROUP_CLASS, a.info["kind"]
        assert a.info["category"] == "out-of-scope element" and len(set(a.numbers)) == 1
