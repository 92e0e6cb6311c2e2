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


def find_primitive(lattice, frac, numbers, symprec: float = 1e-5):
    """spglib's primitive cell ``(lattice, frac, numbers)``; raises ``SpglibError`` if none is found."""
    return spglib.find_primitive(_cell(lattice, frac, numbers), symprec=symprec)


__all__ = ["SpglibError", "spacegroup_number", "symmetry_dataset", "standardize", "find_primitive"]
