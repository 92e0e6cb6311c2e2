"""The "unknown" verdict: is a structure outside what the model knows (elemental solids of its classes)?

Six gates, each a pure threshold or rule on a per-structure number, applied in this order (the first that
fires gives the reason):

1. ``ordered compound``: >= 2 species and first-shell Warren-Cowley short-range order
   (:func:`crystaljax.structures.order.short_range_order`) above ``sro``.  Random substitutional alloys
   have SRO ~ 0.05 and pass; rock salt, CsCl, zincblende, wurtzite, fluorite have ~ 1, L1_2 and L1_0 1/3.
2. ``out-of-scope symmetry`` (a rule, no threshold): the atom sites (chemistry ignored) have a space group outside
   those of the model's classes (:data:`crystaljax.learn.classes.CLASS_SPACE_GROUPS`) with a primitive cell of at
   most :data:`MAX_PRIMITIVE_ATOMS` atoms (:func:`crystaljax.structures.order.site_features`: spglib on a small
   input cell, or on the mean sites of a box or fragment folded onto the lattice it was oriented by): a crystal
   whose symmetry is determinable and is not one of the classes (alpha-Ga, alpha-U, Se chains, ...).  A random
   alloy has its lattice's group; liquids and gases fold onto nothing.  When the sites are shown to have one of
   the classes' groups instead (:func:`symmetry_scope` -1), gates 3 and 4, proxies of "a crystal of equivalent
   sites", stand down: the fold has shown it directly (a hot or vacancy-rich in-class crystal whose q6 or
   fingerprint contrast has dropped); the ordered-compound and network gates still apply.
3. ``non-crystalline``: the fingerprint's intensity concentration
   (:func:`crystaljax.structures.order.image_concentration`: Bragg spots vs diffuse rings) below
   ``image_concentration``.
4. ``unknown crystal``: crystallinity (:func:`crystaljax.structures.order.crystallinity`, the solid-bond
   fraction of Steinhardt q6: ~1 when every atom has the same environment, as in the 7 classes) below
   ``crystallinity``.
5. ``unfamiliar pattern``: the Mahalanobis distance of the network's embedding (``ConvNet.embed``, the layer the
   output reads) from the mean of the predicted class over reference in-class structures, with their pooled
   covariance (:class:`EmbeddingReference`), above ``feature_distance`` (DC3's "unknown crystal" gate, a
   distance in feature space beyond what in-class structures reach).
6. ``low confidence``: the MC dropout mean probability of the predicted class below ``confidence`` or the
   mutual information above ``mutual_information``.

Thresholds live in ``unknown.json`` next to a model (written by ``experiments/calibrate_unknown.py``,
fitted on structures built there, never on evaluation files), the distance gate's reference in
``unknown_embedding.npz``; :func:`load_thresholds` returns None when a model has none, and then nothing is
flagged (without a reference the distance gate does not fire).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: File name of the thresholds next to a model's model_card.json.
THRESHOLDS_FILE = "unknown.json"

#: File of the distance gate's reference (:class:`EmbeddingReference`) next to a model's model_card.json.
EMBEDDING_FILE = "unknown_embedding.npz"

REASONS = ("ordered compound", "out-of-scope symmetry", "non-crystalline", "unknown crystal", "unfamiliar pattern",
           "low confidence")

#: The out-of-scope-symmetry gate trusts a space group found with a primitive cell of at most this many atoms:
#: every training source has fewer than 8 (dataset.MIN_PRIMITIVE_CELLS), and a small supercell with a vacancy
#: (an hcp 2x2x2 cell less one atom: 15) stays out of reach.
MAX_PRIMITIVE_ATOMS = 8


def symmetry_scope(classes, space_group, primitive_atoms) -> np.ndarray:
    """(N,) int8 from the site space group (N,) int (0 = not determined) and primitive-cell size (N,): +1 a group
    outside those of ``classes`` (a model's class names, :data:`crystaljax.learn.classes.CLASS_SPACE_GROUPS`)
    with at most :data:`MAX_PRIMITIVE_ATOMS` atoms per primitive cell (the out-of-scope-symmetry gate fires),
    -1 one of their groups with at most that many (a crystal of the classes' symmetry: the structural gates
    stand down), 0 otherwise (no group, a larger primitive cell, or a class name without known groups)."""
    from crystaljax.learn.classes import CLASS_SPACE_GROUPS

    sg = np.asarray(space_group, dtype=np.int64)
    if any(c not in CLASS_SPACE_GROUPS for c in classes):
        return np.zeros(sg.shape, np.int8)
    scope = np.array(sorted({g for c in classes for g in CLASS_SPACE_GROUPS[c]}))
    found = (sg > 0) & (np.asarray(primitive_atoms) <= MAX_PRIMITIVE_ATOMS)
    return np.where(found, np.where(np.isin(sg, scope), -1, 1), 0).astype(np.int8)

#: The per-structure numbers every gate function takes (keyword arguments, (N,) arrays; ``feature_distance`` and
#: ``symmetry`` (:func:`symmetry_scope`) may be None: those gates do not fire, or do not stand down).
FEATURES = ("n_species", "sro", "image_concentration", "crystallinity", "confidence", "mutual_information",
            "feature_distance", "symmetry")


@dataclass(frozen=True)
class Thresholds:
    """Gate thresholds.  sro: flag above (>= 2 species); image_concentration, crystallinity, confidence:
    flag below; mutual_information: flag above (nats); feature_distance: flag above (Mahalanobis units).
    ``provenance``: how they were fitted (free-form)."""

    sro: float = float("inf")
    image_concentration: float = -float("inf")
    crystallinity: float = -float("inf")
    confidence: float = 0.0
    mutual_information: float = float("inf")
    provenance: dict[str, Any] = field(default_factory=dict)
    feature_distance: float = float("inf")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Thresholds":
        return cls(float(d["sro"]), float(d["image_concentration"]), float(d["crystallinity"]),
                   float(d["confidence"]), float(d["mutual_information"]), dict(d.get("provenance", {})),
                   float(d.get("feature_distance", float("inf"))))


@dataclass(frozen=True)
class EmbeddingReference:
    """Where in-class structures sit in the network's feature space: class means (C, D) and the whitening
    matrix (D, D) of their pooled covariance, so ``distance`` is the Mahalanobis distance
    ||W (e - means[label])|| with a shared covariance (Lee et al., NeurIPS 2018; DC3's feature-space gate)."""

    means: np.ndarray
    whitening: np.ndarray

    @classmethod
    def fit(cls, embeddings, labels, n_classes: int, shrinkage: float = 1e-3) -> "EmbeddingReference":
        """From (N, D) embeddings of reference structures and their (N,) true class indices.  The covariance
        is shrunk towards its mean variance by ``shrinkage`` (relative) so that it stays invertible."""
        e = np.asarray(embeddings, np.float64)
        labels = np.asarray(labels)
        missing = sorted(set(range(n_classes)) - set(labels.tolist()))
        if missing:
            raise ValueError(f"no reference structure of class index {missing}")
        means = np.stack([e[labels == c].mean(axis=0) for c in range(n_classes)])
        r = e - means[labels]
        cov = r.T @ r / max(len(e) - n_classes, 1)
        cov += shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
        whitening = np.linalg.inv(np.linalg.cholesky(cov))
        return cls(means.astype(np.float32), whitening.astype(np.float32))

    def distance(self, embeddings, labels) -> np.ndarray:
        """(N,) Mahalanobis distance of (N, D) embeddings from the means of their (N,) predicted classes."""
        d = np.asarray(embeddings, np.float64) - self.means[np.asarray(labels)]
        return np.linalg.norm(d @ self.whitening.T.astype(np.float64), axis=1)

    def save(self, model_dir) -> Path:
        path = Path(model_dir) / EMBEDDING_FILE
        np.savez(path, means=self.means, whitening=self.whitening)
        return path

    @classmethod
    def load(cls, model_dir) -> "EmbeddingReference | None":
        """From ``model_dir/unknown_embedding.npz``, or None when there is none."""
        path = Path(model_dir) / EMBEDDING_FILE
        if not path.is_file():
            return None
        with np.load(path) as z:
            return cls(z["means"], z["whitening"])


@dataclass(frozen=True)
class Verdict:
    """Per structure: unknown (N,) bool, reason (N,) str ('' when known), and each gate (N,) bool."""

    unknown: np.ndarray
    reason: list[str]
    gates: dict[str, np.ndarray]


def _distance(feature_distance, n: int) -> np.ndarray:
    return np.zeros(n) if feature_distance is None else np.asarray(feature_distance, float)


def _symmetry(symmetry, n: int) -> np.ndarray:
    return np.zeros(n, np.int8) if symmetry is None else np.asarray(symmetry).astype(np.int8)


def gates(th: Thresholds, *, n_species, sro, image_concentration, crystallinity, confidence,
          mutual_information, feature_distance=None, symmetry=None) -> dict[str, np.ndarray]:
    """Each gate as an (N,) bool array (True = fires), from (N,) arrays of the per-structure numbers
    (``symmetry``: :func:`symmetry_scope`, None: undetermined everywhere).  The structural gates
    (non-crystalline, unknown crystal: proxies of "a crystal of equivalent sites") stand down where the sites
    are shown to have one of the classes' groups (``symmetry`` -1)."""
    n_species = np.asarray(n_species)
    sym = _symmetry(symmetry, len(n_species))
    return {
        "ordered compound": (n_species >= 2) & (np.asarray(sro, float) > th.sro),
        "out-of-scope symmetry": sym > 0,
        "non-crystalline": (np.asarray(image_concentration, float) < th.image_concentration) & (sym >= 0),
        "unknown crystal": (np.asarray(crystallinity, float) < th.crystallinity) & (sym >= 0),
        "unfamiliar pattern": _distance(feature_distance, len(n_species)) > th.feature_distance,
        "low confidence": (np.asarray(confidence, float) < th.confidence)
        | (np.asarray(mutual_information, float) > th.mutual_information),
    }


def verdict(th: Thresholds | None, *, n_species, sro, image_concentration, crystallinity, confidence,
            mutual_information, feature_distance=None, symmetry=None) -> Verdict:
    """The verdict of :func:`gates`; the reason is the first gate (in :data:`REASONS` order) that fires.
    ``th`` None: nothing is flagged."""
    n = len(np.asarray(confidence))
    if th is None:
        return Verdict(np.zeros(n, bool), [""] * n, {r: np.zeros(n, bool) for r in REASONS})
    g = gates(th, n_species=n_species, sro=sro, image_concentration=image_concentration,
              crystallinity=crystallinity, confidence=confidence, mutual_information=mutual_information,
              feature_distance=feature_distance, symmetry=symmetry)
    unknown = np.zeros(n, bool)
    reason = [""] * n
    for r in REASONS:
        for i in np.flatnonzero(g[r] & ~unknown):
            reason[i] = r
        unknown |= g[r]
    return Verdict(unknown, reason, g)


def score(th: Thresholds, *, n_species, sro, image_concentration, crystallinity, confidence,
          mutual_information, feature_distance=None, symmetry=None) -> np.ndarray:
    """(N,) continuous combined score: the largest gate margin ratio (> 1 exactly where a gate fires, up to
    ties): sro / th.sro (>= 2 species), (1 - x) / (1 - th.x) for x = image_concentration, crystallinity,
    confidence, mutual_information / th.mutual_information and feature_distance / th.feature_distance; 2
    where the out-of-scope-symmetry rule fires; the structural ratios are 0 where the structural gates stand
    down (:func:`gates`)."""
    eps = 1e-12
    sym = _symmetry(symmetry, len(np.asarray(n_species)))
    structural = sym >= 0
    parts = [np.where(np.asarray(n_species) >= 2, np.asarray(sro, float) / max(th.sro, eps), 0.0),
             structural * (1 - np.asarray(image_concentration, float)) / max(1 - th.image_concentration, eps),
             structural * (1 - np.asarray(crystallinity, float)) / max(1 - th.crystallinity, eps),
             (1 - np.asarray(confidence, float)) / max(1 - th.confidence, eps),
             np.asarray(mutual_information, float) / max(th.mutual_information, eps),
             _distance(feature_distance, len(np.asarray(n_species))) / max(th.feature_distance, eps),
             2.0 * (sym > 0)]
    return np.max(np.stack(parts), axis=0)


def upper_threshold(values, max_rate: float) -> float:
    """Smallest t with at most ``max_rate`` of ``values`` strictly above t (a flag-above gate)."""
    v = np.sort(np.asarray(values, float))
    k = int(np.floor(max_rate * len(v)))  # allowed number above
    return float(v[len(v) - 1 - k]) if len(v) else float("inf")


def lower_threshold(values, max_rate: float) -> float:
    """Largest t with at most ``max_rate`` of ``values`` strictly below t (a flag-below gate)."""
    v = np.sort(np.asarray(values, float))
    k = int(np.floor(max_rate * len(v)))
    return float(v[k]) if len(v) else -float("inf")


def auroc(negatives, positives) -> float:
    """Area under the ROC curve of a score that should be higher for ``positives``: P(pos > neg) + P(tie)/2."""
    neg = np.asarray(negatives, float)
    pos = np.asarray(positives, float)
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def load_thresholds(model_dir) -> Thresholds | None:
    """Thresholds from ``model_dir/unknown.json``, or None when there is none."""
    path = Path(model_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    return Thresholds.from_dict(json.loads(path.read_text()))


def save_thresholds(th: Thresholds, model_dir) -> Path:
    path = Path(model_dir) / THRESHOLDS_FILE
    path.write_text(json.dumps(th.to_dict(), indent=1) + "\n")
    return path


def structure_features(atoms, cluster) -> dict:
    """The host numbers of one structure for :func:`assess`: ``order.host_features`` of its prepared ~250-atom
    cluster and ``order.site_features`` (site space group, primitive size) of the input ``atoms``."""
    from crystaljax.structures.order import host_features, site_features

    return {**host_features(cluster), **site_features(atoms, cluster)}


def assess(th: Thresholds | None, prediction, host, images, feature_distance=None) -> Verdict:
    """The verdict for N structures from their Prediction (MC dropout, as calibrated), their host features (N
    dicts: :func:`structure_features`; without ``space_group`` / ``primitive_atoms`` the symmetry gate does not
    fire), their fingerprints (N, H, W, 3) and (N,) embedding distances (``Classifier.feature_distance``; None:
    that gate does not fire).  ``th`` None: nothing is flagged, and ``host`` may be empty."""
    from crystaljax.structures.order import image_concentration

    if th is None:  # nothing is flagged; the host numbers may be absent
        return verdict(None, n_species=None, sro=None, image_concentration=None, crystallinity=None,
                       confidence=prediction.confidence, mutual_information=None)
    symmetry = symmetry_scope(prediction.classes, [h.get("space_group", 0) for h in host],
                              [h.get("primitive_atoms", 0) for h in host])
    return verdict(th, n_species=np.array([h["n_species"] for h in host]), sro=np.array([h["sro"] for h in host]),
                   image_concentration=np.array([image_concentration(im) for im in images]),
                   crystallinity=np.array([h["crystallinity"] for h in host]),
                   confidence=np.asarray(prediction.confidence, float),
                   mutual_information=np.asarray(prediction.mutual_information, float),
                   feature_distance=feature_distance, symmetry=symmetry)
