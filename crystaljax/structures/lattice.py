"""Symmetry-free lattice finder and standard orientation for FINITE structures (host side, NumPy/SciPy/ASE).

The fingerprint is not rotation invariant.  Periodic input is oriented by
:func:`crystaljax.structures.cell.standard_cell`; finite input (atom-probe reconstructions, nanoparticles,
clusters cut from MD) has no cell, so :func:`estimate_lattice` finds the dominant lattice from the positions
alone (scoring candidate translations by how many core atoms they map onto atoms, then the smallest basis
whose combinations all score as translations) and :func:`orient_finite` rotates the atoms into the
orientation :func:`crystaljax.structures.cell.standard_orientation` gives the periodic primitive cell.
Positions in Å; chemistry is ignored.  Method, limits and measured accuracy: docs/DATASET.md
("Lattice finder for finite structures").
"""

from __future__ import annotations

import numpy as np

from crystaljax.errors import StructureError

#: A candidate translation is kept when its score is at least this fraction of the lattice level.
KEEP_FRACTION = 0.8
#: Below this lattice level (fraction of matched atoms) the input is called non-crystalline.
MIN_SCORE = 0.25
#: Fewer atoms than this: no lattice is estimated.
MIN_ATOMS = 16
#: Number of central atoms whose difference vectors generate the candidates.
N_SEEDS = 32
#: Candidate search radii (units of nn), tried in turn until a consistent basis is found.
SEARCH_RADII = (2.6, 3.6)
#: A further radius (units of nn) for sparse input, whose central atoms have at most one neighbour within
#: INSIDE_RADIUS (molecular crystals of dimers: N2, Cl2, I2 cells are 3-6 bond lengths long); sparse input is
#: not given up on at the smaller radii.
SPARSE_SEARCH_RADIUS = 5.5
#: Radius (units of nn) of the neighbour count deciding whether a point lies inside the fragment.
INSIDE_RADIUS = 1.5
#: A point is inside when its neighbour count is at least this fraction of that around a central atom.
INSIDE_FRACTION = 0.5
#: Candidates are pre-screened on this many central atoms when there are more of both.
PRESCREEN = 100
#: Relative tolerance (fraction of the mean squared basis-vector length) within which the metric of an
#: estimated lattice is taken to be invariant under an integer basis change before orienting it.
METRIC_TOL = 0.05
#: Radius (units of nn) within which the scorer looks up each point's nearest atom once (a speed setting).
_SEARCH_NN = 0.45
# A fixed generic direction used to keep one vector of each +-t pair.
_HALF = np.array([0.5377, 0.7103, 0.4542])


# ----------------------------------------------------------------------------------------------- scoring


