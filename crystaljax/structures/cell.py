"""Symmetry-free standard cell and random rotations (host side, NumPy/ASE; no spglib).

``standard_cell`` maps a periodic structure to a cell that depends only on the crystal (its lattice and the
atoms in it), not on how the input was oriented, which lattice basis it used, where its origin was, or in
which order its atoms were listed.  No symmetry analysis of the atoms is done: the procedure only uses the
lattice metric, so it is well defined for defective and distorted structures as well.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from crystaljax.errors import StructureError
from crystaljax.structures.io import is_periodic

#: Relative tolerance on metric-tensor entries (fraction of the mean squared lattice-vector length) used to
#: decide that two lattice bases are equivalent, and on reciprocal-angle cosines for the sign convention.
METRIC_RTOL = 1e-5
#: Relative tolerance (on metric entries, fraction of trace(G) / 3) within which a lattice counts as its more
#: symmetric neighbour when the basis is chosen: strains below ~2e-3 never change the basis type.  Far
#: inside the data set's exclusion windows (e.g. bct c/a within 0.05 of 1 or sqrt 2, ~10 % in the metric).
SYM_RTOL = 1e-2
#: Niggli tolerances (ASE epsfactor) tried after the requested one when ASE's iteration does not converge.
_NIGGLI_RETRY = (1e-7, 1e-3, 1e-9)
#: Memory bound of the vectorised key (codes held at once); only very large inputs take more than one chunk.
_CHUNK = 4_000_000
#: Fractional coordinates are compared on a grid of 1 / 2**16 (~1.5e-5) when choosing among equivalent bases.
_GRID = 2**16
#: Above this many (reference atoms x atoms) the choice among equivalent bases uses diffraction intensities.
_EXACT_BUDGET = 200_000
#: Up to this many (operations x rarest-class atoms x atoms) every rarest-class atom is tried as origin
#: (unit cells and small supercells: the choice of the original per-operation search); above it the origin
#: candidates are pre-selected by an invariant descriptor (MD frames: one candidate instead of hundreds).
_FULL_BUDGET = 100_000
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
    """Integer inverse of an integer unimodular matrix (..., 3, 3)."""
    return np.rint(np.linalg.inv(M)).astype(np.int64)




def _lll(cell: np.ndarray, delta: float = 0.99, max_iter: int = 1000) -> np.ndarray:
    """Integer unimodular M (3, 3) such that the rows of M @ cell are an LLL-reduced basis (float64)."""
    M = np.eye(3, dtype=np.int64)
    B = cell.astype(np.float64).copy()
    k, it = 1, 0
    while k < 3:
        it += 1
        if it > max_iter:
            raise StructureError("lattice reduction did not converge (degenerate or extreme cell)")
        Q = np.zeros_like(B)
        mu = np.zeros((3, 3))
        for i in range(3):  # Gram-Schmidt of the current basis
            Q[i] = B[i]
            for j in range(i):
                mu[i, j] = (B[i] @ Q[j]) / (Q[j] @ Q[j])
                Q[i] = Q[i] - mu[i, j] * Q[j]
        for j in range(k - 1, -1, -1):  # size-reduce b_k
            q = int(np.rint(mu[k, j]))
            if q:
                B[k] -= q * B[j]
                M[k] -= q * M[j]
                mu[k, : j + 1] -= q * np.append(mu[j, :j], 1.0)
        if Q[k] @ Q[k] >= (delta - mu[k, k - 1] ** 2) * (Q[k - 1] @ Q[k - 1]):
            k += 1
        else:
            B[[k - 1, k]] = B[[k, k - 1]]
            M[[k - 1, k]] = M[[k, k - 1]]
            k = max(k - 1, 1)
    return M


_BOX2 = np.array([v for v in itertools.product(range(-2, 3), repeat=3) if any(v)], dtype=np.int64)  # (124, 3)


def _minkowski(cell: np.ndarray) -> np.ndarray:
    """Integer unimodular M with det(M @ cell) > 0 whose rows M @ cell are the shortest basis vectors
    (3-D Minkowski reduction: a = the shortest lattice vector, b the shortest independent of a, c the
    shortest completing a basis).  Always terminates (LLL, then at most 50 polishing rounds that strictly
    shorten the basis).  Used as the starting point of the symmetrisation and as the fallback when the
    Niggli reduction does not converge."""
    cell = np.asarray(cell, dtype=np.float64)
    M = _lll(cell)
    for _ in range(50):
        B = M @ cell
        vecs = _BOX2 @ B
        norms = np.einsum("ij,ij->i", vecs, vecs)
        order = np.lexsort((np.arange(len(norms)), norms))
        coef = _BOX2[order]
        a = coef[0]
        cross = np.cross(a, coef)  # integer: independent of a iff non-zero
        b = coef[int(np.argmax(np.any(cross != 0, axis=1)))]
        dets = coef @ np.cross(a, b)  # det(a, b, c) for every candidate c (integers)
        c = coef[int(np.argmax(np.abs(dets) == 1))]
        N = np.stack([a, b, c])
        new = N @ M
        old_len = np.sort(np.einsum("ij,ij->i", B, B))
        new_len = np.einsum("ij,ij->i", new @ cell, new @ cell)
        if not np.any(new_len < old_len * (1 - 1e-12)):
            break
        M = new
    if np.linalg.det(M @ cell) < 0:
        M = -M
    return M


def _niggli_attempts(B: np.ndarray, epsfactor: float | None = None) -> np.ndarray | None:
    """Integer M (rows of M @ B = a Niggli-reduced basis, det > 0) from ASE, retried with other tolerances
    when ASE's iteration does not converge ("not done in 10000 steps"); None if every attempt fails."""
    from ase.build.tools import niggli_reduce_cell

    for eps in (epsfactor, *_NIGGLI_RETRY):
        try:
            _, C = niggli_reduce_cell(B, epsfactor=eps)
        except RuntimeError:
            continue
        M = np.asarray(C, dtype=np.int64).T
        if abs(round(np.linalg.det(M))) != 1:  # pragma: no cover - ASE returns unimodular matrices
            continue
        return -M if np.linalg.det(M @ B) < 0 else M
    return None


