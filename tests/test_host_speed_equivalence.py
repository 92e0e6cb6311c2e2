"""The fast host paths give the results of the direct computations they replace (exactly, or to round-off for
the closed-form spherical harmonics).  Each reference below is the plain version of the same step: one k-d tree
query per point and refinement step, np.median in every iteration, a full sort, a set of matrices, scipy's Y_lm."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.spatial import cKDTree

from crystaljax.structures import cluster, io, lattice, order


def _frame(name, reps, rng, sigma=0.05, vacancies=0.0):
    at = {"fcc": lambda: bulk("Cu", "fcc", a=3.61, cubic=True), "bcc": lambda: bulk("Fe", "bcc", a=2.87, cubic=True),
          "hcp": lambda: bulk("Mg", "hcp", a=3.21, c=5.21), "diamond": lambda: bulk("Si", "diamond", a=5.43, cubic=True),
          }[name]().repeat(reps)
    if vacancies:
        del at[rng.choice(len(at), int(vacancies * len(at)), replace=False)]
    at.positions += rng.normal(scale=sigma, size=at.positions.shape)
    return at


FRAMES = [("fcc", (4, 4, 4), 0.1, 0.0), ("bcc", (5, 5, 5), 0.05, 0.0), ("hcp", (5, 5, 4), 0.15, 0.3),
          ("diamond", (3, 3, 3), 0.08, 0.1), ("bcc", (5, 5, 5), 0.2, 0.6)]


def _reference_score(s: lattice._Scorer, T, refine=2, n_core=None):
    """The scorer's result by direct k-d tree queries: a ball count per point, a nearest-atom query per step."""
    T = np.asarray(T, dtype=np.float64).reshape(-1, 3)
    core = s.core if n_core is None else s.core[:n_core]
    n = len(core)
    Q = core[None, :, :] + T[:, None, :]
    cnt = s.tree.query_ball_point(Q.reshape(-1, 3), s.r_in, return_length=True).reshape(len(T), n)
    elig = cnt >= s.min_count
    n_elig = elig.sum(axis=1)
    for it in range(refine + 1):
        Q = core[None, :, :] + T[:, None, :]
        tol = s.tol * (1.5 if it == 0 and refine else 1.0)
        d, j = s.tree.query(Q.reshape(-1, 3), distance_upper_bound=tol)
        matched = np.isfinite(d).reshape(len(T), n) & elig
        if it == refine:
            break
        j = np.where(np.isfinite(d), j, 0)
        resid = (s.pos[j].reshape(len(T), n, 3) - Q) * matched[..., None]
        T = T + resid.sum(axis=1) / np.maximum(matched.sum(axis=1), 1)[:, None]
    valid = (n_elig >= max(10, int(0.25 * n))) & (np.linalg.norm(T, axis=1) > 0.5 * s.nn)
    return T, np.where(valid, matched.sum(axis=1) / np.maximum(n_elig, 1), 0.0), valid


@pytest.mark.parametrize("name,reps,sigma,vacancies", FRAMES)
def test_scorer_equals_direct_queries(name, reps, sigma, vacancies):
    rng = np.random.default_rng(3)
    ball, _ = cluster.sphere_cut(_frame(name, reps, rng, sigma, vacancies), 250)
    pos = ball.positions
    order_ = np.argsort(np.linalg.norm(pos - pos.mean(axis=0), axis=1), kind="stable")
    core, seeds = pos[order_[:300]], pos[order_[:32]]
    s = lattice._Scorer(pos, core, seeds, lattice._nn_distance(pos, core), 0.2)
    lattice_vectors = lattice._candidates(s, seeds, 2.6 * s.nn)  # mostly lattice translations
    T = np.concatenate([lattice_vectors, rng.normal(size=(20, 3)) * 2 * s.nn, 0.5 * lattice_vectors[:7]])
    for refine in (0, 1, 2):
        for n_core in (None, 100):
            got, ref = s(T, refine=refine, n_core=n_core), _reference_score(s, T, refine, n_core)
            for a, b in zip(got, ref):
                np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s(T, refine=0, scores_only=True)[1], _reference_score(s, T, 0)[1])
    assert _reference_score(s, lattice_vectors)[1].max() > 0.3  # crystals (60 % vacancies at most): real matches