class _Scorer:
    """Scores candidate translations t against a core of a finite point set (all in Å).

    The k-d tree is queried once per point x_i + t (its nearest atom within a short search radius).  Whether the
    point is inside the fragment and which atom it matches after each refinement step follow from that
    nearest atom by the triangle inequality wherever the bound is decisive by a margin; only the remaining
    points are queried again (the same queries as a direct evaluation, so the same result)."""

    def __init__(self, positions: np.ndarray, core: np.ndarray, seeds: np.ndarray, nn: float, tol: float):
        from scipy.spatial import cKDTree

        self.pos = positions
        self.tree = cKDTree(positions)
        self.core = core
        self.nn = nn
        self.tol = tol * nn
        self.r_in = INSIDE_RADIUS * nn
        ref = self.tree.query_ball_point(seeds, self.r_in, return_length=True)
        self.min_count = INSIDE_FRACTION * float(np.median(ref))
        self.known = None
        # per atom: distance to the nearest other atom and radius of the ball holding min_count atoms
        n_min = int(np.ceil(self.min_count))  # an integer count is >= min_count iff it is >= n_min
        k = min(max(n_min, 2), len(positions))
        d = np.asarray(self.tree.query(positions, k=k)[0], dtype=np.float64).reshape(len(positions), k)
        self._gap = d[:, 1] if k >= 2 else np.full(len(positions), np.inf)
        self._reach = d[:, n_min - 1] if n_min <= len(positions) else np.full(len(positions), np.inf)
        # margin (Å) beyond any round-off in a distance: closer calls go to the k-d tree
        self._eps = 1e-9 * (nn + float(np.abs(positions).max()))
        # radius (Å) of the nearest-atom search (a performance setting; any value >= 1.5 tol gives the same result)
        self._search = max(_SEARCH_NN * nn, 1.5 * self.tol) + 4 * self._eps

    def remember(self, T: np.ndarray, score: np.ndarray) -> None:
        """Keep scored translations (both signs) for look-up by :func:`_consistent`."""
        from scipy.spatial import cKDTree

        self.known = (cKDTree(np.concatenate([T, -T])), np.asarray(score, dtype=np.float64))

    def _inside(self, Q: np.ndarray, d0: np.ndarray, j0: np.ndarray) -> np.ndarray:
        """(M,) bool: at least min_count atoms within r_in of Q (M, 3), given the nearest atom j0 at d0 (inf if
        none within the search radius)."""
        eps, near = self._eps, np.isfinite(d0)
        d0 = np.where(near, d0, 0.0)
        reach = self._reach[j0 * near]
        inside = near & (d0 + reach <= self.r_in - eps)  # the ball of x_j0 holding min_count atoms is inside
        outside = near & (reach - d0 > self.r_in + eps)  # the ball about Q is inside one of x_j0 with fewer
        todo = np.flatnonzero(~inside & ~outside)
        if len(todo):
            cnt = self.tree.query_ball_point(Q[todo], self.r_in, return_length=True)
            inside[todo] = cnt >= self.min_count
        return inside

    def _match(self, Q: np.ndarray, tol: float, d0: np.ndarray, j0: np.ndarray, shift: np.ndarray):
        """(hit (M,) bool, j (M,) int): is there an atom closer than ``tol`` to Q (M, 3), and the nearest one,
        given the nearest atom j0 at d0 (inf if none within the search radius) of Q - shift (|shift| per point:
        ``shift``)."""
        eps, near = self._eps, np.isfinite(d0)
        j = j0 * near
        diff = self.pos[j] - Q
        e = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        rest = np.where(near, np.maximum(d0 - shift, self._gap[j] - e), self._search - shift)  # others >= this
        hit = near & (e < tol - eps) & (self._gap[j] - e > e + eps)
        miss = (~near | (e >= tol + eps)) & (rest >= tol + eps)
        todo = np.flatnonzero(~hit & ~miss)
        if len(todo):
            d, jj = self.tree.query(Q[todo], distance_upper_bound=tol)
            hit[todo] = np.isfinite(d)
            j = j.copy()
            j[todo] = np.where(np.isfinite(d), jj, 0)
        return hit, np.where(hit, j, 0)

    def __call__(self, T: np.ndarray, refine: int = 2, n_core: int | None = None, scores_only: bool = False):
        """(refined T (K, 3) Å, score (K,), valid (K,) bool) for candidate translations T (K, 3) Å.

        ``valid`` is False when fewer than ``min_eligible`` core atoms have x_i + t inside the fragment
        (score 0 then) or when |t| < 0.5 nn (an atom would match itself).  ``n_core``: use only the
        ``n_core`` most central core atoms (a quick pre-screen).  Each of the ``refine`` steps moves t by
        the mean offset of the matched atoms (match radius 1.5 tol in the first step, then tol).
        ``scores_only`` (with ``refine=0``): a t that matches no atom at all gets its score, 0, without the
        inside test, and valid False whatever its eligible count.
        """
        T = np.asarray(T, dtype=np.float64).reshape(-1, 3)
        core = self.core if n_core is None else self.core[:n_core]
        K, n = len(T), len(core)
        min_eligible = max(10, int(0.25 * n))
        Q = (core[None, :, :] + T[:, None, :]).reshape(-1, 3)
        d0, j0 = self.tree.query(Q, distance_upper_bound=self._search)  # nearest atom within the search radius
        d0 = np.asarray(d0, dtype=np.float64)
        j0 = np.where(np.isfinite(d0), j0, 0)
        if scores_only and refine == 0:
            hit, _ = self._match(Q, self.tol, d0, j0, np.zeros(K * n))
            some = np.repeat(hit.reshape(K, n).any(axis=1), n)  # score 0 (matched 0) for the others
            elig = np.zeros(K * n, dtype=bool)
            elig[some] = self._inside(Q[some], d0[some], j0[some])
        else:
            elig = self._inside(Q, d0, j0)
        n_elig = elig.reshape(K, n).sum(axis=1)
        rows = np.flatnonzero(elig)  # only these can match
        t_of, i_of = np.divmod(rows, n)
        d0, j0, core_r = d0[rows], j0[rows], core[i_of]
        T_start = T
        for it in range(refine + 1):
            Qr = core_r + T[t_of]
            tol = self.tol * (1.5 if it == 0 and refine else 1.0)
            hit, j = self._match(Qr, tol, d0, j0, np.linalg.norm(T - T_start, axis=1)[t_of])
            n_matched = np.bincount(t_of[hit], minlength=K)
            if it == refine:
                break
            resid = self.pos[j[hit]] - Qr[hit]
            # summed in row order, as a sum over the core axis of (K, n, 3) offsets with zeros for the others
            total = np.stack([np.bincount(t_of[hit], weights=resid[:, c], minlength=K) for c in range(3)], axis=1)
            T = T + total / np.maximum(n_matched, 1)[:, None]
        valid = (n_elig >= min_eligible) & (np.linalg.norm(T, axis=1) > 0.5 * self.nn)
        score = np.where(valid, n_matched / np.maximum(n_elig, 1), 0.0)
        return T, score, valid


