"""The elemental entries of the AFLOW Library of Crystallographic Prototypes, read from pymatgen's copy.

pymatgen ships the library (Mehl et al., Comput. Mater. Sci. 136, S1 (2017); Hicks et al., ibid. 161, S1
(2019)) as ``pymatgen/analysis/prototypes/aflow_prototypes.json.gz``: 288 prototypes, each an example
structure with its AFLOW label, Pearson symbol, Strukturbericht designation and mineral name.  This module
reads the file straight from the installed distribution (no pymatgen import: the structures are plain
JSON), keeps the single-element entries and sorts them into the seven classes (space groups 139, 141,
166, 194, 221, 225, 227, 229) and the rest (the out-of-scope elemental crystals).

``perturbed_cell(entry, rng, ...)`` draws a new member of a prototype around its example: the lattice
lengths stretched within the lattice system, the free Wyckoff coordinates moved by a random displacement field projected onto the
prototype's symmetry (the group average of the displacements, so the space group is kept and only the
free parameters change).
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from crystaljax.errors import StructureError
from crystaljax.structures.prototypes import SPACEGROUP_CLASS
from crystaljax.structures.symmetry import standardize, symmetry_dataset

LIBRARY_FILE = "pymatgen/analysis/prototypes/aflow_prototypes.json.gz"


@dataclass(frozen=True, eq=False)
class LibraryEntry:
    """One elemental library prototype.

    label: AFLOW label (e.g. ``A_hP4_194_bc``).  name: ``label-Element`` (unique: some labels have several
    example elements).  element: symbol of the example.  spacegroup: number (spglib).
    cell: (3, 3) Å, rows = lattice vectors, frac: (m, 3) fractional positions: spglib's idealised standard
    conventional cell of the example (hexagonal setting for 166).  mineral, pearson,
    strukturbericht: the library's tags ('' when absent).
    """

    label: str
    name: str
    element: str
    spacegroup: int
    cell: np.ndarray
    frac: np.ndarray
    mineral: str
    pearson: str
    strukturbericht: str

    @property
    def cls(self) -> str | None:
        """The class (in ``prototypes.CLASSES``) of the space group, None when out of scope."""
        return SPACEGROUP_CLASS.get(self.spacegroup)

    @property
    def n_atoms(self) -> int:
        return len(self.frac)

    def atoms(self, element: str | None = None):
        from ase import Atoms

        return Atoms(symbols=[element or self.element] * self.n_atoms, scaled_positions=self.frac, cell=self.cell,
                     pbc=True)


def library_path() -> Path:
    """Path of pymatgen's ``aflow_prototypes.json[.gz]`` (found in the distribution's file list: no import)."""
    try:
        dist = metadata.distribution("pymatgen")
    except metadata.PackageNotFoundError:
        raise StructureError("the AFLOW prototype library comes with pymatgen: pip install pymatgen") from None
    found = [f for f in (dist.files or ()) if Path(str(f)).name.startswith("aflow_prototypes.json")]
    path = Path(dist.locate_file(found[0] if found else LIBRARY_FILE))
    if not path.exists():
        raise StructureError(f"pymatgen is installed but {LIBRARY_FILE} is missing from it")
    return path


@functools.lru_cache(maxsize=1)
def elemental_entries() -> tuple[LibraryEntry, ...]:
    """Every single-element, fully occupied library entry, in the file's order."""
    path = library_path()
    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
        raw = json.load(f)
    out = []
    for item in raw:
        snl, tags = item["snl"], item.get("tags", {})
        species = [sp for site in snl["sites"] for sp in site["species"]]
        elements = {sp["element"] for sp in species}
        if len(elements) != 1 or any(abs(sp["occu"] - 1.0) > 1e-9 for sp in species):
            continue
        element = elements.pop()
        cell = np.asarray(snl["lattice"]["matrix"], float)
        frac = np.mod(np.asarray([site["abc"] for site in snl["sites"]], float), 1.0)
        label = str(tags.get("aflow", ""))
        # the file's coordinates carry 5 digits: idealise onto spglib's standard conventional cell
        cell, frac, _ = standardize(cell, frac, np.ones(len(frac), int), 1e-3)
        sg = symmetry_dataset(cell, frac, np.ones(len(frac), int), 1e-5)
        out.append(LibraryEntry(label, f"{label}-{element}", element, int(sg.number), cell, np.mod(frac, 1.0),
                                str(tags.get("mineral") or ""), str(tags.get("pearson") or ""),
                                str(tags.get("strukturbericht") or "")))
    return tuple(out)