def _metric_tol(G: np.ndarray, rtol: float) -> float:
    return rtol * float(np.trace(G)) / 3.0


def _automorphism_candidates(G: np.ndarray, tol: float) -> np.ndarray:
    """Integer U (K, 3, 3), det +1, rows in [-2, 2]^3, |U G U^T - G| <= tol, in row-major enumeration order
    (the identity is not singled out).  G must be the metric of a reduced basis."""
    norms = np.einsum("ij,jk,ik->i", _BOX2, G, _BOX2)
    rows = [_BOX2[np.abs(norms - G[i, i]) <= tol] for i in range(3)]
    ia, ib = np.meshgrid(np.arange(len(rows[0])), np.arange(len(rows[1])), indexing="ij")
    a, b = rows[0][ia.ravel()], rows[1][ib.ravel()]
    keep = np.abs(np.einsum("mi,ij,mj->m", a, G, b) - G[0, 1]) <= tol
    a, b = a[keep], b[keep]
    ip, ic = np.meshgrid(np.arange(len(a)), np.arange(len(rows[2])), indexing="ij")
    U = np.stack([a[ip.ravel()], b[ip.ravel()], rows[2][ic.ravel()]], axis=1)  # (K, 3, 3)
    if len(U) == 0:
        return U
    U = U[np.rint(np.linalg.det(U)).astype(np.int64) == 1]
    return U[np.abs(np.einsum("mij,jk,mlk->mil", U, G, U) - G).max(axis=(1, 2)) <= tol]