def _candidates(scorer: _Scorer, seeds: np.ndarray, radius: float) -> np.ndarray:
    """Peaks (K, 3) Å of the seed -> atom difference vectors shorter than ``radius`` Å, one of each +-pair."""
    from scipy.spatial import cKDTree

    i, j, dist = _pairs(seeds, scorer.tree, radius)
    D = scorer.pos[j] - seeds[i]
    D = D[(dist > 0.5 * scorer.nn) & (D @ _HALF > -scorer.tol)]
    if len(D) == 0:
        return D.reshape(0, 3)
    pairs = cKDTree(D).query_pairs(scorer.tol, output_type="ndarray").reshape(-1, 2)
    # vectors within tol of each one, itself included (the ball count, from the same pairs)
    cnt = 1 + np.bincount(pairs.ravel(), minlength=len(D))
    peak = np.ones(len(D), dtype=bool)
    if len(pairs):
        p, q = pairs[:, 0], pairs[:, 1]  # p < q: on equal counts the lower index wins
        loser = np.where(cnt[p] >= cnt[q], q, p)
        peak[loser] = False
    keep = peak & (cnt >= max(3, 0.2 * cnt.max()))
    return D[keep]


def _pairs(a: np.ndarray, tree, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) for all points a[i], tree point j closer than ``radius``."""
    from scipy.spatial import cKDTree

    sdm = cKDTree(a).sparse_distance_matrix(tree, radius, output_type="ndarray")
    return sdm["i"], sdm["j"], sdm["v"]


def _lattice_level(score: np.ndarray) -> float:
    """Typical score of a lattice translation: median of the scores >= 0.75 x the best one.

    Robust to the binomial scatter of single scores (the maximum over many candidates is biased upward).
    """
    top = score[score >= 0.75 * score.max()]
    return float(np.median(top))


def _spans_3d(T: np.ndarray) -> bool:
    """Do the vectors T (K, 3) span three dimensions (smallest/largest singular value of the unit vectors
    > 0.1)?"""
    if len(T) < 3:
        return False
    sv = np.linalg.svd(T / np.linalg.norm(T, axis=1, keepdims=True), compute_uv=False)
    return bool(sv[2] > 0.1 * sv[0])


def _dedupe(T: np.ndarray, score: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge vectors that coincide (or are opposite) within ``tol`` Å; the higher score wins."""
    order = np.argsort(-score, kind="stable")
    T, score = T[order], score[order]
    dist = np.minimum(
        np.linalg.norm(T[:, None] - T[None], axis=-1), np.linalg.norm(T[:, None] + T[None], axis=-1)
    )
    dup = np.triu(dist < tol, k=1).any(axis=0)
    return T[~dup], score[~dup]


