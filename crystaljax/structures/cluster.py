"""Finite clusters for the fingerprint: replication, centring and nearest-neighbour scaling (host side).

``prepare(atoms)`` is the single entry point: validate -> standard cell (periodic input only) ->
``build_cluster``.  The output is a finite ``ase.Atoms`` whose positions are in units of the robust
first-shell neighbour distance (:func:`robust_nn_distance`, so neighbours sit 1 Å apart), centred on the origin, with
``info['nn_distance']`` holding the physical scale in Å.

Replication rule (periodic input, cell of m atoms with vectors a_i, target T):

* window  W = max(0.1 T, the smallest achievable |n1 n2 n3 m - T|);
* candidates: all (n1, n2, n3) >= 1 with |n1 n2 n3 m - T| <= W;
* choose the most isotropic candidate, i.e. smallest max_i(n_i |a_i|) / min_i(n_i |a_i|); ties (relative
  1e-9) go to the count closest to T, then to the smaller count, then to the lexicographically smallest
  (n1, n2, n3).

So the count is always within 10 % of T when that is achievable (otherwise it is the closest achievable
count) and the cluster is as close to a cube-like shape as that allows.  Examples for T = 250: 1-atom fcc, bcc
or sc cells -> 6 x 6 x 7 = 252 atoms; 2-atom bcc (conventional) or diamond cells -> 5 x 5 x 5 = 250; 2-atom
hcp Mg (a = 3.2, c = 5.2 Å) -> 5 x 6 x 4 = 240; 4-atom cubic fcc -> 4 x 4 x 4 = 256.  A cell with m >= 1.1 T
atoms is used once (1 x 1 x 1).  The replication depends only on the cell lengths and m, so an input given
as a conventional cell gives a different (equally valid) cluster than its primitive cell.
"""

from __future__ import annotations

import numpy as np

from crystaljax.errors import StructureError
from crystaljax.structures.io import images_near, is_periodic, nearest_neighbour_distances, plane_spacings, validate

#: Width of the acceptance window around the target count, as a fraction of the target.
COUNT_WINDOW = 0.1


def mean_nn_distance(atoms) -> float:
    """Mean over atoms of the distance (Å) to the nearest other atom.

    Periodic structures (all pbc and non-zero volume) include periodic images, also an atom's own images;
    anything else is treated as a finite set of points (k-d tree; ~0.1 s for 25,000 atoms).
    Requires at least two atoms (or one periodic atom).
    """
    periodic = is_periodic(atoms)
    if not periodic and len(atoms) < 2:
        raise StructureError("nearest-neighbour distance needs at least two atoms in a finite structure")
    return float(np.mean(nearest_neighbour_distances(atoms, periodic)))


# Constants of the robust statistic: keep in step with crystaljax.physics.scale (the device version; the two
# layers may not import each other, tests/test_scale.py checks that both agree).
ROBUST_NEIGHBOURS = 16
ROBUST_ITERATIONS = 30
ROBUST_C_LOCATION = 1.0
ROBUST_LOWER_WINDOW = 0.45
ROBUST_FLOOR = 0.001
ROBUST_S_MAX = 0.1
ROBUST_MAD_TO_SIGMA = 0.6745

#: Scale estimators of :func:`build_cluster`: "robust" (default, :func:`robust_nn_distance`) or "mean"
#: (:func:`mean_nn_distance`, the estimator the shipped models were trained with).
SCALES = ("robust", "mean")


