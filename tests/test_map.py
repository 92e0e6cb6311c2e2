"""Per-atom crystal maps: window geometry, robust scale, seeded lattice orientation, and the map itself on a
small bicrystal (fcc | bcc) and a periodic crystal with the shipped model; the map's unknown verdict (forced
thresholds, the vote rule, and a crystal | gas slab)."""

import copy
import json
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from crystaljax.analysis import mapping


def _grain(kind, a, centre, half, rotation):
    """Atoms of a rotated crystal filling the box |x - centre| <= half (Å)."""
    cub = bulk("Cu" if kind == "fcc" else "Fe", kind, a=a, cubic=True)
    n = int(np.ceil(2 * np.sqrt(3) * np.max(half) / a)) + 2
    block = cub.repeat((2 * n,) * 3)
    pos = block.positions - block.cell.sum(axis=0) / 2
    pos = pos @ rotation.T + centre
    keep = np.all(np.abs(pos - centre) <= half, axis=1)
    return pos[keep], block.numbers[keep]


def bicrystal(seed=0, rotations=None):
    """fcc Cu (x < 0) and bcc Fe (x > 0), each in its own random orientation; ~2,000 atoms, finite."""
    rng = np.random.default_rng(seed)
    r1, r2 = rotations or Rotation.random(2, random_state=rng).as_matrix()
    p1, z1 = _grain("fcc", 3.61, np.array([-11.0, 0, 0]), np.array([11.0, 11.0, 11.0]), r1)
    p2, z2 = _grain("bcc", 2.87, np.array([11.0, 0, 0]), np.array([11.0, 11.0, 11.0]), r2)
    p1, z1 = p1[p1[:, 0] < -0.6], z1[p1[:, 0] < -0.6]
    p2, z2 = p2[p2[:, 0] > 0.6], z2[p2[:, 0] > 0.6]
    atoms = Atoms(numbers=np.concatenate([z1, z2]), positions=np.concatenate([p1, p2]))
    truth = np.array(["fcc"] * len(p1) + ["bcc"] * len(p2))
    return atoms, truth


# ---------------------------------------------------------------------------------------- geometry, no model


def test_windows_are_the_nearest_atoms_brute_force():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 20, (400, 3))
    centres = rng.uniform(0, 20, (7, 3))
    idx, valid, dist = mapping.gather_windows(pts, np.arange(400), centres, 30)
    d_all = np.linalg.norm(pts[None] - centres[:, None], axis=2)
    for w in range(7):
        assert set(idx[w]) == set(np.argsort(d_all[w])[:30])
        np.testing.assert_allclose(dist[w], np.sort(d_all[w])[:30], rtol=1e-12)
    idx, valid, dist = mapping.gather_windows(pts, np.arange(400), centres, 5.0)
    for w in range(7):
        assert set(idx[w][valid[w]]) == set(np.flatnonzero(d_all[w] <= 5.0))


def test_periodic_images_give_every_atom_its_crystal_neighbourhood():
    a = 3.61
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((3, 3, 3))
    atoms.positions += 0.37  # atoms across the cell faces
    points, owner = mapping.point_set(atoms, reach=9.0)
    tree = cKDTree(points)
    nn = mapping.nn_distances(points, owner, len(atoms), tree)
    np.testing.assert_allclose(nn, a / np.sqrt(2), rtol=1e-9)
    # every window of 100 atoms, wherever its centre, sees what it would see in the infinite crystal
    centres = mapping.window_centres(atoms, 4.0)
    assert len(centres) == 27
    _, _, dist = mapping.gather_windows(points, owner, centres, 100, tree)
    big = atoms.repeat((3, 3, 3))
    big.positions -= atoms.cell.sum(axis=0)  # the cell in the middle of a 3 x 3 x 3 block
    ref = np.sort(np.linalg.norm(big.positions[None] - centres[:, None], axis=2), axis=1)[:, :100]
    np.testing.assert_allclose(dist, ref, rtol=1e-9)


