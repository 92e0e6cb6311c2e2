"""spglib, called in its exception mode (host side).

Importing this module switches spglib (>= 2.5) to raising ``spglib.error.SpglibError`` instead of
returning None and emitting a DeprecationWarning on every call (spglib's ``OLD_ERROR_HANDLING``
switch, process-wide).  Every spglib call of the package goes through these functions.

Cells are ``(lattice (3, 3) Å rows, fractional positions (n, 3), atomic numbers (n,))``; symprec in Å.
"""

from __future__ import annotations

import numpy as np
import spglib
import spglib.error
from spglib.error import SpglibError

spglib.error.OLD_ERROR_HANDLING = False


def _cell(lattice, frac, numbers):
    return np.asarray(lattice, float), np.asarray(frac, float), np.asarray(numbers, int)


def spacegroup_number(lattice, frac, numbers, symprec: float) -> int | None:
    """spglib's space-group number of a periodic cell at ``symprec``; None when spglib finds no
    symmetry dataset (e.g. atoms closer than symprec, a degenerate cell)."""
    try:
        ds = spglib.get_symmetry_dataset(_cell(lattice, frac, numbers), symprec=symprec)
    except SpglibError:
        return None
    return None if ds is None else int(ds.number)


def symmetry_dataset(lattice, frac, numbers, symprec: float):
    """spglib's full symmetry dataset (number, rotations, translations, ...) at ``symprec``; raises
    ``SpglibError`` if spglib finds none."""
    return spglib.get_symmetry_dataset(_cell(lattice, frac, numbers), symprec=symprec)


def standardize(lattice, frac, numbers, symprec: float, to_primitive: bool = False, no_idealize: bool = False):
    """spglib's standardised conventional (or primitive) cell ``(lattice, frac, numbers)``;
    raises ``SpglibError`` if spglib cannot find one."""
    return spglib.standardize_cell(_cell(lattice, frac, numbers), to_primitive=to_primitive,
                                   no_idealize=no_idealize, symprec=symprec)


#: Distance tolerance (Å) of :func:`site_symmetry`: loose enough that a slightly relaxed or rounded in-class cell
#: keeps its full group (a looser tolerance can only raise the symmetry found).
SITE_SYMPREC = 0.1
#: The looser tolerance of the out-of-scope check on small cells (``order.site_features``), as a fraction of the
#: nearest-neighbour distance: a small cell whose atoms are displaced at random (0.06-0.1 Å per component) has a
#: low group at ``SITE_SYMPREC`` but its crystal's group within a quarter of d_NN.
LOOSE_SYMPREC_NN = 0.25


def site_symmetry(atoms, symprec: float = SITE_SYMPREC) -> tuple[int, int] | None:
    """(space-group number, atoms per primitive cell) of the atom *sites* of a periodic ``ase.Atoms``,
    chemistry ignored (every atom the same species, so a random alloy has its lattice's group); None for
    finite or partially periodic input or when spglib finds no dataset.  A defective or thermally
    displaced box comes out as P1 with the whole box as its primitive cell."""
    if not (np.all(atoms.pbc) and abs(np.linalg.det(np.asarray(atoms.cell[:], float))) > 1e-9):
        return None
    return basis_symmetry(atoms.cell[:], atoms.get_scaled_positions(wrap=True), symprec)


#: At most this fraction of a fold's points may be strays (within ``site_tol`` of no well-populated site: the tail
#: of the thermal cloud of a crystal near its melting point, a surface atom of a fragment fitted with a slightly
#: wrong lattice); they are left out of the sites.
MAX_STRAY_FRACTION = 0.05


def folded_sites(positions, lattice, site_tol: float, max_sites: int) -> np.ndarray | None:
    """Mean fractional positions (K, 3) of the sites of ``positions`` (N, 3) folded into the cell of ``lattice``
    (3, 3 rows, same length unit), K <= ``max_sites``; None when the folded points do not gather into at most
    ``max_sites`` compact sites (every point but at most :data:`MAX_STRAY_FRACTION` of them within ``site_tol`` of
    its site's mean, minimum image) each holding at least a quarter of an equal share (a noisy, defective or
    finite fragment of a crystal folds onto its basis; anything else does not).  Points are taken greedily: each
    new site starts at the first unassigned point and is recentred on its members; a group too small to be a
    site (under a quarter of an equal share over ``max_sites`` sites) is a stray."""
    pos = np.asarray(positions, dtype=np.float64)
    lattice = np.asarray(lattice, dtype=np.float64)
    frac = pos @ np.linalg.inv(lattice)
    frac -= np.floor(frac)
    n = len(frac)
    max_strays = int(MAX_STRAY_FRACTION * n)
    stray_size = 0.25 * n / max_sites
    free = np.ones(n, bool)
    sites, counts = [], []
    strays = 0
    while free.any():
        centre = frac[np.argmax(free)]
        for _ in range(3):  # recentre on the members' minimum-image mean
            d = frac - centre
            d -= np.round(d)
            member = free & (np.linalg.norm(d @ lattice, axis=1) < site_tol)
            centre = centre + d[member].mean(axis=0)
        d = frac - centre
        d -= np.round(d)
        member = free & (np.linalg.norm(d @ lattice, axis=1) < site_tol)
        if not member.any():  # the recentred site lost its seed: the seed is a stray
            member = np.zeros(n, bool)
            member[np.argmax(free)] = True
            strays += 1
        elif member.sum() < stray_size:
            strays += int(member.sum())
        else:
            if len(sites) == max_sites:
                return None
            sites.append(centre - np.floor(centre))
            counts.append(int(member.sum()))
        if strays > max_strays:
            return None
        free &= ~member
    if not sites or min(counts) < 0.25 * (n - strays) / len(sites):
        return None
    return np.array(sites)


def basis_symmetry(lattice, sites, symprec: float) -> tuple[int, int] | None:
    """(space-group number, atoms per primitive cell) of identical atoms at fractional ``sites`` (K, 3) in the
    cell ``lattice`` (3, 3 rows); None when spglib finds no dataset.  ``symprec`` in the lattice's unit."""
    lattice = np.asarray(lattice, dtype=np.float64)
    try:
        ds = spglib.get_symmetry_dataset(_cell(lattice, sites, np.ones(len(sites))), symprec=symprec)
    except SpglibError:
        return None
    if ds is None:
        return None
    ratio = abs(np.linalg.det(np.asarray(ds.primitive_lattice, float))) / abs(np.linalg.det(lattice))
    return int(ds.number), max(1, int(round(len(sites) * ratio)))


def find_primitive(lattice, frac, numbers, symprec: float = 1e-5):
    """spglib's primitive cell ``(lattice, frac, numbers)``; raises ``SpglibError`` if none is found."""
    return spglib.find_primitive(_cell(lattice, frac, numbers), symprec=symprec)


__all__ = ["SpglibError", "spacegroup_number", "symmetry_dataset", "standardize", "find_primitive", "site_symmetry",
           "folded_sites", "basis_symmetry"]
