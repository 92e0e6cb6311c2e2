"""ConvNet accuracy under defects (the paper's Table 1): one vmap over levels and keys per defect kind.

The pristine clusters of the test split are made defective on device by
``physics.defects.make_defect_fn`` (static stage, traced levels), fingerprinted and classified by
one or more :class:`~crystaljax.learn.classifier.Classifier`; accuracy is measured against the
parent's label.  Kinds and levels:

* ``displacement``: Gaussian displacement, sigma in PHYSICAL Å per Cartesian component.
* ``vacancies``:    exactly round(f n) atoms removed (mask 0).
* ``substitution``: exactly round(f n) atoms change species; ``"binary_<f>"`` (one new species) or
  ``"ternary_<f>"`` (two).  The new species are drawn per structure and seed from the data set's
  element pool minus the host element (:func:`substitution_elements`).
* ``sublattice``:   exactly round(f n_tagged) atoms of tag 1 (bcc body centres) removed.

Every draw is keyed by ``(seed, kind, level, data-set index)`` (:func:`defect_keys`), so a
structure gets the same stream whatever subset, batch or level list it is processed in.
``table1.json`` schema: ``{"convnet": {"pristine": a, kind: {level_key: a}}, "convnet_augmented":
{...}, "spglib": {symprec_key: {...}}, "n_structures": N, "seeds": [...]}`` (fractions;
level keys ``str(float(level))`` or ``binary_0.25``).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import jax
import jax.numpy as jnp

from crystaljax.physics.defects import DefectLevels, DefectSpec, make_defect_fn
from crystaljax.structure import Structure, map_padded, take
from crystaljax.structures.dataset import CLASSES, Dataset

KINDS: tuple[str, ...] = ("displacement", "vacancies", "substitution", "sublattice")
TABLE_KINDS: tuple[str, ...] = ("displacement", "vacancies", "substitution")
ALLOYS: dict[str, int] = {"binary": 1, "ternary": 2}
"""Substitution levels: alloy name -> number of new species."""
SYMPRECS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-5)
"""Default spglib tolerances, Å."""

_KIND_ID = {k: i + 1 for i, k in enumerate(KINDS)}
_STAGE = {"displacement": "displacement", "vacancies": "vacancies", "substitution": "substitution",
          "sublattice": "sublattice"}
_LEVEL_FIELD = {"displacement": "displacement_sigma", "vacancies": "vacancy_fraction",
                "substitution": "substitution_fraction", "sublattice": "sublattice_fraction"}


# --------------------------------------------------------------------------------------------
# levels and keys


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


def level_key(level) -> str:
    """The JSON key of a level: ``str(float(level))`` ('0.06', '1e-05'), or 'binary_0.25'."""
    if isinstance(level, (str, tuple)):
        alloy, frac = parse_substitution(level)
        return f"{alloy}_{frac}"
    return str(float(level))


def level_value(kind: str, level) -> tuple[float, int]:
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

    The level enters as round(1e6 * value) (plus the alloy for substitutions), so adding levels never
    changes the draws of the others, and a structure's key does not depend on the batch.
    """
    value, n_new = level_value(kind, level)
    k = jax.random.fold_in(jax.random.key(int(seed)), _KIND_ID[kind])
    k = jax.random.fold_in(jax.random.fold_in(k, n_new), int(round(value * 1e6)))
    idx = jnp.asarray(np.asarray(indices, np.int64).reshape(-1), jnp.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(k, i))(idx)


def element_pool(ds: Dataset) -> list[int]:
    """Atomic numbers of the data set's elements (``ds.info['elements']``, else those present)."""
    from crystaljax.structures.prototypes import atomic_number

    names = ds.info.get("elements") if isinstance(ds.info, Mapping) else None
    if names:
        return sorted({atomic_number(e) for e in names})
    return sorted({int(z) for z in np.asarray(ds.meta["element"])})


