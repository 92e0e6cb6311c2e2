"""Table 1 through the real file path: defective structure FILES classified by ``crystaljax classify``.

Pristine crystals (:func:`crystals`): per class ``per_class`` prototypes of :mod:`crystaljax.structures.prototypes`
with the nearest-neighbour distance of a random real element (:data:`ELEMENTS`) and free parameters drawn outside
the symmetry windows, each a periodic supercell of ~``target`` atoms (``cluster.replication``).

Defects are applied on the host with NumPy, in PHYSICAL Å, to the supercell (:func:`apply_level`):

* ``displacement`` sigma: every Cartesian component + N(0, sigma^2) Å.
* ``vacancies`` f:        exactly round(f n) atoms deleted, uniformly.
* ``substitution``:       ``binary_f`` / ``ternary_f``: one / two new species drawn from ``binary_elements`` /
  ``ternary_elements`` minus the host (so the alloy has 2 / 3 species); exactly round(f n) atoms then take one of
  the new species different from their own, uniformly (the convention of ``physics.defects.substitute``).

Each draw uses ``numpy.random.default_rng([seed, kind id, new species, round(1e6 level), crystal index])``
(:func:`level_rng`), so a crystal gets the same defect whatever the other levels, crystals or seeds.  Every
defective supercell is written to its own extxyz file and classified as a user would, by one
``crystaljax classify --json --model M FILES`` subprocess per model (:func:`classify_files`; the model's scale
estimator, clustering and unknown verdict included).  spglib (``spglib_baseline.spacegroups``) reads the same files
in a process pool.  Correct = the parent's class (ConvNet; a file the CLI rejects counts as wrong) or the parent's
space group (spglib); accuracies carry 95 % Wilson intervals (:func:`wilson_interval`); ``unknown_rate`` is the
fraction of files the CLI flags ``unknown``.

``table1.json`` keeps the schema of ``defect_sweeps`` (``convnet``, ``convnet_augmented``, ``spglib``,
``n_structures``, ``seeds``) with the file-path numbers, plus ``protocol``, ``intervals`` (same nesting, [lo, hi]),
``unknown_rate`` (per model, same nesting) and ``internal_protocol`` (the numbers of the on-device sweep, read from
``internal_from``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crystaljax.errors import CrystalJaxError
from crystaljax.structures import prototypes as P
from crystaljax.structures.cluster import replication

CLASS_PROTOTYPES: dict[str, list[str]] = {
    "sc": ["A_cP1_221_a"], "fcc": ["A_cF4_225_a"], "bcc": ["A_cI2_229_a"], "diam": ["A_cF8_227_a"],
    "hex/rh": ["A_hP2_194_c", "A_hP4_194_ac", "A_hR1_166_a", "A_hR2_166_c", "A_hR3_166_ac"],
    "bct_139": ["A_tI2_139_a"], "bct_141": ["A_tI4_141_a"],
}
"""Class -> prototypes cycled through for that class."""
ELEMENTS: list[str] = ["Cu", "Ag", "Au", "Al", "Ni", "Fe", "W", "Mo", "Na", "K", "Ti", "Zr", "Mg", "Zn", "Sn", "In",
                       "Pb", "Si", "Ge", "C", "Pt", "Pd", "Cr", "V", "Nb", "Ta"]
"""Elements whose nearest-neighbour distance the crystals take."""
KIND_ID: dict[str, int] = {"pristine": 0, "displacement": 1, "vacancies": 2, "substitution": 3}
INNER_KEYS: tuple[str, ...] = ("convnet", "convnet_augmented", "spglib", "n_structures", "seeds")
"""The keys of a table1.json (both protocols)."""
PROTOCOL = ("file path: pristine prototype crystals (real elements' nearest-neighbour distances, free parameters "
            "outside the symmetry windows) as periodic ~{target}-atom supercells; defects applied on the host in "
            "physical Å (displacement sigma per Cartesian component, exactly round(f n) vacancies or substitutions, "
            "binary/ternary = 1/2 new species from {binary}/{ternary}); each written to an extxyz file and "
            "classified by `crystaljax classify --json --model M` (convnet: {convnet}, convnet_augmented: "
            "{augmented}); spglib on the same files; {n} crystals x {n_seeds} seed(s) per level")
CLI_ERROR = "crystaljax: error: "


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval (lo, hi) of the fraction k / n; (0, 1) for n = 0."""
    from crystaljax.analysis.spglib_baseline import binomial_interval

    return binomial_interval(int(k), int(n), 0.95)