def test_window_scale_is_robust_to_boundary_pairs_and_vacancies():
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((6, 6, 6))
    pos = atoms.positions.copy()
    rng = np.random.default_rng(0)
    keep = rng.random(len(pos)) > 0.3  # 30 % vacancies
    pos = pos[keep]
    central = np.argsort(np.linalg.norm(pos - pos.mean(axis=0), axis=1))[:10]
    pos = np.concatenate([pos, pos[central] + [0.9, 0, 0]])  # a few unphysically close pairs in the window
    tree = cKDTree(pos)
    nn = mapping.nn_distances(pos, np.arange(len(pos)), len(pos), tree)
    idx, valid, _ = mapping.gather_windows(pos, np.arange(len(pos)), pos.mean(axis=0, keepdims=True), 250, tree)
    scale = mapping.window_scale(nn, idx, valid)
    assert abs(scale[0] - 2.87 * np.sqrt(3) / 2) < 0.02 * 2.49
    assert nn[idx[0]].mean() < 0.97 * scale[0]  # the plain mean would be pulled down


def test_lattice_scores_find_the_lattice_and_reject_a_rotated_one():
    a = 3.61
    atoms = bulk("Cu", "fcc", a=a).repeat((8, 8, 8))  # primitive fcc vectors, finite block
    pos = atoms.positions
    tree = cKDTree(pos)
    basis = np.asarray(bulk("Cu", "fcc", a=a).cell[:])
    frac = np.linalg.solve(np.asarray(atoms.cell[:]).T, pos.T).T
    interior = np.all((frac > 0.2) & (frac < 0.75), axis=1)
    nn = a / np.sqrt(2)
    hits, eligible = mapping.lattice_scores(pos, pos, basis, 0.25 * nn, tree, nn)
    good = hits / eligible
    R = Rotation.from_rotvec(np.radians(20) * np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])).as_matrix()
    hits_r, eligible_r = mapping.lattice_scores(pos, pos, basis @ R.T, 0.25 * nn, tree, nn)
    assert np.all(good[interior] == 1.0)
    assert good.mean() > 0.97  # surface atoms too: translations out of the block are mostly not eligible
    assert np.all(eligible[interior] == 26) and eligible.min() < 26
    assert np.all(eligible_r[interior] == 26)  # inside the material every target is within nn of an atom
    assert (hits_r / eligible_r)[interior].mean() < 0.35


def test_seeded_orientation_puts_two_grains_of_one_crystal_in_the_same_orientation():
    """Two fcc grains in unrelated orientations: after orient_windows, the nearest-neighbour vector stars of
    interior atoms of both grains coincide (as sets), without a lattice estimated per window."""
    rng = np.random.default_rng(3)
    r1, r2 = Rotation.random(2, random_state=rng).as_matrix()
    p1, _ = _grain("fcc", 3.61, np.array([-11.0, 0, 0]), np.array([10.0, 10.0, 10.0]), r1)
    p2, _ = _grain("fcc", 3.61, np.array([11.0, 0, 0]), np.array([10.0, 10.0, 10.0]), r2)
    pos = np.concatenate([p1, p2])
    owner = np.arange(len(pos))
    tree = cKDTree(pos)
    centres = np.array([[-11.0, 0, 0], [11.0, 0, 0]])
    idx, valid, _ = mapping.gather_windows(pos, owner, centres, 250, tree)
    R, which, info = mapping.orient_windows(pos, owner, len(pos), idx, valid, 3.61 / np.sqrt(2), tree)
    assert info["n_lattices"] == 2 and np.all(which >= 0) and which[0] != which[1]

    def star(centre, rot):
        i = tree.query(centre)[1]
        j = tree.query_ball_point(pos[i], 1.2 * 3.61 / np.sqrt(2))
        v = (pos[j] - pos[i]) @ rot.T
        return v[np.linalg.norm(v, axis=1) > 0.1]

    s1, s2 = star(centres[0], R[0]), star(centres[1], R[1])
    assert len(s1) == len(s2) == 12
    d, _ = cKDTree(s1).query(s2)
    assert d.max() < 0.05 * 3.61 / np.sqrt(2)
    # without the rotation they do not coincide
    d0, _ = cKDTree(star(centres[0], np.eye(3))).query(star(centres[1], np.eye(3)))
    assert d0.max() > 0.2


