"""Defect sweeps (the paper's Table 1), the spglib baseline and the structural transitions of Fig. 4.

ConvNet side (device, pure JAX).  The pristine clusters of the test split are made defective by one
jitted, vmapped function per defect kind with the level traced (so every level of a kind compiles
once), fingerprinted and classified; the accuracy is measured against the parent's label.

* ``displacement``: Gaussian displacement of every atom, sigma in PHYSICAL Å per Cartesian component.
* ``vacancies``:    exactly round(f n) atoms removed (mask 0), f a fraction of the present atoms.
* ``substitution``: exactly round(f n) atoms change species.  Levels are ``"binary_<f>"`` (one new
  species) or ``"ternary_<f>"`` (two, each substituted atom picks one uniformly).  The new species
  are drawn per structure and seed, deterministically, from the data set's element pool minus the
  host element (:func:`substitution_elements`).
* ``sublattice``:   exactly round(f n_tagged) atoms of tag 1 (bcc body centres) removed (Fig. 4a).

Every defect draw is keyed by ``(seed, kind, level, data-set index)`` (:func:`defect_keys`), so the
same structure receives the same random stream whatever subset or batch it is processed in.

spglib side (host).  The same defect, with the same key, level and substituting species, is applied
by the same JAX functions to a PERIODIC supercell of the structure's conventional cell, replicated
to ~``target`` atoms by the cluster's replication rule (positions in physical Å, so a displacement
sigma is physical Å there too).  ``spglib.get_symmetry_dataset`` is then run at each ``symprec``
(Å); a structure counts as correct when the returned space group equals the parent's
(``ds.meta['spacegroup']``; 166 or 194 for hex/rh).  The comparison is of space-group TYPES, so a
defect pattern that happens to keep the supercell's full point symmetry (e.g. a single vacancy in
an sc supercell is again Pm-3m, 221) would count as correct; with random draws of >= 2 defects
this is rare.  spglib needs 0.03-0.7 s per defective
~250-atom supercell, so the spglib set is usually a stratified subset (``n_per_class``) of the
ConvNet set and can run in worker processes while the ConvNet sweep runs.

Results follow the schema written to ``docs/results/table1.json`` by ``experiments/table1.py``:
``{"convnet": {"pristine": a, "displacement": {"0.06": a, ...}, "vacancies": {...},
"substitution": {"binary_0.25": a, ...}}, "convnet_augmented": {...}, "spglib": {"0.1": {...same
kinds...}, "0.01": ..., "0.001": ..., "1e-05": ...}, "n_structures": N, "seeds": [...]}``
(accuracies are fractions; level keys are ``str(float(level))``).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import jax
import jax.numpy as jnp

from crystaljax.physics import defects as _defects
from crystaljax.structures.dataset import CLASSES, Dataset, to_atoms
from crystaljax.learn.evaluate import save_figure
from crystaljax.structure import Structure, from_arrays, pad_to

PredictFn = Callable[[np.ndarray], np.ndarray]
"""images (B, H, W, 3) float32 -> class probabilities (B, len(CLASSES)) (e.g. a ``train.Predictor``)."""

KINDS: tuple[str, ...] = ("displacement", "vacancies", "substitution", "sublattice")
TABLE_KINDS: tuple[str, ...] = ("displacement", "vacancies", "substitution")
ALLOYS: dict[str, int] = {"binary": 1, "ternary": 2}
"""Substitution levels: alloy name -> number of new species."""

DISPLACEMENTS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1)
"""Default displacement sigmas, physical Å."""
VACANCIES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
"""Default vacancy fractions."""
SUBSTITUTIONS: tuple[str, ...] = tuple(f"{a}_{f}" for a in ALLOYS for f in (0.1, 0.25, 0.5))
"""Default substitution levels (alloy_fraction)."""
SYMPRECS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-5)
"""Default spglib tolerances, Å."""

_KIND_ID = {k: i + 1 for i, k in enumerate(KINDS)}
_PLACEHOLDERS = (95, 96)  # stand-in species for the substitution draw (never a data-set element)


# --------------------------------------------------------------------------------------------
# levels and keys


def level_key(level) -> str:
    """The JSON key of a level: ``str(float(level))`` ('0.06', '1e-05'), or 'binary_0.25' as given."""
    if isinstance(level, str):
        alloy, frac = parse_substitution(level)
        return f"{alloy}_{frac}"
    if isinstance(level, tuple):
        return f"{level[0]}_{float(level[1])}"
    return str(float(level))


def parse_substitution(level) -> tuple[str, float]:
    """``"binary_0.25"`` or ``("binary", 0.25)`` -> ``("binary", 0.25)``; ValueError otherwise."""
    if isinstance(level, (tuple, list)) and len(level) == 2:
        alloy, frac = str(level[0]), level[1]
    elif isinstance(level, str) and "_" in level:
        alloy, frac = level.rsplit("_", 1)
    else:
        raise ValueError(f"substitution level must be like 'binary_0.25' or 'ternary_0.1', got {level!r}")
    if alloy not in ALLOYS:
        raise ValueError(f"unknown alloy {alloy!r} in {level!r}; choose one of {sorted(ALLOYS)}")
    frac = float(frac)
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"substitution fraction must be in [0, 1), got {frac}")
    return alloy, frac


def _level_value(kind: str, level) -> tuple[float, int]:
    """(numeric level, number of new species) of a level of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; choose one of {KINDS}")
    if kind == "substitution":
        alloy, frac = parse_substitution(level)
        return frac, ALLOYS[alloy]
    value = float(level)
    if kind == "displacement" and not value >= 0.0:
        raise ValueError(f"displacement sigma must be >= 0 Å, got {level!r}")
    if kind != "displacement" and not 0.0 <= value <= 1.0:
        raise ValueError(f"{kind} fraction must be in [0, 1], got {level!r}")
    return value, 0