# --------------------------------------------------------------------------------------------
# pristine crystals


def prototype_params(proto, rng) -> dict[str, float]:
    """Free parameters of ``proto`` drawn uniformly in its ranges, outside its windows."""
    for _ in range(1000):
        p = {}
        for key, (lo, hi) in proto.ranges.items():
            v = rng.uniform(lo, hi)
            if key == "alpha":
                p["c/a"] = P.hr_c_over_a(v)
            else:
                p[key] = v
        full = {**proto.defaults, **p}
        if not any(w.contains(full) for w in proto.windows):
            return full
    raise RuntimeError(f"no parameters outside the windows of {proto.name}")


def crystals(per_class: int, seed: int, target: int = 250) -> list[tuple[str, Any]]:
    """[(class, ase.Atoms)]: ``per_class`` pristine periodic supercells of ~``target`` atoms per class, in
    ``CLASS_PROTOTYPES`` order; ``atoms.info`` holds prototype, element and spacegroup (the parent's)."""
    rng = np.random.default_rng(seed)
    out = []
    for cls, names in CLASS_PROTOTYPES.items():
        for i in range(per_class):
            proto = P.get_prototype(names[i % len(names)])
            element = str(rng.choice(ELEMENTS))
            cell = P.build(proto.name, element, params=prototype_params(proto, rng))
            big = cell.repeat(replication(len(cell), cell.cell, target))
            big.info = {"prototype": proto.name, "element": element, "spacegroup": int(proto.spacegroup)}
            out.append((cls, big))
    return out


# --------------------------------------------------------------------------------------------
# host defects (NumPy, physical Å)


def n_affected(fraction: float, n: int) -> int:
    """round(fraction * n), half to even (the device convention)."""
    return int(round(float(fraction) * n))


def displace(atoms, sigma: float, rng):
    """A copy with every Cartesian component displaced by N(0, sigma^2), sigma in Å."""
    a = atoms.copy()
    if sigma:
        a.positions = a.positions + rng.normal(0.0, float(sigma), a.positions.shape)
    return a


def remove_atoms(atoms, fraction: float, rng):
    """A copy with exactly round(fraction * n) atoms deleted, chosen uniformly."""
    a = atoms.copy()
    k = n_affected(fraction, len(a))
    if k:
        del a[sorted(rng.choice(len(a), k, replace=False).tolist())]
    return a


def substitute(atoms, fraction: float, elements: Sequence[int], rng):
    """A copy where exactly round(fraction * n) atoms (capped at the eligible ones: atoms with a listed species
    other than their own) take one of the listed ``elements`` (atomic numbers) other than their own, uniformly."""
    a = atoms.copy()
    elements = np.asarray(elements, np.int64)
    numbers = a.numbers.copy()
    options = numbers[:, None] != elements[None, :]  # (n, m)
    eligible = np.flatnonzero(options.any(1))
    k = min(n_affected(fraction, len(a)), len(eligible))
    if k:
        chosen = rng.choice(eligible, k, replace=False)
        r = np.where(options[chosen], rng.random((k, len(elements))), -1.0)
        numbers[chosen] = elements[r.argmax(1)]
        a.numbers = numbers
    return a


