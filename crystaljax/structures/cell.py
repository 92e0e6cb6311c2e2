"""Symmetry-free standard cell and random rotations (host side, NumPy/ASE; no spglib).

``standard_cell`` maps a periodic structure to a cell that depends only on the crystal (its lattice and the
atoms in it), not on how the input was oriented, which lattice basis it used, where its origin was, or in
which order its atoms were listed.  No symmetry analysis of the atoms is done: the procedure only uses the
lattice metric, so it is well defined for defective and distorted structures as well.
"""

from __future__ import annotations

import itertools

import numpy as np

from crystaljax.errors import StructureError
from crystaljax.structures.io import is_periodic

#: Relative tolerance on metric-tensor entries (fraction of the mean squared lattice-vector length) used to
#: decide that two lattice bases are equivalent, and on reciprocal-angle cosines for the sign convention.
METRIC_RTOL = 1e-5
#: Fractional coordinates are compared on a grid of 1 / 2**16 (~1.5e-5) when choosing among equivalent bases.
_GRID = 2**16
#: Above this many (reference atoms x atoms) the choice among equivalent bases uses diffraction intensities.
_EXACT_BUDGET = 200_000
#: Wrapping tolerance (fractional): coordinates within this of 1 are mapped next to 0.
_WRAP_EPS = 1e-8

# Proper sign flips of the three basis vectors; they flip the signs of the reciprocal cosines
# (cos a*, cos b*, cos g*) by (s2 s3, s1 s3, s1 s2).
_SIGN_FLIPS = (
    np.array([1, 1, 1]),
    np.array([1, -1, -1]),
    np.array([-1, 1, -1]),
    np.array([-1, -1, 1]),
)