def defect_keys(seed: int, kind: str, level, indices) -> jax.Array:
    """Per-structure keys (N,) for ``(seed, kind, level, data-set index)``.

    The level enters as round(1e6 * value) (plus the alloy for substitutions), so adding levels to a
    sweep never changes the draws of the others, and a structure's key does not depend on the batch.
    """
    value, n_new = _level_value(kind, level)
    k = jax.random.fold_in(jax.random.key(int(seed)), _KIND_ID[kind])
    k = jax.random.fold_in(jax.random.fold_in(k, n_new), int(round(value * 1e6)))
    idx = jnp.asarray(np.asarray(indices, np.int64).reshape(-1), jnp.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(k, i))(idx)


def substitution_elements(ds: Dataset, indices, seed: int, pool: Sequence[int] | None = None) -> np.ndarray:
    """(N, 2) int32 substituting species per structure: two distinct elements of ``pool`` (atomic
    numbers; default the data set's elements) different from the host element, drawn with
    ``numpy.random.default_rng([seed, 11, index])``.  Binaries use column 0, ternaries both."""
    if pool is None:
        pool = element_pool(ds)
    pool = np.asarray(sorted(set(int(z) for z in pool)), np.int64)
    host = np.asarray(ds.meta["element"])
    out = np.zeros((len(np.atleast_1d(indices)), 2), np.int32)
    for row, i in enumerate(np.asarray(indices).reshape(-1)):
        choices = pool[pool != int(host[i])]
        if len(choices) < 2:
            raise ValueError("the substitution element pool needs two elements besides the host")
        rng = np.random.default_rng([int(seed), 11, int(i)])
        out[row] = rng.choice(choices, size=2, replace=False)
    return out


def element_pool(ds: Dataset) -> list[int]:
    """Atomic numbers of the data set's elements (``ds.info['elements']``, else those present)."""
    from crystaljax.structures.prototypes import atomic_number

    names = ds.info.get("elements") if isinstance(ds.info, Mapping) else None
    if names:
        return sorted({atomic_number(e) for e in names})
    return sorted({int(z) for z in np.asarray(ds.meta["element"])})


# --------------------------------------------------------------------------------------------
# device functions


renormalize_nn = _defects.renormalize


def _defect_one(kind: str, n_new: int, key, s: Structure, level, elements) -> Structure:
    """Apply one defect of ``kind`` (traced ``level``) to one Structure; see the module docstring."""
    if kind == "displacement":
        return _defects.displace(key, s, level)
    if kind == "vacancies":
        return _defects.vacancies(key, s, level)
    if kind == "sublattice":
        return _defects.remove_sublattice(key, s, level, tag=1)
    if kind == "substitution":
        marks = _PLACEHOLDERS[:n_new]
        out = _defects.substitute(key, s, level, marks)
        numbers = out.numbers
        for j, mark in enumerate(marks):
            numbers = jnp.where(numbers == mark, elements[j].astype(numbers.dtype), numbers)
        return out._replace(numbers=numbers)
    raise ValueError(f"unknown defect kind {kind!r}; choose one of {KINDS}")


_DEFECT_FNS: dict = {}


def batch_defect_fn(kind: str, n_new: int = 0, renormalize: bool = False):
    """Jitted ``fn(keys (B,), batch Structure, level (), elements (B, 2)) -> batch Structure``.

    vmapped over the batch with one key per structure; the level is traced (one compilation per
    kind and shape).  ``renormalize``: rescale each result by :func:`renormalize_nn`.
    """
    cache_key = (kind, int(n_new), bool(renormalize))
    if cache_key not in _DEFECT_FNS:
        if kind not in KINDS:
            raise ValueError(f"unknown defect kind {kind!r}; choose one of {KINDS}")

        def fn(keys, batch, level, elements):
            out = jax.vmap(lambda k, s, e: _defect_one(kind, n_new, k, s, level, e))(keys, batch, elements)
            return jax.vmap(renormalize_nn)(out) if renormalize else out

        _DEFECT_FNS[cache_key] = jax.jit(fn)
    return _DEFECT_FNS[cache_key]


def make_images_fn(fingerprint_fn: Callable, kind: str, n_new: int = 0, renormalize: bool = False):
    """Jitted ``fn(keys, batch, level, elements) -> images (B, H, W, 3)``: defect then fingerprint."""
    from crystaljax.physics.fingerprint import batch_fingerprints

    def fn(keys, batch, level, elements):
        out = jax.vmap(lambda k, s, e: _defect_one(kind, n_new, k, s, level, e))(keys, batch, elements)
        if renormalize:
            out = jax.vmap(renormalize_nn)(out)
        return batch_fingerprints(fingerprint_fn, out)

    return jax.jit(fn)


def _take(batch: Structure, idx) -> Structure:
    return Structure(*(np.asarray(x)[idx] for x in batch))


def defect_batch(structures: Structure, kind: str, level, seed: int, indices, *, elements=None,
                 renormalize: bool = False) -> Structure:
    """The defective version of a batched Structure (numpy arrays out).

    structures: (N, n_max, ...) batch; ``indices`` (N,) their data-set indices (for the keys);
    elements: (N, 2) substituting species (substitution only).  Same draws as the sweeps.
    """
    value, n_new = _level_value(kind, level)
    n = int(np.shape(structures.positions)[0])
    elements = np.zeros((n, 2), np.int32) if elements is None else np.asarray(elements, np.int32)
    fn = batch_defect_fn(kind, n_new, renormalize)
    out = fn(defect_keys(seed, kind, level, indices), Structure(*(jnp.asarray(x) for x in structures)),
             jnp.float32(value), jnp.asarray(elements))
    return Structure(*(np.asarray(x) for x in out))