def alloy_species(n_new: int, host: int, pool: Sequence[int], rng) -> list[int]:
    """``n_new`` distinct atomic numbers of ``pool`` other than ``host``, drawn uniformly."""
    choices = [int(z) for z in pool if int(z) != int(host)]
    if len(choices) < n_new:
        raise CrystalJaxError(f"{n_new} new species needed but the pool {list(pool)} has only {choices} besides {host}")
    return sorted(int(z) for z in rng.choice(choices, n_new, replace=False))


def defective(atoms, sigma: float, vacancy: float, rng):
    """Vacancies (fraction ``vacancy``) then displacements (``sigma`` Å); ``info`` cleared (as in a user's file)."""
    a = displace(remove_atoms(atoms, vacancy, rng), sigma, rng)
    a.info = {}
    return a


def level_rng(seed: int, kind: str, level, index: int):
    """The NumPy generator of one (seed, kind, level, crystal index) draw."""
    from crystaljax.analysis.defect_sweeps import level_value

    value, n_new = (0.0, 0) if kind == "pristine" else level_value(kind, level)
    return np.random.default_rng([int(seed), KIND_ID[kind], int(n_new), int(round(value * 1e6)), int(index)])


def apply_level(atoms, kind: str, level, rng, binary: Sequence[int] = (29, 47), ternary: Sequence[int] = (29, 47, 79)):
    """The defective copy of a pristine supercell (``info`` cleared) at one level of ``kind``
    (``pristine``: unchanged); ``binary`` / ``ternary``: the pools of the substitution levels."""
    from crystaljax.analysis.defect_sweeps import level_value

    if kind == "pristine":
        out = atoms.copy()
    elif kind == "displacement":
        out = displace(atoms, level_value(kind, level)[0], rng)
    elif kind == "vacancies":
        out = remove_atoms(atoms, level_value(kind, level)[0], rng)
    elif kind == "substitution":
        frac, n_new = level_value(kind, level)
        host = int(np.bincount(atoms.numbers).argmax())
        new = alloy_species(n_new, host, binary if n_new == 1 else ternary, rng)
        out = substitute(atoms, frac, new, rng)
    else:
        raise CrystalJaxError(f"unknown defect kind {kind!r}; choose one of {sorted(KIND_ID)}")
    out.info = {}
    return out


# --------------------------------------------------------------------------------------------
# the command-line tool


def cli_executable() -> str:
    """The ``crystaljax`` command of this environment (next to the Python interpreter, else on PATH)."""
    local = Path(sys.executable).with_name("crystaljax")
    found = str(local) if local.is_file() else shutil.which("crystaljax")
    if not found:
        raise CrystalJaxError("the crystaljax command is not installed (pip install -e .)")
    return found


def _chunks(files: Sequence[str], max_chars: int) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for f in files:
        if out[-1] and size + len(f) + 1 > max_chars:
            out.append([])
            size = 0
        out[-1].append(f)
        size += len(f) + 1
    return out


def classify_files(files: Sequence, model: str, *, scale: str | None = None, mc_samples: int | None = None,
                   batch: int | None = None, cwd=None, errors: list | None = None,
                   max_chars: int = 500_000) -> list[dict]:
    """The rows of ``crystaljax classify --json --quiet --model MODEL FILES`` (one subprocess per ``max_chars`` of
    file names), as a user runs it; ``scale`` / ``mc_samples`` / ``batch`` add ``--scale`` / ``--mc-samples`` /
    ``--batch``.  Files the CLI rejects have no row; their one-line messages are appended to ``errors``."""
    base = [cli_executable(), "classify", "--json", "--quiet", "--model", str(model)]
    for flag, value in (("--scale", scale), ("--mc-samples", mc_samples), ("--batch", batch)):
        if value is not None:
            base += [flag, str(value)]
    rows: list[dict] = []
    for part in _chunks([str(f) for f in files], max_chars):
        res = subprocess.run(base + part, capture_output=True, text=True, cwd=cwd)
        try:  # exit 2 with a JSON list: some files were rejected, the others classified
            part_rows = json.loads(res.stdout) if res.returncode in (0, 2) else None
        except json.JSONDecodeError:
            part_rows = None
        if not isinstance(part_rows, list):
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise CrystalJaxError(f"{' '.join(base[1:6])} ... failed (exit {res.returncode}): {last}")
        rows.extend(part_rows)
        if errors is not None:
            errors.extend(line[len(CLI_ERROR):] for line in res.stderr.splitlines() if line.startswith(CLI_ERROR))
    return rows


