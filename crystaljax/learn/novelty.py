"""The "unknown" verdict: is a structure outside what the model knows (elemental solids of its classes)?

Four gates, each a pure threshold on a per-structure number, applied in this order (the first that fires
gives the reason):

1. ``ordered compound``: >= 2 species and first-shell Warren-Cowley short-range order
   (:func:`crystaljax.structures.order.short_range_order`) above ``sro``.  Random substitutional alloys
   have SRO ~ 0.05 and pass; rock salt, CsCl, zincblende, wurtzite, fluorite have ~ 1, L1_2 and L1_0 1/3.
2. ``non-crystalline``: the fingerprint's intensity concentration
   (:func:`crystaljax.structures.order.image_concentration`: Bragg spots vs diffuse rings) below
   ``image_concentration``.
3. ``unknown crystal``: crystallinity (:func:`crystaljax.structures.order.crystallinity`, the solid-bond
   fraction of Steinhardt q6: ~1 when every atom has the same environment, as in the 7 classes) below
   ``crystallinity``.
4. ``low confidence``: the MC dropout mean probability of the predicted class below ``confidence`` or the
   mutual information above ``mutual_information``.

Thresholds live in ``unknown.json`` next to a model (written by ``experiments/calibrate_unknown.py``,
fitted on structures built there, never on evaluation files); :func:`load_thresholds` returns None when a
model has none, and then nothing is flagged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: File name of the thresholds next to a model's model_card.json.
THRESHOLDS_FILE = "unknown.json"

REASONS = ("ordered compound", "non-crystalline", "unknown crystal", "low confidence")

#: The per-structure numbers every gate function takes (keyword arguments, (N,) arrays).
FEATURES = ("n_species", "sro", "image_concentration", "crystallinity", "confidence", "mutual_information")


@dataclass(frozen=True)
class Thresholds:
    """Gate thresholds.  sro: flag above (>= 2 species); image_concentration, crystallinity, confidence:
    flag below; mutual_information: flag above (nats).  ``provenance``: how they were fitted (free-form)."""

    sro: float = float("inf")
    image_concentration: float = -float("inf")
    crystallinity: float = -float("inf")
    confidence: float = 0.0
    mutual_information: float = float("inf")
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Thresholds":
        return cls(float(d["sro"]), float(d["image_concentration"]), float(d["crystallinity"]),
                   float(d["confidence"]), float(d["mutual_information"]), dict(d.get("provenance", {})))


@dataclass(frozen=True)
class Verdict:
    """Per structure: unknown (N,) bool, reason (N,) str ('' when known), and each gate (N,) bool."""

    unknown: np.ndarray
    reason: list[str]
    gates: dict[str, np.ndarray]


def gates(th: Thresholds, *, n_species, sro, image_concentration, crystallinity, confidence,
          mutual_information) -> dict[str, np.ndarray]:
    """Each gate as an (N,) bool array (True = fires), from (N,) arrays of the per-structure numbers."""
    n_species = np.asarray(n_species)
    return {
        "ordered compound": (n_species >= 2) & (np.asarray(sro, float) > th.sro),
        "non-crystalline": np.asarray(image_concentration, float) < th.image_concentration,
        "unknown crystal": np.asarray(crystallinity, float) < th.crystallinity,
        "low confidence": (np.asarray(confidence, float) < th.confidence)
        | (np.asarray(mutual_information, float) > th.mutual_information),
    }


def verdict(th: Thresholds | None, *, n_species, sro, image_concentration, crystallinity, confidence,
            mutual_information) -> Verdict:
    """The verdict of :func:`gates`; the reason is the first gate (in :data:`REASONS` order) that fires.
    ``th`` None: nothing is flagged."""
    n = len(np.asarray(confidence))
    if th is None:
        return Verdict(np.zeros(n, bool), [""] * n, {r: np.zeros(n, bool) for r in REASONS})
    g = gates(th, n_species=n_species, sro=sro, image_concentration=image_concentration,
              crystallinity=crystallinity, confidence=confidence, mutual_information=mutual_information)
    unknown = np.zeros(n, bool)
    reason = [""] * n
    for r in REASONS:
        for i in np.flatnonzero(g[r] & ~unknown):
            reason[i] = r
        unknown |= g[r]
    return Verdict(unknown, reason, g)


def score(th: Thresholds, *, n_species, sro, image_concentration, crystallinity, confidence,
          mutual_information) -> np.ndarray:
    """(N,) continuous combined score: the largest gate margin ratio (> 1 exactly where a gate fires, up to
    ties): sro / th.sro (>= 2 species), (1 - x) / (1 - th.x) for x = image_concentration, crystallinity,
    confidence, and mutual_information / th.mutual_information."""
    eps = 1e-12
    parts = [np.where(np.asarray(n_species) >= 2, np.asarray(sro, float) / max(th.sro, eps), 0.0),
             (1 - np.asarray(image_concentration, float)) / max(1 - th.image_concentration, eps),
             (1 - np.asarray(crystallinity, float)) / max(1 - th.crystallinity, eps),
             (1 - np.asarray(confidence, float)) / max(1 - th.confidence, eps),
             np.asarray(mutual_information, float) / max(th.mutual_information, eps)]
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


def assess(th: Thresholds | None, prediction, clusters, images) -> Verdict:
    """The verdict for N structures from their Prediction (MC dropout, as calibrated), their prepared
    ~250-atom clusters (list of ``ase.Atoms``) and their fingerprints (N, H, W, 3)."""
    from crystaljax.structures.order import host_features, image_concentration

    host = [host_features(a) for a in clusters]
    return verdict(th, n_species=np.array([h["n_species"] for h in host]), sro=np.array([h["sro"] for h in host]),
                   image_concentration=np.array([image_concentration(im) for im in images]),
                   crystallinity=np.array([h["crystallinity"] for h in host]),
                   confidence=np.asarray(prediction.confidence, float),
                   mutual_information=np.asarray(prediction.mutual_information, float))