# --------------------------------------------------------------------------------------------
# selecting structures


def select_indices(ds: Dataset, split: str | None = "test", n_structures: int | None = None,
                   n_per_class: int | None = None, within=None) -> np.ndarray:
    """Data-set indices of ``split`` (None or 'all' = every split), in data-set order, optionally capped.

    n_per_class: at most that many per class (the first ones).  n_structures: at most that many in
    all, taken round-robin over the classes (stratified).  within: restrict to these indices first.
    """
    split_arr = np.asarray(ds.split).astype(str)
    keep = np.ones(len(ds), bool) if split in (None, "all") else split_arr == split
    if within is not None:
        w = np.zeros(len(ds), bool)
        w[np.asarray(within, np.int64)] = True
        keep &= w
    idx = np.flatnonzero(keep)
    labels = np.asarray(ds.labels)[idx]
    per = [idx[labels == c] for c in range(len(CLASSES))]
    if n_per_class is not None:
        per = [p[: int(n_per_class)] for p in per]
    if n_structures is not None and n_structures < sum(len(p) for p in per):
        chosen: list[int] = []
        depth = 0
        while len(chosen) < n_structures:
            for p in per:
                if depth < len(p) and len(chosen) < n_structures:
                    chosen.append(int(p[depth]))
            depth += 1
        return np.sort(np.asarray(chosen, np.int64))
    return np.sort(np.concatenate(per)) if per else idx


# --------------------------------------------------------------------------------------------
# ConvNet sweeps


def _iter_batches(n: int, size: int):
    """(index array of length size, number of real rows); the last batch repeats its final index."""
    for start in range(0, n, size):
        idx = np.arange(start, min(start + size, n))
        real = len(idx)
        if real < size:
            idx = np.concatenate([idx, np.full(size - real, idx[-1])])
        yield idx, real