def model_info(model: str) -> dict:
    """Directory, sha256 and training defect of a model (name or directory) from its model card."""
    from crystaljax.learn.checkpoint import MODEL_CARD, resolve_model_dir

    directory = resolve_model_dir(model)
    card = json.loads((directory / MODEL_CARD).read_text())
    return {"model": str(model), "dir": str(directory), "sha256": card.get("sha256"),
            "training_defect": (card.get("training") or {}).get("defect")}


# --------------------------------------------------------------------------------------------
# the sweep


@dataclass(frozen=True)
class Item:
    """One structure file: its name (relative to the file directory), the crystal's index, class and parent
    space group, and the defect (kind, level key, seed)."""

    file: str
    index: int
    cls: str
    spacegroup: int
    kind: str
    key: str
    seed: int


def write_files(pristine: Sequence[tuple[str, Any]], levels: Mapping[str, Sequence], seeds: Sequence[int],
                directory, binary=(29, 47), ternary=(29, 47, 79)) -> list[Item]:
    """Write the pristine supercells and every (kind, level, seed) defective version as extxyz files into
    ``directory``; returns the items in write order (pristine first)."""
    from ase.io import write

    from crystaljax.analysis.defect_sweeps import level_key

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    jobs = [("pristine", "pristine", None, 0)] + [(kind, level_key(lv), lv, int(s))
                                                  for kind, lv_list in levels.items() for lv in lv_list for s in seeds]
    items = []
    for kind, key, level, seed in jobs:
        for i, (cls, atoms) in enumerate(pristine):
            name = f"{kind}_{key}_s{seed}_{i:04d}.extxyz" if kind != "pristine" else f"pristine_{i:04d}.extxyz"
            a = apply_level(atoms, kind, level, level_rng(seed, kind, level, i), binary, ternary)
            write(directory / name, a, format="extxyz")
            items.append(Item(name, i, cls, int(atoms.info["spacegroup"]), kind, key, seed))
    return items


def spacegroups_of_file(path: str, symprecs: Sequence[float]) -> tuple:
    """spglib space-group numbers (None where spglib fails) of the periodic structure in ``path`` at each symprec."""
    from ase.io import read

    from crystaljax.analysis.spglib_baseline import spacegroups

    a = read(path)
    return spacegroups((a.cell.array, a.get_scaled_positions(wrap=True), a.numbers), symprecs)


def _spacegroups_chunk(args) -> tuple[list, float]:
    """(space groups of each path, CPU seconds spent)."""
    paths, symprecs = args
    t0 = time.process_time()
    return [spacegroups_of_file(p, symprecs) for p in paths], time.process_time() - t0


def spglib_items(items: Sequence[Item], n_per_class: int | None, n_structures: int | None,
                 seeds: Sequence[int]) -> list[Item]:
    """The items spglib runs on: the first ``n_per_class`` crystals of each class (then at most ``n_structures``,
    round-robin over classes), seeds ``seeds`` (pristine always)."""
    first: dict[str, list[int]] = {}
    for it in items:
        if it.kind == "pristine":
            first.setdefault(it.cls, []).append(it.index)
    per = [v[: n_per_class] if n_per_class is not None else v for v in first.values()]
    chosen = [i for depth in range(max(map(len, per), default=0)) for p in per if depth < len(p) for i in [p[depth]]]
    keep = set(chosen[: n_structures] if n_structures is not None else chosen)
    seeds = {int(s) for s in seeds}
    return [it for it in items if it.index in keep and (it.kind == "pristine" or it.seed in seeds)]


