"""Local structure maps of large structures: strided windows, batched classification, per-atom votes.

    from crystaljax.analysis.mapping import map_atoms
    result = map_atoms(atoms)                  # MapResult
    out = result.to_atoms(atoms)               # per-atom arrays crystal_class, class_probability, uncertainty

Method (all host work vectorised over windows; the device work in fixed-size jitted chunks):

1. Window centres on a grid of ``stride`` Å: over the cell for periodic input (positions wrapped; periodic
   images within reach of the window added to the point set), over the bounding box for finite input,
   keeping only centres with an atom within ``stride`` (so empty space costs nothing).
2. Each window = the ``window`` atoms nearest its centre (an int), or the atoms within ``window`` Å of it
   (a float, capped at 4 x the model's cluster size), one vectorised ``cKDTree.query`` for all centres.
3. Scale: each window's positions are centred on its centroid and divided by the window's nearest-neighbour
   distance: the larger of the median over its atoms of the per-atom nearest-neighbour distance (one k-d tree
   query over the whole structure; robust to the short distances at grain boundaries and to vacancies) and the
   robust first-shell estimate (:func:`robust_window_scale`), which corrects the shortening of the nearest
   distances by thermal or random displacements (``scale_method``).
4. Orientation: the model is not rotation invariant (it was trained on clusters in the standard orientation
   of their lattice), so each window is rotated into the standard orientation of the lattice it matches.
   Lattices are estimated only on a few seed windows and matched to all atoms by vectorised k-d tree queries
   (:func:`orient_windows`); ``docs/MAPS.md`` measures this against no orientation and a lattice per window.
5. Windows are padded into a batched :class:`crystaljax.structure.Structure` chunk by chunk (``chunk``
   windows at a time, so memory is bounded by the chunk, not the structure) and classified by
   :meth:`crystaljax.learn.classifier.Classifier.predict`.
6. Per-atom probabilities = weighted mean of the probabilities of the windows that contain the atom, weight
   exp(-r^2 / 2 sigma^2) with r the atom's distance to the window centre and sigma = ``sigma`` x the window
   radius.  ``uncertainty`` = the entropy (nats) of that per-atom mixture, so it is high where windows
   disagree (grain boundaries) as well as where single windows are unsure; with ``mc_samples`` > 0 (MC
   dropout) the weighted mean of the windows' ``Prediction.mutual_information`` is added as ``epistemic``.
7. Unknown verdict (``mc_samples`` > 0 and a model with thresholds, :mod:`crystaljax.learn.novelty`): each
   window gets the classifier's gates on its own numbers with the model's thresholds (:func:`window_verdict`:
   ordered compound (counted only for ordering, not segregation), non-crystalline, unknown crystal, low
   confidence), and an atom is ``unknown`` when the vote-weighted share of flagged windows covering it (the
   weights of step 6) exceeds 1/2; its reason is the reason with the largest weighted share.  A model
   without thresholds flags nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crystaljax.errors import StructureError
from crystaljax.structures.io import plane_spacings

#: Default grid spacing of the window centres (Å); chosen by measurement (docs/MAPS.md).
DEFAULT_STRIDE = 8.0
#: Width of the Gaussian vote weight as a fraction of each window's radius.
DEFAULT_SIGMA = 0.5
#: Windows per device chunk (bounded memory: chunk x n_max x 3 floats on the host, the fingerprint per chunk).
DEFAULT_CHUNK = 256
#: MC dropout passes per window of ``crystaljax map`` (the unknown verdict needs them; cost in docs/MAPS.md).
DEFAULT_MC_SAMPLES = 8
#: The per-atom class of atoms the unknown verdict flags.
UNKNOWN = "unknown"
#: An atom is unknown when the vote-weighted share of flagged windows covering it exceeds this.
UNKNOWN_SHARE = 0.5


def file_reason(reason) -> np.ndarray:
    """(N,) extxyz spelling of unknown reasons: spaces -> underscores, '' (known) -> ``none``."""
    r = np.char.replace(np.asarray(reason, dtype="U24"), " ", "_")
    return np.where(r == "", "none", r).astype("U24")


@dataclass
class MapResult:
    """Per-atom and per-window results of :func:`map_atoms`.

    classes:               (C,) class names.
    probabilities:         (N, C) per-atom class probabilities (weighted vote of the windows).
    crystal_class:         (N,) str, the most probable class of each atom.
    class_probability:     (N,) probability of that class.
    uncertainty:           (N,) entropy (nats) of the per-atom probabilities; 0 = certain, ln C = uniform.
    coverage:              (N,) number of windows that contain the atom.
    window_centres:        (W, 3) Å.
    window_probabilities:  (W, C).
    window_uncertainty:    (W,) entropy (nats) of each window's probabilities.
    window_radius:         (W,) Å, distance of the farthest atom of each window from its centre.
    window_scale:          (W,) Å, nearest-neighbour distance used to scale each window.
    epistemic:             (N,) mean mutual information of the covering windows, or None.
    unknown:               (N,) bool, the atom's unknown verdict (step 7), or None when the verdict is off.
    unknown_reason:        (N,) str, the reason of that verdict ('' when known), or None.
    unknown_share:         (N,) vote-weighted share of flagged windows covering the atom, or None.
    window_unknown:        (W,) bool, the window verdicts, or None.
    window_reason:         (W,) str, their reasons ('' when known), or None.
    info:                  parameters and timings (s).
    """

    classes: tuple[str, ...]
    probabilities: np.ndarray
    uncertainty: np.ndarray
    coverage: np.ndarray
    window_centres: np.ndarray
    window_probabilities: np.ndarray
    window_uncertainty: np.ndarray
    window_radius: np.ndarray
    window_scale: np.ndarray
    epistemic: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    unknown: np.ndarray | None = None
    unknown_reason: np.ndarray | None = None
    unknown_share: np.ndarray | None = None
    window_unknown: np.ndarray | None = None
    window_reason: np.ndarray | None = None

    @property
    def class_index(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=1)

    @property
    def crystal_class(self) -> np.ndarray:
        """(N,) str: the most probable class, or ``unknown`` where the verdict flags the atom."""
        names = np.asarray(self.classes, dtype=object)[self.class_index].astype(str).astype("U16")
        return names if self.unknown is None else np.where(self.unknown, UNKNOWN, names)

    @property
    def class_probability(self) -> np.ndarray:
        """(N,) probability of the most probable class (of the 7, also where the atom is ``unknown``)."""
        return np.max(self.probabilities, axis=1)

    def fractions(self) -> dict[str, float]:
        """Fraction of atoms per class (every class listed, in model order; ``unknown`` too, after them, when
        the verdict is on; unknown atoms count only there, so the fractions sum to 1)."""
        index = self.class_index if self.unknown is None else np.where(self.unknown, len(self.classes),
                                                                        self.class_index)
        names = (*self.classes, *(() if self.unknown is None else (UNKNOWN,)))
        counts = np.bincount(index, minlength=len(names))
        return {c: float(k) / max(1, len(self.probabilities)) for c, k in zip(names, counts)}

    def summary(self) -> dict[str, Any]:
        """JSON-ready statistics: atoms, windows, fraction per class, mean probability and uncertainty."""
        return {
            "n_atoms": int(len(self.probabilities)),
            "n_windows": int(len(self.window_centres)),
            "fractions": self.fractions(),
            "mean_class_probability": float(np.mean(self.class_probability)) if len(self.probabilities) else 0.0,
            "mean_uncertainty": float(np.mean(self.uncertainty)) if len(self.probabilities) else 0.0,
            **({"mean_epistemic": float(np.mean(self.epistemic))} if self.epistemic is not None else {}),
            **({"unknown_reasons": self.reason_fractions()} if self.unknown is not None else {}),
            **{k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))},
        }

    def reason_fractions(self) -> dict[str, float]:
        """Fraction of atoms per unknown reason (:data:`crystaljax.learn.novelty.REASONS`); {} when off."""
        from crystaljax.learn.novelty import REASONS

        if self.unknown_reason is None:
            return {}
        n = max(1, len(self.probabilities))
        return {r: float(np.sum(self.unknown_reason == r)) / n for r in REASONS}

    def to_atoms(self, atoms):
        """A copy of ``atoms`` with per-atom arrays ``crystal_class`` (str), ``class_probability``,
        ``uncertainty`` (and ``epistemic``, ``unknown`` (int 0/1) and ``unknown_reason`` when present), for
        ``ase.io.write(..., format='extxyz')``.  extxyz columns are whitespace-separated, so the file's
        ``unknown_reason`` spells a reason with underscores (``low_confidence``) and a known atom ``none``
        (:func:`file_reason`)."""
        out = atoms.copy()
        out.new_array("crystal_class", self.crystal_class.astype("U16"))
        out.new_array("class_probability", self.class_probability.astype(np.float64))
        out.new_array("uncertainty", self.uncertainty.astype(np.float64))
        if self.epistemic is not None:
            out.new_array("epistemic", self.epistemic.astype(np.float64))
        if self.unknown is not None:
            out.new_array("unknown", self.unknown.astype(np.int32))
            out.new_array("unknown_reason", file_reason(self.unknown_reason))
        return out


# ------------------------------------------------------------------------------------------------ geometry


def _is_periodic(atoms) -> bool:
    from crystaljax.structures.io import is_periodic

    return bool(is_periodic(atoms))


def point_set(atoms, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Points (M, 3) Å and the atom index (M,) of each: the atoms themselves for finite input; for periodic
    input the wrapped atoms plus every periodic image within ``reach`` Å of the cell."""
    pos = np.asarray(atoms.positions, dtype=np.float64)
    n = len(pos)
    if not _is_periodic(atoms):
        return pos, np.arange(n)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    frac = np.linalg.solve(cell.T, pos.T).T
    frac -= np.floor(frac)
    pos = frac @ cell
    spacings = plane_spacings(cell)
    reps = [int(np.ceil(reach / s)) for s in spacings]
    shifts = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reps], indexing="ij"), -1).reshape(-1, 3)
    shifts = shifts[np.argsort(np.abs(shifts).sum(axis=1), kind="stable")]  # the atoms themselves first
    fr = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    lo = -reach / spacings
    hi = 1 + reach / spacings
    keep = np.all((fr >= lo) & (fr <= hi), axis=1)
    owner = np.tile(np.arange(n), len(shifts))[keep]
    return fr[keep] @ cell, owner