def predict_batches(predict_fns: Mapping[str, PredictFn], images_fn, structures: Structure, keys, level,
                    elements, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Probabilities (N, n_classes) per model for the structures imaged by ``images_fn``."""
    n = int(np.shape(structures.positions)[0])
    size = max(1, min(int(batch_size), n))
    out: dict[str, list] = {name: [] for name in predict_fns}
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    for idx, real in _iter_batches(n, size):
        images = images_fn(keys[idx], _take(structures, idx), jnp.float32(level), jnp.asarray(elements[idx]))
        images = np.asarray(images)
        for name, fn in predict_fns.items():
            out[name].append(np.asarray(fn(images))[:real])
    return {name: np.concatenate(v) for name, v in out.items()}


def _report(labels, probs_per_seed: Sequence[np.ndarray]) -> dict:
    """accuracy (pooled over seeds), per-seed accuracies, per-class accuracy and confusion matrix."""
    from crystaljax.learn import evaluate

    n = len(CLASSES)
    preds = np.concatenate([p.argmax(-1) for p in probs_per_seed])
    labs = np.concatenate([labels] * len(probs_per_seed))
    pca = evaluate.per_class_accuracy(labs, preds, n)
    return {
        "accuracy": evaluate.accuracy(labs, preds),
        "per_seed": [evaluate.accuracy(labels, p) for p in probs_per_seed],
        "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(CLASSES, pca)},
        "confusion": evaluate.confusion_matrix(labs, preds, n).tolist(),
    }


def convnet_sweep(predict_fns: Mapping[str, PredictFn], ds: Dataset, levels: Mapping[str, Sequence],
                  seeds: Sequence[int] = (0, 1), *, fingerprint_fn: Callable | None = None, indices=None,
                  pristine: bool = True, batch_size: int = 32, renormalize: bool = False,
                  elements_pool: Sequence[int] | None = None, progress: bool = False,
                  on_level: Callable[[str, str, str, dict], None] | None = None) -> dict:
    """ConvNet accuracy of one or more models on the same defective fingerprints.

    predict_fns: name -> :data:`PredictFn`; levels: kind -> list of levels; indices: data-set
    indices (default the whole test split).  Returns ``{name: {"pristine": report, kind: {level_key:
    report}}}`` with report = ``{"accuracy", "per_seed", "per_class", "confusion"}`` (see
    :func:`_report`), accuracy pooled over seeds.  ``on_level(name, kind, key, report)`` is called
    after each level (e.g. to log it).
    """
    if fingerprint_fn is None:
        from crystaljax.physics.fingerprint import make_fingerprint_fn

        fingerprint_fn = make_fingerprint_fn()
    idx = select_indices(ds) if indices is None else np.asarray(indices, np.int64)
    if len(idx) == 0:
        raise ValueError("no structures to evaluate")
    structures = _take(ds.structures, idx)
    labels = np.asarray(ds.labels)[idx]
    pool = element_pool(ds) if elements_pool is None else list(elements_pool)
    no_elements = np.zeros((len(idx), 2), np.int32)
    out: dict[str, dict] = {name: {} for name in predict_fns}
    fns: dict = {}

    def images_fn(kind, n_new):
        if (kind, n_new) not in fns:
            fns[(kind, n_new)] = make_images_fn(fingerprint_fn, kind, n_new, renormalize)
        return fns[(kind, n_new)]

    jobs: list[tuple[str, Any]] = [("pristine", None)] if pristine else []
    for kind, lv in levels.items():
        if kind not in KINDS:
            raise ValueError(f"unknown defect kind {kind!r}; choose one of {KINDS}")
        jobs.extend((kind, level) for level in lv)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="convnet sweep", unit="level")
    for kind, level in jobs:
        if kind == "pristine":
            fn = images_fn("displacement", 0)  # sigma 0 is an exact no-op: no extra compilation
            probs = predict_batches(predict_fns, fn, structures, defect_keys(0, "displacement", 0.0, idx), 0.0,
                                    no_elements, batch_size)
            for name in predict_fns:
                out[name]["pristine"] = _report(labels, [probs[name]])
                if on_level is not None:
                    on_level(name, "pristine", "pristine", out[name]["pristine"])
        else:
            value, n_new = _level_value(kind, level)
            fn = images_fn(kind, n_new)
            per_seed: dict[str, list] = {name: [] for name in predict_fns}
            for seed in seeds:
                elements = (substitution_elements(ds, idx, seed, pool) if kind == "substitution" else no_elements)
                probs = predict_batches(predict_fns, fn, structures, defect_keys(seed, kind, level, idx), value,
                                        elements, batch_size)
                for name in predict_fns:
                    per_seed[name].append(probs[name])
            key = level_key(level)
            for name in predict_fns:
                rep = _report(labels, per_seed[name])
                out[name].setdefault(kind, {})[key] = rep
                if on_level is not None:
                    on_level(name, kind, key, rep)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(kind=kind, level=level)
    if bar is not None:
        bar.close()
    return out


def convnet_defect_accuracy(predict_fn: PredictFn, ds: Dataset, defect_kind: str, levels: Sequence,
                            seeds: Sequence[int] = (0, 1), *, fingerprint_fn: Callable | None = None,
                            indices=None, split: str = "test", n_structures: int | None = None,
                            batch_size: int = 32, renormalize: bool = False, progress: bool = False) -> dict:
    """ConvNet accuracy vs the parent label for each level of one defect kind.

    predict_fn: images (B, 64, 64, 3) -> probabilities (B, 7) (e.g. ``train.load_model(dir)[0]``).
    defect_kind: 'displacement' (sigma, physical Å), 'vacancies' (fraction), 'substitution'
    ('binary_0.25', ...) or 'sublattice' (fraction of tag-1 atoms).  The defect is applied on device
    to the pristine clusters of ``split`` (capped, stratified, at ``n_structures``), one key per
    structure and seed.  Returns ``{"accuracy": {key: fraction}, "per_seed": {key: [...]},
    "per_class": {key: {class: fraction}}, "confusion": {key: (7, 7) list}, "n_structures": N,
    "seeds": [...]}``, accuracies pooled over the seeds.
    """
    idx = select_indices(ds, split, n_structures) if indices is None else np.asarray(indices, np.int64)
    res = convnet_sweep({"m": predict_fn}, ds, {defect_kind: list(levels)}, seeds, fingerprint_fn=fingerprint_fn,
                        indices=idx, pristine=False, batch_size=batch_size, renormalize=renormalize,
                        progress=progress)["m"].get(defect_kind, {})
    return {
        "accuracy": {k: r["accuracy"] for k, r in res.items()},
        "per_seed": {k: r["per_seed"] for k, r in res.items()},
        "per_class": {k: r["per_class"] for k, r in res.items()},
        "confusion": {k: r["confusion"] for k, r in res.items()},
        "n_structures": int(len(idx)),
        "seeds": [int(s) for s in seeds],
    }


# --------------------------------------------------------------------------------------------
# spglib baseline


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
    value, _ = _level_value(kind, level)
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
                rep = {"accuracy": float(allc.mean()), "per_seed": [float(c.mean()) for c in correct],
                       "per_class": per_class, "n": int(allc.size),
                       "spacegroups": {str(v): int(n) for n, v in top}}
                if kind == "pristine":
                    block["pristine"] = rep
                else:
                    block.setdefault(kind, {})[key] = rep
            out[str(sp)] = block
        self.seconds["spglib_wait"] = round(time.perf_counter() - t0, 2)
        return out


def spglib_defect_accuracy(ds: Dataset, defect_kind: str, levels: Sequence, seeds: Sequence[int] = (0, 1),
                           symprecs: Sequence[float] = SYMPRECS, *, indices=None, split: str = "test",
                           n_per_class: int | None = None, target: int = 250, executor=None,
                           progress: bool = False) -> dict:
    """spglib accuracy on periodic supercells carrying the sweep's defects.

    Returns ``{symprec_key: {level_key: fraction}}`` (symprec keys ``str(float(symprec))``), plus
    ``"n_structures"`` and ``"seeds"``.  See :class:`SpglibSweep` for the details and reports.
    """
    idx = select_indices(ds, split, n_per_class=n_per_class) if indices is None else np.asarray(indices, np.int64)
    sweep = SpglibSweep(ds, {defect_kind: list(levels)}, seeds, symprecs, idx, target=target, pristine=False)
    res = sweep.submit(executor).collect(progress)
    out: dict[str, Any] = {sp: {k: r["accuracy"] for k, r in block.get(defect_kind, {}).items()}
                           for sp, block in res.items()}
    out["n_structures"] = int(len(idx))
    out["seeds"] = [int(s) for s in seeds]
    return out


# --------------------------------------------------------------------------------------------
# Table 1: orchestration, JSON, Markdown, plot


def table1(models: Mapping[str, tuple[PredictFn, Callable]], ds: Dataset, levels: Mapping[str, Sequence] | None = None,
           seeds: Sequence[int] = (0, 1), symprecs: Sequence[float] = SYMPRECS, *, indices=None,
           spglib_indices=None, spglib_seeds: Sequence[int] | None = None, spglib: bool = True, workers: int = 0,
           target: int = 250, batch_size: int = 32, renormalize: bool = False, progress: bool = False,
           on_level: Callable | None = None) -> tuple[dict, dict]:
    """Everything of Table 1: ``(results, details)``.

    models: result name ('convnet', 'convnet_augmented') -> (predict_fn, fingerprint_fn); models
    sharing a fingerprint_fn object are evaluated on the same images.  levels: kind -> levels
    (default the module's DISPLACEMENTS / VACANCIES / SUBSTITUTIONS).  indices: ConvNet structures
    (default the whole test split); spglib_indices: the spglib structures (default the same).
    workers > 0 runs spglib in that many spawned processes while the ConvNet sweep runs.
    results: the JSON schema of the module docstring; details: per-class accuracy, confusion
    matrices, per-seed accuracies, returned space groups and timings.
    """
    t0 = time.perf_counter()
    if levels is None:
        levels = {"displacement": DISPLACEMENTS, "vacancies": VACANCIES, "substitution": SUBSTITUTIONS}
    levels = {k: list(v) for k, v in levels.items()}
    idx = select_indices(ds) if indices is None else np.asarray(indices, np.int64)
    sp_idx = idx if spglib_indices is None else np.asarray(spglib_indices, np.int64)
    sp_seeds = list(seeds) if spglib_seeds is None else list(spglib_seeds)
    executor = None
    sweep = None
    try:
        if spglib and len(sp_idx):
            if workers > 0:
                import multiprocessing as mp
                from concurrent.futures import ProcessPoolExecutor

                executor = ProcessPoolExecutor(int(workers), mp_context=mp.get_context("spawn"))
            sweep = SpglibSweep(ds, levels, sp_seeds, symprecs, sp_idx, target=target).submit(executor)
        groups: dict[int, tuple[Callable, dict]] = {}
        for name, (pfn, ffn) in models.items():
            groups.setdefault(id(ffn), (ffn, {}))[1][name] = pfn
        conv: dict[str, dict] = {}
        for ffn, pfns in groups.values():
            conv.update(convnet_sweep(pfns, ds, levels, seeds, fingerprint_fn=ffn, indices=idx, batch_size=batch_size,
                                      renormalize=renormalize, progress=progress, on_level=on_level))
        t_conv = time.perf_counter() - t0
        spg = sweep.collect(progress) if sweep is not None else {}
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def accuracies(block: Mapping) -> dict:
        out: dict[str, Any] = {}
        if "pristine" in block:
            out["pristine"] = block["pristine"]["accuracy"]
        for kind in levels:
            out[kind] = {k: r["accuracy"] for k, r in block.get(kind, {}).items()}
        return out

    results: dict[str, Any] = {name: accuracies(conv[name]) for name in models}
    if spglib:
        results["spglib"] = {sp: accuracies(block) for sp, block in spg.items()}
    results["n_structures"] = int(len(idx))
    results["seeds"] = [int(s) for s in seeds]
    details = {
        "convnet": {name: conv[name] for name in models},
        "spglib": spg,
        "n_structures": int(len(idx)),
        "n_structures_spglib": int(len(sp_idx)) if spglib else 0,
        "seeds": [int(s) for s in seeds],
        "seeds_spglib": [int(s) for s in sp_seeds] if spglib else [],
        "symprecs": [float(s) for s in symprecs],
        "levels": {k: [level_key(x) for x in v] for k, v in levels.items()},
        "classes": list(CLASSES),
        "per_class_test": {c: int((np.asarray(ds.labels)[idx] == k).sum()) for k, c in enumerate(CLASSES)},
        "seconds": {"convnet": round(t_conv, 2), "total": round(time.perf_counter() - t0, 2),
                    **(sweep.seconds if sweep is not None else {})},
    }
    return results, details


def _pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100.0 * float(x):.2f}"


def _level_label(kind: str, key: str) -> str:
    if kind == "displacement":
        return f"σ = {float(key):g} Å"
    if kind == "substitution":
        alloy, frac = parse_substitution(key)
        return f"{alloy} {100 * frac:g} %"
    return f"{100 * float(key):g} %"


_KIND_TITLES = {"displacement": "Random displacements", "vacancies": "Vacancies",
                "substitution": "Substitutions", "sublattice": "Sublattice removal"}


def table1_markdown(results: Mapping, details: Mapping | None = None) -> str:
    """Markdown in the layout of the paper's Table 1 (accuracy in %).

    Rows: pristine, then every level of each defect kind; columns: spglib at each symprec, ConvNet
    and (when present) ConvNet (augmented).  '—' marks a value that was not computed.
    """
    spg = results.get("spglib", {}) or {}
    symprecs = list(spg)
    models = [m for m in ("convnet", "convnet_augmented") if m in results]
    heads = [f"spglib {float(s):g} Å" for s in symprecs] + [
        "ConvNet" if m == "convnet" else "ConvNet (augmented)" for m in models]
    lines = ["| Defect | Level | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]

    def row(name, level, getter):
        vals = [getter(spg[s]) for s in symprecs] + [getter(results[m]) for m in models]
        lines.append(f"| {name} | {level} | " + " | ".join(_pct(v) for v in vals) + " |")

    row("Pristine", "", lambda b: b.get("pristine"))
    kinds: list[str] = []
    for block in [results[m] for m in models] + [spg[s] for s in symprecs]:
        kinds.extend(k for k, v in block.items() if isinstance(v, Mapping) and k not in kinds)
    for kind in kinds:
        keys: list[str] = []
        for block in [results[m] for m in models] + [spg[s] for s in symprecs]:
            keys.extend(k for k in block.get(kind, {}) if k not in keys)
        for j, key in enumerate(keys):
            row(_KIND_TITLES.get(kind, kind) if j == 0 else "", _level_label(kind, key),
                lambda b, kind=kind, key=key: b.get(kind, {}).get(key))
    n = results.get("n_structures")
    seeds = results.get("seeds", [])
    note = f"\nAccuracy (%) against the parent class; ConvNet: {n} test structures x {len(seeds)} seed(s) per level."
    if details and details.get("n_structures_spglib"):
        note += (f" spglib: {details['n_structures_spglib']} structures x {len(details.get('seeds_spglib', []))}"
                 " seed(s) per level, periodic ~250-atom supercells of the conventional cells with the same"
                 " kind of defect; correct = the parent's space group.")
    return "\n".join(lines) + "\n" + note + "\n"


def plot_table1(results: Mapping, path) -> Path:
    """Accuracy vs defect level (one panel per kind): ConvNet model(s) and spglib per symprec; PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    models = [m for m in ("convnet", "convnet_augmented") if m in results]
    spg = results.get("spglib", {}) or {}
    kinds = [k for k in KINDS if any(k in results[m] for m in models)]
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4.6 * max(len(kinds), 1), 3.8), dpi=120, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        keys = list(results[models[0]].get(kind, {})) if models else []
        if kind == "substitution":
            xs = np.arange(len(keys))
            ax.set_xticks(xs, [k.replace("_", "\n") for k in keys], fontsize=7)
        else:
            xs = np.array([float(k) for k in keys])
            ax.set_xscale("log" if kind == "displacement" else "linear")
        for m in models:
            ys = [results[m].get(kind, {}).get(k, np.nan) for k in keys]
            ax.plot(xs, ys, "o-", lw=2, label="ConvNet" if m == "convnet" else "ConvNet (augmented)")
        for s, block in spg.items():
            ys = [block.get(kind, {}).get(k, np.nan) for k in keys]
            ax.plot(xs, ys, "s--", ms=3, lw=1, label=f"spglib {float(s):g} Å")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(_KIND_TITLES.get(kind, kind))
        ax.set_xlabel({"displacement": "σ (Å)", "vacancies": "vacancy fraction",
                       "substitution": "alloy, substituted fraction"}.get(kind, "level"))
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    if kinds:
        axes[0][0].legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Fig. 4: structural transitions


def bcc_sc_sweep(predict_fn: PredictFn, structures: Structure, fractions: Sequence[float], seeds: Sequence[int],
                 *, fingerprint_fn: Callable | None = None, indices=None, renormalize: bool = True,
                 batch_size: int = 32, progress: bool = False) -> dict:
    """bcc -> sc: remove a fraction of the body-centre atoms (tag 1) and record p(bcc), p(sc).

    structures: batched bcc clusters with tags (N, n_max, ...); indices: their ids for the keys
    (default 0..N-1).  renormalize: rescale each cluster to unit mean nearest-neighbour distance
    after the removal (what the host pipeline does to a finite structure; the full removal then
    is a proper sc cluster).  Returns lists over ``fractions`` of mean and std (over structures x
    seeds) of p(bcc), p(sc), the fraction predicted bcc / sc, and the mean of every class probability.
    """
    if fingerprint_fn is None:
        from crystaljax.physics.fingerprint import make_fingerprint_fn

        fingerprint_fn = make_fingerprint_fn()
    n = int(np.shape(structures.positions)[0])
    if n == 0:
        raise ValueError("no bcc structures")
    if not np.all(tagged_bcc(structures)):
        raise ValueError("every bcc cluster must have half of its atoms tagged 1 (body centres); "
                         "filter with sweeps.tagged_bcc")
    idx = np.arange(n) if indices is None else np.asarray(indices, np.int64)
    fn = make_images_fn(fingerprint_fn, "sublattice", 0, renormalize)
    zeros = np.zeros((n, 2), np.int32)
    b, s_ = CLASSES.index("bcc"), CLASSES.index("sc")
    rows = {k: [] for k in ("p_bcc_mean", "p_bcc_std", "p_sc_mean", "p_sc_std", "frac_pred_bcc", "frac_pred_sc")}
    mean_probs = []
    it = list(fractions)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="bcc -> sc", unit="step")
    for f in it:
        probs = np.concatenate([
            predict_batches({"m": predict_fn}, fn, structures, defect_keys(seed, "sublattice", float(f), idx), float(f),
                            zeros, batch_size)["m"] for seed in seeds])
        pred = probs.argmax(-1)
        rows["p_bcc_mean"].append(float(probs[:, b].mean()))
        rows["p_bcc_std"].append(float(probs[:, b].std()))
        rows["p_sc_mean"].append(float(probs[:, s_].mean()))
        rows["p_sc_std"].append(float(probs[:, s_].std()))
        rows["frac_pred_bcc"].append(float((pred == b).mean()))
        rows["frac_pred_sc"].append(float((pred == s_).mean()))
        mean_probs.append(probs.mean(0).tolist())
    return {"fractions_removed": [float(f) for f in fractions], **rows,
            "mean_probabilities": {c: [m[k] for m in mean_probs] for k, c in enumerate(CLASSES)},
            "n_structures": n, "seeds": [int(s) for s in seeds], "renormalize": bool(renormalize)}


