"""Calibrate and measure the "unknown" verdict of a model on data built here (never on evaluation files).

Two disjoint halves, built from different seeds (and, for compounds, disjoint element pairs):
``calibration`` fits the thresholds, ``measurement`` reports flag rates and AUROCs.

In-class data: ``crystaljax.structures.dataset.generate`` (seeds 101 / 202, different from training's 0),
pristine and with the paper's defects applied on device (displacements 0.04 / 0.1 Å and 6 % of d_NN, the
thermal amplitude of a crystal near its melting point, vacancies 25 / 50 / 70 %, binary / ternary
substitutions 10-50 %), plus host-built random alloys of in-class crystals through the file path.  Out-of-scope data: :mod:`crystaljax.structures.out_of_scope`.

Each structure gives: n_species, SRO, crystallinity (on the ~250-atom cluster the model sees), the
fingerprint's intensity concentration, the MC dropout confidence and mutual information, and the network's
embedding, whose Mahalanobis distance from the predicted class is measured against a reference set built from
a third seed (303: in-class pristine and defective structures, :func:`build_reference`).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from crystaljax.config import DefectConfig
from crystaljax.learn import novelty
from crystaljax.learn.classifier import Classifier
from crystaljax.physics.defects import make_defect_fn
from crystaljax.pipeline import prepare_structures
from crystaljax.structure import Structure, take
from crystaljax.structures import dataset, order, out_of_scope

#: The paper's defect levels used for the in-class defective set: (name, DefectConfig kwargs).
DEFECTS = (
    ("displacement 0.04 Å", dict(displacement_sigma=0.04)),
    ("displacement 0.1 Å", dict(displacement_sigma=0.1)),
    ("displacement 6 % d_NN", dict(displacement_sigma=0.06, displacement_relative=True)),  # ~ a crystal near T_m
    ("vacancies 25 %", dict(vacancy_fraction=0.25)),
    ("vacancies 50 %", dict(vacancy_fraction=0.5)),
    ("vacancies 70 %", dict(vacancy_fraction=0.7)),
    ("binary 25 %", dict(substitution_fraction=0.25, substitution_elements=(28,))),
    ("binary 50 %", dict(substitution_fraction=0.5, substitution_elements=(47,))),
    ("ternary 10 %", dict(substitution_fraction=0.1, substitution_elements=(24, 79))),
    ("ternary 50 %", dict(substitution_fraction=0.5, substitution_elements=(42, 29))),
)

#: Category of each group of rows; "in-class" ones should not be flagged.
IN_CLASS = ("in-class pristine", "in-class defective", "random alloy")
OUT_OF_SCOPE = ("ordered compound", "non-crystalline", "out-of-scope element")

#: Target false-flag rates on the calibration half.
MAX_FLAG_PRISTINE = 0.02
MAX_FLAG_DEFECTIVE = 0.05


def _row_atoms(batch: Structure, i: int):
    """The i-th cluster of a batched Structure as a finite ``ase.Atoms`` (present atoms only, scaled Å)."""
    from ase import Atoms

    m = np.asarray(batch.mask[i]) > 0
    return Atoms(numbers=np.asarray(batch.numbers[i])[m], positions=np.asarray(batch.positions[i])[m], pbc=False)


#: Version of the host-side numbers (:func:`host_numbers`): a cached half measured with another version gets
#: those columns measured again (the network's columns are kept).  3: dimer packings judged by their centres
#: (``order.crystallinity``), molecular crystals' lattices found (``lattice.SPARSE_SEARCH_RADIUS``).  4: folds
#: tolerate strays (``symmetry.MAX_STRAY_FRACTION``).
HOST_NUMBERS_VERSION = 4


def host_numbers(batch: Structure) -> dict[str, np.ndarray]:
    """The host-side numbers (N,) of the clusters of a batched Structure: n_species, sro, crystallinity,
    sro_max_alpha (``order``, on the cluster the model sees) and space_group, primitive_atoms (the
    out-of-scope-symmetry rule's numbers: ``order.site_features`` of each cluster re-prepared as a finite
    fragment, oriented by its own lattice and folded onto it; 0 when not found)."""
    from crystaljax.errors import StructureError
    from crystaljax.structures.cluster import prepare

    rows = [_row_atoms(batch, i) for i in range(len(np.asarray(batch.mask)))]
    host = [order.host_features(a) for a in rows]
    sites = []
    for atoms in rows:
        try:
            sites.append(order.site_features(atoms, prepare(atoms)))
        except StructureError:
            sites.append({"space_group": 0, "primitive_atoms": 0})
    return ({k: np.array([h[k] for h in host]) for k in ("n_species", "sro", "crystallinity")}
            | {"sro_max_alpha": np.array([order.max_abs_alpha(a) for a in rows])}
            | {k: np.array([r[k] for r in sites], np.int64) for k in ("space_group", "primitive_atoms")})


def features(clf: Classifier, batch: Structure, *, mc_samples: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-structure numbers of a batched, prepared Structure: image_concentration, confidence,
    mutual_information, label (N,) arrays and embedding (N, D) from the network, and :func:`host_numbers`."""
    images = clf.images(batch)
    pred = clf.predict_images(images, mc_samples=mc_samples, key=seed, embeddings=True)
    return {"image_concentration": np.array([order.image_concentration(im) for im in images]),
            "confidence": pred.confidence.astype(float), "mutual_information": pred.mutual_information,
            "label": pred.indices, "embedding": pred.embeddings} | host_numbers(batch)