def window_centres(atoms, stride: float, tree=None) -> np.ndarray:
    """(W, 3) Å grid of window centres with spacing ~``stride`` Å: the whole cell for periodic input, the
    bounding box for finite input restricted to points with an atom within ``stride`` Å."""
    from scipy.spatial import cKDTree

    if not stride > 0:
        raise StructureError(f"stride must be positive, got {stride!r} A")
    if _is_periodic(atoms):
        cell = np.asarray(atoms.cell[:], dtype=np.float64)
        spacings = plane_spacings(cell)
        counts = [max(1, int(round(s / stride))) for s in spacings]
        grid = np.stack(np.meshgrid(*[(np.arange(k) + 0.5) / k for k in counts], indexing="ij"), -1)
        return grid.reshape(-1, 3) @ cell
    pos = np.asarray(atoms.positions, dtype=np.float64)
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    axes = []
    for a, b in zip(lo, hi):
        k = max(1, int(np.ceil((b - a) / stride)))
        mid = 0.5 * (a + b)
        axes.append(mid + (np.arange(k) - (k - 1) / 2.0) * stride)
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    tree = cKDTree(pos) if tree is None else tree
    d, _ = tree.query(grid, k=1, distance_upper_bound=stride)
    return grid[np.isfinite(d)]


def gather_windows(points: np.ndarray, owner: np.ndarray, centres: np.ndarray, window, tree=None,
                   max_atoms: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices into ``points`` (W, K), validity mask (W, K) and distances to the centre (W, K) of the windows.

    ``window``: int = that many nearest points; float = the points within that radius (Å), at most
    ``max_atoms`` of them.  One vectorised k-d tree query for all centres.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(points) if tree is None else tree
    if isinstance(window, (int, np.integer)):
        k = int(min(window, len(points)))
        d, idx = tree.query(centres, k=k)
        d, idx = d.reshape(len(centres), k), idx.reshape(len(centres), k)
        return idx, np.ones_like(idx, dtype=bool), d
    radius = float(window)
    if not radius > 0:
        raise StructureError(f"window radius must be positive, got {radius!r} A")
    k = int(min(max_atoms, len(points)))
    d, idx = tree.query(centres, k=k, distance_upper_bound=radius)
    d, idx = d.reshape(len(centres), k), idx.reshape(len(centres), k)
    valid = np.isfinite(d)
    n_used = int(valid.sum(axis=1).max()) if valid.size else 0
    n_used = max(n_used, 1)
    idx, valid, d = idx[:, :n_used], valid[:, :n_used], d[:, :n_used]
    idx = np.where(valid, idx, 0)
    return idx, valid, np.where(valid, d, 0.0)


def _first_points(owner: np.ndarray, n_atoms: int) -> np.ndarray:
    """(n_atoms,) index of one point of each atom (its first occurrence in ``owner``)."""
    first = np.full(n_atoms, -1)
    first[owner[::-1]] = np.arange(len(owner))[::-1]
    return first


def nn_distances(points: np.ndarray, owner: np.ndarray, n_atoms: int, tree=None) -> np.ndarray:
    """(n_atoms,) distance (Å) from each atom to its nearest other point (periodic images included)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points) if tree is None else tree
    d, _ = tree.query(points[_first_points(owner, n_atoms)], k=2)
    return d[:, 1]


#: Window length-scale rules of :func:`map_atoms` (``scale_method``).
SCALE_METHODS = ("median", "robust", "max")


def robust_window_scale(table: np.ndarray, idx: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(W,) robust first-shell distance (Å) of each window: :func:`crystaljax.structures.cluster.
    scale_from_neighbour_distances` (the statistic the cluster builder uses; corrects the shortening of the
    nearest-neighbour distance by displacements) on the neighbour-distance rows ``table`` (n, K) of the
    window's atoms.  ~1 ms a window (a loop over windows of a vectorised statistic)."""
    from crystaljax.structures.cluster import scale_from_neighbour_distances

    return np.array([scale_from_neighbour_distances(table[idx[w, valid[w]]]) for w in range(len(idx))])


def neighbour_table(points: np.ndarray, owner: np.ndarray, n_atoms: int, k: int, tree) -> np.ndarray:
    """(n_atoms, k) ascending distances (Å) from each atom to its k nearest other points (images included)."""
    d, _ = tree.query(points[_first_points(owner, n_atoms)], k=k + 1)
    return np.asarray(d, dtype=np.float64)[:, 1:]


def window_scale(nn: np.ndarray, idx: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(W,) nearest-neighbour distance (Å) of each window: the median over its atoms of the per-atom
    distances ``nn`` (robust against the short pairs at grain boundaries and the long ones at vacancies)."""
    vals = np.where(valid, nn[idx], np.nan)
    return np.nanmedian(vals, axis=1)


#: A window needs no new seed when a known lattice matches it at least this fraction of the median seed score.
ACCEPT_FRACTION = 0.5
#: A window takes the finest lattice whose match is at least this fraction of its best match.
CHOICE_FRACTION = 0.9
#: Match radius of the lattice-translation test, as a fraction of the nearest-neighbour distance.
LATTICE_TOLERANCE = 0.25


def _combos() -> np.ndarray:
    """(13, 3) integer vectors n in {-1, 0, 1}^3, one of each +-n pair."""
    n = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    keep = [v for v in n if v.any() and tuple(v) > tuple(-v)]
    return np.asarray(keep, dtype=np.float64)


def lattice_scores(points: np.ndarray, atom_points: np.ndarray, basis: np.ndarray, tol: float, tree,
                   reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice matches of every atom: (hits (n,), eligible (n,)) over the 26 translations t = +-n.B
    (n in {-1,0,1}^3) of ``basis`` (rows, Å).  x_i + t is *eligible* when a point lies within ``reach`` Å
    (it is inside the material, not beyond a surface) and a *hit* when a point lies within ``tol`` Å.
    hits / eligible is ~1 inside a crystal of that lattice and orientation and low elsewhere.  One
    vectorised k-d tree query per translation."""
    T = _combos() @ np.asarray(basis, dtype=np.float64)
    T = np.concatenate([T, -T])
    hits = np.zeros(len(atom_points))
    eligible = np.zeros(len(atom_points))
    for t in T:  # 26 vectorised queries over all atoms
        d, _ = tree.query(atom_points + t, k=1, distance_upper_bound=max(tol, reach))
        hits += d <= tol
        eligible += np.isfinite(d)
    return hits, eligible


def _seed_lattice(pos: np.ndarray):
    """Lattice (3, 3) Å in the file frame and the rotation R into its standard orientation of one window's
    centred positions (N, 3) Å via :func:`crystaljax.structures.lattice.orient_finite`, or None."""
    from ase import Atoms

    from crystaljax.structures.lattice import orient_finite

    try:
        out = orient_finite(Atoms(numbers=np.full(len(pos), 26), positions=pos), target=len(pos), core=False)
    except Exception:  # noqa: BLE001 - degenerate window: no lattice
        return None
    if not out.info.get("lattice_found", False):
        return None
    R = np.asarray(out.info["rotation"], dtype=np.float64)
    basis = np.asarray(out.info["estimated_cell"], dtype=np.float64) @ R  # back into the file frame
    return basis, R


def orient_each(points: np.ndarray, idx: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference method: a lattice estimated for every window (a Python loop, ~25 ms a window unloaded).
    Returns rotations (W, 3, 3) (identity where no lattice is found) and found (W,) bool."""
    R_all = np.broadcast_to(np.eye(3), (len(idx), 3, 3)).copy()
    found = np.zeros(len(idx), bool)
    for i in range(len(idx)):
        sel = idx[i, valid[i]]
        res = _seed_lattice(points[sel] - points[sel].mean(axis=0))
        if res is not None:
            R_all[i], found[i] = res[1], True
    return R_all, found


def orient_windows(points: np.ndarray, owner: np.ndarray, n_atoms: int, idx: np.ndarray, valid: np.ndarray,
                   nn: float, tree, *, min_seeds: int = 8, max_seeds: int = 32, tolerance: float = LATTICE_TOLERANCE,
                   rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rotations (W, 3, 3) putting each window into its lattice's standard orientation, without estimating a
    lattice per window.

    Lattices are estimated (:func:`crystaljax.structures.lattice.orient_finite`) only on a few seed windows;
    every atom is then scored against each found lattice (:func:`lattice_scores`, vectorised) and a window
    takes the rotation of the finest lattices among those its atoms match nearly best (``CHOICE_FRACTION``)
    and, of those, the one estimated nearest to it.  Seeds are added (farthest from earlier seeds first)
    while some window matches no lattice to ``ACCEPT_FRACTION`` of the median seed score, and at least
    ``min_seeds`` of them, up to ``max_seeds`` estimates.  Windows that match no lattice keep the file's frame (identity).
    Returns (R, lattice index per window (-1 = none), info).
    """
    w = len(idx)
    first = _first_points(owner, n_atoms)
    atom_pts = points[first]
    tol = tolerance * nn
    win_atoms = owner[idx]
    counts = np.maximum(valid.sum(axis=1), 1)
    centres = np.where(valid[..., None], points[idx], 0).sum(axis=1) / counts[:, None]
    bases, rots, seed_score, seed_centre = [], [], [], []
    scores = np.zeros((0, w))
    tried = np.zeros(w, bool)
    n_seeds = 0
    t0 = time.perf_counter()
    while n_seeds < max_seeds:
        if len(bases):
            ok = scores.max(axis=0) >= ACCEPT_FRACTION * float(np.median(seed_score))
        else:
            ok = np.zeros(w, bool)
        need = ~ok & ~tried
        if not need.any():
            if n_seeds >= min_seeds or tried.all():
                break
            need = ~tried  # spread a few more seeds: each window then takes the nearest good one
        cand = np.flatnonzero(need)
        if tried.any():  # farthest from the windows already tried
            from scipy.spatial import cKDTree

            dist, _ = cKDTree(centres[tried]).query(centres[cand])
            pick = int(cand[np.argmax(dist)])
        else:  # start at the window nearest the middle of the structure
            pick = int(cand[np.argmin(np.linalg.norm(centres[cand] - centres.mean(axis=0), axis=1))])
        tried[pick] = True
        n_seeds += 1
        sel = idx[pick, valid[pick]]
        found = _seed_lattice(points[sel] - points[sel].mean(axis=0))
        if found is None:
            continue
        basis, R = found
        hits, eligible = lattice_scores(points, atom_pts, basis, tol, tree, nn)
        win = (np.where(valid, hits[win_atoms], 0.0).sum(axis=1)
               / np.maximum(np.where(valid, eligible[win_atoms], 0.0).sum(axis=1), 1.0))
        if not win[pick] > 0:
            continue
        bases.append(basis)
        rots.append(R)
        seed_centre.append(centres[pick])
        seed_score.append(float(win[pick]))
        scores = np.concatenate([scores, win[None]])
    which = np.full(w, -1)
    R_all = np.broadcast_to(np.eye(3), (w, 3, 3)).copy()
    if len(bases):
        # among the lattices that match a window nearly as well as the best one, the finest (smallest cell):
        # a coarser sublattice of the true lattice (a missed short vector) matches just as well, a finer one
        # with an intra-basis vector matches worse
        volume = np.abs(np.linalg.det(np.asarray(bases)))
        best = scores.max(axis=0)
        near = scores >= CHOICE_FRACTION * best[None, :]
        finest = np.min(np.where(near, volume[:, None], np.inf), axis=0)
        near &= volume[:, None] <= 1.1 * finest[None, :]
        # of those, the lattice estimated nearest to the window (a poor estimate only affects its surroundings)
        gap = np.linalg.norm(np.asarray(seed_centre)[:, None, :] - centres[None, :, :], axis=2)
        choice = np.argmin(np.where(near, gap, np.inf), axis=0)
        has = best > 0
        which[has] = choice[has]
        R_all[has] = np.asarray(rots)[choice[has]]
    info = {"n_seed_windows": int(n_seeds), "n_lattices": len(bases), "time_lattices_s": time.perf_counter() - t0,
            "fraction_windows_matched": float(np.mean(which >= 0))}
    return R_all, which, info


def build_batch(points: np.ndarray, numbers: np.ndarray, idx: np.ndarray, valid: np.ndarray,
                scale: np.ndarray, n_max: int, rotations: np.ndarray | None = None):
    """Batched :class:`Structure` of W windows: positions centred on each window's centroid and divided by
    its ``scale`` (so neighbours sit ~1 Å apart), rotated by ``rotations`` (W, 3, 3) if given, padded to
    ``n_max`` rows."""
    from crystaljax.structure import Structure

    w, k = idx.shape
    pos = points[idx]  # (W, K, 3)
    m = valid[..., None].astype(np.float64)
    centroid = (pos * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
    pos = (pos - centroid[:, None, :]) * m / scale[:, None, None]
    if rotations is not None:
        pos = np.einsum("wkj,wij->wki", pos, rotations)
    out_pos = np.zeros((w, n_max, 3), np.float32)
    out_pos[:, :k] = pos
    out_num = np.zeros((w, n_max), np.int32)
    out_num[:, :k] = np.where(valid, numbers[idx], 0)
    out_mask = np.zeros((w, n_max), np.float32)
    out_mask[:, :k] = valid
    return Structure(out_pos, out_num, out_mask, np.zeros((w, n_max), np.int32), scale.astype(np.float32))


# ------------------------------------------------------------------------------------------------ unknown verdict


def window_host_features(points: np.ndarray, numbers: np.ndarray, idx: np.ndarray, valid: np.ndarray,
                         shell_scale: np.ndarray) -> dict[str, np.ndarray]:
    """(W,) host numbers of each window as a finite cluster, those of
    :func:`crystaljax.structures.order.host_features` (``n_species``, ``sro``, ``crystallinity``) plus
    ``unlike_alpha`` = sum over unlike species pairs of c_a c_b alpha_ab (Warren-Cowley): < 0 when unlike
    neighbours are preferred (ordering: rock salt -1/2, L1_2 -1/8), > 0 when avoided (two elemental grains
    meeting in the window).  The first shell is cut at ``SHELL`` x ``shell_scale`` (W,) Å (the map's robust
    window scale, so no per-window neighbour-distance statistic); numbers: (M,) atomic numbers of ``points``.
    A loop over windows of vectorised numpy (~20-30 ms each, mostly the q6 spherical harmonics)."""
    from ase import Atoms
    from scipy.spatial import cKDTree

    from crystaljax.structures.order import SHELL, crystallinity, short_range_order, warren_cowley

    out = {name: np.zeros(len(idx)) for name in ("n_species", "sro", "unlike_alpha", "crystallinity")}
    for w in range(len(idx)):
        sel = idx[w, valid[w]]
        pos = points[sel]
        pairs = cKDTree(pos).query_pairs(SHELL * float(shell_scale[w]), output_type="ndarray")
        i = np.concatenate([pairs[:, 0], pairs[:, 1]]).astype(int)
        j = np.concatenate([pairs[:, 1], pairs[:, 0]]).astype(int)
        bonds = (i, j, pos[j] - pos[i])
        cluster = Atoms(numbers=numbers[sel], positions=pos)
        species, alpha, _ = warren_cowley(cluster, bonds=bonds)
        c = np.unique(numbers[sel], return_counts=True)[1] / len(sel)
        out["n_species"][w] = len(species)
        out["unlike_alpha"][w] = float(np.sum((c[:, None] * c[None, :] * alpha)[~np.eye(len(c), dtype=bool)]))
        out["sro"][w] = short_range_order(cluster, bonds=bonds)
        out["crystallinity"][w] = crystallinity(cluster, bonds=bonds)
    return out


def window_verdict(thresholds, *, concentration: np.ndarray, confidence: np.ndarray,
                   mutual_information: np.ndarray, host: dict[str, np.ndarray] | None = None,
                   feature_distance: np.ndarray | None = None):
    """:func:`crystaljax.learn.novelty.verdict` of W windows from their own numbers: ``concentration`` (W,)
    image concentration of the window's fingerprint, ``confidence`` (W,) MC mean probability of the predicted
    class, ``mutual_information`` (W,) nats, ``host`` (:func:`window_host_features`; None = the host gates
    ordered compound and unknown crystal do not fire), ``feature_distance`` (W,) embedding distances
    (``Classifier.feature_distance``; None: the unfamiliar-pattern gate does not fire).  ``thresholds`` None:
    nothing is flagged.

    The ordered-compound gate counts a window's species only when its unlike pairs are ordered
    (``unlike_alpha`` < 0): a window across the boundary of two elemental grains (Cu | Fe) has the large
    scalar SRO of segregation although every atom belongs to an elemental crystal."""
    from crystaljax.learn.novelty import verdict

    w = len(confidence)
    host = host or {"n_species": np.ones(w), "sro": np.zeros(w), "unlike_alpha": np.zeros(w),
                    "crystallinity": np.ones(w)}
    n_species = np.where(np.asarray(host["unlike_alpha"]) < 0, host["n_species"], 1)
    return verdict(thresholds, n_species=n_species, sro=host["sro"], image_concentration=concentration,
                   crystallinity=host["crystallinity"], confidence=confidence, mutual_information=mutual_information,
                   feature_distance=feature_distance)


def vote_unknown(window_unknown: np.ndarray, window_reason, atom: np.ndarray, wgt: np.ndarray, n_atoms: int,
                 nearest: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-atom verdict from window verdicts: share (N,) = sum of the vote weights ``wgt`` (W, K) of the
    flagged windows covering the atom / sum of all its weights; unknown = share > :data:`UNKNOWN_SHARE`;
    reason = the reason whose windows carry the largest weight ('' when known; a tie goes to the first in
    :data:`crystaljax.learn.novelty.REASONS`, the classifier's gate order).  ``atom`` (W, K) atom index
    of each window slot; ``nearest`` (n_missing, 2): (atom, window) pairs for atoms in no window.
    Returns (unknown (N,) bool, reason (N,) str, share (N,))."""
    from crystaljax.learn.novelty import REASONS

    k = atom.shape[1]
    flat_atom, flat_w = atom.ravel(), wgt.ravel()
    total = np.bincount(flat_atom, weights=flat_w, minlength=n_atoms)
    reason_w = np.asarray(window_reason, dtype=object)
    by_reason = np.stack([np.bincount(flat_atom, weights=flat_w * np.repeat(reason_w == r, k), minlength=n_atoms)
                          for r in REASONS], axis=1)
    flagged = np.bincount(flat_atom, weights=flat_w * np.repeat(np.asarray(window_unknown, float), k),
                          minlength=n_atoms)
    share = flagged / np.maximum(total, 1e-300)
    if nearest is not None and len(nearest):
        share[nearest[:, 0]] = np.asarray(window_unknown, float)[nearest[:, 1]]
        by_reason[nearest[:, 0]] = np.stack([reason_w[nearest[:, 1]] == r for r in REASONS], axis=1)
    unknown = share > UNKNOWN_SHARE
    reason = np.where(unknown, np.asarray(REASONS, dtype="U24")[np.argmax(by_reason, axis=1)], "")
    return unknown, reason.astype("U24"), share


# ------------------------------------------------------------------------------------------------ the map


def map_atoms(atoms, classifier=None, *, stride: float = DEFAULT_STRIDE, window=None, sigma: float = DEFAULT_SIGMA,
              orient: str = "lattices", scale_method: str = "max", chunk: int = DEFAULT_CHUNK,
              batch_size: int = 64, progress: bool = False, mc_samples: int = 0, seed: int = 0,
              unknown: bool = True, unknown_host: bool = True) -> MapResult:
    """Per-atom crystal classes, probabilities and uncertainty of a large structure (see module docstring).

    atoms:      ``ase.Atoms``, periodic (all three directions) or finite; positions in Å.
    classifier: a :class:`crystaljax.learn.classifier.Classifier`, a shipped model name or a model path
                (None = ``default``).
    stride:     grid spacing of the window centres, Å.
    window:     int = atoms per window (default: the model's cluster size, 250); float = radius in Å.
    sigma:      Gaussian vote width as a fraction of the window radius.
    scale_method: ``"median"`` (median per-atom nearest-neighbour distance of the window), ``"robust"``
                (:func:`robust_window_scale`, corrects the shortening by displacements) or ``"max"`` (the larger
                of the two per window; default: the median is exact on clean windows, displacements only make it
                too small; docs/MAPS.md compares).
    orient:     how windows are rotated into their lattice's standard orientation: ``"lattices"`` (lattices
                estimated on a few seed windows, matched to every window; :func:`orient_windows`),
                ``"each"`` (a lattice estimated per window; slow reference) or ``"none"``.  docs/MAPS.md.
    chunk:      windows built and classified per step (memory bound); batch_size: windows per device call.
    mc_samples: K > 0: K MC-dropout passes per window (``Classifier.predict``; window i uses key
                fold_in(seed, i)); adds ``epistemic`` = the windows' mutual information, vote-weighted.
    unknown:    with ``mc_samples`` > 0, the unknown verdict (module docstring, step 7) with the classifier's
                ``unknown_thresholds`` (None: nothing flagged); off with ``mc_samples`` = 0 (the thresholds
                are for MC probabilities) or ``unknown=False``.  ``unknown_host``: also the host gates ordered
                compound and unknown crystal (:func:`window_host_features`, a host loop over windows).
    """
    from scipy.spatial import cKDTree

    from crystaljax.learn.classifier import Classifier, entropy
    from crystaljax.structure import pad_to

    t0 = time.perf_counter()
    if not isinstance(classifier, Classifier):
        classifier = Classifier.load(classifier)
    n = len(atoms)
    if n < 2:
        raise StructureError(f"a map needs at least two atoms, got {n}")
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(pos)):
        raise StructureError("positions contain NaN or inf")
    if window is None:
        window = int(classifier.spec.cluster_target)
    periodic = _is_periodic(atoms)
    if periodic:
        # reach: the radius of a window of ``window`` atoms at this density (x1.5), or the given radius
        volume = abs(float(np.linalg.det(atoms.cell[:])))
        k = window if isinstance(window, (int, np.integer)) else None
        reach = 1.5 * (3 * k * volume / n / (4 * np.pi)) ** (1 / 3) if k else float(window) * 1.05
    else:
        reach = 0.0
    points, owner = point_set(atoms, reach)
    tree = cKDTree(points)
    centres = window_centres(atoms, float(stride), tree if not periodic else None)
    idx, valid, dist = gather_windows(points, owner, centres, window, tree,
                                      max_atoms=4 * int(classifier.spec.cluster_target))
    nn = nn_distances(points, owner, n, tree)
    if scale_method not in SCALE_METHODS:
        raise ValueError(f"scale_method must be one of {SCALE_METHODS}, got {scale_method!r}")
    robust = None
    if scale_method in ("robust", "max"):
        from crystaljax.structures.cluster import ROBUST_NEIGHBOURS

        robust = robust_window_scale(neighbour_table(points, owner, n, ROBUST_NEIGHBOURS, tree)[owner], idx, valid)
    scale = robust if scale_method == "robust" else window_scale(nn[owner], idx, valid)
    if scale_method == "max":
        scale = np.maximum(scale, robust)
    numbers = np.asarray(atoms.numbers)[owner]
    t_host = time.perf_counter() - t0
    orient_info: dict[str, Any] = {}
    if orient == "lattices":
        rotations, which, orient_info = orient_windows(points, owner, n, idx, valid, float(np.median(nn)), tree)
    elif orient == "each":
        rotations, found = orient_each(points, idx, valid)
        orient_info = {"fraction_windows_matched": float(np.mean(found))}
    elif orient == "none":
        rotations = None
    else:
        raise ValueError(f"orient must be 'lattices', 'each' or 'none', got {orient!r}")
    t_orient = time.perf_counter() - t0 - t_host

    w, k = idx.shape
    n_max = pad_to(k)
    probs = np.zeros((w, classifier.n_classes), np.float32)
    mi = None
    steps = range(0, w, chunk)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, total=-(-w // chunk), unit="chunk", desc=f"map {w} windows", leave=False)
    verdict_on = bool(unknown) and mc_samples > 0
    th = classifier.unknown_thresholds if verdict_on else None
    concentration = np.ones(w)
    distance = np.zeros(w)
    for start in steps:
        sl = slice(start, min(start + chunk, w))
        batch = build_batch(points, numbers, idx[sl], valid[sl], scale[sl], n_max,
                            None if rotations is None else rotations[sl])
        if mc_samples > 0:  # fingerprints once, kept for the image-concentration gate
            images = classifier.images(batch, batch_size=batch_size)
            pred = classifier.predict_images(images, batch_size=batch_size, mc_samples=int(mc_samples),
                                             key=int(seed), start=start, embeddings=th is not None)
            mi = np.zeros(w, np.float32) if mi is None else mi
            mi[sl] = pred.mutual_information
            if th is not None:
                from crystaljax.structures.order import image_concentration

                concentration[sl] = [image_concentration(im) for im in images]
                fd = classifier.feature_distance(pred)
                distance[sl] = 0.0 if fd is None else fd
        else:
            pred = classifier.predict(batch, batch_size=batch_size)
        probs[sl] = pred.probabilities
    t_device = time.perf_counter() - t0 - t_host - t_orient
    t1 = time.perf_counter()
    host = None
    if th is not None and unknown_host:
        from crystaljax.structures.cluster import ROBUST_NEIGHBOURS

        shell = robust if robust is not None else robust_window_scale(
            neighbour_table(points, owner, n, ROBUST_NEIGHBOURS, tree)[owner], idx, valid)
        host = window_host_features(points, numbers, idx, valid, shell)
    wv = window_verdict(th, concentration=concentration, confidence=probs.max(axis=1), mutual_information=mi,
                        host=host, feature_distance=distance) if verdict_on else None
    t_gates = time.perf_counter() - t1

    # per-atom vote: Gaussian weight on the distance to the window centre
    t2 = time.perf_counter()
    radius = np.where(valid, dist, 0.0).max(axis=1)
    wgt = np.exp(-0.5 * (dist / (sigma * np.maximum(radius, 1e-9))[:, None]) ** 2) * valid
    atom = owner[idx]
    flat_atom, flat_w = atom.ravel(), wgt.ravel()
    acc = np.stack([np.bincount(flat_atom, weights=flat_w * np.repeat(probs[:, c], k), minlength=n)
                    for c in range(classifier.n_classes)], axis=1)
    total = np.bincount(flat_atom, weights=flat_w, minlength=n)
    coverage = np.bincount(flat_atom[valid.ravel()], minlength=n)
    missing = total <= 0
    nearest = np.zeros((0, 2), int)
    if missing.any():  # atoms in no window: the window whose centre is nearest
        _, near = cKDTree(centres).query(points[_first_points(owner, n)[missing]])
        acc[missing] = probs[near]
        total[missing] = 1.0
        nearest = np.stack([np.flatnonzero(missing), near], axis=1)
    per_atom = acc / total[:, None]
    epistemic = None
    if mi is not None:
        epistemic = np.bincount(flat_atom, weights=flat_w * np.repeat(mi, k), minlength=n) / np.maximum(total, 1e-12)
    verdict_atoms = (None, None, None)
    if wv is not None:
        verdict_atoms = vote_unknown(wv.unknown, wv.reason, atom, wgt, n, nearest)
    t_vote = time.perf_counter() - t2
    info = {
        "stride": float(stride), "window": window if isinstance(window, (int, np.integer)) else float(window),
        "atoms_per_window": int(k), "sigma": float(sigma), "mc_samples": int(mc_samples), "orient": str(orient),
        "periodic": periodic,
        "time_host_s": t_host, "time_orient_s": t_orient, **orient_info, "time_device_s": t_device,
        "time_vote_s": t_vote, "time_total_s": time.perf_counter() - t0,
        "unknown_verdict": ("off" if not verdict_on else "no thresholds" if th is None
                            else "on" if host is not None else "on (no host gates)"),
        **({"time_gates_s": t_gates} if verdict_on else {}),
    }
    if isinstance(info["window"], np.integer):
        info["window"] = int(info["window"])
    return MapResult(classifier.classes, per_atom.astype(np.float32), entropy(per_atom), coverage, centres,
                     probs, entropy(probs), radius, scale, epistemic, info, *verdict_atoms,
                     None if wv is None else wv.unknown, None if wv is None else np.asarray(wv.reason, dtype="U24"))


# ------------------------------------------------------------------------------------------------ files


def parse_window(text) -> int | float:
    """``--window`` value: an integer = atoms per window (``250``); a number with a unit or a decimal point
    = radius in Å (``12A``, ``12Å``, ``12.0``)."""
    s = str(text).strip()
    radius = s.endswith(("A", "Å", "a"))
    s = s.rstrip("AÅa").strip()
    try:
        value = float(s)
    except ValueError:
        raise ValueError(f"--window must be an atom count (e.g. 250) or a radius in Å (e.g. 12A), got {text!r}")
    if not value > 0 or not np.isfinite(value):
        raise ValueError(f"--window must be positive, got {text!r}")
    if radius or "." in s:
        return float(value)
    if value < 16:
        raise ValueError(f"--window {text!r}: a window needs at least 16 atoms (or give a radius, e.g. 12A)")
    return int(value)


def map_file(path, out=None, *, model=None, frame: int = 0, stride: float = DEFAULT_STRIDE, window=None,
             png_prefix=None, progress: bool = False, title: str = "", credit: str = "",
             mc_samples: int = DEFAULT_MC_SAMPLES, seed: int = 0, unknown: bool = True,
             devices: int | None = None) -> dict[str, Any]:
    """Read frame ``frame`` of ``path``, map it (:func:`map_atoms`), write ``out`` (extxyz with the per-atom
    arrays) and, with ``png_prefix``, the pictures; returns :meth:`MapResult.summary` plus the paths written.
    ``mc_samples``, ``seed``, ``unknown``: as in :func:`map_atoms` (default: MC dropout with the verdict on).
    ``devices``: windows split over this many local devices (``sharding.local_mesh``; None: all)."""
    from crystaljax.errors import InputFileError
    from crystaljax.learn.classifier import Classifier
    from crystaljax.structures.io import read_structures

    frames = read_structures(path)
    if not -len(frames) <= frame < len(frames):
        raise InputFileError(f"{path}: frame {frame} requested but the file has {len(frames)} frame(s)")
    atoms = frames[frame]
    from crystaljax.learn.sharding import local_mesh

    clf = Classifier.load(model, mesh=local_mesh(devices))
    result = map_atoms(atoms, clf, stride=stride, window=window, progress=progress, mc_samples=mc_samples, seed=seed,
                       unknown=unknown)
    summary = {"file": str(path), "frame": int(frame), "model": str(model or "default"), **result.summary()}
    if out is not None:
        from ase.io import write

        mapped = result.to_atoms(atoms)
        mapped.info.update({"map_model": summary["model"], "map_stride": float(stride),
                            "map_classes": " ".join(result.classes)})
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write(str(out), mapped, format="extxyz")
        summary["out"] = str(out)
    if png_prefix is not None:
        from crystaljax.analysis.map_plots import save_pictures

        summary["pictures"] = [str(p) for p in save_pictures(atoms, result, png_prefix, title=title or str(path),
                                                             credit=credit)]
    return summary