RH_SETTINGS: tuple[str, ...] = ("hexagonal", "primitive")
"""How the rhombohedral-path cell is handed to the pipeline: the 3-atom hexagonal setting of
``prototypes.rhombohedral_path`` (like the data set's hR structures) or the 1-atom primitive
rhombohedral cell (at mu_sc that is the cube of the data set's sc cells).  The symmetry-free
standard cell reduces the lattice it is given, so the two settings give differently oriented
clusters, hence different fingerprints, at the same mu."""

_R_OBVERSE = np.array([[2.0, 1.0, 1.0], [-1.0, 1.0, 1.0], [-1.0, -2.0, 1.0]]) / 3.0


def rhombohedral_primitive(atoms):
    """The primitive rhombohedral cell of a structure in the obverse hexagonal setting.

    Primitive vectors (2/3, 1/3, 1/3), (-1/3, 1/3, 1/3), (-1/3, -2/3, 1/3) of the hexagonal ones;
    atoms equivalent under the R-centring are kept once.  Tags and ``info`` are carried.
    """
    from ase import Atoms

    prim = _R_OBVERSE @ atoms.cell.array
    frac = np.linalg.solve(prim.T, atoms.get_positions().T).T
    frac = np.mod(np.round(frac, 10), 1.0)
    frac[np.isclose(frac, 1.0, atol=1e-8)] = 0.0
    keep: list[int] = []
    for i, f in enumerate(frac):
        d = np.abs(frac[keep] - f) if keep else np.zeros((0, 3))
        d = np.minimum(d, 1.0 - d)
        if not np.any(np.all(d < 1e-6, axis=1)):
            keep.append(i)
    if len(keep) * 3 != len(atoms):
        raise ValueError(f"not an R-centred hexagonal cell: {len(atoms)} atoms -> {len(keep)} in the primitive cell")
    out = Atoms(numbers=atoms.numbers[keep], scaled_positions=frac[keep], cell=prim, pbc=True,
                tags=atoms.get_tags()[keep])
    out.info.update(atoms.info)
    return out