def _reference_statistic(d):
    d = np.asarray(d, dtype=np.float64)
    finite = np.isfinite(d)
    nn = d[:, 0][finite[:, 0]]
    if len(nn) == 0:
        return float("nan")
    m = float(np.sort(nn)[(len(nn) - 1) // 4])
    s = min(float(np.median(np.abs(nn - m))) / cluster.ROBUST_MAD_TO_SIGMA, cluster.ROBUST_S_MAX * m)
    v = d[finite]
    for _ in range(cluster.ROBUST_ITERATIONS):
        w = v[np.abs(v - m) < cluster.ROBUST_C_LOCATION * max(s, cluster.ROBUST_FLOOR * m)]
        if len(w):
            m = float(np.median(w))
        low = m - v[(v < m) & (v > (1.0 - cluster.ROBUST_LOWER_WINDOW) * m)]
        s = min(float(np.median(low)) / cluster.ROBUST_MAD_TO_SIGMA if len(low) else 0.0, cluster.ROBUST_S_MAX * m)
    return m - s * s / m


def test_robust_statistic_equals_the_median_loop():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 200))
        d = np.sort(rng.normal(2.5, rng.uniform(0, 0.4), size=(n, 16)), axis=1)
        if trial % 3 == 0:
            d[rng.uniform(size=d.shape) < 0.3] = np.inf
            d = np.sort(d, axis=1)
        if trial % 5 == 0:
            d = np.round(d, 2)  # many ties
        got, ref = cluster.scale_from_neighbour_distances(d), _reference_statistic(d)
        assert got == ref or (np.isnan(got) and np.isnan(ref))


@pytest.mark.parametrize("name,reps,sigma,vacancies", FRAMES)
def test_periodic_neighbour_table_equals_all_images(name, reps, sigma, vacancies):
    at = _frame(name, reps, np.random.default_rng(1), sigma, vacancies)
    at.positions += 0.3 * at.cell[0]  # unwrapped coordinates
    pos, cell, k = at.positions, at.cell[:], cluster.ROBUST_NEIGHBOURS
    volume = abs(np.linalg.det(cell))
    radius = (3.0 * 3 * (k + 1) * volume / len(pos) / (4.0 * np.pi)) ** (1.0 / 3.0)
    spacings = volume / np.linalg.norm(np.cross(np.roll(cell, -1, 0), np.roll(cell, -2, 0)), axis=1)
    reps_ = [int(np.ceil(radius / sp)) + 1 for sp in spacings]
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reps_], indexing="ij"), -1).reshape(-1, 3)
    every = (pos[None, :, :] + (grid @ cell)[:, None, :]).reshape(-1, 3)
    ref = cKDTree(every).query(pos, k=k + 1)[0][:, 1:]
    np.testing.assert_array_equal(cluster._neighbour_table(at, k, True), ref)
    near = io.images_near(pos, cell, grid, radius)
    close = every[np.min(np.linalg.norm(every[:, None] - pos[None], axis=2), axis=1) <= radius]
    assert len(near) < len(every) and {tuple(p) for p in close} <= {tuple(p) for p in near}


def test_validate_finds_the_overlaps_of_all_images():
    rng = np.random.default_rng(2)
    overlaps = 0
    for trial in range(60):
        at = _frame("fcc", (2, 2, 2), rng, 0.02)
        if trial % 2:
            i, j = rng.choice(len(at), 2, replace=False)
            at.positions[j] = at.positions[i] + at.cell[trial % 3] * (trial % 4 - 1) + rng.normal(size=3) * 1e-4
        overlap = float(np.min(io.nearest_neighbour_distances(at, True))) < io.MIN_DISTANCE
        if overlap:
            with pytest.raises(Exception, match="overlapping atoms"):
                io.validate(at)
        else:
            io.validate(at)
        overlaps += overlap
    assert 10 < overlaps < 30

def _reference_shells(dist, target):
    order_ = np.argsort(dist, kind="stable")
    d = dist[order_]
    ends = np.append(np.flatnonzero(np.diff(d) > 1e-6 * max(d[-1], 1e-12)) + 1, len(d))
    return np.sort(order_[: int(ends[np.argmin(np.abs(ends - target))])])