def in_class_entries() -> tuple[LibraryEntry, ...]:
    """Entries whose space group is one of the seven classes'."""
    return tuple(e for e in elemental_entries() if e.cls is not None)


def out_of_scope_entries() -> tuple[LibraryEntry, ...]:
    """Elemental entries of every other space group (alpha-U, alpha-Ga, alpha-Mn, Se and Te chains, Pu...)."""
    return tuple(e for e in elemental_entries() if e.cls is None)


def get_entry(name: str) -> LibraryEntry:
    for e in elemental_entries():
        if e.name == name:
            return e
    raise KeyError(f"no elemental library entry {name!r}")


# --------------------------------------------------------------------------------------------
# Drawing new members of a prototype


@functools.lru_cache(maxsize=None)
def _operations(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Fractional rotations (k, 3, 3) and atom permutations (k, m) of entry ``name``'s space group:
    operation g sends atom i to atom perm[g, i].  Host side, once per entry."""
    e = get_entry(name)
    ds = symmetry_dataset(e.cell, e.frac, np.ones(e.n_atoms, int), 1e-3)
    rot, trans = np.asarray(ds.rotations, float), np.asarray(ds.translations, float)
    mapped = np.einsum("kij,mj->kmi", rot, e.frac) + trans[:, None, :]                 # (k, m, 3)
    diff = mapped[:, :, None, :] - e.frac[None, None, :, :]                             # (k, m, m, 3)
    diff -= np.round(diff)
    perm = np.argmin(np.linalg.norm(diff @ e.cell, axis=-1), axis=2)
    return rot, perm


def _cartesian(rot: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Fractional rotations (k, 3, 3) as Cartesian ones for lattice rows ``cell``."""
    lt = np.asarray(cell, float).T
    return lt @ rot @ np.linalg.inv(lt)


def symmetrize_displacements(name: str, cell, disp) -> np.ndarray:
    """Project a Cartesian displacement field ``disp`` (m, 3) Å of entry ``name`` (on the lattice ``cell``,
    which keeps the entry's point group) onto its symmetry: the group average of R_g d_{g^-1(j)}.  The
    result moves only the free Wyckoff coordinates, so the space group is kept (or raised, never lowered)."""
    rot, perm = _operations(name)
    cart = _cartesian(rot, cell)
    out = np.zeros_like(disp, dtype=float)
    np.add.at(out, perm, np.einsum("kij,mj->kmi", cart, disp))
    return out / len(rot)


def axis_stretch(spacegroup: int, rng: np.random.Generator, stretch: float) -> np.ndarray:
    """Factors (3,) on the lengths of a, b, c of a standard conventional cell that keep its lattice system:
    none for cubic, c alone for tetragonal, trigonal and hexagonal, each axis on its own below; drawn from
    U(1 - stretch, 1 + stretch) (one draw per free length, none for cubic)."""
    if spacegroup >= 195:
        return np.ones(3)
    if spacegroup >= 75:
        return np.array([1.0, 1.0, rng.uniform(1 - stretch, 1 + stretch)])
    return rng.uniform(1 - stretch, 1 + stretch, 3)


def perturbed_cell(entry: LibraryEntry, rng: np.random.Generator, *, stretch: float = 0.05,
                   displacement: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """A new member of ``entry``'s prototype: (cell (3, 3) Å, frac (m, 3)), same space group.

    stretch: lattice lengths scaled by :func:`axis_stretch` (c/a varies, the lattice system stays).
    displacement: a Gaussian displacement field of this std (fraction of the example's nearest-neighbour
    distance) symmetrised onto the free Wyckoff coordinates.
    """
    from crystaljax.structures.prototypes import _min_distance_cell

    frac = np.asarray(entry.frac, float)
    cell = np.asarray(entry.cell, float) * axis_stretch(entry.spacegroup, rng, stretch)[:, None]
    d_nn = _min_distance_cell(cell, frac)
    disp = rng.normal(0.0, displacement * d_nn, size=frac.shape)
    pos = frac @ cell + symmetrize_displacements(entry.name, cell, disp)
    return cell, np.mod(pos @ np.linalg.inv(cell), 1.0)


__all__ = [
    "LibraryEntry", "library_path", "elemental_entries", "in_class_entries", "out_of_scope_entries", "get_entry",
    "symmetrize_displacements", "axis_stretch", "perturbed_cell",
]