def level_report(items: Sequence[Item], correct, *, predicted=None, unknown=None) -> dict:
    """{"pristine": rep, kind: {key: rep}} with rep = k, n, accuracy, interval_95, per_seed, per_class (and with
    ``predicted`` class names or None: confusion rows = parent, columns = predicted + "failed"; with ``unknown``:
    n_unknown, unknown_rate)."""
    from crystaljax.structures.dataset import CLASSES

    correct = np.asarray(correct, bool)
    groups: dict[tuple[str, str], list[int]] = {}
    for j, it in enumerate(items):
        groups.setdefault((it.kind, it.key), []).append(j)
    out: dict[str, Any] = {}
    for (kind, key), rows in groups.items():
        rows = np.asarray(rows)
        ok = correct[rows]
        k, n = int(ok.sum()), int(len(ok))
        seeds = sorted({items[j].seed for j in rows})
        cls = np.array([items[j].cls for j in rows])
        rep: dict[str, Any] = {
            "k": k, "n": n, "accuracy": k / n, "interval_95": list(wilson_interval(k, n)),
            "per_seed": [float(ok[[items[j].seed == s for j in rows]].mean()) for s in seeds],
            "per_class": {c: (float(ok[cls == c].mean()) if (cls == c).any() else None) for c in CLASSES}}
        if predicted is not None:
            cols = list(CLASSES) + ["failed"]
            conf = np.zeros((len(CLASSES), len(cols)), int)
            for j in rows:
                conf[CLASSES.index(items[j].cls), cols.index(predicted[j] or "failed")] += 1
            rep["confusion"] = conf.tolist()
            rep["n_failed"] = int(conf[:, -1].sum())
        if unknown is not None:
            flagged = int(np.asarray(unknown, bool)[rows].sum())
            rep.update(n_unknown=flagged, unknown_rate=flagged / n)
        if kind == "pristine":
            out["pristine"] = rep
        else:
            out.setdefault(kind, {})[key] = rep
    return out


def _project(block: Mapping, field: str) -> dict:
    """A level_report with every report replaced by its ``field``."""
    return {k: (v[field] if k == "pristine" else {key: r[field] for key, r in v.items()}) for k, v in block.items()}