def rhombohedral_sweep(predict_fn: PredictFn, mus: Sequence[float], *, element="Po", setting: str = "hexagonal",
                       fingerprint_fn: Callable | None = None, target: int = 250, batch_size: int = 32,
                       progress: bool = False) -> dict:
    """Class probabilities along the A_hR1_166_a path (``prototypes.rhombohedral_path``) vs mu = c/a.

    setting: 'hexagonal' (3-atom conventional cell) or 'primitive' (1-atom rhombohedral cell), see
    :data:`RH_SETTINGS`.  Each structure goes through the host pipeline (standard cell,
    ~``target``-atom cluster).  Returns ``{"mu": [...], "setting", "element",
    "probabilities": {class: [...]}, "predicted": [class names]}``.
    """
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structures.prototypes import rhombohedral_path

    if setting not in RH_SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {RH_SETTINGS}")
    if fingerprint_fn is None:
        from crystaljax.physics.fingerprint import make_fingerprint_fn

        fingerprint_fn = make_fingerprint_fn()
    mus = [float(m) for m in mus]
    it = mus
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(mus, desc=f"rhombohedral clusters ({setting})", unit="struct")
    cells = [rhombohedral_path(m, element) for m in it]
    if setting == "primitive":
        cells = [rhombohedral_primitive(c) for c in cells]
    batch = prepare_structures(cells, target=target)
    n = len(mus)
    fn = make_images_fn(fingerprint_fn, "displacement", 0, False)
    probs = predict_batches({"m": predict_fn}, fn, batch, defect_keys(0, "displacement", 0.0, np.arange(n)), 0.0,
                            np.zeros((n, 2), np.int32), batch_size)["m"]
    return {"mu": mus, "setting": setting, "element": str(element),
            "probabilities": {c: probs[:, k].astype(float).tolist() for k, c in enumerate(CLASSES)},
            "predicted": [CLASSES[k] for k in probs.argmax(-1)]}


