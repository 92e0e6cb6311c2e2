"""AFLOW-like elemental data set with spglib-checked labels (stand-in for the paper's AFLOWLIB set).

Prototypes of the seven classes are drawn balanced per class: the parametrised families of
``crystaljax.structures.prototypes`` and the in-class elemental entries of the AFLOW prototype library they do
not cover (``crystaljax.structures.aflow_library``: graphite, lonsdaleite, beta-O, alpha-B, the clathrate...),
with random sizes (element nearest-neighbour distance x U(0.9, 1.1), Å) and free parameters; candidates inside a
symmetry-gaining window or next to an AFLOW library example are rejected, and a structure is kept only if
spglib gives its intended space group at every tolerance of :func:`symprecs_for`.  Each kept cell becomes a
~``target``-atom cluster (``crystaljax.structures.cluster.prepare``) padded to one ``n_max``; the split is
stratified per class.  Deterministic for a seed.  ``generate`` builds a set, ``save``/``load`` store it
(one ``.npz`` + JSON summary), ``tiny`` makes a small one for tests.  Method, statistics, file format:
docs/DATASET.md.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from crystaljax.config import DataConfig  # noqa: F401  (the schema lives in crystaljax.config)
from crystaljax.jsonio import json_default
from crystaljax.structures import aflow_library as _library
from crystaljax.structures import prototypes as _proto
from crystaljax.structures.symmetry import find_primitive, spacegroup_number
from crystaljax.structures.prototypes import CLASSES, PROTOTYPES, REFERENCES
from crystaljax.structure import Structure, from_ase, pad_to, stack

SYMPRECS: tuple[float, ...] = (1e-3, 1e-6, 1e-9)
"""spglib tolerances (Å) at which a structure must get its intended space group (paper, Methods)."""
SYMPRECS_HEX: tuple[float, ...] = (1e-3, 1e-6)
"""Tolerances for hex/rh (166, 194): the paper drops 1e-9 there because spglib misses symmetries."""

PARAM_COLUMNS: tuple[str, ...] = ("a",) + _proto.PARAM_NAMES
"""Columns of ``meta['params']``: conventional a (Å), c/a, Wyckoff x; NaN where a prototype has none."""

EXCLUDED_ELEMENTS: tuple[str, ...] = ("He", "Ne", "Ar", "Kr", "Xe", "Rn", "Pm", "At", "Fr", "Ra", "Ac")
"""Elements of Z = 1..94 left out: noble gases and five scarce radioactive ones (leaves 83)."""

REFERENCE_TOLERANCE: float = 0.01
"""A candidate within this of an AFLOW example (same prototype and element; a in Å, c/a, x) is rejected."""

SCALE_RANGE: tuple[float, float] = (0.9, 1.1)
"""Random factor on the element's nearest-neighbour distance."""


def default_elements() -> tuple[str, ...]:
    """The 83 chemical symbols used by default: Z = 1..94 minus ``EXCLUDED_ELEMENTS``."""
    from ase.data import chemical_symbols

    return tuple(s for s in chemical_symbols[1:95] if s not in EXCLUDED_ELEMENTS)


CLASS_PROTOTYPES: dict[str, tuple[str, ...]] = {
    c: tuple(n for n, p in PROTOTYPES.items() if p.cls == c) for c in CLASSES
}
"""The parametrised families (``prototypes.PROTOTYPES``) of each class."""

MIN_PRIMITIVE_CELLS = 32
"""A ~``target``-atom cluster must hold at least this many primitive cells (about three periods along each
axis) for its Bragg peaks to stand out of the finite-size background.  Measured on the data set's
fingerprints (docs/DATASET.md): the median pixel of the clathrate (7 cells in 250 atoms) and alpha-B (21 cells)
is 5-10x that of every other source (>= 42 cells) and as high as a 60 %-vacancy fcc crystal's, and training on
them taught the pristine-only model that a diffuse pattern means "diam" or "hex/rh"."""

_CENTRING = {"P": 1, "R": 1, "I": 2, "C": 2, "A": 2, "B": 2, "F": 4}


def primitive_cells_in_cluster(pearson: str, target: int = 250) -> float:
    """Primitive cells in a ``target``-atom cluster of a prototype with Pearson symbol ``pearson`` (e.g. 'cF136':
    136 atoms per F-centred conventional cell, 34 per primitive one; hR counts the rhombohedral cell)."""
    m = re.fullmatch(r"[amothc]([PRICABF])(\d+)", pearson)
    if m is None:
        raise ValueError(f"not a Pearson symbol: {pearson!r}")
    return target / (int(m.group(2)) / _CENTRING[m.group(1)])


