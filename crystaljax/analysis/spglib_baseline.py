"""spglib under the same defects as the ConvNet (Table 1's baseline), with binomial intervals.

The defect of a sweep level, with the same key, level and substituting species, is applied by the
same device functions (``defect_sweeps.defect_batch``) to a PERIODIC supercell of the structure's
conventional cell, replicated to ~``target`` atoms by the cluster's replication rule (positions in
physical Å, so a displacement sigma is physical Å there too).  ``spglib.get_symmetry_dataset`` runs
at each ``symprec`` (Å); a structure is correct when the returned space group equals the parent's
(``ds.meta['spacegroup']``).  Space-group TYPES are compared, so a defect pattern that keeps the
supercell's full point symmetry would count as correct (rare with >= 2 random defects).  spglib
needs 0.03-0.7 s per ~250-atom supercell, so the spglib set is usually a stratified subset of the
ConvNet's and runs in worker processes while the ConvNet sweep runs.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crystaljax.analysis.defect_sweeps import (
    SYMPRECS,
    defect_batch,
    element_pool,
    level_key,
    level_value,
    select_indices,
    substitution_elements,
)
from crystaljax.structure import Structure, from_arrays, pad_to
from crystaljax.structures.dataset import CLASSES, Dataset, to_atoms


def binomial_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (lo, hi) of a success fraction k / n; (0, 1) for n = 0."""
    from scipy.stats import norm

    if n <= 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else lo), (1.0 if k == n else hi)


@dataclass(frozen=True)
class Supercells:
    """Periodic supercells of conventional cells, as a batched Structure for the defect functions.

    structures: positions (N, n_max, 3) float32 in PHYSICAL Å (nn_distance = 1, so a displacement
                sigma acts in physical Å), numbers, mask, tags.
    positions:  (N, n_max, 3) float64 physical Å (the exact pristine positions).
    lattice:    (N, 3, 3) float64 Å, rows = supercell vectors.
    spacegroup: (N,) int parent space group.  indices: (N,) data-set indices.  reps: (N, 3).
    """

    structures: Structure
    positions: np.ndarray
    lattice: np.ndarray
    spacegroup: np.ndarray
    indices: np.ndarray
    reps: np.ndarray


def build_supercells(ds: Dataset, indices, target: int = 250) -> Supercells:
    """Replicate each conventional cell (``dataset.to_atoms``) to ~``target`` atoms (the cluster's
    replication rule, ``cluster.replication``) and pad into one batch."""
    from crystaljax.structures.cluster import replication

    indices = np.asarray(indices, np.int64).reshape(-1)
    cells, reps_all = [], []
    for i in indices:
        atoms = to_atoms(ds, int(i))
        reps = replication(len(atoms), atoms.cell.array, target)
        big = atoms.repeat(reps)
        cells.append((big.cell.array.copy(), big.get_positions(), big.numbers.copy(), big.get_tags().copy()))
        reps_all.append(reps)
    n_max = pad_to(max(len(c[1]) for c in cells))
    pos64 = np.zeros((len(cells), n_max, 3))
    rows = []
    for k, (lat, pos, num, tag) in enumerate(cells):
        pos64[k, : len(pos)] = pos
        rows.append(from_arrays(pos, num, n_max=n_max, tags=tag, nn_distance=1.0))
    batch = Structure(*(np.stack([np.asarray(getattr(r, f)) for r in rows]) for f in Structure._fields))
    return Supercells(batch, pos64, np.stack([c[0] for c in cells]),
                      np.asarray(ds.meta["spacegroup"])[indices].astype(int), indices, np.asarray(reps_all))


def defective_cells(sc: Supercells, kind: str, level, seed: int, elements=None) -> list[tuple]:
    """The defective supercells as spglib cells ``(lattice Å, fractional positions, numbers)``.

    The defect is drawn on device with the sweep's keys; positions are rebuilt in float64 as the
    exact pristine positions plus the device displacement (so vacancies/substitutions keep exact
    coordinates and only a displacement moves atoms).
    """
    value, _ = level_value(kind, level)
    if value == 0.0:
        out_pos, mask, numbers = sc.positions, np.asarray(sc.structures.mask), np.asarray(sc.structures.numbers)
    else:
        d = defect_batch(sc.structures, kind, level, seed, sc.indices, elements=elements)
        out_pos = sc.positions + (np.asarray(d.positions, np.float64) - np.asarray(sc.structures.positions, np.float64))
        mask, numbers = d.mask, d.numbers
    cells = []
    for k in range(len(sc.indices)):
        keep = np.asarray(mask[k]) > 0.5
        lat = sc.lattice[k]
        frac = np.linalg.solve(lat.T, out_pos[k][keep].T).T
        cells.append((lat, frac, np.asarray(numbers[k])[keep].astype(int)))
    return cells


def spacegroups(cell: tuple, symprecs: Sequence[float]) -> tuple:
    """spglib space-group numbers of one cell at each symprec (Å); None where spglib fails.

    spglib's C warnings (e.g. "Primitive lattice cleaning is incomplete", frequent for defective
    cells) are silenced unless ``SPGLIB_WARNING`` is set in the environment.
    """
    from crystaljax.structures.dataset import spacegroup_number

    os.environ.setdefault("SPGLIB_WARNING", "OFF")

    lat, frac, numbers = cell
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # spglib 2.x's error-handling notice
        return tuple(spacegroup_number(lat, frac, numbers, float(s)) for s in symprecs)


