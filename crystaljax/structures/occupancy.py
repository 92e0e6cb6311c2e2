"""Partial and mixed site occupancies (CIF ``_atom_site_occupancy``) as random draws (host side, NumPy/ASE).

ASE's CIF reader (``ase.io.read``, ``fractional_occupancies=True``) puts the majority species on every site and
keeps the occupancies in ``atoms.info['occupancy']``: ``{kind: {symbol: occupancy}}``, one entry per site of
the asymmetric unit (species listed at the same position are merged into one mixed site), with the per-atom
``atoms.arrays['spacegroup_kinds']`` (N,) naming the asymmetric-unit site of every symmetry-expanded atom.
Without that array (a CIF without a cell) the keys are atom indices.

:func:`draws` turns such a structure into random configurations: a site of total occupancy o < 1 is empty with
probability 1 - o (random vacancy), a mixed site takes each species with its fraction (random substitution).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: A site whose occupancies sum to at least 1 - OCC_TOL counts as fully occupied (CIF occupancies are rounded:
#: 3 x 0.33 is a full site); sums above 1 are normalised to 1.
OCC_TOL = 0.01
#: Sites in the box a draw is made on: the cell is repeated (:func:`crystaljax.structures.cluster.replication`)
#: to about this many sites, so the ~250-atom cluster cut from it sees independent random sites rather than one
#: draw of a small cell repeated periodically (an ordered superstructure).
DRAW_SITES = 1000


def site_occupancies(atoms) -> tuple[np.ndarray, list[dict[str, float]]] | None:
    """(kind (N,) int index into the site list, sites: list of {symbol: occupancy}) from ASE's CIF occupancy
    info, or None if ``atoms`` carries none (or it cannot be mapped onto the atoms)."""
    occ = atoms.info.get("occupancy") if hasattr(atoms, "info") else None
    if not isinstance(occ, dict) or not occ:
        return None
    labels = {str(k): i for i, k in enumerate(occ)}
    sites = [{str(s): float(v) for s, v in dict(site).items()} for site in occ.values()]
    raw = atoms.arrays.get("spacegroup_kinds")
    values, inverse = np.unique(np.arange(len(atoms)) if raw is None else np.asarray(raw), return_inverse=True)
    kind = np.array([labels.get(str(v), -1) for v in values], np.int64)[inverse.ravel()]
    return (kind, sites) if len(kind) == len(atoms) and np.all(kind >= 0) else None


def _is_partial(site: dict[str, float]) -> bool:
    return len(site) > 1 or sum(site.values()) < 1.0 - OCC_TOL


def partial_sites(atoms) -> int:
    """Number of asymmetric-unit sites of ``atoms`` that are partially occupied or mixed (0: none, or no
    occupancy info), counting only sites that some atom sits on."""
    table = site_occupancies(atoms)
    if table is None:
        return 0
    kind, sites = table
    return sum(_is_partial(sites[k]) for k in np.unique(kind))


def _cumulative(sites: list[dict[str, float]], species: list[str]) -> np.ndarray:
    """(n_sites, S) cumulative probabilities of the S species per site; the rest up to 1 is a vacancy."""
    p = np.array([[site.get(s, 0.0) for s in species] for site in sites], np.float64).clip(0.0, None)
    total = p.sum(axis=1, keepdims=True)
    full = total >= 1.0 - OCC_TOL
    p = np.where(full & (total > 0), p / np.where(total > 0, total, 1.0), p)
    return np.cumsum(p, axis=1)


def draws(atoms, n_draws: int, seed: int | Sequence[int], min_sites: int = DRAW_SITES) -> list:
    """``n_draws`` random configurations (list of ``ase.Atoms``) of a structure with partial occupancies.

    A periodic cell is first repeated to about ``min_sites`` sites (unchanged when it has more).  Then, per
    draw, every atom on a partial or mixed site (:func:`partial_sites`) is removed with probability
    1 - (total occupancy) or gets species s with probability occupancy(s), all atoms at once from
    ``np.random.default_rng(seed)`` (same seed, same draws); atoms on fully occupied single-species sites are
    kept as they are.  The draws carry ``info`` without ``'occupancy'`` (they are ordinary structures).
    A structure without partial sites gives [].
    """
    from ase.data import atomic_numbers

    from crystaljax.structures.cluster import replication
    from crystaljax.structures.io import is_periodic

    if partial_sites(atoms) == 0:
        return []
    if is_periodic(atoms):
        atoms = atoms.repeat(replication(len(atoms), atoms.cell, min_sites))
    kind, sites = site_occupancies(atoms)
    species = sorted({s for site in sites for s in site})
    cum = _cumulative(sites, species)[kind]                                    # (N, S)
    drawn = np.array([atomic_numbers[s] for s in species] + [0])[
        (np.random.default_rng(seed).random((int(n_draws), len(atoms)))[:, :, None] >= cum).sum(-1)]  # (D, N)
    touched = np.array([_is_partial(site) for site in sites])[kind]            # (N,)
    numbers = np.where(touched, drawn, atoms.numbers)                           # 0: vacancy
    out = []
    for z in numbers:
        keep = z > 0
        config = atoms[keep]
        config.numbers = z[keep]
        config.info.pop("occupancy", None)
        out.append(config)
    return out