def sweep(pristine: Sequence[tuple[str, Any]], levels: Mapping[str, Sequence], seeds: Sequence[int],
          models: Mapping[str, str], directory, *, binary=(29, 47), ternary=(29, 47, 79),
          symprecs: Sequence[float] = (0.1, 0.01, 0.001, 1e-5), spglib: bool = True,
          spglib_per_class: int | None = 30, spglib_structures: int | None = None, spglib_seeds=None,
          workers: int = 2, mc_samples: int | None = None, batch: int | None = None,
          log=lambda msg: None) -> dict:
    """Write every file into ``directory``, classify it with each model (name or directory) through the CLI and
    run spglib on the spglib subset; returns the details: {"convnet": {name: level_report}, "spglib": {symprec:
    level_report}, "cli_errors", counts and timings}."""
    t0 = time.perf_counter()
    items = write_files(pristine, levels, seeds, directory, binary, ternary)
    t_write = time.perf_counter() - t0
    log(f"wrote {len(items)} files in {t_write:.1f} s")
    sp_items = spglib_items(items, spglib_per_class, spglib_structures,
                            seeds if spglib_seeds is None else spglib_seeds) if spglib else []
    symprecs = [float(s) for s in symprecs]
    chunks = [[str(Path(directory) / it.file) for it in sp_items[i:i + 16]] for i in range(0, len(sp_items), 16)]
    executor, futures = None, []
    try:
        if chunks and workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            executor = ProcessPoolExecutor(int(workers), mp_context=mp.get_context("spawn"))
            futures = [executor.submit(_spacegroups_chunk, (c, symprecs)) for c in chunks]
        seconds: dict[str, Any] = {"write_files": round(t_write, 2), "classify": {}}
        unique = list(dict.fromkeys(models.values()))  # a model named twice is run once
        errors: dict[str, list] = {model: [] for model in unique}

        def one_model(model):  # the models' CLI processes run at the same time (their start-up overlaps)
            t1 = time.perf_counter()
            rows = classify_files([it.file for it in items], model, mc_samples=mc_samples, batch=batch,
                                  cwd=directory, errors=errors[model])
            seconds["classify"][model] = round(time.perf_counter() - t1, 2)
            log(f"{model}: {len(rows)}/{len(items)} files classified in {seconds['classify'][model]:.1f} s")
            by_file = {Path(r["file"]).name: r for r in rows}
            got = [by_file.get(it.file) for it in items]
            predicted = [None if r is None else r["label"] for r in got]
            return level_report(items, [p == it.cls for p, it in zip(predicted, items)], predicted=predicted,
                                unknown=[bool(r and r.get("unknown")) for r in got])

        from concurrent.futures import ThreadPoolExecutor

        t1 = time.perf_counter()
        with ThreadPoolExecutor(max(len(unique), 1)) as threads:
            by_model = dict(zip(unique, threads.map(one_model, unique)))
        conv = {name: by_model[model] for name, model in models.items()}
        seconds["classify_wall"] = round(time.perf_counter() - t1, 2)
        t2 = time.perf_counter()
        parts = [f.result() for f in futures] if executor else [_spacegroups_chunk((c, symprecs)) for c in chunks]
        found = [g for rows, _ in parts for g in rows]
        seconds["spglib_wait"] = round(time.perf_counter() - t2, 2)
        seconds["spglib_cpu"] = round(sum(t for _, t in parts), 2)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    spg: dict[str, dict] = {}
    for j, sp in enumerate(symprecs):
        groups = [g[j] for g in found]
        spg[str(sp)] = level_report(sp_items, [g == it.spacegroup for g, it in zip(groups, sp_items)])
        for kind, block in spg[str(sp)].items():
            for key, rep in ([("pristine", block)] if kind == "pristine" else block.items()):
                sel = [g for g, it in zip(groups, sp_items) if it.kind == kind and it.key == key]
                values, counts = np.unique([-1 if g is None else g for g in sel], return_counts=True)
                rep["spacegroups"] = {str(v): int(c) for c, v in sorted(zip(counts, values), reverse=True)[:5]}
    seconds["total"] = round(time.perf_counter() - t0, 2)
    return {"convnet": conv, "spglib": spg, "cli_errors": {name: errors[m][:20] for name, m in models.items()},
            "n_files": len(items), "n_files_spglib": len(sp_items), "n_spglib_calls": len(sp_items) * len(symprecs),
            "n_structures_spglib": len({it.index for it in sp_items}),
            "seconds": seconds}


def results_of(details: Mapping, n_structures: int, seeds: Sequence[int], protocol: str,
               internal: Mapping | None = None) -> dict:
    """table1.json: the defect_sweeps schema with the file-path numbers, plus protocol, intervals, unknown_rate and
    (if given) internal_protocol."""
    conv, spg = details["convnet"], details["spglib"]
    out: dict[str, Any] = {name: _project(block, "accuracy") for name, block in conv.items()}
    if spg:
        out["spglib"] = {sp: _project(block, "accuracy") for sp, block in spg.items()}
    out.update(n_structures=int(n_structures), seeds=[int(s) for s in seeds], protocol=protocol)
    out["intervals"] = {name: _project(block, "interval_95") for name, block in conv.items()}
    if spg:
        out["intervals"]["spglib"] = {sp: _project(block, "interval_95") for sp, block in spg.items()}
    out["unknown_rate"] = {name: _project(block, "unknown_rate") for name, block in conv.items()}
    if internal:
        out["internal_protocol"] = dict(internal)
    return out