def in_class_sets(clf: Classifier, seed: int, per_class: int):
    """(data set, pristine batch, defect names, defective batch, source): ``per_class`` generated in-class
    structures per class (``seed``) and the same structures with one of :data:`DEFECTS` each (cycled), applied on
    device; ``source`` (N,) is the data-set index of each defective row."""
    ds = dataset.generate(seed=seed, per_class=per_class, target=clf.spec.cluster_target, progress=False)
    base = Structure(*(np.asarray(x) for x in ds.structures))
    level = np.arange(len(ds)) % len(DEFECTS)
    defective = []
    for j, (name, kw) in enumerate(DEFECTS):
        idx = np.flatnonzero(level == j)
        if not len(idx):
            continue
        fn = make_defect_fn(DefectConfig(**kw))
        keys = jax.random.split(jax.random.key(seed + 7 * j), len(idx))
        defective.append((name, idx, jax.jit(jax.vmap(fn))(keys, take(base, idx))))
    kinds = sum([[name] * len(idx) for name, idx, _ in defective], [])
    merged = Structure(*(np.concatenate([np.asarray(getattr(b, f)) for _, _, b in defective])
                         for f in Structure._fields))
    return ds, base, kinds, merged, np.concatenate([idx for _, idx, _ in defective])


REFERENCE_SEED = 303


def build_reference(clf: Classifier, per_class: int = 100) -> novelty.EmbeddingReference:
    """The distance gate's reference: class means and pooled covariance of the embeddings of ``per_class``
    in-class structures per class (seed :data:`REFERENCE_SEED`), pristine and with one defect each."""
    ds, base, _, merged, source = in_class_sets(clf, REFERENCE_SEED, per_class)
    labels = np.asarray(ds.labels)
    emb = np.concatenate([clf.embeddings(clf.images(base)), clf.embeddings(clf.images(merged))])
    return novelty.EmbeddingReference.fit(emb, np.concatenate([labels, labels[source]]), clf.n_classes)