# ----------------------------------------------------------------------------------------------- basis


def _check_combos() -> np.ndarray:
    """n in {-1, 0, 1}^3 (one of each +-n) and 2 e_i: (16, 3) float."""
    r = np.arange(-1, 2)
    n = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    lead = n[np.arange(len(n)), np.argmax(n != 0, axis=1)]  # first non-zero entry (0 for n = 0)
    return np.concatenate([n[lead > 0], 2 * np.eye(3, dtype=np.int64)]).astype(np.float64)


#: Combinations n . B that must score as lattice translations for a basis B to be accepted.  2 e_i rejects
#: a basis vector that maps 2 of 3 sublattices onto each other (collinear basis of alpha-Sm); odd n reject
#: an intra-basis vector such as diamond's (1/4, 1/4, 1/4).
_COMBOS = _check_combos()
#: Fraction of the (eligible) combinations that must reach the keep threshold.
CONSISTENCY = 0.8
#: At most this many of the shortest kept translations, and this many bases, are tried.
_MAX_VECTORS, _MAX_TRIALS = 12, 40


def _pool(T: np.ndarray, tol: float) -> np.ndarray:
    """The vectors of T (sorted by length) that are not +-u +- w of two earlier ones (u = w allowed), capped.

    The pool generates the same lattice as T (each dropped vector is a sum of earlier ones), and it keeps
    the successive minima (a vector sum of two strictly shorter ones lies in their span), which form a
    basis in 3-D.  Cuts e.g. the many in-plane vectors of a long-c hexagonal cell.
    """
    from scipy.spatial import cKDTree

    K = len(T)
    u, w = np.triu_indices(K)
    S = np.concatenate([T[u] + T[w], T[u] - T[w]])
    later = np.concatenate([w, w])  # index of the later of the two summands
    d, v = cKDTree(np.concatenate([T, -T])).query(S, distance_upper_bound=tol)
    hit = np.isfinite(d)
    v = np.where(hit, v % max(K, 1), 0)
    drop = np.zeros(K, dtype=bool)
    drop[v[hit & (later < v)]] = True
    return T[~drop][:_MAX_VECTORS]


def _consistent(scorer: _Scorer, B: np.ndarray, thr: float) -> bool:
    """Do the combinations n . B (``_COMBOS``) score as lattice translations (>= ``CONSISTENCY`` of them)?

    Combinations matching an already scored candidate (``scorer.known``) take its score; the others are
    scored only if they could still change the verdict.
    """
    V = _COMBOS @ B
    s = np.zeros(len(V))
    todo = np.ones(len(V), dtype=bool)
    if scorer.known is not None:
        tree, known_score = scorer.known
        d, j = tree.query(V, distance_upper_bound=scorer.tol)
        hit = np.isfinite(d)
        s[hit] = known_score[j[hit] % len(known_score)]
        todo = ~hit
    if (np.sum(s >= thr) + todo.sum()) < CONSISTENCY * len(V):
        return False
    valid = ~todo
    if todo.any():
        _, s[todo], valid[todo] = scorer(V[todo], refine=0)
    if valid.sum() < 6:
        return False
    return float(np.mean(s[valid] >= thr)) >= CONSISTENCY