def _library_excluded(target: int = 250) -> dict[str, str]:
    out = {}
    for e in _library.in_class_entries():
        cells = primitive_cells_in_cluster(e.pearson, target)
        if cells < MIN_PRIMITIVE_CELLS:
            out[e.name] = (f"{e.mineral or e.label}: a {target}-atom cluster holds {cells:.1f} primitive cells "
                           f"(< {MIN_PRIMITIVE_CELLS}), too few periods for its pattern to show the lattice")
    return out


LIBRARY_EXCLUDED: dict[str, str] = _library_excluded()
"""In-class library entries left out of the data set (fewer than MIN_PRIMITIVE_CELLS primitive cells in a
250-atom cluster: beta-B, the Si clathrate, alpha-B), with the reason."""

FAMILY_WEIGHT, LIBRARY_WEIGHT = 2, 1
"""Relative share of a class's quota for a parametrised family and for a library prototype."""


def _family_covers(entry) -> bool:
    """True when a parametrised family of ``entry``'s label already samples the entry's axial ratio (or the
    family has no free parameter), so the library entry adds nothing."""
    fam = PROTOTYPES.get(entry.label)
    if fam is None:
        return False
    c_over_a = float(np.linalg.norm(entry.cell[2]) / np.linalg.norm(entry.cell[0]))
    if "alpha" in fam.ranges:
        lo, hi = fam.ranges["alpha"]
        return lo <= _proto.hr_alpha(c_over_a) <= hi
    if "c/a" in fam.ranges:
        lo, hi = fam.ranges["c/a"]
        return lo <= c_over_a <= hi
    return True


@functools.lru_cache(maxsize=1)
def library_sources() -> tuple[str, ...]:
    """Names of the in-class AFLOW library entries sampled besides the families (graphite, lonsdaleite,
    beta-O, rhombohedral graphite, alpha-B, the clathrate, the tI8 and BCT5 tetragonal ones, ...)."""
    return tuple(e.name for e in _library.in_class_entries()
                 if e.name not in LIBRARY_EXCLUDED and not _family_covers(e))


def sources() -> dict[str, tuple[str, int]]:
    """Every prototype the data set draws from: name -> (class, quota weight); families first."""
    out = {n: (p.cls, FAMILY_WEIGHT) for n, p in PROTOTYPES.items()}
    for name in library_sources():
        out[name] = (_library.get_entry(name).cls, LIBRARY_WEIGHT)
    return out