def substitution_elements(ds: Dataset, indices, seed: int, pool: Sequence[int] | None = None) -> np.ndarray:
    """(N, 2) int32 substituting species per structure: two distinct elements of ``pool`` (default the
    data set's elements) other than the host, drawn with ``numpy.random.default_rng([seed, 11, index])``.
    Binaries use column 0, ternaries both."""
    pool = np.asarray(sorted(set(int(z) for z in (element_pool(ds) if pool is None else pool))), np.int64)
    host = np.asarray(ds.meta["element"])
    out = np.zeros((len(np.atleast_1d(indices)), 2), np.int32)
    for row, i in enumerate(np.asarray(indices).reshape(-1)):
        choices = pool[pool != int(host[i])]
        if len(choices) < 2:
            raise ValueError("the substitution element pool needs two elements besides the host")
        out[row] = np.random.default_rng([int(seed), 11, int(i)]).choice(choices, size=2, replace=False)
    return out


def _level_elements(elements: np.ndarray, n_new: int) -> np.ndarray:
    """(N, 2) substituting species -> those of an alloy with ``n_new`` species (unused slots 0)."""
    out = np.asarray(elements, np.int32).copy()
    out[:, n_new:] = 0
    return out


# --------------------------------------------------------------------------------------------
# the device path: defect -> fingerprint -> probabilities, vmapped over levels and structures


def kind_defect_fn(kind: str, renormalize: bool = False) -> Callable:
    """``fn(key, structure, value, elements (2,)) -> Structure``: one defect kind at a traced level.

    The kind's stage draws from the key as given (the keys are already specific to the kind);
    ``renormalize`` rescales the result as the host pipeline scales a file."""
    if kind not in KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; choose one of {KINDS}")
    defect = make_defect_fn(DefectSpec((_STAGE[kind],), sublattice_tag=1, renormalize=renormalize, split_key=False))
    field = _LEVEL_FIELD[kind]

    def fn(key, s: Structure, value, elements):
        return defect(key, s, DefectLevels(**{field: value}, substitution_elements=elements))

    return fn


def _fingerprint_group(models: Mapping[str, Any]) -> list[tuple[Callable, dict]]:
    """Models grouped by fingerprint settings: [(fingerprint_fn, {name: model})]; a group shares images."""
    groups: dict[Any, tuple[Callable, dict]] = {}
    for name, m in models.items():
        spec = getattr(m, "spec", None)
        key = (spec.detector, spec.beam, spec.fingerprint) if spec is not None else id(m.fingerprint_fn)
        groups.setdefault(key, (m.fingerprint_fn, {}))[1][name] = m
    return list(groups.values())


def make_probabilities_fn(kind: str, fingerprint_fn: Callable, models: Mapping[str, Any], renormalize: bool = False):
    """Jitted ``fn(key_data (n, L, 2) uint32, batch (n, ...), values (L,), elements (n, L, 2))
    -> {name: probabilities (n, L, C)}``: defect, fingerprint and every model, vmapped over the L
    levels of each of the n structures."""
    defect = kind_defect_fn(kind, renormalize)

    def image(key_data, s, value, elements):
        return fingerprint_fn(defect(jax.random.wrap_key_data(key_data), s, value, elements))

    def fn(key_data, batch, values, elements):
        per_level = jax.vmap(image, in_axes=(0, None, 0, 0))
        images = jax.vmap(per_level, in_axes=(0, 0, None, 0))(key_data, batch, values, elements)
        n, n_levels = images.shape[:2]
        flat = images.reshape((n * n_levels,) + images.shape[2:])
        return {name: m.apply(flat).reshape(n, n_levels, -1) for name, m in models.items()}

    return jax.jit(fn)