def _fit_basis(scorer: _Scorer, T: np.ndarray, thr: float) -> tuple[np.ndarray, float] | None:
    """(primitive basis (3, 3) Å of the lattice of the kept translations T (K, 3) Å, rms residual (Å) of
    the kept vectors about it), or None.

    Bases from triples of the shortest kept vectors are tried in order of increasing cell volume; the first
    one whose combinations score as lattice translations is taken (a triple containing a spurious vector
    spans a finer lattice, so it comes first and fails).  If a half of a basis combination is a lattice
    translation too (a short vector was missed), the basis is halved.  Finally least-squares refined on all
    kept vectors on its lattice.
    """
    from itertools import combinations

    P = _pool(T[np.argsort(np.linalg.norm(T, axis=1), kind="stable")], scorer.tol)
    if len(P) < 3:
        return None
    idx = np.array(list(combinations(range(len(P)), 3)))
    trip = P[idx]  # (M, 3, 3)
    vol = np.abs(np.linalg.det(trip))
    lens = np.linalg.norm(trip, axis=2)
    ok = vol > 0.2 * lens.prod(axis=1)  # not nearly coplanar
    trip, vol = trip[ok], vol[ok]
    B = None
    for k in np.argsort(vol, kind="stable")[:_MAX_TRIALS]:
        if _consistent(scorer, trip[k], thr):
            B = trip[k]
            break
    if B is None:
        return None
    halves = np.array([n for n in np.ndindex(2, 2, 2) if any(n)], dtype=np.float64)  # (7, 3)
    for _ in range(3):  # a missed short vector: B spans a sublattice of index 2
        H = 0.5 * halves @ B
        _, s_h, _ = scorer(H, refine=0, scores_only=True)
        for h, n, s in zip(H, halves, s_h):
            if s < thr:
                continue
            B2 = B.copy()
            B2[int(np.flatnonzero(n)[0])] = h
            if _consistent(scorer, B2, thr):
                B = B2
                break
        else:
            break
    N = np.rint(T @ np.linalg.inv(B))
    on = np.linalg.norm(T - N @ B, axis=1) <= scorer.tol
    B_ref, *_ = np.linalg.lstsq(np.concatenate([N[on], np.eye(3)]), np.concatenate([T[on], B]), rcond=None)
    if not np.all(np.isfinite(B_ref)) or abs(np.linalg.det(B_ref) / np.linalg.det(B) - 1) > 0.1:
        B_ref = B  # pragma: no cover - safety net
    rms = float(np.sqrt(np.mean(np.sum((T[on] - N[on] @ B_ref) ** 2, axis=1)))) if on.any() else 0.0
    return B_ref, rms


def _niggli_basis(B: np.ndarray) -> np.ndarray:
    """Niggli-reduced, right-handed basis (rows, Å) of the lattice spanned by the rows of B."""
    from ase.build.tools import niggli_reduce_cell

    _, C = niggli_reduce_cell(B)
    M = np.asarray(C, dtype=np.int64).T
    out = M @ B
    return -out if np.linalg.det(out) < 0 else out


# ----------------------------------------------------------------------------------------------- public API


def estimate_lattice(positions, *, max_atoms: int = 300, tolerance: float = 0.2) -> np.ndarray | None:
    """Primitive lattice (3, 3) Å of the dominant crystal in a finite fragment, or None.

    ``positions``: (N, 3) Cartesian coordinates in Å; noise, vacancies and substitutions allowed (species
    are not used).  ``max_atoms``: size of the core (atoms nearest the centroid) whose translations are
    tested.  ``tolerance``: match radius as a fraction of the median nearest-neighbour distance.

    Returns the rows = three shortest independent lattice translations (Niggli-reduced, right-handed), in
    the frame of ``positions``; None for fewer than ``MIN_ATOMS`` atoms, non-crystalline input or a
    fragment too thin to show three independent translations.  See the module docstring for the method.
    """
    return _estimate(positions, max_atoms, tolerance)[0]