def class_windows(mu: Sequence[float], predicted: Sequence[str], special: Mapping[str, float]) -> dict:
    """Where along mu each special class is predicted.

    For each ``special`` class -> mu value: the predicted class at the grid point nearest that mu,
    the contiguous run of grid points predicted as that class containing it (empty if the class
    is not predicted there), its [lo, hi] bounds with edges half-way between grid points (clipped
    to the path) and its width in mu; also the total width of mu predicted as each class.
    """
    mu = np.asarray(mu, float)
    order = np.argsort(mu)
    mu, pred = mu[order], [predicted[i] for i in order]
    edges = np.concatenate([[mu[0]], 0.5 * (mu[1:] + mu[:-1]), [mu[-1]]])
    widths = np.diff(edges)
    out: dict[str, Any] = {}
    for cls, m in special.items():
        j = int(np.argmin(np.abs(mu - m)))
        entry: dict[str, Any] = {"mu": float(m), "nearest_mu": float(mu[j]), "predicted": pred[j]}
        if pred[j] == cls:
            lo = j
            while lo > 0 and pred[lo - 1] == cls:
                lo -= 1
            hi = j
            while hi < len(mu) - 1 and pred[hi + 1] == cls:
                hi += 1
            entry.update(window=[float(edges[lo]), float(edges[hi + 1])], width=float(edges[hi + 1] - edges[lo]),
                         n_points=int(hi - lo + 1))
        else:
            entry.update(window=None, width=0.0, n_points=0)
        out[cls] = entry
    total = {c: float(sum(w for w, p in zip(widths, pred) if p == c)) for c in CLASSES}
    return {"special": out, "total_width": total, "mu_range": [float(mu[0]), float(mu[-1])]}