def defective_probabilities(models: Mapping[str, Any], kind: str, structures: Structure, indices, levels: Sequence,
                            seed: int, *, elements=None, batch_size: int = 32, renormalize: bool = False,
                            ) -> dict[str, np.ndarray]:
    """Class probabilities {name: (N, L, C)} of N structures under L levels of one defect kind.

    models: name -> Classifier (anything with ``fingerprint_fn``, ``apply`` and ``spec``); indices:
    the structures' data-set indices (for the keys); elements: (N, 2) substituting species
    (substitution only).  One compilation per kind and fingerprint setting.
    """
    n = int(np.shape(structures.positions)[0])
    values = np.zeros(len(levels), np.float32)
    key_data = np.zeros((n, len(levels), 2), np.uint32)
    elem = np.zeros((n, len(levels), 2), np.int32)
    base = np.zeros((n, 2), np.int32) if elements is None else np.asarray(elements, np.int32)
    for j, level in enumerate(levels):
        value, n_new = level_value(kind, level)
        values[j] = value
        key_data[:, j] = np.asarray(jax.random.key_data(defect_keys(seed, kind, level, indices)))
        elem[:, j] = _level_elements(base, n_new)
    per_call = max(1, int(batch_size) // max(len(levels), 1))
    out: dict[str, np.ndarray] = {}
    for ffn, group in _fingerprint_group(models):
        fn = make_probabilities_fn(kind, ffn, group, renormalize)
        vals = jnp.asarray(values)
        res = map_padded(lambda chunk: fn(chunk[0], chunk[1], vals, chunk[2]), (key_data, structures, elem), per_call)
        out.update(res)
    return {name: out[name] for name in models}


def defect_batch(structures: Structure, kind: str, level, seed: int, indices, *, elements=None,
                 renormalize: bool = False) -> Structure:
    """The defective version of a batched Structure (NumPy arrays), with the sweeps' draws."""
    value, n_new = level_value(kind, level)
    n = int(np.shape(structures.positions)[0])
    elements = np.zeros((n, 2), np.int32) if elements is None else _level_elements(elements, n_new)
    fn = jax.jit(jax.vmap(kind_defect_fn(kind, renormalize), in_axes=(0, 0, None, 0)))
    out = fn(defect_keys(seed, kind, level, indices), jax.tree.map(jnp.asarray, structures), jnp.float32(value),
             jnp.asarray(elements))
    return jax.tree.map(np.asarray, out)


# --------------------------------------------------------------------------------------------
# selecting structures and reports


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


def accuracy_report(labels, probs_per_seed: Sequence[np.ndarray]) -> dict:
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


def convnet_sweep(models: Mapping[str, Any], ds: Dataset, levels: Mapping[str, Sequence], seeds: Sequence[int] = (0, 1),
                  *, indices=None, pristine: bool = True, batch_size: int = 32, renormalize: bool = False,
                  elements_pool: Sequence[int] | None = None, progress: bool = False,
                  on_level: Callable[[str, str, str, dict], None] | None = None) -> dict:
    """Accuracy of one or more models on the same defective structures.

    models: name -> Classifier.  levels: kind -> list of levels.  indices: data-set indices (default
    the test split).  Returns ``{name: {"pristine": report, kind: {level_key: report}}}`` with the
    reports of :func:`accuracy_report`.  ``on_level(name, kind, key, report)`` after each level.
    """
    idx = select_indices(ds) if indices is None else np.asarray(indices, np.int64)
    if len(idx) == 0:
        raise ValueError("no structures to evaluate")
    for kind in levels:
        if kind not in KINDS:
            raise ValueError(f"unknown defect kind {kind!r}; choose one of {KINDS}")
    structures = take(ds.structures, idx)
    labels = np.asarray(ds.labels)[idx]
    pool = element_pool(ds) if elements_pool is None else list(elements_pool)
    out: dict[str, dict] = {name: {} for name in models}

    def done(name, kind, key, rep):
        if on_level is not None:
            on_level(name, kind, key, rep)

    jobs = ([("pristine", [0.0], [0])] if pristine else []) + [(k, list(v), list(seeds)) for k, v in levels.items()]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="convnet sweep", unit="kind")
    for kind, lv, kind_seeds in jobs:
        real = "displacement" if kind == "pristine" else kind  # sigma 0 is an exact no-op
        per_seed: dict[str, list] = {name: [] for name in models}
        for seed in kind_seeds:
            elements = substitution_elements(ds, idx, seed, pool) if kind == "substitution" else None
            probs = defective_probabilities(models, real, structures, idx, lv, seed, elements=elements,
                                            batch_size=batch_size, renormalize=renormalize)
            for name in models:
                per_seed[name].append(probs[name])
        for name in models:
            if kind == "pristine":
                out[name]["pristine"] = accuracy_report(labels, [per_seed[name][0][:, 0]])
                done(name, "pristine", "pristine", out[name]["pristine"])
                continue
            for j, level in enumerate(lv):
                key = level_key(level)
                rep = accuracy_report(labels, [p[:, j] for p in per_seed[name]])
                out[name].setdefault(kind, {})[key] = rep
                done(name, kind, key, rep)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