def scale_from_neighbour_distances(d: np.ndarray) -> float:
    """Robust first-shell distance from a table ``d`` (n, K) of each atom's distances to its nearest other
    atoms (ascending, +inf where absent); NaN if no atom has a neighbour.  The statistic is described in
    :mod:`crystaljax.physics.scale` (the device version of the same computation)."""
    d = np.asarray(d, dtype=np.float64)
    finite = np.isfinite(d)
    nn = d[:, 0][finite[:, 0]]
    if len(nn) == 0:
        return float("nan")
    m = float(np.sort(nn)[(len(nn) - 1) // 4])  # lower quartile: still the first shell with many vacancies
    s = min(float(np.median(np.abs(nn - m))) / ROBUST_MAD_TO_SIGMA, ROBUST_S_MAX * m)
    v = np.sort(d[finite])  # each window below is a contiguous run of the sorted values
    for _ in range(ROBUST_ITERATIONS):
        state = (m, s)
        h = ROBUST_C_LOCATION * max(s, ROBUST_FLOOR * m)
        a, b = _run(v, lambda x: np.abs(x - m) < h, m - h, m + h)  # the values with |v - m| < h
        if b > a:
            m = _sorted_median(v[a:b])
        a = int(np.searchsorted(v, (1.0 - ROBUST_LOWER_WINDOW) * m, side="right"))  # v > 0.55 m ...
        b = int(np.searchsorted(v, m, side="left"))  # ... and v < m
        low = m - v[a:max(a, b)][::-1]
        s = min(_sorted_median(low) / ROBUST_MAD_TO_SIGMA if len(low) else 0.0, ROBUST_S_MAX * m)
        if (m, s) == state:  # a fixed point: the remaining iterations would repeat it
            break
    return m - s * s / m


def _run(v: np.ndarray, inside, lo: float, hi: float) -> tuple[int, int]:
    """[a, b): the run of the ascending array v where the predicate ``inside`` (true on one contiguous run,
    roughly lo < v < hi) holds, by binary search on lo and hi, then corrected element by element where
    round-off makes the predicate and the bounds disagree."""
    n = len(v)
    a = int(np.searchsorted(v, lo, side="right"))
    b = int(np.searchsorted(v, hi, side="left"))
    if b <= a:  # nothing between the bounds: find any element of the run near them, or none
        near = [k for k in (a - 1, a, b - 1, b) if 0 <= k < n and inside(v[k])]
        if not near:
            return 0, 0
        a = b = near[0]
        b += 1
    while a > 0 and inside(v[a - 1]):
        a -= 1
    while a < b and not inside(v[a]):
        a += 1
    while b < n and inside(v[b]):
        b += 1
    while b > a and not inside(v[b - 1]):
        b -= 1
    return a, b


def _sorted_median(x: np.ndarray) -> float:
    """np.median of an ascending array x (n > 0), without sorting it again."""
    k = len(x) // 2
    return float(x[k]) if len(x) % 2 else float((x[k - 1] + x[k]) / 2.0)


def _nearest(points: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(len(queries), k) ascending distances (Å) from each query to its k nearest ``points`` (k-d tree)."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(points).query(queries, k=k)
    return np.asarray(d, dtype=np.float64).reshape(len(queries), k)


def _neighbour_table(atoms, k: int, periodic: bool) -> np.ndarray:
    """(n, min(k, available)) distances (Å) from each atom to its k nearest other atoms (periodic images
    included for periodic input), ascending, +inf where fewer exist."""
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if periodic:
        cell = np.asarray(atoms.cell[:], dtype=np.float64)
        volume = abs(float(np.linalg.det(cell)))
        # a ball holding ~3 k atoms around any atom of the cell, plus the cell's own extent
        radius = (3.0 * 3 * (k + 1) * volume / len(pos) / (4.0 * np.pi)) ** (1.0 / 3.0)
        spacings = plane_spacings(cell)
        reps = [int(np.ceil(radius / sp)) + 1 for sp in spacings]
        grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reps], indexing="ij"), -1).reshape(-1, 3)
        kk = min(k + 1, len(grid) * len(pos))
        # the images within `radius` of an atom give the same k + 1 nearest as all of them when those are that close
        near = images_near(pos, cell, grid, radius)
        d = _nearest(near, pos, kk) if len(near) >= kk else None
        if d is None or not np.all(d[:, -1] <= radius):
            d = _nearest((pos[None, :, :] + (grid @ cell)[:, None, :]).reshape(-1, 3), pos, kk)
    else:
        kk = min(k + 1, len(pos))
        d = _nearest(pos, pos, kk)
    d = d[:, 1:]  # the first hit is the atom itself
    if d.shape[1] < k:
        d = np.concatenate([d, np.full((len(pos), k - d.shape[1]), np.inf)], axis=1)
    return d