def plot_bcc_sc(res: Mapping, path) -> Path:
    """p(bcc) and p(sc) (mean ± 1 std) vs percentage of body-centre atoms removed; PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x = 100 * np.asarray(res["fractions_removed"])
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=120)
    for name, colour in (("bcc", "tab:purple"), ("sc", "tab:red")):
        m, s = np.asarray(res[f"p_{name}_mean"]), np.asarray(res[f"p_{name}_std"])
        ax.plot(x, m, "o-", color=colour, label=f"p({name})")
        ax.fill_between(x, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), color=colour, alpha=0.25)
    ax.set_xlabel("body-centre atoms removed (%)")
    ax.set_ylabel("classification probability")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"bcc -> sc ({res['n_structures']} structures x {len(res['seeds'])} seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_rhombohedral(res: Mapping, special: Mapping[str, float], path) -> Path:
    """Every class probability vs mu = c/a with vertical markers at the special mu values; PNG.

    ``res``: one :func:`rhombohedral_sweep` result, or a mapping setting -> result (one panel each).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = {res.get("setting", ""): res} if "mu" in res else dict(res)
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.0, 3.4 * len(panels)), dpi=120, squeeze=False)
    for ax, (setting, r) in zip(axes[:, 0], panels.items()):
        mu = np.asarray(r["mu"])
        for c in CLASSES:
            ax.plot(mu, r["probabilities"][c], lw=1.5, label=c)
        for name, m in special.items():
            ax.axvline(m, color="k", ls=":", lw=1)
            ax.text(m, 1.04, f"μ_{name}", ha="center", va="bottom", fontsize=8)
        ax.set_xlabel("μ = c/a (hexagonal setting)")
        ax.set_ylabel("classification probability")
        ax.set_ylim(-0.03, 1.14)
        ax.set_title(f"A_hR1_166_a ({r.get('element', '')}), {setting} cell", fontsize=9)
        ax.legend(fontsize=7, ncol=4, loc="center right")
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# models and data for the entry points


def load_predictor(model_dir, default_fingerprint: tuple | None = None) -> tuple[PredictFn, Callable, dict]:
    """``(predictor, fingerprint_fn, card)`` for a model directory written by ``train.save_model``.

    The fingerprint settings come from the card (``detector``, ``beam``, ``fingerprint``) when it
    has them, else from ``default_fingerprint`` = (DetectorConfig, BeamConfig, FingerprintConfig),
    else the package defaults, so the images match what the model was trained on.
    """
    from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, from_dict
    from crystaljax.learn.train import load_model

    predictor, card = load_model(model_dir)
    det, beam, fp = default_fingerprint or (DetectorConfig(), BeamConfig(), FingerprintConfig())
    if card.get("detector"):
        det = from_dict(DetectorConfig, card["detector"])
    if card.get("beam"):
        beam = from_dict(BeamConfig, card["beam"])
    if card.get("fingerprint"):
        fp = from_dict(FingerprintConfig, card["fingerprint"])
    fingerprint_fn = _fingerprint_fn(det, beam, fp)
    return predictor, fingerprint_fn, card


_FP_FNS: dict = {}


def _fingerprint_fn(det, beam, fp):
    """One fingerprint function object per configuration (so models sharing it share images)."""
    from crystaljax.physics.fingerprint import make_fingerprint_fn

    key = (det, beam, fp)
    if key not in _FP_FNS:
        _FP_FNS[key] = make_fingerprint_fn(det, beam, fp)
    return _FP_FNS[key]


def default_model_dir() -> Path:
    """The shipped model: ``crystaljax/pretrained/default``."""
    return Path(__file__).resolve().parents[1] / "pretrained" / "default"


def load_dataset(data: Mapping[str, Any], seed: int = 0) -> Dataset:
    """The data set described by a ``data`` config mapping: name 'tiny' is generated on the fly
    (seconds, serial), anything else is read from ``data['path']`` (absolute, or relative to cwd)."""
    from crystaljax.structures import dataset

    if data.get("name") == "tiny":
        els = data.get("elements")
        return dataset.generate(seed=int(seed), per_class=int(data.get("per_class", 4)),
                                elements=None if els is None else list(els), target=int(data.get("target", 250)),
                                splits=tuple(data.get("splits", (0.5, 0.25, 0.25))), progress=False, workers=1)
    return dataset.load(data["path"])


def tagged_bcc(structures: Structure) -> np.ndarray:
    """(N,) bool: clusters whose present atoms are about half tag 1 (a bcc body-centre sublattice;
    a ball of whole shells holds the two sublattices in nearly, not exactly, equal numbers).

    Clusters built from a cell without the tags (e.g. a primitive cell from spglib) have none and
    cannot be walked from bcc to sc by sublattice removal.
    """
    present = np.asarray(structures.mask) > 0.5
    tagged = present & (np.asarray(structures.tags) == 1)
    n, t = present.sum(-1), tagged.sum(-1)
    return (t > 0) & (np.abs(2 * t - n) <= 0.1 * n)


def bcc_clusters(elements: Iterable, target: int = 250) -> Structure:
    """bcc prototype clusters (A_cI2_229_a, body centres tagged 1) for each element, batched."""
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structures.prototypes import build

    return prepare_structures([build("A_cI2_229_a", e) for e in elements], target=target)


__all__ = [
    "KINDS", "TABLE_KINDS", "ALLOYS", "DISPLACEMENTS", "VACANCIES", "SUBSTITUTIONS", "SYMPRECS", "PredictFn",
    "level_key", "parse_substitution", "defect_keys", "substitution_elements", "element_pool",
    "renormalize_nn", "batch_defect_fn", "make_images_fn", "defect_batch", "select_indices",
    "predict_batches", "convnet_sweep", "convnet_defect_accuracy",
    "Supercells", "build_supercells", "defective_cells", "spacegroups", "SpglibSweep", "spglib_defect_accuracy",
    "table1", "table1_markdown", "plot_table1",
    "bcc_sc_sweep", "RH_SETTINGS", "rhombohedral_primitive", "rhombohedral_sweep", "class_windows", "plot_bcc_sc", "plot_rhombohedral",
    "load_predictor", "default_model_dir", "load_dataset", "tagged_bcc", "bcc_clusters",
]