# --------------------------------------------------------------------------------------------
# Table 1


def table1(models: Mapping[str, Any], ds: Dataset, levels: Mapping[str, Sequence], seeds: Sequence[int] = (0, 1),
           symprecs: Sequence[float] = SYMPRECS, *, indices=None, spglib_indices=None,
           spglib_seeds: Sequence[int] | None = None, spglib: bool = True, workers: int = 0, target: int = 250,
           batch_size: int = 32, renormalize: bool = False, progress: bool = False,
           on_level: Callable | None = None) -> tuple[dict, dict]:
    """Everything of Table 1: ``(results, details)``.

    models: result name ('convnet', 'convnet_augmented') -> Classifier; models with the same
    fingerprint settings are evaluated on the same images.  indices: ConvNet structures (default
    the test split); spglib_indices: the spglib structures (default the same).  workers > 0 runs
    spglib in that many spawned processes while the ConvNet sweep runs.  results: the schema of the
    module docstring; details: per-class accuracy, confusion matrices, per-seed accuracies,
    binomial intervals of spglib, returned space groups and timings.
    """
    from crystaljax.analysis.spglib_baseline import SpglibSweep

    t0 = time.perf_counter()
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
        conv = convnet_sweep(models, ds, levels, seeds, indices=idx, batch_size=batch_size, renormalize=renormalize,
                             progress=progress, on_level=on_level)
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


# --------------------------------------------------------------------------------------------
# the experiment


def load_dataset(data, seed: int = 0) -> Dataset:
    """The data set of a ``data`` config (DataConfig or a node with the same keys): name 'tiny' is
    generated on the fly (seconds, serial), anything else is read from ``data.path`` (relative to the
    launch directory)."""
    from hydra.utils import to_absolute_path

    from crystaljax.structures import dataset

    if data.name == "tiny":
        els = data.elements
        return dataset.generate(seed=int(seed), per_class=int(data.per_class),
                                elements=None if els is None else list(els), target=int(data.target),
                                splits=tuple(data.splits), progress=False, workers=1)
    return dataset.load(to_absolute_path(str(data.path)))


def load_model(path_or_name):
    """A Classifier from a config value: None -> the shipped default, else a name or a path (relative to
    the launch directory)."""
    from hydra.utils import to_absolute_path

    from crystaljax.learn.checkpoint import SHIPPED_MODELS
    from crystaljax.learn.classifier import Classifier

    if path_or_name is None or str(path_or_name) in SHIPPED_MODELS:
        return Classifier.load(path_or_name)
    return Classifier.load(Path(to_absolute_path(str(path_or_name))))