def _spacegroups_chunk(args) -> list:
    cells, symprecs = args
    return [spacegroups(c, symprecs) for c in cells]


class SpglibSweep:
    """spglib accuracy over defect levels, submitted up front, collected later (overlaps the ConvNet).

    ``SpglibSweep(ds, levels, seeds, symprecs, indices).submit(executor)`` draws every defective
    supercell (device, fast) and queues the spglib calls (in ``executor`` if given, e.g. a process
    pool, else inline at ``collect``); ``collect()`` returns
    ``{symprec_key: {"pristine": report, kind: {level_key: report}}}`` with report =
    ``{"accuracy", "per_seed", "per_class", "n", "spacegroups"}`` (most frequent returned groups).
    """

    def __init__(self, ds: Dataset, levels: Mapping[str, Sequence], seeds: Sequence[int],
                 symprecs: Sequence[float] = SYMPRECS, indices=None, *, target: int = 250,
                 elements_pool: Sequence[int] | None = None, pristine: bool = True, chunk: int = 8):
        self.ds = ds
        self.levels = {k: list(v) for k, v in levels.items()}
        self.seeds = [int(s) for s in seeds]
        self.symprecs = [float(s) for s in symprecs]
        self.indices = select_indices(ds) if indices is None else np.asarray(indices, np.int64)
        self.target = int(target)
        self.pool = element_pool(ds) if elements_pool is None else list(elements_pool)
        self.pristine = pristine
        self.chunk = int(chunk)
        self._jobs: list = []  # (kind, level, seed, futures or cells)
        self.seconds: dict[str, float] = {}

    def submit(self, executor=None) -> "SpglibSweep":
        t0 = time.perf_counter()
        sc = build_supercells(self.ds, self.indices, self.target)
        self.supercells = sc
        todo: list[tuple[str, Any, int]] = [("pristine", 0.0, 0)] if self.pristine else []
        for kind, lv in self.levels.items():
            for level in lv:
                todo.extend((kind, level, s) for s in self.seeds)
        for kind, level, seed in todo:
            if kind == "pristine":
                cells = defective_cells(sc, "displacement", 0.0, seed)
            else:
                elements = substitution_elements(self.ds, sc.indices, seed, self.pool) if kind == "substitution" else None
                cells = defective_cells(sc, kind, level, seed, elements)
            chunks = [cells[i:i + self.chunk] for i in range(0, len(cells), self.chunk)]
            if executor is not None:
                work = [executor.submit(_spacegroups_chunk, (c, self.symprecs)) for c in chunks]
            else:
                work = chunks
            self._jobs.append((kind, level, seed, work))
        self.seconds["supercells_and_defects"] = round(time.perf_counter() - t0, 2)
        return self

    @property
    def n_calls(self) -> int:
        return len(self._jobs) * len(self.indices) * len(self.symprecs)

    def collect(self, progress: bool = False) -> dict:
        if not self._jobs:
            self.submit(None)
        t0 = time.perf_counter()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self._jobs) * len(self.indices), desc="spglib", unit="cell")
        parent = self.supercells.spacegroup
        labels = np.asarray(self.ds.labels)[self.indices]
        found: dict[tuple, dict[int, np.ndarray]] = {}
        for kind, level, seed, work in self._jobs:
            rows: list = []
            for w in work:
                part = w.result() if hasattr(w, "result") else _spacegroups_chunk((w, self.symprecs))
                rows.extend(part)
                if bar is not None:
                    bar.update(len(part))
            key = ("pristine", "pristine") if kind == "pristine" else (kind, level_key(level))
            found.setdefault(key, {})[seed] = np.array([[(-1 if g is None else g) for g in r] for r in rows], int)
        if bar is not None:
            bar.close()
        out: dict[str, dict] = {}
        for j, sp in enumerate(self.symprecs):
            block: dict[str, Any] = {}
            for (kind, key), per_seed in found.items():
                groups = [per_seed[s][:, j] for s in sorted(per_seed)]
                correct = [g == parent for g in groups]
                allc = np.concatenate(correct)
                labs = np.concatenate([labels] * len(correct))
                per_class = {}
                for c, name in enumerate(CLASSES):
                    sel = labs == c
                    per_class[name] = float(allc[sel].mean()) if sel.any() else None
                values, counts = np.unique(np.concatenate(groups), return_counts=True)
                top = sorted(zip(counts.tolist(), values.tolist()), reverse=True)[:5]
                lo, hi = binomial_interval(int(allc.sum()), int(allc.size))
                rep = {"accuracy": float(allc.mean()), "interval_95": [lo, hi],
                       "per_seed": [float(c.mean()) for c in correct],
                       "per_class": per_class, "n": int(allc.size),
                       "spacegroups": {str(v): int(n) for n, v in top}}
                if kind == "pristine":
                    block["pristine"] = rep
                else:
                    block.setdefault(kind, {})[key] = rep
            out[str(sp)] = block
        self.seconds["spglib_wait"] = round(time.perf_counter() - t0, 2)
        return out


__all__ = ["binomial_interval", "Supercells", "build_supercells", "defective_cells", "spacegroups", "SpglibSweep"]
