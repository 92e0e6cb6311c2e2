"""Symmetry-free standard cell: invariance to orientation, basis, origin and atom order; orientation and
reduction conventions; uniform random rotations."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from crystaljax.structures.cell import random_rotation, rotate, standard_cell
from crystaljax.errors import StructureError

UNIMODULAR = [
    np.array([[1, 1, 0], [0, 1, 0], [2, 3, 1]]),
    np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]]),  # det -1: the new basis is left-handed
    np.array([[2, 1, 0], [1, 1, 0], [-1, 3, 1]]),
]


def _chiral():
    """A chiral 4-atom motif (four species) in a cubic cell: low-symmetry atoms in a high-symmetry lattice."""
    pos = [[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.3, 0.0], [0.2, 0.3, 1.5]]
    return Atoms("CNOH", positions=np.array(pos) + 3.0, cell=np.eye(3) * 7.0, pbc=True)


def _triclinic():
    rng = np.random.default_rng(7)
    cell = np.array([[4.1, 0.0, 0.0], [1.3, 4.7, 0.0], [-0.9, 1.1, 5.3]])
    return Atoms("Si2O3", scaled_positions=rng.uniform(size=(5, 3)), cell=cell, pbc=True)


def _triclinic_needs_flip():
    """A Niggli-reduced cell whose reciprocal angles are mixed: the sign convention has to act."""
    cell = np.array([[-2.51, -3.22, -1.11], [-3.95, 1.42, -1.07], [0.09, 1.46, -5.37]])
    return Atoms("Al3", scaled_positions=[[0.1, 0.2, 0.3], [0.5, 0.1, 0.8], [0.7, 0.6, 0.2]], cell=cell, pbc=True)


def _tagged_bcc():
    a = bulk("Fe", "bcc", a=2.87, cubic=True)
    a.set_tags([0, 1])
    return a


def _ordered_fcc():
    """L1_2-like Cu3Au with one Cu displaced: the lattice is cubic, the atoms are not."""
    a = bulk("Cu", "fcc", a=3.75, cubic=True)
    a.numbers[0] = 79
    a.positions[1] += [0.05, -0.02, 0.01]
    return a


STRUCTURES = {
    "fcc_prim": lambda: bulk("Cu", "fcc", a=3.6),
    "fcc_conv": lambda: bulk("Cu", "fcc", a=3.6, cubic=True),
    "hcp": lambda: bulk("Mg", "hcp", a=3.21, c=5.21),
    "diamond": lambda: bulk("C", "diamond", a=3.567),
    "bcc_tagged": _tagged_bcc,
    "cu3au_distorted": _ordered_fcc,
    "chiral_in_cubic": _chiral,
    "triclinic": _triclinic,
    "triclinic_needs_flip": _triclinic_needs_flip,
    "rhombohedral": lambda: Atoms("Hg", positions=[[0, 0, 0]], pbc=True,
                                  cell=Atoms(cell=[3.0, 3.0, 3.0, 70.5, 70.5, 70.5]).cell),
}


def test_unimodular_fixtures():
    assert [round(np.linalg.det(U)) for U in UNIMODULAR] == [1, -1, 1]


def _classed(atoms):
    return np.stack([atoms.numbers, atoms.get_tags()], axis=1)


def _same_set_modulo_translation(f1, c1, f2, c2, tol=1e-6):
    """Is {(c, f)} of structure 2 a translate (mod 1) of that of structure 1?"""
    if len(f1) != len(f2):
        return False
    for j in range(len(f2)):
        if not np.array_equal(c2[j], c1[0]):
            continue
        shift = f2[j] - f1[0]
        d = (f1[:, None, :] + shift - f2[None, :, :] + 0.5) % 1.0 - 0.5
        match = (np.abs(d).max(axis=2) < tol) & np.all(c1[:, None, :] == c2[None, :, :], axis=2)
        if match.any(axis=1).all() and match.any(axis=0).all():
            return True
    return False


def _perturbed_copy(atoms, rng, U):
    """Same crystal: new lattice basis U @ cell, random rotation, translation and atom permutation."""
    b = atoms.copy()
    b.set_cell(U @ atoms.cell.array, scale_atoms=False)
    b = rotate(b, random_rotation(rng))
    b.positions += rng.normal(scale=2.0, size=3)
    b = b[rng.permutation(len(b))]
    b.wrap()
    return b


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_invariance_rotation_basis_translation_permutation(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    atoms = STRUCTURES[name]()
    ref = standard_cell(atoms)
    f_ref = ref.get_scaled_positions(wrap=False)
    for U in UNIMODULAR:
        s = standard_cell(_perturbed_copy(atoms, rng, U))
        np.testing.assert_allclose(s.cell.array, ref.cell.array, atol=1e-6)
        f = s.get_scaled_positions(wrap=False)
        assert _same_set_modulo_translation(f_ref, _classed(ref), f, _classed(s)), name
        # the origin is canonical too: the sets agree without any translation
        d = (f[:, None, :] - f_ref[None, :, :] + 0.5) % 1.0 - 0.5
        assert (np.abs(d).max(axis=2) < 1e-6).any(axis=1).all(), name


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_orientation_and_reduction(name):
    atoms = STRUCTURES[name]()
    s = standard_cell(rotate(atoms, random_rotation(np.random.default_rng(0))))
    L = s.cell.array
    # a along +x, b in the xy plane with b_y > 0, c_z > 0: lower triangular with positive diagonal
    assert L[0, 1] == 0 and L[0, 2] == 0 and L[1, 2] == 0
    assert L[0, 0] > 0 and L[1, 1] > 0 and L[2, 2] > 0 and np.linalg.det(L) > 0
    assert np.isclose(abs(np.linalg.det(L)), atoms.get_volume())
    # reduced: |a| is the shortest lattice vector, |a| <= |b| <= |c|
    lengths = np.linalg.norm(L, axis=1)
    assert lengths[0] <= lengths[1] + 1e-9 <= lengths[2] + 2e-9
    ints = np.array([v for v in itertools.product(range(-3, 4), repeat=3) if any(v)])
    assert lengths[0] <= np.linalg.norm(ints @ L, axis=1).min() + 1e-9
    # triclinic convention: reciprocal angles all <= 90 deg or all > 90 deg
    rec = np.linalg.inv(L).T
    r = rec / np.linalg.norm(rec, axis=1)[:, None]
    cos = np.array([r[1] @ r[2], r[0] @ r[2], r[0] @ r[1]])
    assert np.all(cos >= -1e-9) or np.all(cos < 0)
    # atoms wrapped, numbers and tags carried per atom in the input order
    f = s.get_scaled_positions(wrap=False)
    assert f.min() >= -1e-8 and f.max() < 1
    assert np.array_equal(s.numbers, atoms.numbers)
    assert np.array_equal(s.get_tags(), atoms.get_tags())
    assert s.pbc.all()


def test_periodic_distances_preserved():
    """Only a rigid motion + lattice re-basing: every pair distance (minimum image) is unchanged."""
    for name in ["cu3au_distorted", "triclinic", "chiral_in_cubic"]:
        atoms = STRUCTURES[name]()
        s = standard_cell(atoms)
        np.testing.assert_allclose(s.get_all_distances(mic=True), atoms.get_all_distances(mic=True), atol=1e-8)


def _handedness(atoms):
    """Sign of the triple product of C->N, C->O, C->H (minimum image); flips under a mirror only."""
    d = atoms.get_distances(0, [1, 2, 3], mic=True, vector=True)
    return np.sign(np.linalg.det(d))


@pytest.mark.parametrize("U", UNIMODULAR, ids=["det+1", "det-1", "det+1b"])
def test_no_mirror_image(U):
    atoms = _chiral()
    rng = np.random.default_rng(1)
    b = _perturbed_copy(atoms, rng, U)
    order = [int(np.flatnonzero(b.numbers == z)[0]) for z in atoms.numbers]
    b = b[order]  # back to C, N, O, H order for the handedness check
    assert _handedness(standard_cell(b)) == _handedness(atoms)
    mirror = atoms.copy()
    mirror.positions[:, 0] *= -1
    mirror.cell[:, 0] *= -1
    s_m = standard_cell(mirror)
    assert _handedness(s_m) == -_handedness(atoms)
    # the mirror image is a different crystal: not the same set modulo translation
    s = standard_cell(atoms)
    assert not _same_set_modulo_translation(
        s.get_scaled_positions(), _classed(s), s_m.get_scaled_positions(), _classed(s_m), tol=1e-4
    )


def test_translation_gives_identical_output():
    atoms = _triclinic()
    moved = atoms.copy()
    moved.positions += [0.37, -1.2, 2.9]
    a, b = standard_cell(atoms), standard_cell(moved)
    np.testing.assert_allclose(a.cell.array, b.cell.array, atol=1e-10)
    np.testing.assert_allclose(a.get_scaled_positions(wrap=False), b.get_scaled_positions(wrap=False), atol=1e-9)


def test_non_periodic_rejected():
    with pytest.raises(StructureError):
        standard_cell(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]))
    slab = bulk("Cu", cubic=True)
    slab.pbc = [True, True, False]
    with pytest.raises(StructureError):
        standard_cell(slab)


def test_random_rotation_is_uniform_on_so3():
    rng = np.random.default_rng(123)
    Rs = np.stack([random_rotation(rng) for _ in range(4000)])
    assert np.allclose(np.einsum("nij,nkj->nik", Rs, Rs), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(Rs), 1.0)
    # Haar measure: E[R] = 0, E[R_ij^2] = 1/3, and the rotation angle has density (1 - cos t) / pi,
    # so E[trace] = 2 cos t + 1 averages to 0 and P(t < pi/2) = 1/2 - 1/pi.
    assert np.abs(Rs.mean(axis=0)).max() < 0.05
    assert np.abs((Rs**2).mean(axis=0) - 1 / 3).max() < 0.03
    angle = np.arccos(np.clip((np.trace(Rs, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert abs(np.mean(angle < np.pi / 2) - (0.5 - 1 / np.pi)) < 0.03


def test_rotate_keeps_fractional_coordinates():
    atoms = _triclinic()
    R = random_rotation(np.random.default_rng(5))
    r = rotate(atoms, R)
    np.testing.assert_allclose(r.get_scaled_positions(), atoms.get_scaled_positions(), atol=1e-12)
    np.testing.assert_allclose(r.positions, atoms.positions @ R.T)
    np.testing.assert_allclose(r.get_all_distances(), atoms.get_all_distances(), atol=1e-12)


# ----------------------------------------------------------------------------------------------- old path kept


def _reference_standard_cell(atoms):
    """The pre-vectorisation algorithm, kept as a test reference (cheap for small cells): ASE Niggli of
    the raw cell, sign convention, then one Python iteration per lattice automorphism, each scoring every
    atom of the rarest class as origin.  Returns (cell (3, 3), fractional positions (n, 3))."""
    from ase.build.tools import niggli_reduce_cell

    from crystaljax.structures import cell as C

    cell = atoms.cell.array
    frac0 = atoms.positions @ np.linalg.inv(cell)
    _, Cm = niggli_reduce_cell(cell)
    M = np.asarray(Cm, dtype=np.int64).T
    M = -M if np.linalg.det(M @ cell) < 0 else M
    M = C._triclinic_sign_flip((M @ cell) @ (M @ cell).T) @ M
    G = (M @ cell) @ (M @ cell).T
    frac = frac0 @ np.linalg.inv(M)
    cls = C._classes(atoms.numbers, atoms.get_tags())
    refs = C._reference_atoms(cls)
    tol = C.METRIC_RTOL * np.trace(G) / 3
    vecs = np.array([v for v in itertools.product(range(-2, 3), repeat=3) if any(v)])
    autos = [np.eye(3, dtype=int)]
    for U in itertools.product(*[vecs[np.abs(np.einsum("ij,jk,ik->i", vecs, G, vecs) - G[i, i]) <= tol]
                                 for i in range(3)]):
        U = np.array(U)
        if round(np.linalg.det(U)) == 1 and np.abs(U @ G @ U.T - G).max() <= tol and not np.array_equal(U, autos[0]):
            autos.append(U)
    best = None
    for U in autos:
        f = C._wrap(frac @ np.rint(np.linalg.inv(U)))
        for r in refs:
            k = np.rint((f - f[r]) * 2**16).astype(np.int64) % 2**16
            key = np.sort(((cls * 2**16 + k[:, 0]) * 2**16 + k[:, 1]) * 2**16 + k[:, 2])
            if best is None or tuple(key) < tuple(best[0]):
                best = (key, U, r)
    M = best[1] @ M
    frac = frac0 @ np.linalg.inv(M)
    basis = M @ cell
    return np.linalg.cholesky(basis @ basis.T), C._wrap(frac - frac[best[2]])


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_same_result_as_the_reference_path(name):
    """For exact crystals the vectorised search returns the cell and atom positions of the old per-operation
    loop: same cell and the same set of (class, fractional position) with the same origin (which of several
    symmetry-equivalent atoms sits at a given site may differ, as it may between two inputs of one crystal)."""
    atoms = rotate(STRUCTURES[name](), random_rotation(np.random.default_rng(3)))
    for a in (atoms, atoms.repeat((2, 1, 1))):
        L_ref, f_ref = _reference_standard_cell(a)
        s = standard_cell(a)
        np.testing.assert_allclose(s.cell.array, L_ref, atol=1e-9)
        f = s.get_scaled_positions(wrap=False)
        d = (f[:, None, :] - f_ref[None, :, :] + 0.5) % 1.0 - 0.5
        match = (np.abs(d).max(axis=2) < 1e-8) & np.all(_classed(s)[:, None, :] == _classed(a)[None, :, :], axis=2)
        assert match.any(axis=1).all() and match.any(axis=0).all(), name


def _md_frame(seed):
    """A rattled 4x4x4 bcc Fe supercell with vacancies (128 sites - 6): every atom is distinct, and large
    enough (24 x 122 x 122 > _FULL_BUDGET) for the pre-selected origin."""
    rng = np.random.default_rng(seed)
    a = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((4, 4, 4))
    del a[rng.choice(len(a), 6, replace=False)]
    a.positions += rng.normal(scale=0.05, size=a.positions.shape)
    return a


@pytest.mark.parametrize("seed", [0, 1])
def test_md_frame_invariance(seed, monkeypatch):
    """The fast path (one origin pre-selected by an invariant descriptor) is invariant to rotation,
    re-basing, translation and atom order of a rattled frame with vacancies: same cell, same positions."""
    from crystaljax.structures import cell as C

    chosen = []
    original = C._origin_candidates
    monkeypatch.setattr(C, "_origin_candidates", lambda *a: chosen.append(original(*a)) or chosen[-1])
    atoms = _md_frame(seed)
    ref = standard_cell(atoms)
    rng = np.random.default_rng(seed + 10)
    for U in UNIMODULAR:
        s = standard_cell(_perturbed_copy(atoms, rng, U))
        np.testing.assert_allclose(s.cell.array, ref.cell.array, atol=1e-6)
        f, f_ref = s.get_scaled_positions(wrap=False), ref.get_scaled_positions(wrap=False)
        d = (f[:, None, :] - f_ref[None, :, :] + 0.5) % 1.0 - 0.5
        match = np.abs(d).max(axis=2) < 1e-6
        assert match.any(axis=1).all() and match.any(axis=0).all()
    assert len(chosen) == 1 + len(UNIMODULAR) and all(len(c) == 1 for c in chosen)  # the fast path ran