def _lattice_automorphisms(G: np.ndarray) -> np.ndarray:
    """All integer U (K, 3, 3) with det U = +1 and U G U^T = G within ``METRIC_RTOL``, identity first, the
    others in a fixed enumeration order.  G must be the metric of a reduced basis (entries of U in [-2, 2])."""
    eye = np.eye(3, dtype=np.int64)
    U = _automorphism_candidates(G, _metric_tol(G, METRIC_RTOL))
    U = U[~np.all(U == eye, axis=(1, 2))]
    return np.concatenate([eye[None], U])


def _encode(X: np.ndarray, base: int = 64) -> np.ndarray | None:
    """One int64 per row of the integer array X (m, k) (entries in [-base/2, base/2)), or None if out of range."""
    half = base // 2
    if X.size and (X.min() < -half or X.max() >= half):
        return None
    code = np.zeros(len(X), dtype=np.int64)
    for j in range(X.shape[1]):
        code = code * base + (X[:, j] + half)
    return code


def _unique_rows(X: np.ndarray) -> np.ndarray:
    """Unique rows of a small-integer array (m, k), sorted; falls back to np.unique(axis=0)."""
    code = _encode(X)
    if code is None:
        return np.unique(X, axis=0)
    _, first = np.unique(code, return_index=True)
    return X[first]


def _approx_group(G: np.ndarray, rtol: float) -> np.ndarray:
    """The proper integer basis changes that keep the reduced metric G within ``rtol`` (relative to
    trace(G) / 3), closed under products: (K, 3, 3).  Identity only if the closure is not a finite point
    group (more than 24 proper operations)."""
    eye = np.eye(3, dtype=np.int64)[None]
    U = _automorphism_candidates(G, _metric_tol(G, rtol))
    if len(U) <= 1:
        return eye
    U = _unique_rows(np.concatenate([eye, U]).reshape(-1, 9)).reshape(-1, 3, 3)
    for _ in range(5):  # close under products (a product may fall just outside the tolerance)
        if len(U) > 24:
            return eye
        P = np.einsum("aij,bjk->abik", U, U).reshape(-1, 9)
        new = _unique_rows(np.concatenate([U.reshape(-1, 9), P])).reshape(-1, 3, 3)
        if len(new) == len(U):
            return U
        U = new
    return eye  # pragma: no cover - a finite group closes in a few rounds


def _sym_power(G: np.ndarray, power: float) -> np.ndarray:
    w, V = np.linalg.eigh(G)
    return (V * w**power) @ V.T