def _estimate(positions, max_atoms: int, tolerance: float) -> tuple[np.ndarray | None, float]:
    """:func:`estimate_lattice` and the rms residual (Å) of the kept translations about the fitted lattice."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(pos) < MIN_ATOMS or not np.all(np.isfinite(pos)):
        return None, 0.0
    r = np.linalg.norm(pos - pos.mean(axis=0), axis=1)
    order = np.argsort(r, kind="stable")
    core = pos[order[: max(int(max_atoms), MIN_ATOMS)]]
    seeds = pos[order[: min(N_SEEDS, len(core))]]
    nn = _nn_distance(pos, core)
    if not nn > 0:
        return None, 0.0
    scorer = _Scorer(pos, core, seeds, nn, float(tolerance))
    sparse = scorer.min_count <= 1.0  # a median of <= 2 atoms (itself included) within INSIDE_RADIUS
    radii = SEARCH_RADII + ((SPARSE_SEARCH_RADIUS,) if sparse else ())
    for k, radius in enumerate(radii):
        give_up = not sparse or k == len(radii) - 1  # a low lattice level ends the search
        T0 = _candidates(scorer, seeds, radius * nn)
        if len(T0) < 3:
            continue
        if len(T0) > PRESCREEN and len(core) > 2 * PRESCREEN:  # quick pass on the most central atoms
            T1, s1, v1 = scorer(T0, refine=1, n_core=PRESCREEN)
            if not v1.any() or _lattice_level(s1[v1]) < 0.5 * MIN_SCORE:
                if give_up:
                    return None, 0.0
                continue
            level1 = _lattice_level(s1[v1])
            strong = T1[v1 & (s1 >= KEEP_FRACTION * level1)]
            if not _spans_3d(strong):
                continue  # the third lattice direction is longer than this radius
            weak = ~v1 | (s1 < 0.5 * level1)
            T, score, valid = scorer(T1[~weak], refine=1)
            T = np.concatenate([T[valid], T1[weak & v1]])
            score = np.concatenate([score[valid], s1[weak & v1]])
        else:
            T, score, valid = scorer(T0)
            T, score = T[valid], score[valid]
        T, score = _dedupe(T, score, scorer.tol)
        if len(T) < 3:
            continue
        scorer.remember(T, score)
        level = _lattice_level(score)
        if level < MIN_SCORE:
            if give_up:
                return None, 0.0
            continue
        thr = KEEP_FRACTION * level
        keep = score >= thr
        fit = _fit_basis(scorer, T[keep], thr)
        if fit is not None:
            return _niggli_basis(fit[0]), fit[1]
    return None, 0.0


def _nn_distance(pos: np.ndarray, core: np.ndarray) -> float:
    """Typical nearest-neighbour distance (Å): median of the core's pair distances below 1.2 x a running
    estimate, started from the median nearest-neighbour distance (less biased low by noise than that)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(pos)
    d, _ = tree.query(core, k=2)
    nn = float(np.median(d[:, 1]))
    if not nn > 0:
        return 0.0
    ctree = cKDTree(core)
    for _ in range(2):
        v = ctree.sparse_distance_matrix(tree, 1.2 * nn, output_type="ndarray")["v"]
        v = v[v > 0.3 * nn]
        if len(v) == 0:
            break
        nn = float(np.median(v))
    return nn


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """np.unique(rows, axis=0) for an integer array (M, 9): the distinct rows in lexicographic order (rows with
    entries in [-63, 63] are compared as one base-127 integer each)."""
    if len(rows) == 0 or np.abs(rows).max() > 63:
        return np.unique(rows, axis=0)
    keys = (rows + 63) @ (127 ** np.arange(8, -1, -1, dtype=np.int64))
    _, first = np.unique(keys, return_index=True)
    return rows[first]