def config_dict(cfg) -> dict:
    """A config (schema instance or DictConfig) as a plain resolved dict."""
    import dataclasses

    from omegaconf import OmegaConf

    if dataclasses.is_dataclass(cfg):
        return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    return OmegaConf.to_container(cfg, resolve=True)


def command_line(script: str) -> str:
    return f"python experiments/{script} " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def run(cfg, workdir) -> dict:
    """Table 1 from a ``Table1Config`` (or a DictConfig with its keys); writes table1.json,
    table1_details.json, table1.md, table1.png and the resolved config; returns table1.json's dict."""
    from crystaljax.analysis import report
    from crystaljax.config import start_experiment
    from crystaljax.learn import tracking

    t0 = time.perf_counter()
    out = start_experiment(cfg, workdir, "table1")
    levels = {"displacement": [float(x) for x in cfg.levels.displacement],
              "vacancies": [float(x) for x in cfg.levels.vacancies],
              "substitution": [str(x) for x in cfg.levels.substitution]}
    seeds = [int(s) for s in cfg.seeds]
    spg = cfg.spglib
    sp_seeds = seeds if spg.seeds is None else [int(s) for s in spg.seeds]
    ds = load_dataset(cfg.data, seed=int(cfg.seed))
    idx = select_indices(ds, cfg.split, cfg.n_structures, cfg.n_per_class)
    if len(idx) == 0:
        raise ValueError(f"split {cfg.split!r} of the data set is empty")
    sp_idx = select_indices(ds, None, spg.n_structures, spg.n_per_class, within=idx)

    models = {"convnet": load_model(cfg.model_dir)}
    if cfg.augmented_model_dir:
        models["convnet_augmented"] = load_model(cfg.augmented_model_dir)
    model_info = {name: {"dir": m.card.get("path"), "sha256": m.card.get("sha256"),
                         "training_defect": (m.card.get("training") or {}).get("defect")}
                  for name, m in models.items()}

    run_ = tracking.start(config_dict(cfg), config_dict(cfg.logger), workdir)
    step = {"n": 0}

    def on_level(name, kind, key, rep):
        tracking.log(run_, {f"{name}/{kind}/{key}": rep["accuracy"]}, step=step["n"])
        step["n"] += 1

    try:
        results, details = table1(
            models, ds, levels, seeds, [float(s) for s in spg.symprecs], indices=idx, spglib_indices=sp_idx,
            spglib_seeds=sp_seeds, spglib=bool(spg.enabled), workers=int(spg.workers), target=int(spg.target),
            batch_size=int(cfg.batch_size), renormalize=bool(cfg.renormalize), progress=bool(cfg.progress),
            on_level=on_level)
        details.update(models=model_info, command=command_line("table1.py"),
                       data={"name": cfg.data.name, "path": cfg.data.path, "n": len(ds)})
        report.write_json(results, out / "table1.json")
        (out / "table1.md").write_text(report.table1_document(results, details))
        png = report.plot_table1(results, out / "table1.png")
        tracking.log_image(run_, "table1", png, step=step["n"])
        summary = {f"{name}/pristine": results[name].get("pristine") for name in models}
        summary.update({f"spglib/{sp}/pristine": b.get("pristine") for sp, b in results.get("spglib", {}).items()})
        tracking.set_summary(run_, {k: v for k, v in summary.items() if v is not None})
    finally:
        info = tracking.finish(run_)
    details["tracking"] = info
    details["seconds"]["wall"] = round(time.perf_counter() - t0, 2)
    report.write_json(details, out / "table1_details.json")
    return results


__all__ = [
    "KINDS", "TABLE_KINDS", "ALLOYS", "SYMPRECS", "parse_substitution", "level_key", "level_value", "defect_keys",
    "element_pool", "substitution_elements", "kind_defect_fn", "make_probabilities_fn", "defective_probabilities",
    "defect_batch", "select_indices", "accuracy_report", "convnet_sweep", "table1", "load_dataset", "load_model",
    "config_dict", "command_line", "run",
]
