"""Cluster building: replication count and shape, nearest-neighbour scaling, centring, tags, finite inputs."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from crystaljax.structures.cell import random_rotation, rotate, standard_cell
from crystaljax.structures.cluster import build_cluster, mean_nn_distance, prepare, replication, robust_nn_distance
from crystaljax.errors import StructureError

A_SC, A_FCC, A_BCC, A_DIA, A_HCP, C_HCP = 3.35, 3.61, 2.87, 3.567, 3.21, 5.21

# name -> (periodic structure, physical nn distance in Å)
CRYSTALS = {
    "sc": (lambda: Atoms("Po", positions=[[0, 0, 0]], cell=np.eye(3) * A_SC, pbc=True), A_SC),
    "fcc": (lambda: bulk("Cu", "fcc", a=A_FCC), A_FCC / np.sqrt(2)),
    "fcc_conv": (lambda: bulk("Cu", "fcc", a=A_FCC, cubic=True), A_FCC / np.sqrt(2)),
    "bcc": (lambda: bulk("Fe", "bcc", a=A_BCC), A_BCC * np.sqrt(3) / 2),
    "bcc_conv": (lambda: bulk("Fe", "bcc", a=A_BCC, cubic=True), A_BCC * np.sqrt(3) / 2),
    "hcp": (lambda: bulk("Mg", "hcp", a=A_HCP, c=C_HCP), min(A_HCP, np.sqrt(A_HCP**2 / 3 + C_HCP**2 / 4))),
    "diamond": (lambda: bulk("C", "diamond", a=A_DIA), A_DIA * np.sqrt(3) / 4),
}
# expected replication for target 250 (see the rule in crystaljax.structures.cluster)
EXPECTED_CELLS = {
    "sc": (6, 6, 7), "fcc": (6, 6, 7), "fcc_conv": (4, 4, 4), "bcc": (6, 6, 7), "bcc_conv": (5, 5, 5),
    "hcp": (5, 6, 4), "diamond": (5, 5, 5),
}


def _brute_force_nn(pos):
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


@pytest.mark.parametrize("shape", ["block", "sphere"])
@pytest.mark.parametrize("name", sorted(CRYSTALS))
def test_cluster_physics(name, shape):
    make, nn_true = CRYSTALS[name]
    c = prepare(make(), target=250, shape=shape)
    if shape == "block":  # count: as expected, and within 10 % of the target
        assert c.info["n_cells"] == EXPECTED_CELLS[name]
        n_cell = len(make())
        assert len(c) == n_cell * np.prod(EXPECTED_CELLS[name])
    else:  # whole shells around an atom: a near-isotropic ball whatever the cell
        eig = np.linalg.eigvalsh(np.cov(c.positions.T))
        assert eig.max() / eig.min() < 1.15
    assert abs(len(c) - 250) <= 25
    # scale: physical nn distance recorded, neighbours 1 Å apart in the output
    assert np.isclose(c.info["nn_distance"], nn_true, rtol=1e-9)
    nn = _brute_force_nn(c.positions)
    assert abs(nn.mean() - 1.0) < 1e-6 and abs(mean_nn_distance(c) - 1.0) < 1e-6
    assert np.allclose(nn, 1.0, atol=1e-6)  # every atom of these clusters has a nearest neighbour at 1 Å
    # centred, finite
    assert np.abs(c.positions.mean(axis=0)).max() < 1e-10
    assert not c.pbc.any() and not np.any(c.cell.array)
    # the cluster is the crystal: physical positions are lattice translates of the standard cell's atoms
    s = standard_cell(make())
    phys = c.positions * c.info["nn_distance"]
    basis = s.get_scaled_positions()
    rel = np.linalg.solve(s.cell.array.T, (phys - phys[0]).T).T
    # atom 0 sits on some basis site i; every atom is then on a lattice translate of a basis site
    on_lattice = []
    for site in basis:
        k = (rel + site)[:, None, :] - basis[None, :, :]
        on_lattice.append((np.abs(k - np.rint(k)).max(axis=2) < 1e-8).any(axis=1).all())
    assert any(on_lattice)


def test_count_close_to_target_for_many_targets():
    for name, (make, _) in CRYSTALS.items():
        s = standard_cell(make())
        for target in [32, 100, 250, 500, 1024]:
            reps = replication(len(s), s.cell, target)
            count = len(s) * int(np.prod(reps))
            best = min(abs(p * len(s) - target) for p in range(1, 2 * target))
            assert abs(count - target) <= max(0.1 * target, best) + 1e-9, (name, target, reps)
            ext = np.array(reps) * np.linalg.norm(s.cell.array, axis=1)
            if target >= 100:  # small targets leave few shapes (32 atoms of sc: 2 x 4 x 4)
                assert ext.max() / ext.min() < 1.75, (name, target, reps)


def test_replication_prefers_isotropic_and_then_target():
    cube = np.eye(3) * 3.0
    # 125 = 5^3 is exact and isotropic
    assert replication(2, cube, 250) == (5, 5, 5)
    # 250 = 5 x 5 x 10 exactly, but 6 x 6 x 7 = 252 is within 10 % and nearly cubic
    assert replication(1, cube, 250) == (6, 6, 7)
    # long c axis: fewer repeats along it
    n1, n2, n3 = replication(1, np.diag([3.0, 3.0, 9.0]), 250)
    assert n3 < n1 and n3 < n2 and abs(n1 * n2 * n3 - 250) <= 25
    # a cell already larger than the target is used once
    assert replication(400, cube, 250) == (1, 1, 1)
    assert replication(300, cube, 250) == (1, 1, 1)
    # when nothing lies within 10 %, the closest achievable count is used
    assert replication(200, cube, 250) == (1, 1, 1)
    assert replication(100, cube, 250) in {(1, 1, 2), (1, 2, 1), (2, 1, 1), (1, 1, 3), (1, 3, 1), (3, 1, 1)}


def test_scale_is_the_periodic_crystal_nn_not_the_cluster_nn():
    # the nearest pair straddles the cell face: 0.8 Å in the crystal, 3.2 Å inside one copy of the cell
    atoms = Atoms("Cu2", positions=[[0.4, 0, 0], [3.6, 0, 0]], cell=np.eye(3) * 4.0, pbc=True)
    c = build_cluster(atoms, target=2, shape="block")
    assert c.info["n_cells"] == (1, 1, 1) and len(c) == 2
    assert np.isclose(c.info["nn_distance"], 0.8)
    assert np.isclose(np.linalg.norm(c.positions[0] - c.positions[1]), 3.2 / 0.8)


def test_tags_survive_replication():
    bcc = bulk("Fe", "bcc", a=A_BCC, cubic=True)
    bcc.set_tags([0, 1])  # the body-centre atom
    c = prepare(bcc, shape="block")
    tags = c.get_tags()
    assert len(c) == 250 and (tags == 1).sum() == 125 and set(np.unique(tags)) == {0, 1}
    # each sublattice alone is simple cubic with edge a = 2/sqrt(3) in units of the bcc nn distance
    for t in (0, 1):
        sub = c.positions[tags == t]
        assert np.allclose(_brute_force_nn(sub), 2 / np.sqrt(3), atol=1e-9)
    # and the two sublattices interpenetrate at the nn distance
    d = np.linalg.norm(c.positions[tags == 0][:, None] - c.positions[tags == 1][None], axis=-1)
    assert np.isclose(d.min(), 1.0)


def test_non_periodic_input_kept_as_given():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 12, size=(60, 3))
    pos = pos[_brute_force_nn(pos) > 0.5]
    numbers = rng.integers(1, 90, size=len(pos))
    atoms = Atoms(numbers=numbers, positions=pos, tags=np.arange(len(pos)) % 3)
    atoms.info["label"] = "np"
    c = build_cluster(atoms, target=250)
    nn = robust_nn_distance(atoms)
    assert len(c) == len(pos)  # no replication, whatever the target
    assert np.isclose(c.info["nn_distance"], nn, rtol=1e-12)
    np.testing.assert_allclose(c.positions, (pos - pos.mean(axis=0)) / nn, atol=1e-12)
    assert np.array_equal(c.numbers, numbers) and np.array_equal(c.get_tags(), atoms.get_tags())
    assert "n_cells" not in c.info and c.info["label"] == "np"
    assert abs(robust_nn_distance(c) - 1) < 1e-9
    # the old estimator stays available by name
    c_mean = build_cluster(atoms, target=250, scale="mean")
    assert np.isclose(c_mean.info["nn_distance"], _brute_force_nn(pos).mean(), rtol=1e-12)
    assert abs(mean_nn_distance(c_mean) - 1) < 1e-9
    with pytest.raises(ValueError, match="scale"):
        build_cluster(atoms, scale="nope")
    # prepare does the same for finite input (validate first)
    np.testing.assert_allclose(prepare(atoms).positions, c.positions)


def test_partial_pbc_treated_as_finite():
    slab = bulk("Cu", "fcc", a=A_FCC, cubic=True).repeat((2, 2, 2))
    slab.pbc = [True, True, False]
    c = prepare(slab)
    assert len(c) == len(slab) and "n_cells" not in c.info
    assert np.isclose(c.info["nn_distance"], A_FCC / np.sqrt(2))


def test_prepare_is_invariant_to_orientation_basis_and_origin():
    rng = np.random.default_rng(3)
    atoms = bulk("Mg", "hcp", a=A_HCP, c=C_HCP)
    atoms.set_tags([0, 1])
    ref = prepare(atoms)
    other = atoms.copy()
    other.set_cell(np.array([[1, 1, 0], [0, 1, 0], [1, 2, 1]]) @ atoms.cell.array, scale_atoms=False)
    other = rotate(other, random_rotation(rng))
    other.positions += [1.0, -2.0, 0.5]
    other.wrap()
    c = prepare(other)
    assert len(c) == len(ref) and c.info["n_cells"] == ref.info["n_cells"]
    key = lambda a: np.lexsort(np.round(np.c_[a.get_tags(), a.positions], 6).T[::-1])  # noqa: E731
    np.testing.assert_allclose(c.positions[key(c)], ref.positions[key(ref)], atol=1e-8)
    assert np.array_equal(c.get_tags()[key(c)], ref.get_tags()[key(ref)])


def test_mean_nn_distance_periodic_and_skewed_basis():
    sc = Atoms("Po", positions=[[0, 0, 0]], cell=np.eye(3) * A_SC, pbc=True)
    assert np.isclose(mean_nn_distance(sc), A_SC)
    skew = sc.copy()
    skew.set_cell(np.array([[1, 3, 0], [0, 1, 0], [2, -1, 1]]) @ sc.cell.array, scale_atoms=False)
    assert np.isclose(mean_nn_distance(skew), A_SC)
    # two sublattices with different nn distances: the mean over atoms
    a = Atoms("Cu2", positions=[[0, 0, 0], [0.8, 0, 0]], cell=np.eye(3) * 4.0, pbc=True)
    assert np.isclose(mean_nn_distance(a), 0.8)
    big = Atoms("Cu3", positions=[[0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]], cell=np.eye(3) * 9.0, pbc=True)
    assert np.isclose(mean_nn_distance(big), (1.0 + 1.0 + 4.0) / 3)


def test_mean_nn_distance_large_finite_input():
    """25,000 atoms (timed against its budget in benchmarks/bench_host_budgets.py)."""
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 70, size=(25_000, 3))
    atoms = Atoms(numbers=np.full(len(pos), 29), positions=pos)
    d = mean_nn_distance(atoms)
    sub = rng.choice(len(pos), 50, replace=False)
    dist = np.linalg.norm(pos[sub][:, None] - pos[None], axis=-1)
    dist[np.arange(50), sub] = np.inf
    assert 0.5 * d < dist.min(axis=1).mean() < 2 * d  # sample of the exact per-atom values
    c = build_cluster(atoms)  # the robust scale
    assert len(c) == 25_000 and abs(robust_nn_distance(c) - 1) < 1e-9


def test_prepare_rejects_bad_structures():
    with pytest.raises(StructureError):
        prepare(Atoms("Cu", positions=[[0, 0, 0]]))
    with pytest.raises(StructureError):
        prepare(Atoms(numbers=[0, 29], positions=[[0, 0, 0], [2, 0, 0]]))
    with pytest.raises(StructureError):
        prepare(Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 0]], cell=np.diag([3, 3, 0.0]), pbc=True))


def test_sphere_cluster_does_not_depend_on_the_input_cell():
    """Primitive, conventional and supercell inputs of one crystal give the same ball of atoms."""
    from ase.build import make_supercell

    fcc = bulk("Cu", "fcc", a=3.6)
    variants = [fcc, bulk("Cu", "fcc", a=3.6, cubic=True), make_supercell(fcc, [[1, 1, 0], [-1, 1, 0], [0, 0, 2]])]
    balls = [build_cluster(v, target=250) for v in variants]
    radii = [np.sort(np.linalg.norm(b.positions - b.positions.mean(0), axis=1)) for b in balls]
    for r in radii[1:]:
        assert len(r) == len(radii[0])
        np.testing.assert_allclose(r, radii[0], atol=1e-9)
    # a long, thin supercell (an MD box) still gives an isotropic ball, unlike block replication
    box = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((2, 2, 12))
    ball = build_cluster(box, target=250)
    block = build_cluster(box, target=250, shape="block")
    aniso = [np.ptp(c.positions, axis=0).max() / np.ptp(c.positions, axis=0).min() for c in (ball, block)]
    assert aniso[0] < 1.2 < aniso[1]


def test_unknown_shape_rejected():
    with pytest.raises(ValueError, match="shape"):
        build_cluster(bulk("Cu", "fcc", a=3.6), shape="cube")


def test_a_periodic_box_is_oriented_by_its_crystal_not_by_the_box(monkeypatch):
    """hcp Zn (c/a 1.86) as a 252-atom 6x7x3 box: the box's reduced lattice has c shorter than 6a and 7a,
    so orienting by the box puts c along x; the box route orients the ball by the crystal's lattice and
    gives the primitive cell's fingerprint."""
    from ase.build import bulk

    from crystaljax import pipeline
    from crystaljax.structures import cluster

    zn = bulk("Zn", "hcp", a=2.66, c=4.937)
    box = zn.repeat(cluster.replication(len(zn), zn.cell[:], 250))
    assert len(box) > cluster.BOX_ATOMS
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(a))
    fp = np.asarray(pipeline.fingerprints([zn, box]))
    assert rel(fp[0], fp[1]) < 1e-3
    monkeypatch.setattr(cluster, "BOX_ATOMS", 10**9)     # the box's own lattice: another orientation
    old = np.asarray(pipeline.fingerprints([box]))
    assert rel(fp[0], old[0]) > 0.1


