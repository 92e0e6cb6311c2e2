"""Fig. 4: the ConvNet along two structural transitions.

(a) bcc -> sc: a growing fraction of the body-centre atoms (tag 1) of bcc clusters is removed
    (sweep kind ``sublattice``, several draws per structure, optionally renormalised as the pipeline
    scales a file); p(bcc), p(sc) as mean ± 1 std over structures and draws.
(b) rhombohedral path: A_hR1_166_a (beta-Po) for mu = c/a; every class probability vs mu and the
    width of the windows predicted bcc, sc and fcc around mu_bcc = sqrt(3/8), mu_sc = sqrt(3/2),
    mu_fcc = sqrt(6).  The cell goes through the host pipeline in the 3-atom hexagonal setting and/or
    as the 1-atom primitive rhombohedral cell (:data:`RH_SETTINGS`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from crystaljax.analysis.defect_sweeps import command_line, config_dict, defective_probabilities, load_dataset, load_model
from crystaljax.structure import Structure
from crystaljax.structures.dataset import CLASSES

log = logging.getLogger(__name__)


def bcc_sc_sweep(model, structures: Structure, fractions: Sequence[float], seeds: Sequence[int],
                 *, indices=None, renormalize: bool = True, batch_size: int = 32) -> dict:
    """bcc -> sc: remove a fraction of the body-centre atoms (tag 1) and record p(bcc), p(sc).

    structures: batched bcc clusters with tags (N, n_max, ...); indices: their ids for the keys
    (default 0..N-1).  renormalize: rescale each cluster to unit mean nearest-neighbour distance
    after the removal (what the host pipeline does to a finite structure; the full removal then
    is a proper sc cluster).  Returns lists over ``fractions`` of mean and std (over structures x
    seeds) of p(bcc), p(sc), the fraction predicted bcc / sc, and the mean of every class probability.
    """
    n = int(np.shape(structures.positions)[0])
    if n == 0:
        raise ValueError("no bcc structures")
    if not np.all(tagged_bcc(structures)):
        raise ValueError("every bcc cluster must have half of its atoms tagged 1 (body centres); "
                         "filter with transitions.tagged_bcc")
    idx = np.arange(n) if indices is None else np.asarray(indices, np.int64)
    b, s_ = CLASSES.index("bcc"), CLASSES.index("sc")
    rows = {k: [] for k in ("p_bcc_mean", "p_bcc_std", "p_sc_mean", "p_sc_std", "frac_pred_bcc", "frac_pred_sc")}
    mean_probs = []
    per_seed = [defective_probabilities({"m": model}, "sublattice", structures, idx, list(fractions), seed,
                                        batch_size=batch_size, renormalize=renormalize)["m"] for seed in seeds]
    for j in range(len(fractions)):
        probs = np.concatenate([p[:, j] for p in per_seed])
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


def rhombohedral_sweep(model, mus: Sequence[float], *, element="Po", setting: str = "hexagonal",
                       target: int = 250, batch_size: int = 32, progress: bool = False) -> dict:
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
    mus = [float(m) for m in mus]
    it = mus
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(mus, desc=f"rhombohedral clusters ({setting})", unit="struct")
    cells = [rhombohedral_path(m, element) for m in it]
    if setting == "primitive":
        cells = [rhombohedral_primitive(c) for c in cells]
    batch = prepare_structures(cells, target=target)
    probs = model.predict(batch, batch_size).probabilities
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


def bcc_structures(bcfg, data=None, seed: int = 0, target: int = 250):
    """(batched bcc clusters with tags, key indices, description) per a ``BccScConfig``: the data set's
    bcc structures of ``bcfg.source`` whose clusters carry the body-centre tags, topped up with bcc
    prototypes of ``bcfg.elements`` when there are fewer than ``bcfg.min_structures``."""
    from crystaljax import structure

    source = str(bcfg.source)
    cap = bcfg.n_structures
    parts, ids, desc = [], [], {"source": source}
    if source in ("test", "train", "val", "all"):
        ds = load_dataset(data, seed=int(seed))
        split = np.asarray(ds.split).astype(str)
        keep = np.asarray(ds.labels) == CLASSES.index("bcc")
        if source != "all":
            keep &= split == source
        desc["dataset_bcc"] = int(keep.sum())
        keep &= tagged_bcc(ds.structures)  # clusters built from cells that carry the body-centre tags
        idx = np.flatnonzero(keep)
        if cap is not None:
            idx = idx[: int(cap)]
        if len(idx):
            batch = structure.take(ds.structures, idx)
            parts.extend(structure.take(batch, k) for k in range(len(idx)))
            ids.extend(int(i) for i in idx)
        desc["dataset_indices"] = [int(i) for i in idx]
    elif source != "prototypes":
        raise ValueError(f"bcc_sc.source must be test, train, val, all or prototypes, got {source!r}")
    elements = list(bcfg.elements or [])
    if source != "prototypes":
        # top up a split with few bcc structures
        need = max(int(bcfg.min_structures), 1)
        elements = elements[: max(need - len(parts), 0)]
    elif cap is not None:
        elements = elements[: int(cap)]
    if elements:
        protos = bcc_clusters(elements, target=int(target))
        parts.extend(structure.take(protos, k) for k in range(len(elements)))
        ids.extend(10_000_000 + k for k in range(len(elements)))
        desc["prototype_elements"] = [str(e) for e in elements]
    if not parts:
        raise ValueError("no bcc structures: the split has none and bcc_sc.elements is empty")
    n_max = max(int(np.shape(p.positions)[0]) for p in parts)
    return structure.stack(parts, n_max=n_max), np.asarray(ids, np.int64), desc


def run(cfg, workdir) -> dict:
    """Fig. 4 from a ``TransitionsConfig`` (or a DictConfig with its keys); writes transitions.json,
    bcc_sc.png, rhombohedral.png and the resolved config; returns transitions.json's dict."""
    from crystaljax.analysis import report
    from crystaljax.config import start_experiment
    from crystaljax.learn import tracking
    from crystaljax.structures.prototypes import MU_BCC, MU_FCC, MU_SC

    t0 = time.perf_counter()
    out = start_experiment(cfg, workdir, "transitions")
    bs = int(cfg.batch_size)
    model = load_model(cfg.model_dir)
    run_ = tracking.start(config_dict(cfg), config_dict(cfg.logger), workdir)
    try:
        # (a) bcc -> sc
        bcfg = cfg.bcc_sc
        steps = int(bcfg.steps)
        seeds = [int(s) for s in bcfg.seeds]
        fractions = [k / steps for k in range(steps + 1)]
        structures, ids, desc = bcc_structures(bcfg, cfg.data, int(cfg.seed), int(cfg.cluster_target))
        log.info("bcc -> sc: %d structures x %d seeds x %d steps", len(ids), len(seeds), len(fractions))
        bcc_sc = bcc_sc_sweep(model, structures, fractions, seeds, indices=ids, renormalize=bool(bcfg.renormalize),
                              batch_size=bs)
        bcc_sc["structures"] = desc
        for k, f in enumerate(fractions):
            tracking.log(run_, {"bcc_sc/p_bcc": bcc_sc["p_bcc_mean"][k], "bcc_sc/p_sc": bcc_sc["p_sc_mean"][k],
                                "bcc_sc/percent_removed": 100 * f}, step=k)
        png_a = report.plot_bcc_sc(bcc_sc, out / "bcc_sc.png")

        # (b) rhombohedral path
        rcfg = cfg.rhombohedral
        lo = MU_BCC if rcfg.mu_min is None else float(rcfg.mu_min)
        hi = 5 * MU_BCC if rcfg.mu_max is None else float(rcfg.mu_max)
        special = {"bcc": MU_BCC, "sc": MU_SC, "fcc": MU_FCC}
        mus = np.linspace(lo, hi, int(rcfg.n_points))
        mus = np.unique(np.concatenate([mus, [m for m in special.values() if lo <= m <= hi]]))
        settings = [str(x) for x in (rcfg.settings or ["hexagonal"])]
        log.info("rhombohedral path: %d values of mu in [%.4f, %.4f], settings %s", len(mus), lo, hi, settings)
        rh = {}
        for setting in settings:
            r = rhombohedral_sweep(model, mus, element=rcfg.element, setting=setting, target=int(cfg.cluster_target),
                                   batch_size=bs, progress=bool(cfg.progress))
            r.update(class_windows(r["mu"], r["predicted"], special))
            r["special_mu"] = {"bcc": "sqrt(3/8)", "sc": "sqrt(3/2)", "fcc": "sqrt(6)"}
            rh[setting] = r
            for name, entry in r["special"].items():
                tracking.set_summary(run_, {f"rhombohedral/{setting}/{name}/width": entry["width"],
                                            f"rhombohedral/{setting}/{name}/correct": float(entry["predicted"] == name)})
        png_b = report.plot_rhombohedral(rh, special, out / "rhombohedral.png", CLASSES)
        tracking.log_image(run_, "bcc_sc", png_a, step=len(fractions))
        tracking.log_image(run_, "rhombohedral", png_b, step=len(fractions))
    finally:
        info = tracking.finish(run_)
    result = {"bcc_sc": bcc_sc, "rhombohedral": rh,
              "model": {"dir": model.card.get("path"), "sha256": model.card.get("sha256")},
              "command": command_line("transitions.py"), "seconds": round(time.perf_counter() - t0, 2),
              "tracking": info}
    report.write_json(result, out / "transitions.json")
    return result


__all__ = ["bcc_sc_sweep", "RH_SETTINGS", "rhombohedral_primitive", "rhombohedral_sweep", "class_windows",
           "tagged_bcc", "bcc_clusters", "bcc_structures", "run"]