# --------------------------------------------------------------------------------------------
# The data set container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A generated data set of N structures.

    structures: ``Structure`` with numpy arrays and leading axis N: positions (N, n_max, 3) float32
                (Å, unit mean nearest-neighbour distance), numbers (N, n_max) int32, mask (N, n_max)
                float32, tags (N, n_max) int32 (1 = bcc body centre), nn_distance (N,) float32 (Å).
    labels:     (N,) int32 index into ``CLASSES``.
    split:      (N,) str, "train" / "val" / "test".
    meta:       per-structure arrays: element (N,) int32 Z, symbol (N,) str, prototype (N,) str,
                spacegroup (N,) int32, params (N, 3) float64 with columns ``PARAM_COLUMNS``.
    cells:      the conventional periodic cells: cell (N, 3, 3) Å (rows = vectors), frac (N, m, 3)
                fractional positions padded with 0, numbers (N, m) int32 (0 = padding), tags (N, m)
                int32, n_atoms (N,) int32.
    info:       global facts: seed, config, classes, generation statistics (JSON-serialisable).
    """

    structures: Structure
    labels: np.ndarray
    split: np.ndarray
    meta: dict[str, np.ndarray]
    cells: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def n_max(self) -> int:
        return int(np.asarray(self.structures.positions).shape[-2])

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    def subset(self, mask_or_indices) -> "Dataset":
        return subset(self, mask_or_indices)

    def to_atoms(self, i: int):
        return to_atoms(self, i)


def mask_or_none(idx, n: int) -> np.ndarray:
    """Integer indices from a boolean mask of length n or from indices."""
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"boolean mask has shape {arr.shape}, expected ({n},)")
        return np.flatnonzero(arr)
    arr = arr.astype(np.int64).reshape(-1)
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise IndexError(f"index out of range for a data set of {n} structures")
    return arr


def subset(ds: Dataset, mask_or_indices) -> Dataset:
    """The structures of ``ds`` picked by a boolean mask (N,) or an index array, in that order."""
    idx = mask_or_none(mask_or_indices, len(ds))
    return Dataset(
        structures=Structure(*(np.asarray(x)[idx] for x in ds.structures)),
        labels=np.asarray(ds.labels)[idx],
        split=np.asarray(ds.split)[idx],
        meta={k: np.asarray(v)[idx] for k, v in ds.meta.items()},
        cells={k: np.asarray(v)[idx] for k, v in ds.cells.items()},
        info=dict(ds.info),
    )


def to_atoms(ds: Dataset, i: int):
    """The conventional periodic cell of structure ``i`` as ``ase.Atoms`` (tags kept), e.g. for spglib."""
    from ase import Atoms

    i = int(i)
    n = int(ds.cells["n_atoms"][i])
    atoms = Atoms(
        numbers=np.asarray(ds.cells["numbers"][i, :n]),
        scaled_positions=np.asarray(ds.cells["frac"][i, :n], dtype=np.float64),
        cell=np.asarray(ds.cells["cell"][i], dtype=np.float64),
        pbc=True,
        tags=np.asarray(ds.cells["tags"][i, :n]),
    )
    atoms.info.update(
        prototype=str(ds.meta["prototype"][i]),
        spacegroup=int(ds.meta["spacegroup"][i]),
        label=int(ds.labels[i]),
        split=str(ds.split[i]),
    )
    return atoms


# --------------------------------------------------------------------------------------------
# Sampling conventional cells
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One accepted conventional cell (host side, before the cluster is built)."""

    prototype: str
    element: int
    a: float
    params: Mapping[str, float]
    cell: np.ndarray
    frac: np.ndarray
    tags: np.ndarray
    spacegroup: int
    label: int

    def atoms(self):
        from ase import Atoms

        atoms = Atoms(numbers=[self.element] * len(self.frac), scaled_positions=self.frac,
                      cell=self.cell, pbc=True)
        atoms.set_tags(self.tags)
        return atoms


def symprecs_for(spacegroup: int) -> tuple[float, ...]:
    """The tolerances at which a structure of this intended space group must be recognised."""
    return SYMPRECS_HEX if spacegroup in (166, 194) else SYMPRECS


def check_spacegroup(cell, frac, numbers, intended: int) -> str | None:
    """None if spglib gives ``intended`` at every tolerance of ``symprecs_for``; else the reason."""
    for s in symprecs_for(intended):
        got = spacegroup_number(cell, frac, numbers, s)
        if got != intended:
            return f"spglib: space group {got} at symprec {s:g}"
    return None


def matches_reference(prototype: str, element: int, a: float, params: Mapping[str, float],
                      tol: float = REFERENCE_TOLERANCE) -> bool:
    """True if (prototype, element, a, params) is within ``tol`` of an AFLOW library example."""
    for name, sym, a_ref, p_ref in REFERENCES:
        if name != prototype or _proto.atomic_number(sym) != int(element):
            continue
        if abs(float(a) - a_ref) < tol and all(abs(float(params[k]) - v) < tol for k, v in p_ref.items()):
            return True
    return False


def _sample_params(proto, rng: np.random.Generator) -> dict[str, float]:
    params: dict[str, float] = {}
    for key in ("alpha",) + _proto.PARAM_NAMES:  # fixed order -> same random stream everywhere
        if key not in proto.ranges:
            continue
        lo, hi = proto.ranges[key]
        value = float(rng.uniform(lo, hi))
        if key == "alpha":
            params["c/a"] = _proto.hr_c_over_a(value)
        else:
            params[key] = value
    return params


def draw_candidate(name: str, element: int, rng: np.random.Generator) -> tuple[Record | None, str | None]:
    """Draw one candidate of prototype ``name`` for ``element`` (no spglib check yet).

    Returns (record, None), or (None, reason) when the parameters fall in a window where the prototype
    gains symmetry or the structure is an AFLOW library example.
    """
    if name not in PROTOTYPES:
        return _draw_library(name, element, rng), None
    proto = PROTOTYPES[name]
    params = _sample_params(proto, rng)
    factor = float(rng.uniform(*SCALE_RANGE))
    for window in proto.windows:
        if window.contains(params):
            return None, window.reason
    full = {**proto.defaults, **params}
    cell1, frac, tags = _proto.cell_and_positions(name, 1.0, full)
    a = _proto.nn_distance(element) * factor / _proto._min_distance_cell(cell1, frac)
    if matches_reference(name, element, a, full):
        return None, "AFLOW library example structure"
    cell, frac, tags = _proto.cell_and_positions(name, a, full)
    return Record(name, int(element), float(a), full, cell, frac, tags, proto.spacegroup, proto.label), None