# ----------------------------------------------------------------------------------------------- rotations


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A (3, 3) rotation matrix drawn uniformly (Haar measure) from SO(3).

    Uses a uniformly random unit quaternion (four normal deviates, normalised).  ``rng`` is a NumPy
    ``Generator``; the result is float64 with det = +1.
    """
    q = rng.normal(size=4)
    q = q / np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotate(atoms, R) -> "ase.Atoms":  # noqa: F821
    """A copy of ``atoms`` rotated by the (3, 3) matrix ``R`` acting on column vectors (x' = R x).

    Positions (Å) and cell vectors (rows of ``atoms.cell``) are both rotated, so fractional coordinates are
    unchanged.  Everything else (numbers, tags, pbc, info) is kept.
    """
    R = np.asarray(R, dtype=np.float64)
    out = atoms.copy()
    out.set_cell(np.asarray(atoms.cell, dtype=np.float64) @ R.T, scale_atoms=False)
    out.positions = np.asarray(atoms.positions, dtype=np.float64) @ R.T
    return out


# ----------------------------------------------------------------------------------------------- helpers


def _wrap(frac: np.ndarray) -> np.ndarray:
    """Fractional coordinates wrapped into [-1e-8, 1 - 1e-8) (no jumps for atoms sitting on a face)."""
    return frac - np.floor(frac + _WRAP_EPS)


def _int_inverse(M: np.ndarray) -> np.ndarray:
    return np.rint(np.linalg.inv(M)).astype(np.int64)


def _niggli(cell: np.ndarray) -> np.ndarray:
    """Integer unimodular M (rows of M @ cell = a Niggli-reduced basis of the same lattice, det(M @ cell) > 0)."""
    from ase.build.tools import niggli_reduce_cell

    _, C = niggli_reduce_cell(cell)
    M = np.asarray(C, dtype=np.int64).T
    if np.linalg.det(M @ cell) < 0:  # -I keeps the metric and makes the basis right-handed
        M = -M
    return M


def _reciprocal_cosines(G: np.ndarray) -> np.ndarray:
    """(cos alpha*, cos beta*, cos gamma*) of the reciprocal lattice of a basis with metric G."""
    Gi = np.linalg.inv(G)
    d = np.sqrt(np.diag(Gi))
    return np.array([Gi[1, 2] / (d[1] * d[2]), Gi[0, 2] / (d[0] * d[2]), Gi[0, 1] / (d[0] * d[1])])


def _triclinic_sign_flip(G: np.ndarray) -> np.ndarray:
    """Proper sign flip S (diagonal, det +1) making the reciprocal angles all <= 90 deg or all > 90 deg.

    Cosines within ``METRIC_RTOL`` of 0 count as 0 (angle 90 deg).  The first admissible flip in a fixed order
    is returned, so the choice depends only on the metric.
    """
    cos = _reciprocal_cosines(G)
    sgn = np.where(np.abs(cos) <= METRIC_RTOL, 0, np.sign(cos))
    for s in _SIGN_FLIPS:
        t = sgn * np.array([s[1] * s[2], s[0] * s[2], s[0] * s[1]])
        if np.all(t >= 0) or np.all(t < 0):
            return np.diag(s)
    raise AssertionError("no admissible sign flip")  # pragma: no cover - impossible (see module notes)


def _lattice_automorphisms(G: np.ndarray) -> list[np.ndarray]:
    """All integer U with det U = +1 and U G U^T = G (within tolerance), identity first.

    G must be the metric of a reduced basis, so the rows of U are short integer vectors (entries in [-2, 2]).
    """
    tol = METRIC_RTOL * float(np.trace(G)) / 3.0
    r = np.arange(-2, 3)
    vecs = np.array([v for v in itertools.product(r, r, r) if any(v)], dtype=np.int64)
    norms = np.einsum("ij,jk,ik->i", vecs, G, vecs)
    cands = [vecs[np.abs(norms - G[i, i]) <= tol] for i in range(3)]
    out = [np.eye(3, dtype=np.int64)]
    for a in cands[0]:
        for b in cands[1]:
            if abs(a @ G @ b - G[0, 1]) > tol:
                continue
            for c in cands[2]:
                U = np.stack([a, b, c])
                if round(np.linalg.det(U)) != 1:
                    continue
                if np.max(np.abs(U @ G @ U.T - G)) <= tol and not np.array_equal(U, out[0]):
                    out.append(U)
    return out


def _classes(numbers: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """Dense class index per atom, ordered by (Z, tag)."""
    pairs = np.stack([numbers, tags], axis=1)
    _, inv = np.unique(pairs, axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def _reference_atoms(cls: np.ndarray) -> np.ndarray:
    """Indices of the atoms of the rarest class (ties -> smallest class index): candidate origins."""
    counts = np.bincount(cls)
    rare = int(np.flatnonzero(counts == counts[counts > 0].min())[0])
    return np.flatnonzero(cls == rare)


def _exact_key(frac: np.ndarray, cls: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, int]:
    """Translation-invariant key of a set of classed fractional positions, and the origin atom achieving it.

    For each candidate origin r, the positions relative to r are wrapped, put on a 2**-16 grid, encoded as
    one integer per atom (class first) and sorted; the lexicographically smallest row is the key.
    """
    rel = frac[None, :, :] - frac[refs][:, None, :]  # (R, n, 3)
    k = np.rint(rel * _GRID).astype(np.int64) % _GRID
    codes = ((cls[None, :] * _GRID + k[..., 0]) * _GRID + k[..., 1]) * _GRID + k[..., 2]
    codes.sort(axis=1)
    best = int(np.lexsort(codes.T[::-1])[0])
    return codes[best], int(refs[best])


def _intensity_key(frac: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Translation-invariant key from class-resolved diffraction intensities |S_c(h)|^2, h in [-2, 2]^3."""
    r = np.arange(-2, 3)
    hs = np.array(list(itertools.product(r, r, r)), dtype=np.float64)
    phase = np.exp(2j * np.pi * frac @ hs.T)  # (n, 125)
    n_cls = int(cls.max()) + 1
    S = np.zeros((n_cls, len(hs)), np.complex128)
    np.add.at(S, cls, phase)
    # |S_c S_c'^*| summed over class pairs is translation invariant; quantise relative to n^2.
    inten = np.abs(S.sum(axis=0)) ** 2 + np.sum(np.abs(S) ** 2, axis=0)
    return np.rint(inten / (len(frac) ** 2) * 1e6).astype(np.int64)


# ----------------------------------------------------------------------------------------------- standard cell


def standard_cell(atoms) -> "ase.Atoms":  # noqa: F821
    """Symmetry-free standard cell of a periodic structure (no spglib).

    Steps (all on the lattice metric, so independent of the input orientation):

    1. Niggli-reduce the lattice (``ase.build.tools.niggli_reduce_cell``; the reduced metric is unique).
    2. Triclinic convention irrespective of the lattice type: flip the signs of two basis vectors if needed
       so that the reciprocal-lattice angles are all <= 90 deg or all > 90 deg.
    3. Among the proper lattice automorphisms of that metric (bases with the same metric, e.g. the 24
       rotations of a cubic lattice), pick the one whose atom arrangement has the smallest translation-
       invariant key (fractional coordinates relative to an atom of the rarest (Z, tag) class, on a
       1.5e-5 grid, sorted).  This removes the remaining dependence on the input basis; atoms are only
       re-labelled, never moved relative to each other.
    4. Re-orient: a along +x, b in the xy plane (b_y > 0), c with c_z > 0 (right-handed).  The cell is the
       lower-triangular Cholesky factor of the metric; the mapping from the input is a proper rotation
       (mirror images are never produced: a left-handed basis is first negated).
    5. Shift the origin onto the reference atom chosen in step 3 and wrap all atoms into [0, 1).

    Guarantee: a rotated, translated, atom-permuted or unimodularly re-based copy of the same crystal gives
    the same cell matrix (to ~1e-6 relative, set by ``METRIC_RTOL`` for near-degenerate metrics) and the same
    fractional coordinates.  For cells where (atoms of the rarest class) x (atoms) exceeds 200,000, step 3
    uses class-resolved diffraction intensities instead, which is invariant to translations but cannot tell a
    non-centrosymmetric arrangement from its inverse; the origin is then not shifted.

    Input: a fully periodic ``ase.Atoms`` (Å).  Output: a new periodic ``ase.Atoms`` with the same number of
    atoms, atomic numbers and tags carried per atom (same order as the input), ``info`` copied.
    Raises :class:`StructureError` for non-periodic input.
    """
    from ase import Atoms

    if not is_periodic(atoms):
        raise StructureError("standard_cell needs a fully periodic structure with a non-zero cell volume")
    cell = np.asarray(atoms.cell, dtype=np.float64)
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    tags = np.asarray(atoms.get_tags(), dtype=np.int64)
    frac0 = np.asarray(atoms.positions, dtype=np.float64) @ np.linalg.inv(cell)

    M = _niggli(cell)
    Gn = (M @ cell) @ (M @ cell).T
    M = _triclinic_sign_flip(Gn) @ M
    G = (M @ cell) @ (M @ cell).T

    frac = frac0 @ _int_inverse(M).astype(np.float64)
    cls = _classes(numbers, tags)
    autos = _lattice_automorphisms(G)
    refs = _reference_atoms(cls)
    exact = len(refs) * len(numbers) <= _EXACT_BUDGET
    best_key, best_U, best_ref = None, autos[0], None
    for U in autos:
        if not exact and len(autos) == 1:
            break
        f = _wrap(frac @ _int_inverse(U).astype(np.float64))
        if exact:
            key, ref = _exact_key(f, cls, refs)
        else:
            key, ref = _intensity_key(f, cls), None
        if best_key is None or _less(key, best_key, descending=not exact):
            best_key, best_U, best_ref = key, U, ref
    M = best_U @ M
    frac = frac0 @ _int_inverse(M).astype(np.float64)
    origin = None if best_ref is None else frac[best_ref].copy()

    basis = M @ cell  # actual lattice vectors of the chosen basis (a proper rotation of the output cell)
    G = basis @ basis.T
    L = np.linalg.cholesky(G)  # rows: a = (ax, 0, 0), b = (bx, by, 0), c = (cx, cy, cz), diagonal > 0
    if origin is not None:
        frac = frac - origin
    frac = _wrap(frac)
    out = Atoms(numbers=numbers, scaled_positions=frac, cell=L, pbc=True, tags=tags)
    out.info.update(atoms.info)
    return out


def _less(a: np.ndarray, b: np.ndarray, descending: bool = False) -> bool:
    """Lexicographic a < b (or a > b if ``descending``) for equal-length integer arrays."""
    diff = np.flatnonzero(a != b)
    if len(diff) == 0:
        return False
    i = diff[0]
    return bool(a[i] > b[i]) if descending else bool(a[i] < b[i])


def standard_orientation(cell, *, epsfactor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rotation :func:`standard_cell` applies to a lattice, from the lattice alone: ``(R, new_cell)``.

    ``cell``: (3, 3) rows = any basis of a lattice (Å).  Steps 1, 2 and 4 of :func:`standard_cell` (Niggli
    reduction, triclinic sign convention, Cholesky orientation: a along +x, b in the xy plane with b_y > 0,
    c_z > 0); step 3 (the choice among lattice automorphisms by an atom key) needs atoms and is skipped, i.e.
    the identity automorphism is used.  Returns the proper rotation ``R`` (3, 3; x' = R x on column vectors,
    det +1) and ``new_cell`` (3, 3; rows = the reduced basis, lower triangular, Å).  The lattice generated
    by ``cell @ R.T`` is the one generated by ``new_cell``.

    ``new_cell`` equals ``standard_cell(atoms).cell`` for any periodic ``atoms`` on this lattice (the
    automorphism chosen there keeps the metric), so ``R`` orients the lattice exactly as ``standard_cell``
    does, up to a proper lattice automorphism.  ``epsfactor`` is passed to
    ``ase.build.tools.niggli_reduce_cell`` (None = its default 1e-5, as in :func:`standard_cell`).
    """
    from ase.build.tools import niggli_reduce_cell

    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3) or abs(np.linalg.det(cell)) <= 0:
        raise StructureError("standard_orientation needs three linearly independent lattice vectors")
    _, C = niggli_reduce_cell(cell, epsfactor=epsfactor)
    M = np.asarray(C, dtype=np.int64).T
    if np.linalg.det(M @ cell) < 0:
        M = -M
    Gn = (M @ cell) @ (M @ cell).T
    M = _triclinic_sign_flip(Gn) @ M
    basis = M @ cell
    L = np.linalg.cholesky(basis @ basis.T)
    R = L.T @ np.linalg.inv(basis).T  # basis @ R.T = L
    return R, L