def _approx_automorphisms(G: np.ndarray, tol: float) -> np.ndarray:
    """Integer U (det +1, entries in [-2, 2]) with |U G U^T - G| <= tol * trace(G) / 3, closed under
    products: (K, 3, 3) int.  G must be the metric of a reduced basis."""
    scale = tol * float(np.trace(G)) / 3.0
    r = np.arange(-2, 3)
    vecs = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    vecs = vecs[np.any(vecs != 0, axis=1)]
    norms = np.einsum("ij,jk,ik->i", vecs, G, vecs)
    rows = [vecs[np.abs(norms - G[i, i]) <= scale] for i in range(3)]
    a, b, c = np.meshgrid(*[np.arange(len(x)) for x in rows], indexing="ij")
    U = np.stack([rows[0][a.ravel()], rows[1][b.ravel()], rows[2][c.ravel()]], axis=1)  # (M, 3, 3)
    U = U[np.rint(np.linalg.det(U)).astype(np.int64) == 1]
    U = U[np.abs(np.einsum("mij,jk,mlk->mil", U, G, U) - G).max(axis=(1, 2)) <= scale]
    # rows of 9 entries, unique and in lexicographic order
    group = _unique_rows(np.concatenate([np.eye(3, dtype=np.int64).reshape(1, 9), U.reshape(-1, 9)]))
    for _ in range(4):  # close under products (noise can leave a product just outside the tolerance)
        mats = group.reshape(-1, 3, 3)
        products = np.einsum("aij,bjk->abik", mats, mats).reshape(-1, 9)
        union = _unique_rows(np.concatenate([group, products]))
        if len(union) == len(group):  # every product is already in the group
            break
        group = union
        if len(group) > 48:  # not a finite point group: give up on symmetrising
            return np.eye(3, dtype=np.int64)[None]
    return group.reshape(-1, 3, 3)


def _sym_sqrt(G: np.ndarray, power: float) -> np.ndarray:
    w, V = np.linalg.eigh(G)
    return (V * w**power) @ V.T


def symmetrize_lattice(cell, tol: float = METRIC_TOL) -> np.ndarray:
    """The basis nearest ``cell`` (3, 3) Å whose metric is exactly invariant under the basis changes that
    keep the metric of ``cell`` within ``tol`` (relative to the mean squared vector length).

    An estimated lattice is only approximately cubic, hexagonal, ...; its exact symmetrised version makes
    the Niggli reduction and the sign convention of :func:`crystaljax.structures.cell.standard_orientation` choose a
    basis consistently (otherwise noise decides, e.g. between the 60-60-60 and 60-90-120 degree bases of an
    fcc lattice, which are not related by a rotation of the lattice).  The metric is averaged over the
    group of such integer basis changes U (G -> mean U G U^T) and the basis changed by
    G_sym^(1/2) G^(-1/2) (the smallest such change).  Input a Niggli-reduced basis.
    """
    B = np.asarray(cell, dtype=np.float64)
    G = B @ B.T
    U = _approx_automorphisms(G, tol).astype(np.float64)
    G_sym = np.einsum("mij,jk,mlk->il", U, G, U) / len(U)
    return _sym_sqrt(G_sym, 0.5) @ _sym_sqrt(G, -0.5) @ B


def _core_indices(positions: np.ndarray, target: int) -> np.ndarray:
    """Sorted indices of the whole shells around the atom nearest the centroid whose count is closest to
    ``target`` (distances equal to 1e-6 relative form one shell): the rule of
    :func:`crystaljax.structures.cluster.sphere_cut` for periodic input, so the core is a ball like the training
    clusters."""
    from crystaljax.structures.cluster import nearest_shells

    c = positions.mean(axis=0)
    origin = positions[int(np.argmin(np.linalg.norm(positions - c, axis=1)))]
    return nearest_shells(np.linalg.norm(positions - origin, axis=1), target)