def internal_numbers(path) -> dict | None:
    """The internal-protocol block of a table1.json: its ``internal_protocol`` if it already holds file-path
    numbers, else its defect_sweeps keys; None if there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    if str(d.get("protocol", "")).startswith("file path"):
        return d.get("internal_protocol")
    return {k: d[k] for k in INNER_KEYS if k in d}


# --------------------------------------------------------------------------------------------
# figure


def plot(results: Mapping, path) -> Path:
    """Accuracy vs level, one panel per defect kind: each model with its 95 % Wilson error bars, spglib per symprec
    as dashed lines (with bars); the pristine accuracy as a dotted line per model; PNG."""
    from matplotlib.figure import Figure

    from crystaljax.learn.evaluate import save_figure

    models = [m for m in ("convnet", "convnet_augmented") if m in results]
    spg = results.get("spglib", {}) or {}
    kinds = [k for k in ("displacement", "vacancies", "substitution") if any(k in results[m] for m in models)]
    fig = Figure(figsize=(4.8 * max(len(kinds), 1), 4.0), dpi=120)
    axes = fig.subplots(1, max(len(kinds), 1), squeeze=False)[0]
    iv = results.get("intervals", {})
    labels = {"convnet": "ConvNet (pristine-trained)", "convnet_augmented": "ConvNet (augmented)"}
    for ax, kind in zip(axes, kinds):
        keys = list(results[models[0]].get(kind, {}))
        xs = np.arange(len(keys)) if kind == "substitution" else np.array([float(k) for k in keys])
        if kind == "substitution":
            ax.set_xticks(xs, [k.replace("_", "\n") for k in keys], fontsize=7)
        elif kind == "displacement":
            ax.set_xscale("log")

        n_series = len(models) + len(spg)
        span = float(np.ptp(xs)) if len(xs) > 1 else 1.0

        def draw(block, bounds, style, label, j, **kw):  # series j shifted sideways so the bars do not overlap
            shift = j - (n_series - 1) / 2
            x = xs * 1.03 ** shift if kind == "displacement" else xs + (0.05 if kind == "substitution" else 0.006 * span) * shift
            ys = np.array([block.get(kind, {}).get(k, np.nan) for k in keys], float)
            lo_hi = np.array([bounds.get(kind, {}).get(k, [np.nan, np.nan]) for k in keys], float).reshape(-1, 2)
            err = np.abs(np.stack([ys - lo_hi[:, 0], lo_hi[:, 1] - ys]))
            return ax.errorbar(x, ys, yerr=err, fmt=style, capsize=2, label=label, **kw)

        for j, m in enumerate(models):
            line = draw(results[m], iv.get(m, {}), "o-", labels[m], j, lw=2)
            if "pristine" in results[m]:
                ax.axhline(results[m]["pristine"], color=line[0].get_color(), ls=":", lw=1)
        for j, (s, block) in enumerate(spg.items(), len(models)):
            draw(block, iv.get("spglib", {}).get(s, {}), "s--", f"spglib {float(s):g} Å", j, ms=3, lw=1, alpha=0.8)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title({"displacement": "Random displacements", "vacancies": "Vacancies",
                      "substitution": "Substitutions"}[kind])
        ax.set_xlabel({"displacement": "σ (Å)", "vacancies": "vacancy fraction",
                       "substitution": "alloy, substituted fraction"}[kind])
        ax.set_ylabel("accuracy (95 % Wilson interval)")
        ax.grid(alpha=0.3)
    if kinds:
        axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Table 1 through the file path (crystaljax classify)", fontsize=10)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# the experiment


def _model_arg(model: str) -> str:
    """A shipped name as it is, anything else an absolute path (relative to the launch directory)."""
    from hydra.utils import to_absolute_path

    from crystaljax.learn.checkpoint import SHIPPED_MODELS

    return str(model) if str(model) in SHIPPED_MODELS else to_absolute_path(str(model))


def run(cfg, workdir) -> dict:
    """Table 1 through the file path from a ``Table1FilePathConfig``; writes table1.json,
    table1_file_path_details.json, table1_file_path.md, table1_file_path.png and the resolved config into the
    output directory (the run directory; docs/results with ``save_docs=true``); returns table1.json's dict."""
    from hydra.utils import to_absolute_path

    from crystaljax.analysis import report
    from crystaljax.analysis.defect_sweeps import command_line
    from crystaljax.config import start_experiment

    t0 = time.perf_counter()
    internal = internal_numbers(to_absolute_path(str(cfg.internal_from)))  # before anything is written
    out = start_experiment(cfg, workdir, "table1_file_path", cfg.docs_dir)
    levels = {"displacement": [float(x) for x in cfg.levels.displacement],
              "vacancies": [float(x) for x in cfg.levels.vacancies],
              "substitution": [str(x) for x in cfg.levels.substitution]}
    seeds = [int(s) for s in cfg.seeds]
    models = {name: _model_arg(m) for name, m in cfg.models.items()}
    infos = {name: model_info(m) for name, m in models.items()}
    if int(cfg.per_class) < 1:
        raise CrystalJaxError(f"per_class must be >= 1, got {cfg.per_class}")

    def log(msg):
        if cfg.progress:
            print(f"[table1_file_path] {msg}", file=sys.stderr, flush=True)

    pristine = crystals(int(cfg.per_class), int(cfg.seed), int(cfg.target))
    spg = cfg.spglib
    tmp = None
    if cfg.keep_files:
        directory = Path(to_absolute_path(str(cfg.keep_files)))
    else:
        tmp = tempfile.TemporaryDirectory(prefix="table1_file_path_")
        directory = Path(tmp.name)
    try:
        details = sweep(pristine, levels, seeds, models, directory, binary=cfg.binary_elements,
                        ternary=cfg.ternary_elements, symprecs=spg.symprecs, spglib=bool(spg.enabled),
                        spglib_per_class=spg.n_per_class, spglib_structures=spg.n_structures,
                        spglib_seeds=spg.seeds, workers=int(spg.workers), mc_samples=cfg.mc_samples,
                        batch=cfg.classify_batch, log=log)
    finally:
        if tmp is not None:
            tmp.cleanup()
    protocol = PROTOCOL.format(target=cfg.target, binary=list(cfg.binary_elements), ternary=list(cfg.ternary_elements),
                               convnet=cfg.models.get("convnet"), augmented=cfg.models.get("convnet_augmented"),
                               n=len(pristine), n_seeds=len(seeds))
    results = results_of(details, len(pristine), seeds, protocol, internal)
    details.update(
        models=infos, command=command_line("table1_file_path.py"), protocol=protocol,
        crystals=[{"class": c, **a.info, "n_atoms": len(a)} for c, a in pristine],
        levels={k: list(results[next(iter(models))].get(k, {})) for k in levels} if models else {},
        seeds=seeds, symprecs=[float(s) for s in spg.symprecs],
        n_structures=len(pristine))
    details["seconds"]["wall"] = round(time.perf_counter() - t0, 2)
    details["seconds_per_file"] = {m: s / max(details["n_files"], 1) for m, s in details["seconds"]["classify"].items()}
    details["seconds_per_file"]["spglib_cpu"] = details["seconds"]["spglib_cpu"] / max(details["n_files_spglib"], 1)
    report.write_json(results, out / "table1.json")
    report.write_json(details, out / "table1_file_path_details.json")
    (out / "table1_file_path.md").write_text(
        f"# Table 1 through the file path\n\n`{details['command']}`\n\nProtocol: {protocol}.\n\n"
        + report.table1_markdown(results))
    plot(results, out / "table1_file_path.png")
    return results


__all__ = [
    "CLASS_PROTOTYPES", "ELEMENTS", "KIND_ID", "INNER_KEYS", "wilson_interval", "prototype_params", "crystals",
    "n_affected", "displace", "remove_atoms", "substitute", "alloy_species", "defective", "level_rng", "apply_level",
    "cli_executable", "classify_files", "model_info", "Item", "write_files", "spacegroups_of_file", "spglib_items",
    "level_report", "sweep", "results_of", "internal_numbers", "plot", "run",
]
