"""Lattice finder and standard orientation of finite fragments: primitive lattice under rotation, noise,
vacancies and substitutions; rejection of intra-basis vectors; orientation agreeing with standard_cell of the
periodic primitive cell; amorphous input (timing: benchmarks/bench_host_budgets.py)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.spatial import cKDTree

from crystaljax.structures import prototypes
from crystaljax.structures.cell import random_rotation, rotate, standard_cell, standard_orientation
from crystaljax.errors import StructureError
from crystaljax.structures.lattice import estimate_lattice, orient_finite, symmetrize_lattice

_I = np.array([[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]])  # I-centred conventional -> primitive
_R = np.array([[2, 1, 1], [-1, 1, 1], [-1, -2, 1]]) / 3.0  # R-centred hexagonal (obverse) -> primitive


def _crystal(name):
    """(periodic cell, primitive lattice basis (3, 3) Å in the frame of that cell)."""
    if name == "beta-Sn":
        at = prototypes.build("A_tI4_141_a", "Sn")
        return at, _I @ at.cell[:]
    if name == "alpha-Sm":  # 3 atoms per primitive cell on a line: a vector mapping 2 of 3 sublattices
        at = prototypes.build("A_hR3_166_ac", "Sm")
        return at, _R @ at.cell[:]
    at = {
        "fcc": lambda: bulk("Cu", "fcc", a=3.61),
        "bcc": lambda: bulk("Fe", "bcc", a=2.87),
        "sc": lambda: bulk("Po", "sc", a=3.34),
        "diamond": lambda: bulk("C", "diamond", a=3.567),
        "hcp": lambda: bulk("Mg", "hcp", a=3.21, c=5.21),
    }[name]()
    return at, at.cell[:].copy()


CRYSTALS = ["fcc", "bcc", "sc", "diamond", "hcp", "beta-Sn", "alpha-Sm"]


def _nn(at):
    from crystaljax.structures.cluster import mean_nn_distance

    return mean_nn_distance(at)


def _sphere(at, n, rng):
    """Positions (Å) and per-atom indices of the ~n atoms of the crystal nearest a random point."""
    cell = at.cell[:]
    vol = abs(np.linalg.det(cell)) / len(at)
    radius = (3 * n * vol / (4 * np.pi)) ** (1 / 3) + 2 * _nn(at)
    heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    reps = [int(np.ceil(2 * radius / h)) + 1 for h in heights]
    big = at.repeat(reps)
    pos = big.positions
    centre = pos.mean(axis=0) + rng.uniform(-0.5, 0.5, 3) * _nn(at)
    idx = np.argsort(np.linalg.norm(pos - centre, axis=1), kind="stable")[:n]
    return pos[idx]


def _fragment(name, n=320, seed=0, noise=0.0, vacancies=0.0):
    """(positions (Å) of a rotated, noisy, incomplete spherical fragment, rotation R, primitive basis, nn)."""
    rng = np.random.default_rng(seed)
    at, prim = _crystal(name)
    nn = _nn(at)
    pos = _sphere(at, int(round(n / (1 - vacancies))), rng)
    if vacancies:
        pos = pos[rng.uniform(size=len(pos)) >= vacancies]
    if noise:
        pos = pos + rng.normal(0.0, noise * nn, pos.shape)
    R = random_rotation(rng)
    return pos @ R.T, R, prim, nn


def _match(B, B_true, nn):
    """Integer U with B ~ U B_true (same lattice: |det U| = 1) and the max deviation / nn."""
    U = np.rint(B @ np.linalg.inv(B_true))
    return U, float(np.abs(B - U @ B_true).max() / nn)


def _niggli_metric(B):
    from ase.build.tools import niggli_reduce_cell

    _, C = niggli_reduce_cell(B)
    M = np.asarray(C).T @ B
    return M @ M.T


# ----------------------------------------------------------------------------------------------- estimate


@pytest.mark.parametrize("name", CRYSTALS)
def test_estimate_primitive_lattice_noisy_incomplete(name):
    """3 % noise, 25 % vacancies, random rotation: the primitive lattice (not a sub- or superlattice)."""
    pos, R, prim, nn = _fragment(name, seed=CRYSTALS.index(name), noise=0.03, vacancies=0.25)
    B = estimate_lattice(pos)
    assert B is not None and B.shape == (3, 3)
    U, dev = _match(B, prim @ R.T, nn)
    assert abs(round(np.linalg.det(U))) == 1, "not a primitive basis of the crystal lattice"
    assert dev < 0.03
    assert np.linalg.det(B) > 0
    # metric: equal to the true one in the matching basis, and (once the near-ties noise breaks are
    # restored by symmetrize_lattice) the same Niggli-reduced metric as the true primitive cell
    G, G_true = B @ B.T, prim @ prim.T
    assert np.abs(G - U @ G_true @ U.T).max() < 0.05 * nn**2
    assert np.abs(_niggli_metric(symmetrize_lattice(B, 0.05)) - _niggli_metric(prim)).max() < 0.05 * nn**2
    # Niggli-reduced output: re-reducing it keeps the vector lengths
    assert np.allclose(np.sort(np.diag(_niggli_metric(B))), np.sort(np.diag(G)), atol=1e-6 * nn**2)


@pytest.mark.parametrize("name", ["fcc", "hcp", "alpha-Sm"])
def test_estimate_exact_without_noise(name):
    pos, R, prim, nn = _fragment(name, n=260, seed=11)
    U, dev = _match(estimate_lattice(pos), prim @ R.T, nn)
    assert abs(round(np.linalg.det(U))) == 1
    assert dev < 1e-9


@pytest.mark.parametrize("name", ["fcc", "diamond", "hcp", "beta-Sn"])
def test_estimate_limits_noise5_vacancies40_substitutions(name):
    """The specified limits: 5 % noise and 40 % vacancies together (species are never used)."""
    pos, R, prim, nn = _fragment(name, n=300, seed=21, noise=0.05, vacancies=0.40)
    U, dev = _match(estimate_lattice(pos), prim @ R.T, nn)
    assert abs(round(np.linalg.det(U))) == 1
    assert dev < 0.04


def test_estimate_intra_basis_vector_is_not_a_translation():
    """Diamond's (1/4, 1/4, 1/4) vector is the nearest-neighbour vector; the lattice is the fcc one (|a| =
    sqrt(8/3) nn), so the cell holds 2 atoms.  A 2-atom basis made of two diamond sublattices is the test."""
    pos, R, prim, nn = _fragment("diamond", seed=3)
    B = estimate_lattice(pos)
    assert np.allclose(np.linalg.norm(B, axis=1), np.sqrt(8 / 3) * nn, rtol=1e-6)
    assert abs(np.linalg.det(B)) == pytest.approx(abs(np.linalg.det(prim)), rel=1e-6)


def _amorphous(n, rng, steps=150):
    """Soft-sphere relaxed random packing (unit diameter) at close-packed density: no lattice."""
    radius = (3 * n * 0.74 / (4 * np.pi)) ** (1 / 3)
    p = rng.normal(size=(n, 3))
    p *= radius * rng.uniform(size=(n, 1)) ** (1 / 3) / np.linalg.norm(p, axis=1, keepdims=True)
    for _ in range(steps):
        i, j = cKDTree(p).query_pairs(1.0, output_type="ndarray").T
        d = p[i] - p[j]
        r = np.linalg.norm(d, axis=1, keepdims=True)
        f = (1 - r) * d / np.maximum(r, 1e-9)
        g = np.zeros_like(p)
        np.add.at(g, i, f)
        np.add.at(g, j, -f)
        p += 0.3 * g
    return p


def test_amorphous_and_random_give_none_and_unchanged():
    rng = np.random.default_rng(5)
    glass = _amorphous(300, rng) * 2.5
    gas = rng.uniform(0.0, 20.0, size=(300, 3))
    for pos in (glass, gas):
        assert estimate_lattice(pos) is None
        atoms = Atoms(numbers=rng.integers(1, 80, len(pos)), positions=pos, tags=np.arange(len(pos)))
        out = orient_finite(atoms)
        assert out.info["lattice_found"] is False
        assert np.array_equal(out.positions, atoms.positions)
        assert np.array_equal(out.numbers, atoms.numbers) and np.array_equal(out.get_tags(), atoms.get_tags())
    # a crystal blurred beyond recognition (25 % of nn) is not a lattice either
    pos, *_ = _fragment("fcc", seed=6, noise=0.25)
    assert estimate_lattice(pos) is None


def test_too_few_atoms_or_flat():
    pos, *_ = _fragment("fcc", n=10)
    assert estimate_lattice(pos) is None
    g = np.stack(np.meshgrid(np.arange(15), np.arange(15), indexing="ij"), -1).reshape(-1, 2)
    layer = np.column_stack([g @ np.array([[2.5, 0.0], [1.25, 2.165]]), np.zeros(len(g))])  # one hex layer
    assert estimate_lattice(layer) is None


# ----------------------------------------------------------------------------------------------- orientation


def test_standard_orientation_is_standard_cell_orientation():
    rng = np.random.default_rng(9)
    for at in (bulk("Cu", "fcc", a=3.6), bulk("Mg", "hcp", a=3.2, c=5.2), prototypes.build("A_tI4_141_a", "Sn"),
               Atoms("Al", cell=[[3.1, 0.2, 0.1], [0.9, 3.4, -0.3], [0.4, -1.1, 4.2]], pbc=True)):
        at = rotate(at, random_rotation(rng))
        R, L = standard_orientation(at.cell[:])
        assert np.allclose(L, standard_cell(at).cell[:], atol=1e-9)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.linalg.det(R) == pytest.approx(1.0)
        U = at.cell[:] @ R.T @ np.linalg.inv(L)  # same lattice: unimodular integer matrix
        assert np.allclose(U, np.rint(U), atol=1e-9) and abs(round(np.linalg.det(U))) == 1
    with pytest.raises(StructureError):
        standard_orientation(np.zeros((3, 3)))


def test_symmetrize_lattice():
    rng = np.random.default_rng(10)
    prim = bulk("Cu", "fcc", a=3.6).cell[:]
    noisy = prim + rng.normal(0, 0.02, (3, 3))
    sym = symmetrize_lattice(noisy, 0.05)
    G = sym @ sym.T
    assert np.allclose(np.diag(G), G[0, 0], rtol=1e-12)
    assert np.allclose(G[np.triu_indices(3, 1)], G[0, 0] / 2, rtol=1e-12)  # exactly 60 degrees
    assert np.abs(sym - noisy).max() < 0.1
    tet = np.diag([3.0, 3.0, 3.3])  # 10 % tetragonal: not promoted to cubic
    assert np.allclose(symmetrize_lattice(tet, 0.05), tet)


def _lattice_rotations(L, tol=1e-6):
    """Cartesian rotations Q (x' = Q x) mapping the lattice with rows L onto itself."""
    from crystaljax.structures.lattice import _approx_automorphisms

    U = _approx_automorphisms(L @ L.T, tol).astype(float)
    return [L.T @ u.T @ np.linalg.inv(L).T for u in U]


@pytest.mark.parametrize("name", CRYSTALS)
def test_orient_finite_two_rotations_agree(name):
    """The same substituted, noisy fragment in two orientations: the oriented atoms coincide up to a rotation
    of the lattice onto itself (a crystal symmetry for these holohedral crystals), with species and tags."""
    pos, R, prim, nn = _fragment(name, n=300, seed=30 + CRYSTALS.index(name), noise=0.03, vacancies=0.1)
    rng = np.random.default_rng(1)
    numbers = rng.choice([29, 79], size=len(pos), p=[0.7, 0.3])
    atoms = Atoms(numbers=numbers, positions=pos, tags=np.arange(len(pos)))
    other = rotate(atoms, random_rotation(rng))
    other.positions += 17.0
    a, b = orient_finite(atoms), orient_finite(other)
    assert a.info["lattice_found"] and b.info["lattice_found"]
    pa = a.positions - a.positions.mean(axis=0)
    pb = b.positions - b.positions.mean(axis=0)
    best = np.inf
    for Q in _lattice_rotations(a.info["estimated_cell"], tol=0.02):
        d, j = cKDTree(pb).query(pa @ Q.T)
        if d.max() < best:
            best, match = d.max(), j
    assert best < 0.02 * nn  # the two estimates differ by ~1e-3 rad (candidate sets are not equivariant): 0.01-0.013 nn at the rim
    assert np.array_equal(a.get_tags(), b.get_tags()[match]) and np.array_equal(a.numbers, b.numbers[match])


@pytest.mark.parametrize("name", CRYSTALS)
def test_orient_finite_matches_periodic_standard_cell(name):
    """Independently rotated, noisy, incomplete fragments end up with the lattice of standard_cell(primitive
    periodic cell): same set of lattice vectors, and the oriented atoms sit on that lattice."""
    at, prim = _crystal(name)
    periodic = Atoms(numbers=[at.numbers[0]], cell=prim, pbc=True)  # the primitive lattice
    L_true = standard_cell(periodic).cell[:]
    for seed in (40, 41):
        pos, R, _, nn = _fragment(name, n=300, seed=seed + 7 * CRYSTALS.index(name), noise=0.03, vacancies=0.25)
        out = orient_finite(Atoms(numbers=np.full(len(pos), 6), positions=pos))
        assert out.info["lattice_found"]
        U, dev = _match(out.info["estimated_cell"], L_true, nn)
        assert abs(round(np.linalg.det(U))) == 1 and dev < 0.03
        # the atoms themselves: translating by the TRUE standard lattice vectors maps atoms onto atoms
        p = out.positions - out.positions.mean(axis=0)
        tree, r_in = cKDTree(p), np.linalg.norm(p, axis=1).max() - nn
        for t in L_true:
            inside = np.linalg.norm(p + t, axis=1) < r_in
            assert np.mean(tree.query(p[inside] + t)[0] < 0.2 * nn) > 0.6  # occupancy 0.75


def test_orient_finite_core_and_output():
    pos, R, prim, nn = _fragment("bcc", n=3000, seed=50, noise=0.02)
    atoms = Atoms(numbers=np.full(len(pos), 26), positions=pos, tags=np.arange(len(pos)))
    atoms.info["source"] = "apt"
    out = orient_finite(atoms, target=250)
    assert len(out) == 250 and out.info["lattice_found"] and out.info["source"] == "apt"
    assert not out.pbc.any() and np.allclose(out.cell[:], 0)
    kept = out.get_tags()
    assert np.all(np.diff(kept) > 0)  # input order kept
    origin = pos[np.argmin(np.linalg.norm(pos - pos.mean(axis=0), axis=1))]
    r_all = np.linalg.norm(pos - origin, axis=1)
    assert r_all[kept].max() <= np.sort(r_all)[len(kept) - 1] + 1e-9  # a ball around the most central atom
    assert np.isin(np.argmin(r_all), kept)
    # noise-free: whole shells, as sphere_cut does for periodic input (bcc shells: 1, 9, 15, 27, 51, ... atoms)
    clean = Atoms(numbers=np.full(3000, 26), positions=_fragment("bcc", n=3000, seed=51)[0])
    r = np.linalg.norm(clean.positions - clean.positions[np.argmin(
        np.linalg.norm(clean.positions - clean.positions.mean(axis=0), axis=1))], axis=1)
    n_core = len(orient_finite(clean, target=250))
    assert n_core in np.searchsorted(np.sort(r), np.unique(np.round(r, 6)) + 1e-6) and abs(n_core - 250) < 40
    # rigid motion: pairwise distances unchanged
    d_in = np.linalg.norm(pos[kept][:20, None] - pos[kept][None, :20], axis=-1)
    d_out = np.linalg.norm(out.positions[:20, None] - out.positions[None, :20], axis=-1)
    assert np.allclose(d_in, d_out, atol=1e-9)
    assert len(orient_finite(atoms, target=250, core=False)) == len(atoms)
    with pytest.raises(StructureError):
        orient_finite(bulk("Cu"))


def test_orient_finite_reports_the_rotation_it_applied():
    """info['rotation'] is the proper rotation applied about the centroid (output = R input), and
    estimated_cell @ R is the lattice in the input frame (found in a fragment turned at random)."""
    pos, _, _, _ = _fragment("fcc", n=300, seed=5, noise=0.02)
    atoms = rotate(Atoms(numbers=np.full(len(pos), 29), positions=pos), random_rotation(np.random.default_rng(4)))
    out = orient_finite(atoms)
    R = out.info["rotation"]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(R) == pytest.approx(1.0)
    centre = atoms.positions.mean(axis=0)
    np.testing.assert_allclose(out.positions, (atoms.positions - centre) @ R.T + centre, atol=1e-9)
    # each input-frame lattice vector joins pairs of input atoms
    basis = out.info["estimated_cell"] @ R
    tree = cKDTree(atoms.positions)
    for b in basis:
        d, _ = tree.query(atoms.positions + b)
        assert np.mean(d < 0.3) > 0.5


def test_molecular_crystal_lattice_is_found_beyond_the_bond_scale():
    """alpha-N2 (Pa-3: four molecules in a cube five bond lengths wide) as a noisy, rotated ball: the cube is found
    (the search reaches past SEARCH_RADII for input whose atoms have one close neighbour each); a gas of the
    same molecules still gives none."""
    from crystaljax.structures import aflow_library
    from crystaljax.structures.out_of_scope import dimer_gas

    rng = np.random.default_rng(11)
    cell = aflow_library.get_entry("A_cP8_205_c-N").atoms()
    a = float(cell.cell.lengths()[0])
    big = cell.repeat(6)
    pos = big.positions - big.positions.mean(axis=0)
    pos = pos[np.linalg.norm(pos, axis=1) < 0.42 * 6 * a] + rng.normal(0.0, 0.03, (1, 3))
    pos = pos + rng.normal(0.0, 0.02, pos.shape)
    rot = random_rotation(rng)
    lattice = estimate_lattice(pos @ rot.T)
    assert lattice is not None
    assert np.allclose(np.sort(np.linalg.norm(lattice, axis=1)), a, rtol=0.02)
    g = lattice @ lattice.T
    assert np.allclose(g - np.diag(np.diag(g)), 0.0, atol=0.03 * a * a)  # a cube
    assert estimate_lattice(dimer_gas(rng, spacing=3.6, periodic=False).positions) is None