def _draw_library(name: str, element: int, rng: np.random.Generator) -> Record:
    """A member of library prototype ``name`` (``aflow_library.perturbed_cell``) scaled to ``element``'s
    nearest-neighbour distance times U(SCALE_RANGE)."""
    entry = _library.get_entry(name)
    cell, frac = _library.perturbed_cell(entry, rng)
    factor = float(rng.uniform(*SCALE_RANGE))
    cell = cell * (_proto.nn_distance(element) * factor / _proto._min_distance_cell(cell, frac))
    a = float(np.linalg.norm(cell[0]))
    params = {} if entry.spacegroup >= 195 else {"c/a": float(np.linalg.norm(cell[2])) / a}
    return Record(name, int(element), a, params, cell, frac, np.zeros(len(frac), np.int32), entry.spacegroup,
                  CLASSES.index(entry.cls))


def sample_candidate(name: str, element: int, rng: np.random.Generator) -> tuple[Record | None, str | None]:
    """``draw_candidate`` followed by the spglib check; (record, None) or (None, reason)."""
    rec, reason = draw_candidate(name, element, rng)
    if rec is None:
        return None, reason
    reason = check_record(rec)
    return (rec, None) if reason is None else (None, reason)


def check_record(rec: Record) -> str | None:
    """The paper's label rule on a record: None if spglib agrees at every tolerance, else the reason."""
    return check_spacegroup(rec.cell, rec.frac, np.full(len(rec.frac), rec.element), rec.spacegroup)


def _quotas(per_class: int, rng: np.random.Generator) -> dict[str, int]:
    """Structures per prototype so each class gets ``per_class`` (remainders to random prototypes)."""
    out: dict[str, int] = {}
    table = sources()
    for c in CLASSES:
        names = [n for n, (cls, _) in table.items() if cls == c]
        weights = np.array([table[n][1] for n in names], float)
        raw = int(per_class) * weights / weights.sum()
        counts = np.floor(raw + 1e-9).astype(int)
        # the remainder goes to random prototypes, one each, in a random order
        for j in rng.permutation(len(names))[: int(per_class) - int(counts.sum())]:
            counts[j] += 1
        out.update({n: int(k) for n, k in zip(names, counts)})
    return out


def _element_slots(elements: Sequence[int], q: int, rng: np.random.Generator) -> list[int]:
    slots: list[int] = []
    while len(slots) < q:
        slots.extend(int(e) for e in rng.permutation(np.asarray(elements)))
    return slots[:q]


class _Sampler:
    """Per-prototype random streams; draws candidates for element slots, counting rejections."""

    max_tries = 1000

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.rngs = {n: np.random.default_rng([self.seed, 1, k]) for k, n in enumerate(sources())}
        self.attempts: Counter = Counter()
        self.rejected: dict[str, Counter] = defaultdict(Counter)

    def draw(self, name: str, element: int) -> Record:
        """A candidate outside the symmetry windows and away from the AFLOW examples (spglib not run)."""
        rng = self.rngs[name]
        for _ in range(self.max_tries):
            self.attempts[name] += 1
            rec, reason = draw_candidate(name, element, rng)
            if rec is not None:
                return rec
            self.rejected[name][reason] += 1
        raise RuntimeError(f"no acceptable {name} structure for Z={element} in {self.max_tries} tries")

    def reject(self, rec: Record, reason: str) -> Record:
        """Count ``rec`` as rejected for ``reason`` and draw its replacement (same prototype and element)."""
        self.rejected[rec.prototype][reason] += 1
        return self.draw(rec.prototype, rec.element)

    def stats(self, quotas) -> dict:
        return {
            "quota": {n: int(quotas.get(n, 0)) for n in sources()},
            "attempts": {n: int(self.attempts[n]) for n in sources()},
            "rejected": {n: dict(sorted(self.rejected[n].items())) for n in sources()},
        }


