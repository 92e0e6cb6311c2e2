"""One trained model, ready to use: weights, fingerprint settings, class names and jitted functions.

    clf = Classifier.load("default")             # or "pristine", or a model directory
    pred = clf.classify(list_of_ase_atoms)       # Prediction: probabilities (N, C) and labels
    pred = clf.predict(batch)                    # from an already prepared batched Structure

``clf.fingerprint_fn`` (one Structure -> (H, W, 3)) and ``clf.apply`` (images -> probabilities) are
traceable, so ``jax.grad`` runs through the physics and the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np
from flax import nnx

from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, from_dict
from crystaljax.learn import checkpoint as _ckpt
from crystaljax.physics.fingerprint import make_fingerprint_fn
from crystaljax.structure import Structure, map_padded


@dataclass(frozen=True)
class FingerprintSpec:
    """How a model's inputs are made: detector, beam, fingerprint settings and the cluster size (atoms)."""

    detector: DetectorConfig = DetectorConfig()
    beam: BeamConfig = BeamConfig()
    fingerprint: FingerprintConfig = FingerprintConfig()
    cluster_target: int = 250

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> "FingerprintSpec":
        return cls(from_dict(DetectorConfig, card.get("detector")), from_dict(BeamConfig, card.get("beam")),
                   from_dict(FingerprintConfig, card.get("fingerprint")), int(card.get("cluster_target", 250)))


class Prediction(NamedTuple):
    """Class probabilities of N structures.  probabilities: (N, C) float32, rows sum to 1."""

    classes: tuple[str, ...]
    probabilities: np.ndarray

    @property
    def indices(self) -> np.ndarray:
        """(N,) index of the most probable class."""
        return np.argmax(self.probabilities, axis=-1)

    @property
    def labels(self) -> list[str]:
        """(N,) name of the most probable class."""
        return [self.classes[i] for i in self.indices]

    @property
    def confidence(self) -> np.ndarray:
        """(N,) probability of the most probable class."""
        return np.max(self.probabilities, axis=-1)

    @property
    def entropy(self) -> np.ndarray:
        """(N,) Shannon entropy of the probabilities, nats."""
        p = np.clip(self.probabilities, 1e-12, 1.0)
        return -np.sum(p * np.log(p), axis=-1)


class Classifier:
    """A trained ConvNet with the fingerprint settings it was trained with; build it once, call it often."""

    def __init__(self, checkpoint: _ckpt.Checkpoint):
        self.checkpoint = checkpoint
        self.card = checkpoint.card
        self.classes: tuple[str, ...] = tuple(checkpoint.card["classes"])
        self.spec = FingerprintSpec.from_card(checkpoint.card)
        self.fingerprint_fn = make_fingerprint_fn(self.spec.detector, self.spec.beam, self.spec.fingerprint)
        graphdef = checkpoint.graphdef

        def forward(params, batch_stats, images):
            return jax.nn.softmax(nnx.merge(graphdef, params, batch_stats)(images, train=False), axis=-1)

        self._forward = forward
        self._images = jax.jit(jax.vmap(self.fingerprint_fn))
        self._probs = jax.jit(forward)
        self._probs_of_structures = jax.jit(lambda p, s, batch: forward(p, s, jax.vmap(self.fingerprint_fn)(batch)))

    @classmethod
    def load(cls, name_or_path=None) -> "Classifier":
        """From a shipped model's name (``default``, ``pristine``) or a model directory; None = ``default``."""
        return cls(_ckpt.load(name_or_path))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def model(self):
        """An NNX ConvNet with these weights."""
        return self.checkpoint.model()

    def apply(self, images) -> jax.Array:
        """images (B, H, W, 3) -> probabilities (B, C); traceable (use under jit/grad)."""
        return self._forward(self.checkpoint.params, self.checkpoint.batch_stats, images)

    def images(self, batch: Structure, batch_size: int = 32) -> np.ndarray:
        """Fingerprints (B, H, W, 3) float32 of a batched Structure, in fixed-size jitted chunks."""
        return map_padded(self._images, batch, batch_size)

    def probabilities_of_images(self, images, batch_size: int = 256) -> np.ndarray:
        """(N, C) probabilities of fingerprints (N, H, W, 3)."""
        ck = self.checkpoint
        return map_padded(lambda x: self._probs(ck.params, ck.batch_stats, x), np.asarray(images, np.float32),
                          batch_size)

    def predict(self, batch: Structure, batch_size: int = 64) -> Prediction:
        """Prediction for a batched, prepared Structure (fingerprints and network in one jitted call per chunk)."""
        ck = self.checkpoint
        probs = map_padded(lambda b: self._probs_of_structures(ck.params, ck.batch_stats, b), batch, batch_size)
        return Prediction(self.classes, probs)

    def classify(self, structures: Sequence, batch_size: int = 64) -> Prediction:
        """Prediction for a list of ``ase.Atoms`` (any size, periodic or finite) through the host pipeline."""
        from crystaljax.pipeline import prepare_structures

        parts = []
        for start in range(0, len(structures), batch_size):
            batch = prepare_structures(list(structures[start:start + batch_size]), target=self.spec.cluster_target)
            parts.append(self.predict(batch, batch_size).probabilities)
        probs = np.concatenate(parts) if parts else np.zeros((0, self.n_classes), np.float32)
        return Prediction(self.classes, probs)