def test_parse_window():
    assert mapping.parse_window("250") == 250 and isinstance(mapping.parse_window("250"), int)
    assert mapping.parse_window("9A") == 9.0 and mapping.parse_window("9.5") == 9.5
    assert mapping.parse_window("12Å") == 12.0
    for bad in ["abc", "-3", "0", "8"]:
        with pytest.raises(ValueError):
            mapping.parse_window(bad)


# ------------------------------------------------------------------------------------------ the model


@pytest.fixture(scope="module")
def classifier():
    from crystaljax.learn.classifier import Classifier

    return Classifier.load("default")


@pytest.fixture(scope="module")
def bicrystal_map(classifier):
    atoms, truth = bicrystal()
    return atoms, truth, mapping.map_atoms(atoms, classifier, stride=8.0)


def test_bicrystal_map_is_right_away_from_the_interface_and_unsure_at_it(bicrystal_map):
    atoms, truth, res = bicrystal_map
    x = atoms.positions[:, 0]
    far = (np.abs(x) > 6.0) & np.all(np.abs(atoms.positions[:, 1:]) < 8.0, axis=1)
    assert np.mean(res.crystal_class[far] == truth[far]) >= 0.95
    assert res.probabilities.shape == (len(atoms), len(res.classes))
    np.testing.assert_allclose(res.probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(res.uncertainty, -np.sum(res.probabilities * np.log(
        np.clip(res.probabilities, 1e-12, 1)), axis=1), rtol=1e-5, atol=1e-6)
    near = np.abs(x) < 3.0
    assert res.uncertainty[near].mean() > 2 * res.uncertainty[far].mean()
    assert np.all(res.coverage > 0)
    assert sum(res.fractions().values()) == pytest.approx(1.0)


def test_mc_dropout_adds_epistemic_uncertainty_highest_at_the_interface(classifier, bicrystal_map):
    atoms, truth, res = bicrystal_map
    mc = mapping.map_atoms(atoms, classifier, stride=8.0, mc_samples=4, seed=1, unknown=False)
    assert mc.epistemic is not None and mc.epistemic.shape == (len(atoms),) and np.all(mc.epistemic >= 0)
    assert res.epistemic is None  # deterministic map: no fake zeros
    x = np.abs(atoms.positions[:, 0])
    assert mc.epistemic[x < 3.0].mean() > mc.epistemic[x > 6.0].mean()
    far = x > 6.0
    assert np.mean(mc.crystal_class[far] == truth[far]) >= 0.95


def test_map_is_independent_of_the_frame_of_the_file(classifier, bicrystal_map):
    atoms, truth, res = bicrystal_map
    turned = atoms.copy()
    turned.positions = atoms.positions @ Rotation.random(random_state=7).as_matrix().T + 100.0
    res2 = mapping.map_atoms(turned, classifier, stride=8.0)
    far = np.abs(atoms.positions[:, 0]) > 6.0
    assert np.mean(res2.crystal_class[far] == res.crystal_class[far]) >= 0.95
    assert np.mean(res2.crystal_class[far] == truth[far]) >= 0.95


def test_periodic_crystal_is_uniform_and_translation_invariant(classifier):
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((5, 5, 5))
    res = mapping.map_atoms(atoms, classifier, stride=5.0)
    assert res.info["periodic"] and res.info["atoms_per_window"] == 250
    assert np.all(res.crystal_class == "bcc")
    moved = atoms.copy()
    moved.positions += np.array([0.7, 1.3, -2.1])
    res2 = mapping.map_atoms(moved, classifier, stride=5.0)
    assert np.all(res2.crystal_class == "bcc")
    assert np.abs(res2.class_probability - res.class_probability).max() < 0.05


def test_extxyz_round_trip(tmp_path, bicrystal_map):
    from ase.io import read, write

    atoms, _, res = bicrystal_map
    write(tmp_path / "m.extxyz", res.to_atoms(atoms), format="extxyz")
    back = read(tmp_path / "m.extxyz")
    assert list(back.arrays["crystal_class"]) == list(res.crystal_class)
    np.testing.assert_allclose(back.arrays["class_probability"], res.class_probability, rtol=1e-6)
    np.testing.assert_allclose(back.arrays["uncertainty"], res.uncertainty, rtol=1e-5, atol=1e-8)


def test_cli_map_json_out_and_pictures(tmp_path, classifier, monkeypatch, capsys):
    """Default map (MC dropout, unknown verdict): with thresholds that flag everything every atom is
    ``unknown`` in the file and the JSON fractions; ``--no-unknown`` gives the classes back."""
    from ase.io import read, write

    from crystaljax import cli
    from crystaljax.learn.classifier import Classifier

    flag_all = _with_thresholds(classifier, tmp_path, FLAG_ALL)
    monkeypatch.setattr(Classifier, "load", classmethod(lambda cls, name=None, mesh=None: flag_all))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))
    write(tmp_path / "cu.xyz", atoms, format="extxyz")
    out = tmp_path / "cu_map.extxyz"
    rc = cli.main(["map", str(tmp_path / "cu.xyz"), "--out", str(out), "--stride", "7", "--json", "--quiet",
                   "--png", str(tmp_path / "cu")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_atoms"] == len(atoms) and summary["mc_samples"] > 0
    assert summary["fractions"]["unknown"] == 1.0 and summary["fractions"]["fcc"] == 0.0
    assert summary["unknown_reasons"]["low confidence"] == 1.0
    back = read(out)
    assert set(back.arrays["crystal_class"]) == {"unknown"} and np.all(back.arrays["unknown"] == 1)
    assert set(back.arrays["unknown_reason"]) == {"low_confidence"}
    for p in summary["pictures"]:
        assert (tmp_path / p).stat().st_size > 10_000
    rc = cli.main(["map", str(tmp_path / "cu.xyz"), "--out", str(out), "--stride", "7", "--json", "--quiet",
                   "--no-unknown"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["fractions"]["fcc"] == 1.0 and "unknown" not in summary["fractions"]
    back = read(out)
    assert set(back.arrays["crystal_class"]) == {"fcc"} and "unknown" not in back.arrays


def test_cli_map_bad_input_is_one_line(tmp_path, capsys):
    from crystaljax import cli

    assert cli.main(["map", str(tmp_path / "missing.xyz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("crystaljax: error:")
    (tmp_path / "x.xyz").write_text("2\n\nFe 0 0 0\nFe 0 0 2.5\n")
    assert cli.main(["map", str(tmp_path / "x.xyz"), "--window", "many"]) == 2
    assert "--window" in capsys.readouterr().err


def test_ovito_modifier_adds_the_three_properties(classifier, bicrystal_map, tmp_path):
    ovito = pytest.importorskip("ovito", reason="ovito not installed (optional extra crystaljax[ovito])")
    from ovito.io.ase import ase_to_ovito
    from ovito.pipeline import Pipeline, StaticSource

    from crystaljax.analysis.ovito_modifier import CrystalMapModifier

    atoms, _, res = bicrystal_map
    mod = CrystalMapModifier(stride=8.0, mc_samples=0)
    mod._classifier = classifier
    pipeline = Pipeline(source=StaticSource(data=ase_to_ovito(atoms)))
    pipeline.modifiers.append(mod)
    data = pipeline.compute()
    prop = data.particles["crystal_class"]
    names = {t.id: t.name for t in prop.types}
    assert [names[int(i)] for i in np.asarray(prop)] == list(res.crystal_class)
    np.testing.assert_allclose(np.asarray(data.particles["class_probability"]), res.class_probability, atol=1e-5)
    np.testing.assert_allclose(np.asarray(data.particles["uncertainty"]), res.uncertainty, atol=1e-5)
    assert "unknown" not in data.particles.keys()
    assert ovito.version[0] >= 3
    # the default modifier (MC dropout, verdict on) gives ``unknown`` in crystal_class where the map does
    mod = CrystalMapModifier(stride=7.0, mc_samples=2)
    mod._classifier = _with_thresholds(classifier, tmp_path, FLAG_ALL)
    pipeline = Pipeline(source=StaticSource(data=ase_to_ovito(bulk("Fe", "bcc", a=2.87, cubic=True).repeat(5))))
    pipeline.modifiers.append(mod)
    data = pipeline.compute()
    prop = data.particles["crystal_class"]
    names = {t.id: t.name for t in prop.types}
    assert {names[int(i)] for i in np.asarray(prop)} == {"unknown"}
    assert np.all(np.asarray(data.particles["unknown"]) == 1)
    reasons = {t.id: t.name for t in data.particles["unknown_reason"].types}
    assert {reasons[int(i)] for i in np.asarray(data.particles["unknown_reason"])} == {"low confidence"}


# ------------------------------------------------------------------------------------------ unknown verdict

#: Thresholds that flag every window (no probability reaches 1.01) and ones that flag none.
FLAG_ALL = {"sro": 1e9, "image_concentration": -1.0, "crystallinity": -1.0, "confidence": 1.01,
            "mutual_information": 1e9}
FLAG_NONE = {"sro": 1e9, "image_concentration": -1.0, "crystallinity": -1.0, "confidence": 0.0,
             "mutual_information": 1e9}


def _with_thresholds(classifier, tmp_path, thresholds):
    """The classifier (same compiled functions) with the thresholds of a temp copy of its model directory
    whose unknown.json holds ``thresholds`` (None: the copy has no unknown.json)."""
    from crystaljax.learn import checkpoint
    from crystaljax.learn.novelty import THRESHOLDS_FILE, load_thresholds

    model_dir = tmp_path / f"model_{len(list(tmp_path.glob('model_*')))}"
    shutil.copytree(checkpoint.resolve_model_dir("default"), model_dir)
    (model_dir / THRESHOLDS_FILE).unlink(missing_ok=True)
    if thresholds is not None:
        (model_dir / THRESHOLDS_FILE).write_text(json.dumps(thresholds))
    clf = copy.copy(classifier)
    clf.unknown_thresholds = load_thresholds(model_dir)
    return clf


def test_vote_unknown_is_the_weighted_majority_of_flagged_windows():
    # atom 0: flagged windows carry 0.6 of its weight -> unknown; atom 1: 0.4 -> known; atom 2: exactly 1/2 ->
    # known (the share must exceed 1/2); atom 3 is in no window and takes its nearest window's verdict
    atom = np.array([[0, 1, 2], [0, 1, 2], [0, 0, 0]])
    wgt = np.array([[0.6, 0.4, 0.5], [0.4, 0.6, 0.5], [0.0, 0.0, 0.0]])
    flagged = np.array([True, False, False])
    reason = ["non-crystalline", "", ""]
    unknown, why, share = mapping.vote_unknown(flagged, reason, atom, wgt, 4, np.array([[3, 0]]))
    np.testing.assert_allclose(share, [0.6, 0.4, 0.5, 1.0])
    assert list(unknown) == [True, False, False, True]
    assert list(why) == ["non-crystalline", "", "", "non-crystalline"]
    # the reason is the one whose windows weigh most; a tie goes to the classifier's gate order (REASONS)
    unknown, why, _ = mapping.vote_unknown(np.array([True, True, False]), ["low confidence", "non-crystalline", ""],
                                           atom, wgt, 3)
    assert list(why) == ["low confidence", "non-crystalline", "non-crystalline"] and unknown.all()


def test_window_host_gates_flag_ordering_and_gas_but_not_segregation_or_random_alloys():
    """Host gates on single windows with the thresholds of the shipped unknown.json's kind (sro 0.24,
    crystallinity 0.25): a rock-salt window is an ordered compound, a window across a Cu | Fe grain boundary
    (large scalar SRO of segregation) and a random CuAu fcc alloy are not, a gas window is no crystal."""
    from crystaljax.learn.novelty import Thresholds

    rng = np.random.default_rng(0)
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(5)
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(5)
    alloy.numbers[rng.random(len(alloy)) < 0.5] = 79
    interface, _ = bicrystal()
    gas = Atoms(numbers=np.full(600, 18), positions=rng.uniform(0, 20, (600, 3)))
    cases = [(nacl, 2.82), (interface, 2.5), (alloy, 3.7 / np.sqrt(2)), (gas, 1.7)]
    feats = []
    for atoms, d in cases:
        pos = atoms.positions
        centre = pos.mean(axis=0, keepdims=True)
        idx, valid, _ = mapping.gather_windows(pos, np.arange(len(pos)), centre, 250)
        feats.append(mapping.window_host_features(pos, atoms.numbers, idx, valid, np.array([d])))
    host = {k: np.concatenate([f[k] for f in feats]) for k in feats[0]}
    assert host["sro"][0] > 0.9 and host["unlike_alpha"][0] == pytest.approx(-0.5, abs=0.05)
    assert host["sro"][1] > 0.3 and host["unlike_alpha"][1] > 0.3  # segregation: large SRO, unlike pairs avoided
    assert host["sro"][2] < 0.15
    assert host["crystallinity"][:3].min() > 0.9 and host["crystallinity"][3] < 0.25
    th = Thresholds(sro=0.24, crystallinity=0.25)
    v = mapping.window_verdict(th, concentration=np.ones(4), confidence=np.ones(4), mutual_information=np.zeros(4),
                               host=host)
    assert v.reason == ["ordered compound", "", "", "unknown crystal"]


@pytest.fixture(scope="module")
def small_bcc():
    return bulk("Fe", "bcc", a=2.87, cubic=True).repeat((5, 5, 5))  # 250 atoms, 8 windows at stride 7


def test_forced_thresholds_flag_every_atom_or_none(classifier, small_bcc, tmp_path):
    atoms = small_bcc
    flag_all = mapping.map_atoms(atoms, _with_thresholds(classifier, tmp_path, FLAG_ALL), stride=7.0, mc_samples=2)
    assert flag_all.info["unknown_verdict"] == "on"
    assert np.all(flag_all.unknown) and np.all(flag_all.crystal_class == "unknown")
    assert set(flag_all.unknown_reason) == {"low confidence"} and np.all(flag_all.window_unknown)
    assert flag_all.fractions()["unknown"] == 1.0 and sum(flag_all.fractions().values()) == pytest.approx(1.0)
    assert np.all(flag_all.class_probability > 0.5)  # the class probabilities are still there
    none = mapping.map_atoms(atoms, _with_thresholds(classifier, tmp_path, FLAG_NONE), stride=7.0, mc_samples=2)
    assert not none.unknown.any() and set(none.unknown_reason) == {""} and np.all(none.crystal_class == "bcc")
    assert none.fractions()["unknown"] == 0.0
    # the window gates use the window's own numbers: a confidence threshold between the windows' MC mean
    # probabilities flags exactly the windows below it
    mid = float(np.median(none.window_probabilities.max(axis=1)))
    some = mapping.map_atoms(atoms, _with_thresholds(classifier, tmp_path, {**FLAG_NONE, "confidence": mid}),
                             stride=7.0, mc_samples=2)
    np.testing.assert_array_equal(some.window_unknown, none.window_probabilities.max(axis=1) < mid)
    # no unknown.json: the verdict runs and flags nothing (as the classifier); no MC or --no-unknown: no verdict
    bare = _with_thresholds(classifier, tmp_path, None)
    assert bare.unknown_thresholds is None
    res = mapping.map_atoms(atoms, bare, stride=7.0, mc_samples=2)
    assert res.info["unknown_verdict"] == "no thresholds" and not res.unknown.any()
    flag_all_clf = _with_thresholds(classifier, tmp_path, FLAG_ALL)
    for kw in ({"mc_samples": 0}, {"mc_samples": 2, "unknown": False}):
        off = mapping.map_atoms(atoms, flag_all_clf, stride=7.0, **kw)
        assert off.unknown is None and off.info["unknown_verdict"] == "off" and "unknown" not in off.fractions()
        assert np.all(off.crystal_class == "bcc")


def test_unknown_arrays_round_trip_through_extxyz(classifier, small_bcc, tmp_path):
    from ase.io import read, write

    res = mapping.map_atoms(small_bcc, _with_thresholds(classifier, tmp_path, FLAG_ALL), stride=7.0, mc_samples=2)
    write(tmp_path / "m.extxyz", res.to_atoms(small_bcc), format="extxyz")
    back = read(tmp_path / "m.extxyz")
    assert list(back.arrays["crystal_class"]) == ["unknown"] * len(small_bcc)
    assert list(back.arrays["unknown"]) == [1] * len(small_bcc)
    assert list(back.arrays["unknown_reason"]) == ["low_confidence"] * len(small_bcc)
    assert list(mapping.file_reason(["", "non-crystalline", "low confidence"])) == [
        "none", "non-crystalline", "low_confidence"]


def test_liquid_half_of_a_crystal_liquid_slab_is_unknown_and_the_crystal_half_is_not(classifier):
    """Finite slab: fcc Cu (x < 0) next to a liquid-like dense random packing of the same number of atoms in the
    same volume (x > 0: random sequential addition with no pair closer than 0.6 d_NN, then a soft repulsion
    relaxed towards d_NN, the calibration's "liquid-like" recipe); shipped thresholds.  Atoms more than 4 Å from
    the interface: the crystal's are known, the liquid's mostly unknown.  (Uniformly random points that may
    overlap are not matter and are not what the thresholds are calibrated on.)"""
    from crystaljax.structures.out_of_scope import _relax_soft, _rsa

    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((6, 6, 6))
    length = float(cu.cell[0, 0])
    crystal = cu.positions - cu.cell.sum(axis=0) / 2 - [length / 2, 0, 0]
    d_nn = 3.61 / np.sqrt(2)
    liquid = _rsa(np.random.default_rng(0), len(crystal), length, 0.6 * d_nn)
    assert len(liquid) == len(crystal)
    liquid = _relax_soft(liquid, length, d_nn, steps=60, periodic=False).clip(0.0, length)
    liquid = liquid - length / 2 + [length / 2, 0, 0]
    atoms = Atoms(numbers=np.full(2 * len(crystal), 29), positions=np.concatenate([crystal, liquid]))
    res = mapping.map_atoms(atoms, classifier, stride=8.0, mc_samples=8)
    assert res.info["unknown_verdict"] == "on"
    x = atoms.positions[:, 0]
    assert res.unknown[x < -4.0].mean() < 0.2
    assert res.unknown[x > 4.0].mean() > 0.5
    assert np.mean(res.crystal_class[x < -4.0] == "fcc") > 0.8


def test_window_scale_rules_under_displacements(classifier):
    """Interior window of an fcc crystal with Gaussian displacements of 0 / 4 / 8 % d_NN per component: the
    median nearest-neighbour distance shrinks (displacements shorten every atom's nearest pair), the robust
    first-shell estimate stays within 1 % of d_NN, and the default rule, the larger of the two, follows it; on the
    clean crystal both are exact and the maps of the two rules agree."""
    from scipy.spatial import cKDTree

    from crystaljax.structures.cluster import ROBUST_NEIGHBOURS

    box = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((7, 7, 7))
    d_nn = 3.61 / np.sqrt(2)
    for level, median_below in ((0.0, 1.0 + 1e-9), (0.04, 0.95), (0.08, 0.9)):
        pos = box.positions + np.random.default_rng(3).normal(0.0, level * d_nn, box.positions.shape)
        tree = cKDTree(pos)
        idx = np.flatnonzero(np.linalg.norm(pos - pos.mean(axis=0), axis=1) < 7.0)[None]
        valid = np.ones_like(idx, dtype=bool)
        median = mapping.window_scale(tree.query(pos, k=2)[0][:, 1], idx, valid)[0] / d_nn
        robust = mapping.robust_window_scale(tree.query(pos, k=ROBUST_NEIGHBOURS + 1)[0][:, 1:], idx, valid)[0] / d_nn
        assert median < median_below and abs(robust - 1.0) < 0.01 and max(median, robust) == robust
    assert mapping.SCALE_METHODS == ("median", "robust", "max")
    with pytest.raises(ValueError, match="scale_method"):
        mapping.map_atoms(box, classifier, stride=8.0, scale_method="mean")
    clean_max = mapping.map_atoms(box, classifier, stride=8.0)
    clean_median = mapping.map_atoms(box, classifier, stride=8.0, scale_method="median")
    np.testing.assert_allclose(clean_max.class_probability, clean_median.class_probability, atol=1e-4)