def _slots(seed: int, per_class: int, zs: Sequence[int]) -> tuple[list[tuple[str, int]], dict]:
    quotas = _quotas(per_class, np.random.default_rng([int(seed), 0]))
    slots: list[tuple[str, int]] = []
    for k, name in enumerate(sources()):
        rng = np.random.default_rng([int(seed), 2, k])
        slots.extend((name, z) for z in _element_slots(zs, quotas[name], rng))
    return slots, quotas


def _resolve_elements(elements) -> list[int]:
    if elements is None:
        elements = default_elements()
    if isinstance(elements, (str, int, np.integer)):
        elements = [elements]
    zs = [_proto.atomic_number(e) for e in elements]
    if not zs:
        raise ValueError("empty element list")
    return sorted(set(zs))


# --------------------------------------------------------------------------------------------
# Checking and cluster building (parallel, deterministic)
# --------------------------------------------------------------------------------------------


#: How a crystal is written before its cluster is built, with probabilities.  The symmetry-free
#: standard cell depends on the lattice of the input cell (conventional, primitive or a supercell),
#: which changes the orientation of the cluster and so the fingerprint; finite fragments are
#: oriented from an estimated lattice (crystaljax.structures.lattice).  Real files come in all these forms,
#: so the training data must too.
REPRESENTATIONS = (("conventional", 0.35), ("primitive", 0.3), ("supercell", 0.2), ("finite", 0.15))


def _representation(i: int, rec: Record) -> tuple[str, np.random.Generator]:
    """Deterministic representation choice for slot ``i`` holding ``rec`` (independent of workers)."""
    rng = np.random.default_rng([int(i), int(rec.element), int(round(rec.a * 1e6)) % (2**31)])
    names, probs = zip(*REPRESENTATIONS)
    return str(rng.choice(names, p=probs)), rng


def _random_supercell_matrix(rng: np.random.Generator) -> np.ndarray:
    """An integer 3x3 matrix with determinant 2..4 and at least one off-diagonal entry (a new lattice basis)."""
    while True:
        m = np.eye(3, dtype=int) + rng.integers(-1, 2, size=(3, 3)) * (rng.random((3, 3)) < 0.35)
        det = round(abs(np.linalg.det(m)))
        if 2 <= det <= 4 and np.count_nonzero(m - np.diag(np.diag(m))):
            return m


def cell_variant(atoms, representation: str, rng: np.random.Generator):
    """The same crystal written as its ``conventional`` cell, its ``primitive`` cell (spglib, dataset
    side only), a random non-diagonal ``supercell`` (determinant 2..4) or a ``finite`` ball of
    200-600 atoms in a random orientation (non-periodic: the pipeline estimates its lattice)."""
    from ase import Atoms
    from ase.build import make_supercell

    if representation == "conventional":
        return atoms
    if representation == "primitive":
        lattice, frac, numbers = find_primitive(atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers, 1e-5)
        return Atoms(numbers=numbers, scaled_positions=frac, cell=lattice, pbc=True)
    if representation == "supercell":
        return make_supercell(atoms, _random_supercell_matrix(rng))
    if representation == "finite":
        from crystaljax.structures.cell import random_rotation
        from crystaljax.structures.cluster import sphere_cut

        ball, _ = sphere_cut(atoms, int(rng.integers(200, 600)))
        ball = Atoms(numbers=ball.numbers, positions=ball.positions @ random_rotation(rng).T,
                     tags=ball.get_tags(), pbc=False)
        return ball
    raise ValueError(f"unknown cell representation {representation!r}")


def _job(args) -> tuple[int, Structure | None, str | None]:
    """Worker: spglib label check, then (if target) the cluster; (i, structure or None, reason or None)."""
    i, rec, target = args
    reason = check_record(rec)
    if reason is not None or target is None:
        return i, None, reason
    from crystaljax.structures import cluster

    try:
        atoms = cluster.prepare(cell_variant(rec.atoms(), *_representation(i, rec)), target=target)
        return i, from_ase(atoms), None
    except Exception as err:  # noqa: BLE001 -- counted as a rejection and resampled
        msg = f"cluster: {type(err).__name__}: {err}"
        return i, None, msg if len(msg) <= 120 else msg[:117] + "..."


def _run_jobs(jobs: list, workers: int, bar) -> list:
    out: list = [None] * len(jobs)
    if workers > 1 and len(jobs) >= 200:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # jax is multithreaded: never fork a process that imported it
        with ctx.Pool(workers) as pool:
            for k, (i, s, err) in enumerate(pool.imap(_job, jobs, chunksize=16)):
                out[k] = (s, err)
                if bar is not None:
                    bar.update(1)
    else:
        for k, job in enumerate(jobs):
            _, s, err = _job(job)
            out[k] = (s, err)
            if bar is not None:
                bar.update(1)
    return out