def _canonical_basis(cell: np.ndarray, epsfactor: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Integer unimodular M (rows of M @ cell = the standard reduced basis, det > 0), the symmetrised metric
    Gs (3, 3) of that basis, its proper automorphisms (K, 3, 3) (identity first) and the route taken
    ("niggli" or "minkowski").

    1. Minkowski-reduce the input (always terminates).
    2. Symmetrise the metric over the integer basis changes that keep it within ``SYM_RTOL``: a strained
       cubic or hexagonal lattice gets the exact cubic/hexagonal metric Gs (the lattice itself is not changed;
       Gs only decides which basis is taken).
    3. Niggli-reduce a basis with metric Gs (ASE, retried with other tolerances; Minkowski basis if all fail).
    4. Triclinic sign convention on Gs.
    Without step 2 a strain of 1e-5 can move an fcc lattice from its 60-60-60 deg Niggli cell to a
    90-120-120 deg one (the Niggli cell is discontinuous at the boundaries where cubic lattices sit).
    """
    M0 = _minkowski(cell)
    B0 = M0 @ cell
    G0 = B0 @ B0.T
    K = _approx_group(G0, SYM_RTOL)
    if len(K) > 1:
        Kf = K.astype(np.float64)
        Gsym = np.einsum("mij,jk,mlk->il", Kf, G0, Kf) / len(K)
        Bsym = _sym_power(Gsym, 0.5) @ _sym_power(G0, -0.5) @ B0  # a basis with metric Gsym
    else:
        Gsym, Bsym = G0, B0
    M1 = _niggli_attempts(Bsym, epsfactor)
    route = "niggli"
    if M1 is None:
        M1, route = np.eye(3, dtype=np.int64), "minkowski"
    Gs = M1 @ Gsym @ M1.T
    S = _triclinic_sign_flip(Gs)
    M1 = S @ M1
    Gs = S @ Gs @ S
    if len(K) > 1:  # the automorphisms of Gs are those of Gsym in the new basis: M1 K M1^-1
        autos = np.einsum("ij,kjl,lm->kim", M1, K, _int_inverse(M1))
        eye = np.eye(3, dtype=np.int64)
        autos = np.concatenate([eye[None], autos[~np.all(autos == eye, axis=(1, 2))]])
    else:
        autos = _lattice_automorphisms(Gs)
    return M1 @ M0, Gs, autos, route


@functools.lru_cache(maxsize=64)
def _lattice_setup_cached(cell_bytes: bytes, epsfactor: float | None):
    cell = np.frombuffer(cell_bytes, dtype=np.float64).reshape(3, 3)
    M, Gs, autos, route = _canonical_basis(cell, epsfactor)
    W = _int_inverse(autos)
    H = _orbit(W, _BOX1)
    out = (M, Gs, autos, W, H)
    for x in out:
        x.setflags(write=False)
    return out


def _lattice_setup(cell: np.ndarray, epsfactor: float | None = None):
    """(M, Gs, autos, W = autos^-1, H = Miller indices of the descriptor) of a lattice: everything that
    depends on the cell alone.  A pure function of the (3, 3) float64 cell, memoised on its exact bytes
    (64 entries, read-only arrays): consecutive frames of an MD trajectory share their cell, so the
    reduction runs once per trajectory instead of once per frame."""
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    return _lattice_setup_cached(cell.tobytes(), None if epsfactor is None else float(epsfactor))


def _metric_keys(U: np.ndarray, G: np.ndarray) -> np.ndarray:
    """(K, 6) integer keys of the actual metrics U G U^T (G11, G22, G33, G12, G13, G23), on a 1e-9 grid
    relative to trace(G) / 3: the tie-break among bases whose atoms look the same."""
    GU = np.einsum("kij,jl,kml->kim", U.astype(np.float64), G, U.astype(np.float64))
    flat = GU[:, [0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]
    return np.rint(flat / (float(np.trace(G)) / 3.0) * 1e9).astype(np.int64)


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


def _reciprocal_cosines(G: np.ndarray) -> np.ndarray:
    """(cos alpha*, cos beta*, cos gamma*) of the reciprocal lattice of a basis with metric G."""
    Gi = np.linalg.inv(G)
    d = np.sqrt(np.diag(Gi))
    return np.array([Gi[1, 2] / (d[1] * d[2]), Gi[0, 2] / (d[0] * d[2]), Gi[0, 1] / (d[0] * d[1])])


def _classes(numbers: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """Dense class index per atom, ordered by (Z, tag)."""
    order = np.lexsort((tags, numbers))
    z, t = numbers[order], tags[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (z[1:] != z[:-1]) | (t[1:] != t[:-1])
    cls = np.empty(len(order), dtype=np.int64)
    cls[order] = np.cumsum(new) - 1
    return cls


def _reference_atoms(cls: np.ndarray) -> np.ndarray:
    """Indices of the atoms of the rarest class (ties -> smallest class index): candidate origins."""
    counts = np.bincount(cls)
    rare = int(np.flatnonzero(counts == counts[counts > 0].min())[0])
    return np.flatnonzero(cls == rare)


_BOX1 = np.array([v for v in itertools.product(range(-1, 2), repeat=3) if any(v)], dtype=np.int64)  # (26, 3)


def _orbit(W: np.ndarray, H0: np.ndarray) -> np.ndarray:
    """The Miller indices {W_k h : k, h in H0} (unique rows), closed under the group W (K, 3, 3)."""
    return _unique_rows(np.einsum("kij,hj->khi", W, H0).reshape(-1, 3))


def _origin_candidates(frac: np.ndarray, cls: np.ndarray, refs: np.ndarray, H: np.ndarray) -> np.ndarray:
    """The reference atoms whose environment descriptor is smallest: a subset of ``refs`` that depends only
    on the crystal (invariant to translation, atom order and the lattice's basis changes).

    Used above ``_FULL_BUDGET``.  Descriptor of atom r, per class c:
    D_rc = sum_h Re(exp(-2 pi i h.f_r) S_c(h)), S_c(h) = sum over atoms of class c of exp(2 pi i h.f_j),
    h over ``H`` (|H|, 3), the orbit of [-1, 1]^3 under the basis changes (a group-closed set, so the sum is
    basis independent), quantised to n / 2**16.  Equivalent atoms tie; in a rattled frame one atom wins,
    so the exact key below is computed for one origin instead of all atoms of the rarest class.
    """
    arg = 2.0 * np.pi * np.dot(frac, H.T.astype(np.float64))  # (n, |H|)
    c, s = np.cos(arg), np.sin(arg)
    onehot = (cls[:, None] == np.arange(int(cls.max()) + 1)[None, :]).astype(np.float64)  # (n, n_cls)
    D = np.dot(c[refs], np.dot(onehot.T, c).T) + np.dot(s[refs], np.dot(onehot.T, s).T)  # (R, n_cls)
    q = np.rint(D * (_GRID / max(len(frac), 1))).astype(np.int64)
    best = _first_min_rows(q - q.min())
    return refs[best]


def _first_min_rows(codes: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the rows of ``codes`` (m, L) (non-negative int64) equal to the
    lexicographically smallest row.  Big-endian bytes of non-negative integers compare like the numbers."""
    rows = [r.tobytes() for r in np.ascontiguousarray(codes.astype(">i8"))]
    best = min(rows)
    return np.array([i for i, r in enumerate(rows) if r == best], dtype=np.int64)


def _choose_automorphism(frac: np.ndarray, cls: np.ndarray, autos: np.ndarray, G: np.ndarray,
                         W: np.ndarray | None = None, H: np.ndarray | None = None) -> tuple[int, int | None]:
    """Index into ``autos`` of the basis change to apply, and the origin atom (None: origin not fixed).

    All operations at once: the fractional coordinates in every candidate basis (K, n, 3), then for every
    (operation, origin candidate) pair the sorted integer codes of the positions relative to that origin
    (class first, then a 2**-16 grid); the lexicographically smallest row wins, ties go to the smallest
    actual metric (:func:`_metric_keys`, so a strained crystal gets the same cell from any input basis) and
    then to the first operation.  Above ``_EXACT_BUDGET`` (origin candidates x atoms) class-resolved
    diffraction intensities decide instead and the origin is not fixed.
    """
    W = _int_inverse(autos) if W is None else W  # frac in basis U @ B is frac @ U^-1
    refs = _reference_atoms(cls)
    n = len(frac)
    if len(autos) * len(refs) * n > _FULL_BUDGET:  # large input: pre-select the origin (invariant rule)
        cand = _origin_candidates(frac, cls, refs, _orbit(W, _BOX1) if H is None else H)
    else:  # small input: every atom of the rarest class, as in the original per-operation search
        cand = refs
    if len(cand) * n <= _EXACT_BUDGET:
        ops = np.arange(len(autos))
        chunk = max(1, _CHUNK // max(len(cand) * n, 1))
        rows = []
        for s in range(0, len(autos), chunk):  # memory bound only; a single chunk for typical inputs
            Wc = W[s:s + chunk].astype(np.float64)  # (k, 3, 3)
            fU = _wrap(np.dot(frac, np.concatenate(list(Wc), axis=1)).reshape(n, len(Wc), 3).transpose(1, 0, 2))
            rel = fU[:, None, :, :] - fU[:, cand][:, :, None, :]  # (k, C, n, 3)
            k = np.rint(rel * _GRID).astype(np.int64) % _GRID
            codes = ((cls * _GRID + k[..., 0]) * _GRID + k[..., 1]) * _GRID + k[..., 2]
            codes.sort(axis=-1)
            rows.append(codes.reshape(-1, n))
        rows = np.concatenate(rows)  # row index = op * C + candidate
        ties = _first_min_rows(rows)
        op_of, ref_of = ties // len(cand), cand[ties % len(cand)]
        mk = _metric_keys(autos[op_of], G)
        pick = int(np.lexsort(mk.T[::-1])[0])  # stable: first (op, candidate) among equal metrics
        return int(op_of[pick]), int(ref_of[pick])
    if len(autos) == 1:
        return 0, None
    r = np.arange(-2, 3)
    hs = np.array(list(itertools.product(r, r, r)), dtype=np.int64)  # (125, 3)
    Hk = np.einsum("kij,hj->khi", W, hs)  # Miller indices seen by each basis, (K, 125, 3)
    code = _encode(Hk.reshape(-1, 3), base=1 << 20)
    _, first, inv = np.unique(code, return_index=True, return_inverse=True)
    uniq = Hk.reshape(-1, 3)[first]
    phase = np.exp(2j * np.pi * (frac @ uniq.T.astype(np.float64)))  # (n, |H|)
    S = np.zeros((int(cls.max()) + 1, len(uniq)), np.complex128)
    np.add.at(S, cls, phase)
    inten = np.abs(S.sum(axis=0)) ** 2 + np.sum(np.abs(S) ** 2, axis=0)
    keys = np.rint(inten / n**2 * 1e6).astype(np.int64)[inv.reshape(len(autos), -1)]
    ties = _first_min_rows(keys.max() - keys)  # largest intensity key first, as before
    mk = _metric_keys(autos[ties], G)
    return int(ties[int(np.lexsort(mk.T[::-1])[0])]), None


# ----------------------------------------------------------------------------------------------- standard cell


def standard_cell(atoms) -> "ase.Atoms":  # noqa: F821
    """Symmetry-free standard cell of a periodic structure (no spglib).

    Steps (all on the lattice metric, so independent of the input orientation):

    1. Reduce the lattice (:func:`_canonical_basis`): Minkowski reduction (always terminates), metric
       symmetrised over the basis changes that keep it within ``SYM_RTOL`` (1e-2 of trace(G)/3; a strained
       cubic/hexagonal lattice is treated as exactly cubic/hexagonal *for the choice of basis only*), then
       the Niggli basis of the symmetrised metric (ASE, retried with other tolerances; the Minkowski basis if
       every attempt fails, so ASE's "not done in 10000 steps" never escapes).  A strain of 1e-6..1e-3 no
       longer switches an fcc cell between its 60-60-60 and 90-120-120 deg bases.
    2. Triclinic convention irrespective of the lattice type: flip the signs of two basis vectors if needed
       so that the reciprocal-lattice angles (of the symmetrised metric) are all <= 90 deg or all > 90 deg.
    3. Among the proper automorphisms of the symmetrised metric (bases with the same metric, e.g. the 24
       rotations of a cubic lattice), pick the one whose atom arrangement has the smallest translation-
       invariant key (fractional coordinates relative to an atom of the rarest (Z, tag) class, on a
       1.5e-5 grid, sorted); ties go to the smallest actual metric, so a strained crystal gets one cell from
       any input basis.  All operations are scored at once; every rarest-class atom is tried as origin up to
       ``_FULL_BUDGET`` (operations x origins x atoms), above it the origins are pre-selected by an
       invariant descriptor (:func:`_origin_candidates`).  Atoms are only re-labelled, never moved.
    4. Re-orient: a along +x, b in the xy plane (b_y > 0), c with c_z > 0 (right-handed).  The cell is the
       lower-triangular Cholesky factor of the actual metric in the chosen basis; the mapping from the input
       is a proper rotation (mirror images are never produced: a left-handed basis is first negated).
    5. Shift the origin onto the reference atom chosen in step 3 and wrap all atoms into [0, 1).

    Guarantee: a rotated, translated, atom-permuted or unimodularly re-based copy of the same crystal gives
    the same cell matrix (to ~1e-6 relative) and the same set of fractional coordinates.  If the pre-selected
    origins times the atoms exceed 200,000, step 3 uses class-resolved diffraction intensities instead, which
    is invariant to translations but cannot tell a non-centrosymmetric arrangement from its inverse; the
    origin is then not shifted.  The lattice part (steps 1-2 and the automorphisms) is memoised per cell.

    Input: a fully periodic ``ase.Atoms`` (Å).  Output: a new periodic ``ase.Atoms`` with the same number of
    atoms, atomic numbers and tags carried per atom (same order as the input), ``info`` copied.
    Raises :class:`StructureError` (one line) for non-periodic input or a cell that cannot be reduced.
    """
    from ase import Atoms

    if not is_periodic(atoms):
        raise StructureError("standard_cell needs a fully periodic structure with a non-zero cell volume")
    cell = np.asarray(atoms.cell, dtype=np.float64)
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    tags = np.asarray(atoms.get_tags(), dtype=np.int64)
    frac0 = np.asarray(atoms.positions, dtype=np.float64) @ np.linalg.inv(cell)

    try:
        M, Gs, autos, W, H = _lattice_setup(cell)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
        raise StructureError(f"cannot reduce the cell of this structure ({exc})") from None
    G_act = (M @ cell) @ (M @ cell).T
    frac = frac0 @ _int_inverse(M).astype(np.float64)
    cls = _classes(numbers, tags)
    op, best_ref = _choose_automorphism(_wrap(frac), cls, autos, G_act, W, H)
    M = autos[op] @ M
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


def standard_orientation(cell, *, epsfactor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rotation :func:`standard_cell` applies to a lattice, from the lattice alone: ``(R, new_cell)``.

    ``cell``: (3, 3) rows = any basis of a lattice (Å).  Steps 1, 2 and 4 of :func:`standard_cell`
    (reduction with the symmetrised metric, triclinic sign convention, Cholesky orientation: a along +x, b in
    the xy plane with b_y > 0, c_z > 0); step 3 needs atoms: only its tie-break is used (the automorphism
    giving the smallest actual metric, the identity for an exact lattice).  Returns the proper rotation ``R`` (3, 3; x' = R x on column vectors,
    det +1) and ``new_cell`` (3, 3; rows = the reduced basis, lower triangular, Å).  The lattice generated
    by ``cell @ R.T`` is the one generated by ``new_cell``.

    ``new_cell`` equals ``standard_cell(atoms).cell`` for any periodic ``atoms`` on this lattice (the
    automorphism chosen there keeps the metric), so ``R`` orients the lattice exactly as ``standard_cell``
    does, up to a proper lattice automorphism.  ``epsfactor`` is the first tolerance passed to
    ``ase.build.tools.niggli_reduce_cell`` (None = its default 1e-5, as in :func:`standard_cell`).
    """
    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)) or abs(np.linalg.det(cell)) <= 0:
        raise StructureError("standard_orientation needs three linearly independent lattice vectors")
    try:
        M, Gs, autos, _, _ = _lattice_setup(cell, epsfactor)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
        raise StructureError(f"cannot reduce this lattice ({exc})") from None
    G = (M @ cell) @ (M @ cell).T
    M = autos[int(np.lexsort(_metric_keys(autos, G).T[::-1])[0])] @ M  # standard_cell's tie-break
    basis = M @ cell
    L = np.linalg.cholesky(basis @ basis.T)
    R = L.T @ np.linalg.inv(basis).T  # basis @ R.T = L
    return R, L