def _on_lattice_of(points: np.ndarray, reference: np.ndarray, tol: float = 0.05) -> float:
    """Fraction of the difference vectors points - points[0] that are difference vectors of ``reference``
    (from the reference atom nearest its centroid) within ``tol`` (positions in units of d_NN)."""
    from scipy.spatial import cKDTree

    centre = reference[np.argmin(np.linalg.norm(reference - reference.mean(0), axis=1))]
    diffs = cKDTree(reference - centre)
    d = points - points[0]
    d = d[np.linalg.norm(d, axis=1) < 0.6 * np.ptp(reference, axis=0).min()]  # inside the reference ball
    return float(np.mean(diffs.query(d)[0] < tol))


def test_a_vacancy_rich_box_is_oriented_like_its_primitive_cell(monkeypatch):
    """hcp Zn as an 8x8x3 box (3c < 8a: the box's reduced lattice puts c along x) with 62 % of its atoms removed
    (spglib finds no primitive cell): the box route finds the crystal lattice in a ball, checks that it tiles the
    box, and every atom of the prepared cluster sits on a site of the primitive cell's prepared cluster; the
    box's own lattice (the former rule for boxes of <= 150 atoms) does not."""
    from crystaljax.structures import cluster

    zn = bulk("Zn", "hcp", a=2.66, c=4.937)
    box = zn.repeat((8, 8, 3))
    rng = np.random.default_rng(0)
    box = box[np.sort(rng.choice(len(box), int(0.38 * len(box)), replace=False))]
    assert cluster.BOX_ATOMS < len(box) <= 150
    reference = prepare(zn).positions
    assert _on_lattice_of(prepare(box).positions, reference) > 0.99
    monkeypatch.setattr(cluster, "BOX_ATOMS", 150)
    assert _on_lattice_of(prepare(box).positions, reference) < 0.5


def test_tiles_accepts_the_crystal_lattice_and_rejects_others():
    from crystaljax.structures.cluster import tiles

    prim = bulk("Cu", "fcc", a=3.6).cell[:]
    box = np.diag([4, 4, 4]) @ bulk("Cu", "fcc", a=3.6, cubic=True).cell[:]
    assert tiles(box, prim)
    assert tiles(box, prim * (1 + 2e-3))                      # estimation noise
    assert not tiles(box, prim * 1.5)                         # a coarser lattice
    c, s_ = np.cos(np.radians(30)), np.sin(np.radians(30))
    assert not tiles(box, prim @ np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]).T)   # the lattice turned 30 deg
    assert not tiles(box, np.zeros((3, 3)))