def test_partial_sort_gives_the_whole_shells_of_a_full_sort():
    rng = np.random.default_rng(4)
    for trial in range(300):
        pts = rng.integers(-4, 5, size=(int(rng.integers(1, 3000)), 3)).astype(float)  # many equal distances
        pts += rng.normal(size=pts.shape) * (1e-9 if trial % 2 else 0.1)
        dist = np.linalg.norm(pts - pts[0], axis=1)
        target = int(rng.integers(1, 800))
        np.testing.assert_array_equal(cluster.nearest_shells(dist, target), _reference_shells(dist, target))


def _reference_closure(U):
    group = {tuple(np.eye(3, dtype=np.int64).ravel())} | {tuple(u.ravel()) for u in U}
    for _ in range(4):
        mats = [np.array(g).reshape(3, 3) for g in group]
        new = {tuple((x @ y).ravel()) for x in mats for y in mats}
        if new <= group:
            break
        group |= new
        if len(group) > 48:
            return np.eye(3, dtype=np.int64)[None]
    return np.array([np.array(g).reshape(3, 3) for g in sorted(group)])


def test_automorphism_closure_equals_the_set_of_products(monkeypatch):
    rng = np.random.default_rng(5)
    seen = []
    closure = lattice._unique_rows

    def record(rows):
        seen.append(rows)
        return closure(rows)

    monkeypatch.setattr(lattice, "_unique_rows", record)
    for trial in range(80):
        B = lattice._niggli_basis([bulk("Cu", "fcc", a=3.6).cell[:], bulk("Mg", "hcp", a=3.2, c=5.2).cell[:],
                                   np.diag([3.0, 3.0, 3.1])][trial % 3] + rng.normal(size=(3, 3)) * 0.05)
        seen.clear()
        got = lattice._approx_automorphisms(B @ B.T, float(rng.choice([0.01, 0.05, 0.15])))
        U = seen[0][1:].reshape(-1, 3, 3)  # the candidate automorphisms, after the identity
        np.testing.assert_array_equal(got, _reference_closure(U))


def test_q6_vectors_have_the_dot_products_of_scipys_harmonics():
    from scipy.special import sph_harm_y

    rng = np.random.default_rng(6)
    D = rng.normal(size=(600, 3)) * rng.uniform(0.5, 3, (600, 1))
    D[:4] = [[0, 0, 1], [0, 0, -2], [1, 0, 0], [1, 1, 0]]
    i = rng.integers(0, 40, 600)
    r = np.linalg.norm(D, axis=1)
    y = sph_harm_y(6, np.arange(-6, 7)[None, :], np.arccos(D[:, 2] / r)[:, None],
                   np.arctan2(D[:, 1], D[:, 0])[:, None])
    q = np.zeros((40, 13), complex)
    np.add.at(q, i, y)
    q /= np.maximum(np.bincount(i, minlength=40), 1)[:, None]
    fast = order._q6_vectors(40, i, D)
    np.testing.assert_allclose(fast @ fast.T, np.real(q @ q.conj().T), atol=1e-13)


def _reference_q6(n_atoms, i, D):
    from scipy.special import sph_harm_y

    r = np.linalg.norm(D, axis=1)
    theta = np.arccos(np.clip(D[:, 2] / np.maximum(r, 1e-12), -1.0, 1.0))
    y = sph_harm_y(6, np.arange(-6, 7)[None, :], theta[:, None], np.arctan2(D[:, 1], D[:, 0])[:, None])
    q = np.zeros((n_atoms, 13), complex)
    np.add.at(q, i, y)
    return q / np.maximum(np.bincount(i, minlength=n_atoms), 1)[:, None]


def test_host_features_equal_those_from_scipys_harmonics(monkeypatch):
    rng = np.random.default_rng(7)
    clusters = [cluster.prepare(_frame(*f[:2], rng, *f[2:])) for f in FRAMES]
    clusters.append(Atoms("Ar200", positions=rng.uniform(0, 20, (200, 3))))
    fast = [order.host_features(c) for c in clusters]
    monkeypatch.setattr(order, "_q6_vectors", _reference_q6)
    assert fast == [order.host_features(c) for c in clusters]
    assert fast[0]["crystallinity"] > 0.9