def _concat(parts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def build_half(clf: Classifier, half: str, *, per_class: int = 12, per_kind: int = 6, mc_samples: int = 16,
               progress: bool = True, featurize=None) -> dict[str, np.ndarray]:
    """Features of one half (``calibration`` or ``measurement``) with ``category`` and ``kind`` columns.
    ``featurize(batch) -> dict of (N,) arrays`` replaces :func:`features` (e.g. :func:`host_numbers` alone)."""
    featurize = featurize or (lambda batch: features(clf, batch, mc_samples=mc_samples))
    seed = {"calibration": 101, "measurement": 202}[half]
    rng = np.random.default_rng(seed)
    pairs = slice(0, 5) if half == "calibration" else slice(5, None)
    parts = []

    def add(category, kinds, feats):
        feats = dict(feats)
        feats["category"] = np.array([category] * len(kinds))
        feats["kind"] = np.asarray(kinds)
        parts.append(feats)
        if progress:
            print(f"  {half}: {category:<22} {len(kinds):4d} structures  ({time.strftime('%H:%M:%S')})", flush=True)

    ds, base, kinds, merged, _ = in_class_sets(clf, seed, per_class)
    add("in-class pristine", [str(p) for p in ds.meta["prototype"]], featurize(base))
    add("in-class defective", kinds, featurize(merged))

    def host(category, atoms_list):
        batch = prepare_structures(atoms_list, target=clf.spec.cluster_target)
        add(category, [a.info["kind"] for a in atoms_list], featurize(batch))

    host("random alloy", out_of_scope.random_alloys(rng, per_level=per_kind))
    host("ordered compound", out_of_scope.ordered_compounds(rng, per_kind=per_kind, pairs=pairs))
    host("non-crystalline", out_of_scope.non_crystalline(rng, per_kind=per_kind))
    host("out-of-scope element", out_of_scope.elemental_out_of_scope(rng, per_kind=max(2, per_kind // 2)))
    host("non-crystalline", out_of_scope.molecular_gases(rng, per_kind=per_kind))  # last: earlier draws unchanged
    return _concat(parts)


def fit(cal: dict[str, np.ndarray]) -> novelty.Thresholds:
    """Thresholds from the calibration half.

    SRO: the geometric mean of the largest SRO of the in-class multi-species rows and the smallest of the
    ordered compounds.  Image concentration and crystallinity: the 1 % quantile of the in-class rows (flag
    below).  Confidence, MI and the feature distance: quantiles of the in-class rows so that each flags <= 1/4
    of the false-flag budget (2 % pristine, 5 % defective / alloys).  ``cal`` needs a ``feature_distance``
    column (:func:`with_distances`)."""
    cat = cal["category"]
    inside = np.isin(cat, IN_CLASS)
    multi = inside & (cal["n_species"] >= 2)
    comp = cat == "ordered compound"
    lo = float(np.max(cal["sro"][multi])) if multi.any() else 0.0
    hi = float(np.min(cal["sro"][comp]))
    sro = float(np.sqrt(max(lo, 1e-3) * hi)) if hi > lo else hi
    pristine = cat == "in-class pristine"
    rest = inside & ~pristine

    def low(name):
        return min(novelty.lower_threshold(cal[name][pristine], MAX_FLAG_PRISTINE / 4),
                   novelty.lower_threshold(cal[name][rest], MAX_FLAG_DEFECTIVE / 4))

    def high(name):
        return max(novelty.upper_threshold(cal[name][pristine], MAX_FLAG_PRISTINE / 4),
                   novelty.upper_threshold(cal[name][rest], MAX_FLAG_DEFECTIVE / 4))

    return novelty.Thresholds(sro=sro, image_concentration=low("image_concentration"),
                              crystallinity=low("crystallinity"), confidence=low("confidence"),
                              mutual_information=high("mutual_information"),
                              feature_distance=high("feature_distance"),
                              provenance={"sro_in_class_max": lo, "sro_compound_min": hi,
                                          "n_calibration": {c: int((cat == c).sum()) for c in np.unique(cat)}})


def measure(th: novelty.Thresholds, data: dict[str, np.ndarray]) -> dict:
    """Flag rate per category and kind, AUROC in-class vs out-of-scope per gate score and combined."""
    f = {k: data[k] for k in novelty.FEATURES}
    v = novelty.verdict(th, **f)
    cat, kind = data["category"], data["kind"]
    out = {"flag_rate": {}, "flag_rate_by_kind": {}, "reasons": {}, "auroc": {}}
    for c in (*IN_CLASS, *OUT_OF_SCOPE):
        m = cat == c
        out["flag_rate"][c] = round(float(v.unknown[m].mean()), 4) if m.any() else None
        out["reasons"][c] = {r: int((v.gates[r] & m).sum()) for r in novelty.REASONS}
        out["flag_rate_by_kind"][c] = {str(k): round(float(v.unknown[m & (kind == k)].mean()), 3)
                                       for k in np.unique(kind[m])}
    inside = np.isin(cat, IN_CLASS)
    outside = np.isin(cat, OUT_OF_SCOPE)
    multi = np.where(data["n_species"] >= 2, data["sro"], 0.0)
    scores = {"sro": multi, "max |alpha|": np.where(data["n_species"] >= 2, data["sro_max_alpha"], 0.0),
              "1 - crystallinity": 1 - data["crystallinity"],
              "1 - image_concentration": 1 - data["image_concentration"],
              "1 - confidence": 1 - data["confidence"], "mutual_information": data["mutual_information"],
              "feature_distance": data["feature_distance"],
              "combined score": novelty.score(th, **f),
              "unknown verdict (binary)": v.unknown.astype(float)}
    for name, s in scores.items():
        out["auroc"][name] = {"all out-of-scope": round(novelty.auroc(s[inside], s[outside]), 4)}
        for c in OUT_OF_SCOPE:
            out["auroc"][name][c] = round(novelty.auroc(s[inside], s[cat == c]), 4)
    out["flag_rate"]["all out-of-scope"] = round(float(v.unknown[outside].mean()), 4)
    out["flag_rate"]["all in-class"] = round(float(v.unknown[inside].mean()), 4)
    out["n"] = {c: int((cat == c).sum()) for c in (*IN_CLASS, *OUT_OF_SCOPE)}
    return out


def plot_scores(th: novelty.Thresholds, data: dict[str, np.ndarray], path, title: str = ""):
    """``report.plot_unknown_scores`` of one half: each category's combined scores and verdicts."""
    from crystaljax.analysis import report

    f = {k: data[k] for k in novelty.FEATURES}
    s, v = novelty.score(th, **f), novelty.verdict(th, **f).unknown
    cats = [c for c in (*IN_CLASS, *OUT_OF_SCOPE) if (data["category"] == c).any()]
    return report.plot_unknown_scores({c: s[data["category"] == c] for c in cats},
                                      {c: v[data["category"] == c] for c in cats}, path, title)


def with_distances(data: dict[str, np.ndarray], reference: novelty.EmbeddingReference,
                   classes=None) -> dict[str, np.ndarray]:
    """``data`` plus ``feature_distance`` (N,): each row's embedding distance from its predicted class, and with
    ``classes`` (a model's class names) ``symmetry`` (N,): the out-of-scope-symmetry rule
    (``novelty.symmetry_scope``: +1 out of scope, -1 one of the classes' groups, 0 undetermined)."""
    out = {**data, "feature_distance": reference.distance(data["embedding"], data["label"])}
    if classes is not None:
        out["symmetry"] = novelty.symmetry_scope(classes, data["space_group"], data["primitive_atoms"])
    return out


def run(cfg, workdir) -> dict:
    """The calibration experiment: build (or read cached) features of both halves, fit the thresholds on the
    calibration half, measure both halves, write ``unknown_calibration.json`` into ``workdir`` and, with
    ``cfg.unknown.write``, the thresholds next to the model.  Returns the result dict."""
    import dataclasses
    import hashlib
    import json
    from pathlib import Path

    from crystaljax.learn.checkpoint import resolve_model_dir

    opts = cfg.unknown
    model = cfg.model_dir or "default"
    clf = Classifier.load(model)
    cache = Path(opts.cache_dir)
    halves = {}
    weights = hashlib.sha1((resolve_model_dir(model) / "model.msgpack").read_bytes()).hexdigest()[:10]
    stem = f"unknown_{Path(str(model)).name}_{weights}"  # keyed by the weights: never another model's features
    reference_path = cache / f"{stem}_reference_{opts.reference_per_class}.npz"
    if reference_path.is_file():
        with np.load(reference_path) as z:
            reference = novelty.EmbeddingReference(z["means"], z["whitening"])
    else:
        reference = build_reference(clf, opts.reference_per_class)
        reference_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(reference_path, means=reference.means, whitening=reference.whitening)
    for half in ("calibration", "measurement"):
        path = cache / f"{stem}_{half}_{opts.per_class}_{opts.per_kind}_{opts.mc_samples}_v3.npz"
        if path.is_file():
            halves[half] = dict(np.load(path, allow_pickle=False))
        else:
            halves[half] = build_half(clf, half, per_class=opts.per_class, per_kind=opts.per_kind,
                                      mc_samples=opts.mc_samples)
            halves[half]["host_version"] = np.array(HOST_NUMBERS_VERSION)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **halves[half])
        if int(halves[half].get("host_version", 0)) != HOST_NUMBERS_VERSION:  # re-measure the host columns
            extra = build_half(clf, half, per_class=opts.per_class, per_kind=opts.per_kind, progress=False,
                               featurize=host_numbers)
            if not np.array_equal(extra["kind"], halves[half]["kind"]):
                raise RuntimeError(f"{path}: cached rows do not match the rebuilt {half} half; delete the cache")
            halves[half] = {**halves[half], **extra, "host_version": np.array(HOST_NUMBERS_VERSION)}
            np.savez(path, **halves[half])
        halves[half] = with_distances(halves[half], reference, clf.classes)
    th = fit(halves["calibration"])
    command = (f"python experiments/calibrate_unknown.py model_dir={model} unknown.per_class={opts.per_class} "
               f"unknown.per_kind={opts.per_kind} unknown.mc_samples={opts.mc_samples} "
               f"unknown.reference_per_class={opts.reference_per_class} unknown.write=true")
    th = dataclasses.replace(th, provenance={**th.provenance, "command": command, "mc_samples": opts.mc_samples,
                                             "reference_per_class": opts.reference_per_class,
                                             "reference_seed": REFERENCE_SEED})
    result = {"model": str(model), "thresholds": th.to_dict(),
              "calibration": measure(th, halves["calibration"]),
              "measurement": measure(th, halves["measurement"])}
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "unknown_calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_scores(th, halves["measurement"], workdir / "unknown_scores.png",
                f"unknown verdict, model {Path(str(model)).name}, held-out measurement half")
    if opts.write:
        result["written"] = [str(novelty.save_thresholds(th, resolve_model_dir(model))),
                             str(reference.save(resolve_model_dir(model)))]
    return result
