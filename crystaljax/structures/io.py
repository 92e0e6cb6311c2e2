"""Reading and validating input structures (host side, NumPy/ASE).

Every error raised on purpose is a :class:`~crystaljax.errors.CrystalJaxError` with a one-line message that
names the file (or the ``source`` string): :class:`InputFileError` for files that are missing or cannot be
parsed, :class:`StructureError` for structures that cannot be imaged.

Periodicity convention (used by ``cell`` and ``cluster`` too): a structure is *periodic* iff all three
``atoms.pbc`` flags are set and the cell volume is non-zero.  Partially periodic structures (slabs, wires,
``pbc = [True, True, False]`` ...) are treated as finite: their atoms are used as given, without images.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from crystaljax.errors import CrystalJaxError, InputFileError, StructureError

#: Largest supported atomic number.  The fingerprint uses the form factor of element Z + 2 and tabulated
#: form factors stop at Z = 98 (Cf).
MAX_Z = 96
#: Cells with |det| below this (Å^3) count as degenerate.
MIN_VOLUME = 1e-6
#: Atoms closer than this (Å) count as overlapping.
MIN_DISTANCE = 1e-3


def is_periodic(atoms) -> bool:
    """True iff all three pbc flags are set and |det(cell)| > ``MIN_VOLUME`` Å^3 (partial pbc -> False)."""
    if not bool(np.all(atoms.pbc)):
        return False
    cell = np.asarray(atoms.cell, dtype=np.float64)
    if not np.all(np.isfinite(cell)):
        return False
    return abs(float(np.linalg.det(cell))) > MIN_VOLUME


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _label(source: str) -> str:
    return f"{source}: " if source else ""


def plane_spacings(cell) -> np.ndarray:
    """(3,) distances (Å) between neighbouring lattice planes parallel to each pair of cell vectors: volume over
    the area spanned by the other two rows of ``cell`` (3, 3) Å (how many images along each vector reach a
    given distance)."""
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(float(np.linalg.det(cell)))
    return volume / np.linalg.norm(np.cross(np.roll(cell, -1, 0), np.roll(cell, -2, 0)), axis=1)


def nearest_neighbour_distances(atoms, periodic: bool | None = None) -> np.ndarray:
    """Per-atom distance (Å) to the nearest other atom, periodic images included for periodic input.

    One k-d tree over the atoms and enough periodic images to reach the shortest cell vector (an upper
    bound on every nearest-neighbour distance); finite input uses the atoms alone (inf for a lone atom).
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(atoms.positions, dtype=np.float64)
    if periodic is None:
        periodic = is_periodic(atoms)
    if not periodic:
        if len(pos) < 2:
            return np.full(len(pos), np.inf)
        d, _ = cKDTree(pos).query(pos, k=2)
        return d[:, 1]
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    reach = float(np.min(np.linalg.norm(cell, axis=1)))
    spacings = plane_spacings(cell)
    n = [int(np.ceil(reach / d - 1e-9)) for d in spacings]
    if np.prod([2 * k + 1 for k in n]) * len(pos) > 2_000_000:  # a very skewed cell: ASE's cell lists
        from ase.neighborlist import neighbor_list

        i, d = neighbor_list("id", atoms, reach * (1 + 1e-9) + 1e-9, self_interaction=False)
        best = np.full(len(pos), np.inf)
        np.minimum.at(best, i, d)
        return best
    shifts = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij"), -1).reshape(-1, 3) @ cell
    images = (pos[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    d, _ = cKDTree(images).query(pos, k=2)  # the first hit is the atom itself
    return d[:, 1]


def images_near(pos: np.ndarray, cell: np.ndarray, grid: np.ndarray, radius: float) -> np.ndarray:
    """The periodic images pos + g @ cell (M, 3) Å, g in ``grid`` (G, 3) int (a box of integer vectors,
    row-major as np.meshgrid(..., indexing="ij") gives it), that can lie within ``radius`` Å of an atom of
    ``pos`` (N, 3) Å: those inside the atoms' fractional bounding box widened by ``radius`` over each
    lattice-plane spacing.  A superset of the images within ``radius`` of an atom, with coordinates computed
    exactly as the full image set's."""
    cell = np.asarray(cell, dtype=np.float64)
    spacings = plane_spacings(cell)
    frac = pos @ np.linalg.inv(cell)
    pad = radius / spacings * (1 + 1e-9) + 1e-9 * (1.0 + np.abs(frac).max())
    lo, hi = frac.min(axis=0) - pad, frac.max(axis=0) + pad
    axes = [np.unique(grid[:, i]) for i in range(3)]  # the box's values along each axis, ascending
    ok = [(frac[:, i, None] + g[None, :] >= lo[i]) & (frac[:, i, None] + g[None, :] <= hi[i])
          for i, g in enumerate(axes)]  # (N, n_i) per axis
    atom, a0, a1, a2 = np.nonzero(ok[0][:, :, None, None] & ok[1][:, None, :, None] & ok[2][:, None, None, :])
    row = (a0 * len(axes[1]) + a1) * len(axes[2]) + a2  # the row of grid holding (g0, g1, g2)
    return pos[atom] + (grid @ cell)[row]


def _closest_distance(atoms, periodic: bool) -> float:
    """min of :func:`nearest_neighbour_distances` (Å) where it is below ``MIN_DISTANCE``; otherwise some value
    >= ``MIN_DISTANCE`` (only the images that can be that close to an atom are searched)."""
    from scipy.spatial import cKDTree

    if not periodic:
        return float(np.min(nearest_neighbour_distances(atoms, periodic)))
    pos = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    reach = float(np.min(np.linalg.norm(cell, axis=1)))
    spacings = plane_spacings(cell)
    n = [int(np.ceil(reach / d - 1e-9)) for d in spacings]
    if np.prod([2 * k + 1 for k in n]) * len(pos) > 2_000_000:  # the ASE branch of nearest_neighbour_distances
        return float(np.min(nearest_neighbour_distances(atoms, periodic)))
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij"), -1).reshape(-1, 3)
    images = images_near(pos, cell, grid, MIN_DISTANCE)
    if len(images) < 2:
        return np.inf
    d, _ = cKDTree(images).query(pos, k=2)  # the first hit is the atom itself
    return float(np.min(d[:, 1]))


def validate(atoms, source: str = ""):
    """Check that ``atoms`` can be imaged and return it unchanged.

    Raises :class:`StructureError` (one line, prefixed by ``source``) for: no atoms; one atom in a finite
    (non-periodic or partially periodic) structure; NaN/inf positions or cell; atomic number 0 or > 96;
    a fully periodic structure whose cell is missing or has |det| < 1e-6 Å^3; two atoms (or an atom and a
    periodic image) closer than 1e-3 Å.  A one-atom *periodic* cell is fine (it is replicated later).
    """
    where = _label(source)
    n = len(atoms)
    if n == 0:
        raise StructureError(f"{where}structure has no atoms")
    numbers = np.asarray(atoms.numbers)
    bad = numbers[(numbers < 1) | (numbers > MAX_Z)]
    if len(bad):
        raise StructureError(
            f"{where}unknown or unsupported element (atomic number {int(bad[0])}); supported: 1..{MAX_Z}"
        )
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(pos)):
        raise StructureError(f"{where}atomic positions contain NaN or inf")
    cell = np.asarray(atoms.cell, dtype=np.float64)
    if not np.all(np.isfinite(cell)):
        raise StructureError(f"{where}cell contains NaN or inf")
    fully_pbc = bool(np.all(atoms.pbc))
    if fully_pbc:
        vol = abs(float(np.linalg.det(cell)))
        if not np.any(cell):
            raise StructureError(f"{where}structure is periodic but has no cell")
        if vol < MIN_VOLUME:
            raise StructureError(f"{where}periodic cell has (near) zero volume ({vol:.3g} A^3)")
    periodic = fully_pbc  # volume checked above
    if n == 1 and not periodic:
        raise StructureError(f"{where}a single atom without a periodic cell cannot be imaged")
    dmin = _closest_distance(atoms, periodic)
    if dmin < MIN_DISTANCE:
        raise StructureError(f"{where}overlapping atoms (two atoms {dmin:.3g} A apart)")
    return atoms


#: Names of the text formats recognised by suffix (or file name) in :func:`_read_failure`'s messages.
TEXT_FORMATS = {".cif": "CIF", ".xyz": "XYZ", ".extxyz": "extended XYZ", ".vasp": "VASP POSCAR",
                "poscar": "VASP POSCAR", "contcar": "VASP POSCAR", ".in": "FHI-aims geometry", ".pdb": "PDB",
                ".xsf": "XSF", ".lmp": "LAMMPS data", ".res": "SHELX res"}
#: Parser exceptions whose message describes the parser's internals rather than the file.
INTERNAL_ERRORS = (AssertionError, IndexError, KeyError, StopIteration, TypeError, AttributeError, ValueError)


def _format_name(path: Path, format: str | None) -> str | None:
    """Human name of the text format of ``path`` (``format`` or its suffix / file name), None if not known."""
    if format:
        return {"cif": "CIF", "xyz": "XYZ", "extxyz": "extended XYZ", "vasp": "VASP POSCAR",
                "aims": "FHI-aims geometry", "lammps-data": "LAMMPS data"}.get(format, format)
    return TEXT_FORMATS.get(path.suffix.lower()) or TEXT_FORMATS.get(path.name.lower())


def _cif_problem(text: str) -> str | None:
    """What is missing from a CIF file's text (lower-cased), in a user's words; None if nothing obvious is."""
    if "data_" not in text:
        return "no data_ block"
    if not any(f"_atom_site_{t}" in text for t in ("fract_x", "cartn_x")):
        return "no _atom_site loop with atom positions"
    if not any(f"_cell_length_{t}" in text for t in "abc") and "_atom_site_fract_x" in text:
        return "fractional atom positions but no _cell_length_a/b/c"
    return None


def _read_failure(path: Path, format: str | None, exc: BaseException | None) -> str:
    """One-line description (without the file name) of why ASE could not read ``path``; ``exc`` is what it raised
    (None: it returned no structure).

    Messages of ASE's own exceptions are kept; an empty message, one that repeats the exception's type, or
    one of :data:`INTERNAL_ERRORS` (e.g. a bare ``AssertionError`` from the CIF parser) is replaced by a
    description of what the file lacks for its format (CIF: data block, atom-site loop, cell; any text
    format: binary content)."""
    name = type(exc).__name__
    if name == "UnknownFileTypeError":
        return f"unknown file format ({_one_line(exc) or 'not recognised by ASE'})"
    msg = "" if exc is None else _one_line(exc)
    informative = bool(msg) and msg != name and not isinstance(exc, INTERNAL_ERRORS)
    fmt = _format_name(path, format)
    if fmt is None:
        if exc is None:
            return "no structures found"
        return f"cannot read structure ({msg})" if informative else "not a structure file ASE can read"
    head = path.read_bytes()[:1 << 20]
    if b"\0" in head:
        return f"not a readable {fmt} file (binary data)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
        if sum(not (c.isprintable() or c.isspace()) for c in text) > 0.05 * len(text):
            return f"not a readable {fmt} file (binary data)"
    problem = _cif_problem(text.lower()) if fmt == "CIF" else None
    fallback = "no atom sites, truncated file or malformed loop" if fmt == "CIF" else "truncated file or malformed lines"
    if exc is None and problem is None:
        fallback = "no structures found"
    return f"not a readable {fmt} file ({problem or (msg if informative else fallback)})"


def _guess_aims(path: Path) -> bool:
    return path.name == "geometry.in" or path.suffix == ".in"


def read_structures(path, index=":", format: str | None = None) -> list:
    """Read every frame ``index`` selects from an ASE-readable file and validate each one.

    path:   any file ASE reads (CIF, POSCAR/vasp, extxyz incl. multi-frame, FHI-aims ``geometry.in``/``*.in``,
            LAMMPS data with ``format="lammps-data"``, xyz, ...).
    index:  ASE index (``":"`` = all frames, an int, or a slice string such as ``"0:10"``).
    format: ASE format name; guessed when None (``*.in`` / ``geometry.in`` fall back to ``"aims"``).

    Returns a list of ``ase.Atoms`` (positions in Å).  Raises :class:`InputFileError` for a missing, empty,
    unreadable or unknown-format file, :class:`StructureError` (via :func:`validate`) for a bad frame.
    """
    import ase.io

    p = Path(os.fspath(path))
    if not p.exists():
        raise InputFileError(f"{p}: no such file")
    if p.is_dir():
        raise InputFileError(f"{p}: is a directory, not a structure file")
    try:
        size = p.stat().st_size
    except OSError as e:  # pragma: no cover - permission problems etc.
        raise InputFileError(f"{p}: cannot access file ({_one_line(e)})") from None
    if size == 0:
        raise InputFileError(f"{p}: empty file")

    formats = [format]
    if format is None and _guess_aims(p):
        formats.append("aims")
    if format is None and p.suffix.lower() in (".xyz", ".extxyz"):
        formats.append("xyz")  # plain XYZ when an extended-XYZ header does not match its columns
    first_error = None
    frames = None
    for fmt in formats:
        try:
            with warnings.catch_warnings():  # parser warnings on stderr would break the one-line rule
                warnings.simplefilter("ignore")
                frames = ase.io.read(str(p), index=index, format=fmt)
            break
        except CrystalJaxError:
            raise
        except Exception as e:  # ASE raises many exception types for bad files
            if first_error is None:
                first_error = e
    if frames is None:
        raise InputFileError(f"{p}: {_read_failure(p, format, first_error)}"[:400]) from None

    if not isinstance(frames, (list, tuple)):
        frames = [frames]
    frames = list(frames)
    if not frames:
        raise InputFileError(f"{p}: {_read_failure(p, format, None)}")
    for i, atoms in enumerate(frames):
        validate(atoms, source=f"{p} (frame {i})" if len(frames) > 1 else str(p))
    return frames