def _accept(sampler: _Sampler, slots, target: int | None, workers: int, progress: bool):
    """Draw a record per slot; check (and cluster) them; redraw rejected slots until all pass.

    Deterministic: draws happen in slot order, round after round, independent of the worker count.
    """
    records = [sampler.draw(name, z) for name, z in slots]
    clusters: list[Structure | None] = [None] * len(records)
    todo = list(range(len(records)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(records), desc="spglib + clusters" if target else "spglib", unit="struct")
    rounds = 0
    while todo:
        rounds += 1
        if rounds > 50:
            raise RuntimeError(f"{len(todo)} structures keep failing; rejections: {sampler.stats({})}")
        results = _run_jobs([(i, records[i], target) for i in todo], workers, bar)
        failed = []
        for i, (s, err) in zip(todo, results):
            if err is not None:
                records[i] = sampler.reject(records[i], err)
                failed.append(i)
            else:
                clusters[i] = s
        if bar is not None and failed:
            bar.total += len(failed)
            bar.refresh()
        todo = failed
    if bar is not None:
        bar.close()
    return records, clusters


def sample_cells(seed: int = 0, per_class: int = 1400, elements=None, *, workers: int = 1,
                 progress: bool = False) -> tuple[list[Record], dict]:
    """The accepted conventional cells of ``generate`` (same draws, no clusters); (records, stats)."""
    zs = _resolve_elements(elements)
    sampler = _Sampler(seed)
    slots, quotas = _slots(seed, per_class, zs)
    records, _ = _accept(sampler, slots, None, workers, progress)
    return records, sampler.stats(quotas)


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------

SPLIT_NAMES = ("train", "val", "test")


def _normalise_splits(splits) -> tuple[float, float, float]:
    s = [float(x) for x in splits]
    if len(s) == 2:  # (train, test), as the paper's stratified 90/10
        s = [s[0], 0.0, s[1]]
    if len(s) != 3 or any(x < 0 for x in s) or sum(s) <= 0:
        raise ValueError(f"splits must be 2 or 3 non-negative fractions (train, [val,] test), got {splits}")
    total = sum(s)
    return tuple(x / total for x in s)  # type: ignore[return-value]


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of n * fractions (sums to n)."""
    raw = [n * f for f in fractions]
    counts = [int(math.floor(r + 1e-9)) for r in raw]
    order = sorted(range(len(raw)), key=lambda j: (-(raw[j] - counts[j]), j))
    for j in order[: n - sum(counts)]:
        counts[j] += 1
    return counts


def stratified_split(labels: np.ndarray, splits=(0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """(N,) array of "train"/"val"/"test", the same proportions within every class."""
    fr = _normalise_splits(splits)
    labels = np.asarray(labels)
    out = np.empty(len(labels), dtype="<U5")
    rng = np.random.default_rng([int(seed), 3])
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for name, k in zip(SPLIT_NAMES, _split_counts(len(idx), fr)):
            out[idx[start:start + k]] = name
            start += k
    return out


def element_split(labels: np.ndarray, elements: np.ndarray, held_out: float = 0.2, splits=(0.8, 0.1, 0.1),
                  seed: int = 0) -> tuple[np.ndarray, tuple[int, ...]]:
    """A split that measures generalisation to unseen chemistry: ``(split (N,), held-out Z)``.

    A random ``held_out`` fraction of the distinct elements (at least one) is chosen; every structure of
    those elements is "test".  The other structures are split train / val in the proportions of the first
    two ``splits`` fractions, stratified per class.  Each test item then differs from every training item
    in its element (form factor, and the element's lattice parameters).
    """
    if not 0.0 < float(held_out) < 1.0:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    labels, elements = np.asarray(labels), np.asarray(elements)
    zs = np.unique(elements)
    rng = np.random.default_rng([int(seed), 5])
    n_out = max(1, int(round(float(held_out) * len(zs))))
    out_z = np.sort(rng.choice(zs, size=n_out, replace=False))
    test = np.isin(elements, out_z)
    fr = _normalise_splits(splits)
    rest = np.flatnonzero(~test)
    inner = stratified_split(labels[rest], (fr[0], fr[1], 0.0), seed)
    split = np.full(len(labels), "test", dtype="<U5")
    split[rest] = inner
    return split, tuple(int(z) for z in out_z)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def generate(seed: int = 0, per_class: int = 1400, elements=None, target: int = 250,
             splits=(0.8, 0.1, 0.1), progress: bool = True, *, workers: int | None = None) -> Dataset:
    """Generate a balanced, spglib-checked elemental data set with prebuilt clusters.

    seed:      everything (parameters, elements, split, order) follows from it; the worker count
               does not change the result.
    per_class: structures per class (hex/rh is shared by its five prototypes).
    elements:  chemical symbols or numbers; None = ``default_elements()`` (83 species).
    target:    cluster size passed to ``crystaljax.structures.cluster.prepare``.
    splits:    (train, val, test) fractions, or (train, test); drawn per class.
    workers:   processes for the spglib checks and cluster building (default min(2, CPUs)).
    """
    t0 = time.perf_counter()
    per_class = int(per_class)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    zs = _resolve_elements(elements)
    fractions = _normalise_splits(splits)
    if workers is None:
        workers = max(1, min(2, os.cpu_count() or 1))
    sampler = _Sampler(seed)
    slots, quotas = _slots(seed, per_class, zs)
    records, clusters = _accept(sampler, slots, int(target), int(workers), progress)
    t_built = time.perf_counter() - t0

    order = np.random.default_rng([int(seed), 4]).permutation(len(records))
    representation = np.array([_representation(int(i), records[i])[0] for i in order])
    records = [records[i] for i in order]
    clusters = [clusters[i] for i in order]
    sizes = [int(np.asarray(s.mask).sum()) for s in clusters]
    n_max = pad_to(max(sizes), 16)
    structures = Structure(*(np.asarray(x) for x in stack(clusters, n_max=n_max)))
    labels = np.array([r.label for r in records], np.int32)
    split = stratified_split(labels, fractions, seed)
    meta, cells = _tables(records)
    meta["representation"] = representation
    info = {
        "name": "aflow_like",
        "seed": int(seed),
        "per_class": per_class,
        "target": int(target),
        "splits": list(fractions),
        "elements": [_symbol(z) for z in zs],
        "classes": list(CLASSES),
        "param_columns": list(PARAM_COLUMNS),
        "symprecs": list(SYMPRECS),
        "symprecs_hex": list(SYMPRECS_HEX),
        "n_max": int(n_max),
        "representations": {str(k): int(v) for k, v in zip(*np.unique(representation, return_counts=True))},
        "cluster_atoms": {"min": int(min(sizes)), "max": int(max(sizes)), "mean": round(float(np.mean(sizes)), 2)},
        "sampling": sampler.stats(quotas),
        "hex_rh_missed_at_1e-9": _missed_at_1e9(records),
        "seconds": {"cells_and_clusters": round(t_built, 2), "total": round(time.perf_counter() - t0, 2)},
        "workers": int(workers),
    }
    return Dataset(structures=structures, labels=labels, split=split, meta=meta, cells=cells, info=info)


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)]


def _missed_at_1e9(records: Sequence[Record]) -> int:
    """hex/rh structures spglib would NOT give their space group at 1e-9 (why the paper skips it)."""
    n = 0
    for r in records:
        if r.spacegroup in (166, 194):
            numbers = np.full(len(r.frac), r.element)
            if spacegroup_number(r.cell, r.frac, numbers, 1e-9) != r.spacegroup:
                n += 1
    return n


def _tables(records: Sequence[Record]) -> tuple[dict, dict]:
    n = len(records)
    m = max(len(r.frac) for r in records)
    params = np.full((n, len(PARAM_COLUMNS)), np.nan)
    cell = np.zeros((n, 3, 3))
    frac = np.zeros((n, m, 3))
    numbers = np.zeros((n, m), np.int32)
    tags = np.zeros((n, m), np.int32)
    n_atoms = np.zeros(n, np.int32)
    for i, r in enumerate(records):
        params[i, 0] = r.a
        for j, key in enumerate(PARAM_COLUMNS[1:], start=1):
            if key in r.params:
                params[i, j] = r.params[key]
        k = len(r.frac)
        cell[i], frac[i, :k], numbers[i, :k], tags[i, :k], n_atoms[i] = r.cell, r.frac, r.element, r.tags, k
    meta = {
        "element": np.array([r.element for r in records], np.int32),
        "symbol": np.array([_symbol(r.element) for r in records]),
        "prototype": np.array([r.prototype for r in records]),
        "spacegroup": np.array([r.spacegroup for r in records], np.int32),
        "params": params,
    }
    cells = {"cell": cell, "frac": frac, "numbers": numbers, "tags": tags, "n_atoms": n_atoms}
    return meta, cells


def tiny(seed: int = 0, per_class: int = 4) -> Dataset:
    """A small data set generated on the fly (seconds), for tests: serial, no progress bar."""
    return generate(seed=seed, per_class=per_class, progress=False, workers=1)


# --------------------------------------------------------------------------------------------
# Summary, save, load
# --------------------------------------------------------------------------------------------


def summary(ds: Dataset) -> dict:
    """JSON-serialisable counts: per class, per prototype, per split x class, elements, rejections."""
    labels = np.asarray(ds.labels)
    split = np.asarray(ds.split)
    proto = np.asarray(ds.meta["prototype"])
    sampling = ds.info.get("sampling", {})
    out = {
        "n_structures": len(ds),
        "n_max": ds.n_max,
        "per_class": {c: int((labels == k).sum()) for k, c in enumerate(CLASSES)},
        "per_prototype": {n: int((proto == n).sum()) for n in sources()},
        "per_split": {s: {c: int(((split == s) & (labels == k)).sum()) for k, c in enumerate(CLASSES)}
                      for s in SPLIT_NAMES},
        "elements": sorted({str(s) for s in np.asarray(ds.meta["symbol"])},
                           key=lambda s: _proto.atomic_number(s)),
        "n_elements": int(len(set(np.asarray(ds.meta["element"]).tolist()))),
        "attempts": sampling.get("attempts", {}),
        "rejected": sampling.get("rejected", {}),
        "rejected_total": int(sum(sum(v.values()) for v in sampling.get("rejected", {}).values())),
    }
    for key in ("seed", "per_class", "target", "splits", "cluster_atoms", "hex_rh_missed_at_1e-9",
                "seconds", "workers", "command", "config"):
        if key in ds.info:
            out.setdefault("info", {})[key] = ds.info[key]
    return out


def summary_path(path) -> Path:
    """Where ``save`` writes the JSON summary next to ``path`` (x.npz -> x.json)."""
    path = Path(path)
    return path.with_suffix(".json")


def save(ds: Dataset, path) -> Path:
    """Write ``ds`` to one compressed ``.npz`` at ``path`` plus a JSON summary (``summary_path``)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for name, value in zip(Structure._fields, ds.structures):
        arrays[f"structures.{name}"] = np.asarray(value)
    arrays["labels"] = np.asarray(ds.labels, np.int32)
    arrays["split"] = np.asarray(ds.split).astype("<U5")
    for k, v in ds.meta.items():
        v = np.asarray(v)
        arrays[f"meta.{k}"] = v.astype(str) if v.dtype.kind in "OU" else v
    for k, v in ds.cells.items():
        arrays[f"cells.{k}"] = np.asarray(v)
    arrays["info"] = np.array(json.dumps(ds.info, default=json_default))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    summary_path(path).write_text(json.dumps(summary(ds), indent=2, default=json_default) + "\n")
    return path


def load(path) -> Dataset:
    """Read a data set written by ``save``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no data set at {path}; generate one with experiments/make_dataset.py")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    structures = Structure(*(data[f"structures.{f}"] for f in Structure._fields))
    meta = {k.split(".", 1)[1]: v for k, v in data.items() if k.startswith("meta.")}
    cells = {k.split(".", 1)[1]: v for k, v in data.items() if k.startswith("cells.")}
    info = json.loads(str(data["info"])) if "info" in data else {}
    return Dataset(structures=structures, labels=data["labels"].astype(np.int32), split=data["split"],
                   meta=meta, cells=cells, info=info)


__all__ = [
    "CLASSES", "CLASS_PROTOTYPES", "LIBRARY_EXCLUDED", "library_sources", "sources", "PARAM_COLUMNS", "SYMPRECS",
    "SYMPRECS_HEX", "EXCLUDED_ELEMENTS",
    "Dataset", "DataConfig", "Record", "generate", "tiny", "save", "load", "subset", "to_atoms",
    "summary", "summary_path", "sample_cells", "sample_candidate", "stratified_split",
    "check_spacegroup", "spacegroup_number", "matches_reference", "default_elements",
]
