"""Classify structures with a trained model (by default the one shipped in the package).

``classify(atoms_list)`` runs the whole pipeline: host clusters -> device fingerprints with the
detector/beam/fingerprint settings stored in the model card -> ConvNet probabilities.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

import jax

from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, from_dict
from crystaljax.errors import InputFileError

#: The model shipped inside the package.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "default"


@dataclass
class Classifier:
    """A loaded model with the fingerprint settings it was trained with."""

    predictor: object
    card: dict
    detector: DetectorConfig
    beam: BeamConfig
    fp: FingerprintConfig
    classes: tuple[str, ...]
    target: int = 250
    timings: dict = field(default_factory=lambda: {"prepare_s": 0.0, "fingerprint_s": 0.0, "network_s": 0.0})


@functools.lru_cache(maxsize=4)
def load_classifier(model_dir: str | Path | None = None) -> Classifier:
    """Load ``model_dir`` (default: the shipped model); clear error if it is missing or broken."""
    from crystaljax.learn.train import load_model

    directory = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    if not directory.is_dir():
        raise InputFileError(f"{directory}: no such model directory")
    try:
        predictor, card = load_model(directory)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise InputFileError(f"{directory}: not a crystaljax model ({str(exc).splitlines()[0]})") from None
    return Classifier(
        predictor=predictor, card=card,
        detector=from_dict(DetectorConfig, card.get("detector")),
        beam=from_dict(BeamConfig, card.get("beam")),
        fp=from_dict(FingerprintConfig, card.get("fingerprint")),
        classes=tuple(card["classes"]),
        target=int(card.get("cluster_target", 250)),
    )


def classify_batch(clf: Classifier, batch) -> np.ndarray:
    """Probabilities (B, n_classes) for an already prepared batched Structure."""
    from crystaljax.pipeline import fingerprint_batch

    t = time.perf_counter()
    images = fingerprint_batch(batch, detector=clf.detector, beam=clf.beam, fp=clf.fp)
    t1 = time.perf_counter()
    probs = clf.predictor(images)
    clf.timings["fingerprint_s"] += t1 - t
    clf.timings["network_s"] += time.perf_counter() - t1
    return probs


def classify(structures: Sequence, *, model_dir=None, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, 7) for a list of ``ase.Atoms`` (any size, periodic or finite)."""
    from crystaljax.pipeline import prepare_structures

    clf = load_classifier(model_dir)
    out = []
    for start in range(0, len(structures), batch_size):
        t = time.perf_counter()
        batch = prepare_structures(list(structures[start:start + batch_size]), target=clf.target)
        clf.timings["prepare_s"] += time.perf_counter() - t
        out.append(classify_batch(clf, batch))
    return np.concatenate(out) if out else np.zeros((0, len(clf.classes)), np.float32)


def predicted_labels(probs: np.ndarray, classes: Sequence[str]) -> list[str]:
    """Class name of the most probable class per row."""
    return [classes[i] for i in np.argmax(probs, axis=-1)]


def warm_up(clf: Classifier) -> None:
    """Compile once (used by benchmarks to keep compilation out of timings)."""
    jax.block_until_ready(clf.predictor.apply(np.zeros((1, clf.detector.n_pixels, clf.detector.n_pixels, 3),
                                                       np.float32)))