def orient_finite(atoms, target: int = 250, *, core: bool = True) -> "ase.Atoms":  # noqa: F821
    """A finite structure rotated so that its crystal lattice is in the standard-cell orientation.

    ``atoms``: non-periodic (or partially periodic) ``ase.Atoms``, positions in Å.  If ``core`` and the
    structure has more than 1.5 x ``target`` atoms, only a ball of ~``target`` atoms is kept: the whole
    shells around the atom nearest the centroid, count closest to ``target`` (the rule of
    :func:`crystaljax.structures.cluster.sphere_cut`), in their input order.  The fingerprint then describes the local
    structure at the centre of the input, with peaks as broad as those of the ~``target``-atom training
    clusters.  The lattice of the kept atoms is estimated with :func:`estimate_lattice`; if found, its
    metric is symmetrised (:func:`symmetrize_lattice`, tolerance 6 x the fit's rms residual, relative,
    clipped to [0.01, ``METRIC_TOL``]) so that noise cannot make the Niggli reduction pick a basis of a
    different shape (fcc: 60-60-60 vs 60-90-120 degrees), and all kept atoms are rotated about their
    centroid by the ``R`` of :func:`crystaljax.structures.cell.standard_orientation` of that lattice.  So a fragment in
    any orientation ends up oriented like ``standard_cell`` of the periodic primitive cell of the same
    crystal (tested to ~0.5 % of nn in the lattice vectors at 5 % noise and 40 % vacancies).

    Remaining ambiguity: the orientation is fixed only up to a proper automorphism of the lattice (e.g.
    one of the 24 rotations of a cubic lattice), chosen by the Niggli basis ordering; no atom key is used
    (standard_cell's key is not stable under noise).  For holohedral crystals (all seven crystaljax classes)
    these rotations are crystal symmetries, so the result is the same crystal, only the fragment shape may
    differ; a merohedral crystal may come out in orientations related by a lattice rotation that is not one
    of its symmetries.  A lattice within the symmetrisation tolerance (1-5 % of the metric) of a more
    symmetric one is oriented as that one (bct: c/a within 1 % (clean input) to 4 % (noisy) of the bcc or
    fcc value).

    Output: a new non-periodic ``ase.Atoms`` (zero cell), numbers, tags and other per-atom arrays kept per
    atom; ``info`` copied plus ``info['lattice_found']`` (bool), ``info['estimated_cell']`` ((3, 3) Å,
    rows = the estimated primitive lattice rotated into the OUTPUT frame (lower triangular up to the
    symmetrisation, ~1e-2 nn), zeros when not found) and ``info['rotation']`` ((3, 3) R, output = R input
    about the centroid; identity when not found), so ``estimated_cell @ R`` is the lattice in the input frame.
    Without a lattice the (kept) atoms are returned unrotated.  Raises :class:`StructureError` for fully
    periodic input (use ``standard_cell``) or an empty structure.
    """
    from crystaljax.structures.cell import standard_orientation
    from crystaljax.structures.io import is_periodic

    if is_periodic(atoms):
        raise StructureError("orient_finite is for finite structures; periodic ones go through standard_cell")
    if len(atoms) == 0:
        raise StructureError("orient_finite needs at least one atom")
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if core and len(atoms) > 1.5 * target:
        out = atoms[_core_indices(pos, int(target))]
    else:
        out = atoms.copy()
    out.set_pbc(False)
    out.set_cell(np.zeros((3, 3)))
    pos = np.asarray(out.positions, dtype=np.float64)
    B, rms = _estimate(pos, 300, 0.2)
    out.info["lattice_found"] = B is not None
    if B is None:
        out.info["estimated_cell"] = np.zeros((3, 3))
        out.info["rotation"] = np.eye(3)
        return out
    G = B @ B.T
    # metric uncertainty ~ rms x |b| relative to trace(G)/3; 6x covers the observed scatter (floor 0.01)
    tol = float(np.clip(6.0 * rms * np.sqrt(G.diagonal().max()) / (np.trace(G) / 3.0), 0.01, METRIC_TOL))
    R, _ = standard_orientation(symmetrize_lattice(B, tol))
    c = pos.mean(axis=0)
    out.positions = (pos - c) @ R.T + c
    out.info["estimated_cell"] = B @ R.T
    out.info["rotation"] = R
    return out
