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


def site_symmetry(atoms, symprec: float = SITE_SYMPREC) -> tuple[int, int] | None:
    """(space-group number, atoms per primitive cell) of the atom *sites* of a periodic ``ase.Atoms``,
    chemistry ignored (every atom the same species, so a random alloy has its lattice's group); None for
    finite or partially periodic input or when spglib finds no dataset.  A defective or thermally
    displaced box comes out as P1 with the whole box as its primitive cell."""
    if not (np.all(atoms.pbc) and abs(np.linalg.det(np.asarray(atoms.cell[:], float))) > 1e-9):
        return None
    n = len(atoms)
    try:
        ds = spglib.get_symmetry_dataset(_cell(atoms.cell[:], atoms.get_scaled_positions(wrap=True), np.ones(n)),
                                         symprec=symprec)
    except SpglibError:
        return None
    if ds is None:
        return None
    ratio = abs(np.linalg.det(np.asarray(ds.primitive_lattice, float))) / abs(np.linalg.det(np.asarray(atoms.cell[:], float)))
    return int(ds.number), max(1, int(round(n * ratio)))


def find_primitive(lattice, frac, numbers, symprec: float = 1e-5):
    """spglib's primitive cell ``(lattice, frac, numbers)``; raises ``SpglibError`` if none is found."""
    return spglib.find_primitive(_cell(lattice, frac, numbers), symprec=symprec)


__all__ = ["SpglibError", "spacegroup_number", "symmetry_dataset", "standardize", "find_primitive", "site_symmetry"]