def robust_nn_distance(atoms) -> float:
    """Robust first-shell neighbour distance (Å) of a (possibly defective) structure.

    Median-based and unaffected by random vacancies, with a correction for the lengthening of bonds by
    Gaussian displacements (statistic: :mod:`crystaljax.physics.scale`, of which this is the host
    version; periodic input includes periodic images).  Equals the nearest-neighbour distance of a
    pristine crystal whose atoms all have the same one.  Requires at least two atoms (or one periodic atom).
    """
    periodic = is_periodic(atoms)
    if not periodic and len(atoms) < 2:
        raise StructureError("nearest-neighbour distance needs at least two atoms in a finite structure")
    return float(scale_from_neighbour_distances(_neighbour_table(atoms, ROBUST_NEIGHBOURS, periodic)))


def nn_scale(atoms, scale: str = "robust") -> float:
    """The length scale (Å) :func:`build_cluster` divides by, by the estimator ``scale`` in :data:`SCALES`."""
    if scale == "robust":
        return robust_nn_distance(atoms)
    if scale == "mean":
        return mean_nn_distance(atoms)
    raise ValueError(f"unknown scale estimator {scale!r}; choose one of {SCALES}")


def replication(n_atoms: int, cell, target: int = 250) -> tuple[int, int, int]:
    """The (n1, n2, n3) replication of a cell of ``n_atoms`` atoms with rows ``cell`` (Å); see module docstring."""
    if n_atoms < 1:
        raise ValueError("n_atoms must be >= 1")
    target = max(int(target), 1)
    lengths = np.linalg.norm(np.asarray(cell, dtype=np.float64), axis=1)
    lo = max(target // n_atoms, 1)
    best_dev = min(abs(p * n_atoms - target) for p in {lo, lo + 1})
    window = max(COUNT_WINDOW * target, best_dev)
    p_max = int(np.floor((target + window) / n_atoms + 1e-9))
    p_max = max(p_max, 1)
    best, best_score = (1, 1, 1), None
    for n1 in range(1, p_max + 1):
        for n2 in range(1, p_max // n1 + 1):
            for n3 in range(1, p_max // (n1 * n2) + 1):
                count = n1 * n2 * n3 * n_atoms
                dev = abs(count - target)
                if dev > window + 1e-9:
                    continue
                ext = np.array([n1, n2, n3]) * lengths
                aniso = float(ext.max() / ext.min())
                score = (round(aniso, 9), dev, count, (n1, n2, n3))
                if best_score is None or score < best_score:
                    best, best_score = (n1, n2, n3), score
    return best


#: Cluster shapes for periodic input: "sphere" (default) or "block" (the paper's whole-cell replication).
SHAPES = ("sphere", "block")


def nearest_shells(dist: np.ndarray, target: int) -> np.ndarray:
    """Sorted indices of the points with the smallest ``dist`` (M,) that form whole shells (sorted distances
    closer than 1e-6 x the largest one belong to one shell), the count closest to ``target`` (ties: the
    smaller count).  Only the nearest ~2 ``target`` points are sorted when a shell boundary at or above
    ``target`` lies among them (then no farther boundary can be closer to ``target``)."""
    gap = 1e-6 * max(float(dist.max()), 1e-12)
    cut = min(2 * int(target) + 1, len(dist) - 1)
    if cut >= 1:
        inside = dist <= np.partition(dist, cut)[cut]  # all ties at the cut included
        near = np.flatnonzero(inside)
        if len(near) < len(dist):
            order = near[np.argsort(dist[near], kind="stable")]  # = the first len(near) of the full stable sort
            d = dist[order]
            ends = np.flatnonzero(np.diff(d) > gap) + 1  # counts at shell boundaries
            if float(dist[~inside].min()) - d[-1] > gap:
                ends = np.append(ends, len(d))
            if len(ends) and ends[-1] >= target:
                count = int(ends[np.argmin(np.abs(ends - target))])
                return np.sort(order[:count])
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    ends = np.append(np.flatnonzero(np.diff(d) > gap) + 1, len(d))
    count = int(ends[np.argmin(np.abs(ends - target))])
    return np.sort(order[:count])


def sphere_cut(atoms, target: int = 250):
    """The whole shells of atoms around one atom of a periodic crystal whose count is closest to ``target``.

    The crystal is replicated into a block that contains a ball of ~``target`` atoms around the atom
    nearest the block centre; atoms are ranked by distance to that atom and cut at the shell boundary
    (distances equal to 1e-6 relative form one shell) closest to ``target``.  Unlike whole-cell
    replication the result is near-isotropic whatever the cell (a 54-atom supercell or a long thin
    cell give the same kind of ball), so diffraction peaks have the same round shape for every input.
    Returns (Atoms, n_cells).
    """
    from ase import Atoms

    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    volume = abs(float(np.linalg.det(cell)))
    radius = (3.0 * 1.3 * target * volume / len(atoms) / (4.0 * np.pi)) ** (1.0 / 3.0)
    spacings = plane_spacings(cell)
    reps = tuple(int(np.ceil(2.0 * radius / d)) + 2 for d in spacings)
    # the replicated block as arrays (ase's repeat is slow for thousands of atoms): atom index fastest
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), axis=-1).reshape(-1, 3)
    pos = (grid @ cell)[:, None, :] + np.asarray(atoms.positions, dtype=np.float64)[None, :, :]
    pos = pos.reshape(-1, 3)
    centre = (np.asarray(reps, dtype=np.float64) @ cell) / 2.0
    origin = pos[int(np.argmin(np.linalg.norm(pos - centre, axis=1)))]
    dist = np.linalg.norm(pos - origin, axis=1)
    keep = nearest_shells(dist, target)
    which = keep % len(atoms)  # index of the atom in the input cell
    ball = Atoms(numbers=atoms.numbers[which], positions=pos[keep], tags=atoms.get_tags()[which], pbc=False)
    return ball, reps


def build_cluster(atoms, target: int = 250, shape: str = "sphere",
                  scale: str = "robust", nn: float | None = None) -> "ase.Atoms":  # noqa: F821
    """Finite, centred cluster with nearest-neighbour distance 1 Å (by the estimator ``scale``, see :func:`nn_scale`).

    Periodic input (call :func:`crystaljax.structures.cell.standard_cell` first, as :func:`prepare` does): with
    ``shape="sphere"`` (default) the whole shells around one atom closest to ``target`` atoms
    (:func:`sphere_cut`); with ``shape="block"`` the cell replicated n1 x n2 x n3 times by the rule in the
    module docstring (the paper's construction).  The scale is the nearest-neighbour distance of the
    *periodic* crystal (:func:`robust_nn_distance` by default; ``scale="mean"``: the mean over atoms of
    the distance to the nearest other atom, biased by noise and vacancies).  Non-periodic (or partially
    periodic) input: the atoms are taken as given and the scale is their own nearest-neighbour distance.
    ``nn``: a scale (Å) already known (a finite ball cut from a periodic box takes the box's), used as given.

    The cluster is then centred (unweighted centroid at the origin) and divided by the scale.  Output: a
    non-periodic ``ase.Atoms`` (pbc False, zero cell), positions in Å of the scaled cluster, numbers and
    tags carried (and replicated), ``info`` copied from the input plus ``info['nn_distance']`` = the scale in
    Å (physical positions = positions * nn_distance) and, for periodic input, ``info['n_cells']`` =
    (n1, n2, n3).
    """
    from ase import Atoms

    info = dict(atoms.info)
    info.pop("n_cells", None)
    if shape not in SHAPES:
        raise ValueError(f"unknown cluster shape {shape!r}; choose one of {SHAPES}")
    if is_periodic(atoms):
        nn = nn_scale(atoms, scale) if nn is None else nn
        if shape == "sphere":
            big, reps = sphere_cut(atoms, target)
        else:
            reps = replication(len(atoms), atoms.cell, target)
            big = atoms.repeat(reps)
        info["n_cells"] = tuple(int(r) for r in reps)
    else:
        big = atoms
        nn = nn_scale(atoms, scale) if nn is None else nn
    if not np.isfinite(nn) or nn <= 0:
        raise StructureError(f"invalid nearest-neighbour distance {nn!r} A")
    pos = np.asarray(big.positions, dtype=np.float64)
    pos = (pos - pos.mean(axis=0)) / nn
    out = Atoms(numbers=np.asarray(big.numbers), positions=pos, tags=np.asarray(big.get_tags()), pbc=False)
    out.info.update(info)
    out.info["nn_distance"] = float(nn)
    return out


#: A periodic cell with more atoms than this is a box (an MD snapshot, a supercell, possibly with vacancies):
#: :func:`prepare` orients it by its crystal lattice like a finite fragment, not by the box's own (supercell)
#: lattice.  The conventional cells of the seven classes have at most 9 atoms (hexagonal setting), so a larger
#: cell of an in-class element is a supercell.
BOX_ATOMS = 32

#: Largest distance of ``box = N @ lattice`` from integer N for a lattice found in a box's ball to be accepted.
TILING_TOL = 0.2


def tiles(cell, lattice, tol: float = TILING_TOL) -> bool:
    """True when the rows of ``cell`` (3, 3) Å are integer combinations (within ``tol``) of the rows of
    ``lattice`` (3, 3) Å: the box is a supercell of that lattice, so a lattice found in a ball cut from the box
    is the box's crystal lattice and not a coarser or skewed one fitted to a sparse (vacancy-rich) ball."""
    lattice = np.asarray(lattice, dtype=np.float64)
    if abs(np.linalg.det(lattice)) < 1e-12:
        return False
    n = np.asarray(cell, dtype=np.float64) @ np.linalg.inv(lattice)
    return bool(np.all(np.abs(n - np.round(n)) < tol) and abs(np.linalg.det(np.round(n))) >= 0.5)


def prepare(atoms, target: int = 250, shape: str = "sphere", orient: bool = True,
            scale: str = "robust") -> "ase.Atoms":  # noqa: F821
    """validate -> standard cell (periodic input) or lattice-based orientation (finite input) -> build_cluster.

    A periodic box of more than :data:`BOX_ATOMS` atoms (with ``orient=True``) is cut to a ball of ~``target``
    atoms (:func:`sphere_cut`) and oriented like a finite fragment: the reduced basis of a supercell's lattice
    says nothing about the crystal inside (an hcp Zn 7x7x4 box reduces with c along x; with vacancies spglib
    cannot find the primitive cell either), so the box's lattice would put the same crystal in another
    orientation than its primitive cell.  If no lattice is found in the ball, or the one found does not tile
    the box (:func:`tiles`), the box's standard cell is used as for a small cell.

    What the rest of crystaljax calls.  Finite input (atom-probe data, nanoparticles, clusters cut from
    MD) with ``orient=True`` goes through :func:`crystaljax.structures.lattice.orient_finite`: a large fragment is
    cut to a ball of ~``target`` atoms at its centre and, if a lattice is found, rotated into the
    orientation its periodic primitive cell would get, so the fingerprint does not depend on the
    frame of the file.  ``orient=False`` takes finite input exactly as given.  ``scale``: the length-scale
    estimator in :data:`SCALES` (:func:`nn_scale`; default the robust one).
    Raises :class:`crystaljax.errors.StructureError` for structures that cannot be imaged.
    """
    from crystaljax.structures.cell import standard_cell

    validate(atoms, source=str(atoms.info.get("source", "")) if hasattr(atoms, "info") else "")
    if is_periodic(atoms) and orient and len(atoms) > BOX_ATOMS:
        from crystaljax.structures.lattice import orient_finite

        ball, _ = sphere_cut(atoms, target)
        oriented = orient_finite(ball, target=target)
        found = oriented.info.get("lattice_found") and tiles(
            atoms.cell[:], np.asarray(oriented.info["estimated_cell"]) @ oriented.info["rotation"])
        if found:  # scaled by the periodic box (images included), not the ball
            return build_cluster(oriented, target=target, shape=shape, scale=scale, nn=nn_scale(atoms, scale))
        atoms = standard_cell(atoms)
    elif is_periodic(atoms):
        atoms = standard_cell(atoms)
    elif orient:
        from crystaljax.structures.lattice import orient_finite

        atoms = orient_finite(atoms, target=target)
    return build_cluster(atoms, target=target, shape=shape, scale=scale)
