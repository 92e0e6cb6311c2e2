"""One trained model, ready to use: weights, fingerprint settings, class names and jitted functions.

    clf = Classifier.load("default")             # or "pristine", or a model directory
    pred = clf.classify(list_of_ase_atoms)       # Prediction: probabilities (N, C) and labels
    pred = clf.predict(batch)                    # from an already prepared batched Structure
    pred = clf.classify(atoms, mc_samples=16, key=jax.random.key(0))   # MC dropout: + mutual information

``clf.fingerprint_fn`` (one Structure -> (H, W, 3)) and ``clf.apply`` (images -> probabilities) are
traceable, so ``jax.grad`` runs through the physics and the network.

MC dropout: K forward passes with the network's dropout on and batch norm on its running statistics,
as one jitted call vmapped over the samples (the fingerprints and every layer before the dropout are
computed once).  Structure i of a call uses the key ``fold_in(key, i)``, so its samples do not depend on
the batch size or on the other structures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, from_dict
from crystaljax.learn import checkpoint as _ckpt
from crystaljax.learn.classes import CLASS_MEANINGS  # noqa: F401 (re-exported)
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


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis, float64; 0 log 0 = 0."""
    p = np.asarray(p, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


@dataclass(frozen=True)
class Prediction:
    """Class probabilities of N structures.

    probabilities: (N, C) float32, rows sum to 1 (the mean over the MC samples if there are any).
    samples: (N, K, C) float32 probabilities of the K MC dropout passes, or None (deterministic).
    embeddings: (N, D) float32 eval-mode embeddings (``ConvNet.embed``) from the same pass, when asked for
        (``Classifier.predict_images(..., embeddings=True)``), else None.
    """

    classes: tuple[str, ...]
    probabilities: np.ndarray
    samples: np.ndarray | None = field(default=None, repr=False)
    embeddings: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_samples(cls, classes, samples: np.ndarray, embeddings: np.ndarray | None = None) -> "Prediction":
        """From (N, K, C) sampled probabilities; ``probabilities`` is their mean over K."""
        samples = np.asarray(samples, np.float32)
        mean = samples.astype(np.float64).mean(axis=1)
        return cls(tuple(classes), mean.astype(np.float32), samples, embeddings)

    def __len__(self) -> int:
        return len(self.probabilities)

    @property
    def n_samples(self) -> int:
        """K, the number of MC dropout passes (0: one deterministic pass)."""
        return 0 if self.samples is None else int(self.samples.shape[1])

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
        """(N,) predictive entropy: Shannon entropy of the (mean) probabilities, nats, in [0, log C]."""
        if self.samples is not None:
            return entropy(self.samples.astype(np.float64).mean(axis=1))
        return entropy(self.probabilities)

    @property
    def mutual_information(self) -> np.ndarray:
        """(N,) entropy of the mean minus the mean entropy of the samples, nats (the model's own uncertainty,
        ARISE/BALD); 0 without samples or with one sample."""
        if self.samples is None or self.samples.shape[1] < 2:
            return np.zeros(len(self.probabilities))
        return np.maximum(self.entropy - entropy(self.samples).mean(axis=1), 0.0)


def as_key(key) -> jax.Array:
    """A typed jax.random key from a key (typed or raw uint32) or an int seed; None -> seed 0."""
    if key is None:
        return jax.random.key(0)
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return key


class Classifier:
    """A trained ConvNet with the fingerprint settings it was trained with; build it once, call it often.

    ``mesh`` (a 1-D ``jax.sharding.Mesh`` over ``"data"``, :func:`crystaljax.learn.sharding.make_mesh`): every
    batched call splits its chunks over the mesh's devices with the weights replicated (:meth:`on_mesh`);
    None runs on the default device.
    """

    def __init__(self, checkpoint: _ckpt.Checkpoint, mesh=None):
        self.checkpoint = checkpoint
        self.card = checkpoint.card
        self.classes: tuple[str, ...] = tuple(checkpoint.card["classes"])
        self.spec = FingerprintSpec.from_card(checkpoint.card)
        self.mesh = mesh
        #: Thresholds of the "unknown" verdict (crystaljax.learn.novelty), set by :meth:`load` from the
        #: model's unknown.json; None: nothing is flagged.
        self.unknown_thresholds = None
        #: The distance gate's reference (novelty.EmbeddingReference) from unknown_embedding.npz, or None.
        self.embedding_reference = None
        self.fingerprint_fn = make_fingerprint_fn(self.spec.detector, self.spec.beam, self.spec.fingerprint)
        graphdef = checkpoint.graphdef
        images_of = jax.vmap(self.fingerprint_fn)

        def forward(params, batch_stats, images):
            return jax.nn.softmax(nnx.merge(graphdef, params, batch_stats)(images, train=False), axis=-1)

        def sampled_from_features(params, batch_stats, features, keys, n_samples):
            """Trunk features (B, ...) (``ConvNet.features``), keys (B,) -> (B, K, C): K dropout passes per
            structure, vmapped over the sample keys."""

            def one(f, key):
                model = nnx.merge(graphdef, params, batch_stats)
                logits = model.out(model.head(f[None], train=False, mc_dropout=True, rngs=key))[0]
                return jax.nn.softmax(logits, axis=-1)

            def per_image(f, key):
                return jax.vmap(one, in_axes=(None, 0))(f, jax.random.split(key, n_samples))

            return jax.vmap(per_image)(features, keys)

        def sampled(params, batch_stats, images, keys, n_samples):
            """images (B, H, W, C), keys (B,) -> (B, K, C) MC dropout probabilities (trunk computed once)."""
            features = nnx.merge(graphdef, params, batch_stats).features(images)
            return sampled_from_features(params, batch_stats, features, keys, n_samples)

        def with_embeddings(params, batch_stats, images, keys, n_samples):
            """(probabilities (B, C) or MC samples (B, K, C) when ``n_samples`` > 0, embeddings (B, D)): one
            pass of the convolutional trunk serves both."""
            model = nnx.merge(graphdef, params, batch_stats)
            features = model.features(images)
            embeddings = model.head(features, train=False)
            if n_samples <= 0:
                return jax.nn.softmax(model.out(embeddings), axis=-1), embeddings
            return sampled_from_features(params, batch_stats, features, keys, n_samples), embeddings

        def embed(params, batch_stats, images):
            return nnx.merge(graphdef, params, batch_stats).embed(images, train=False)

        self._forward = forward
        self._embed = jax.jit(embed)
        self._sampled = sampled
        self._images = jax.jit(images_of)
        self._probs = jax.jit(forward)
        self._with_embeddings = jax.jit(
            lambda p, s, images, keys, n_samples: with_embeddings(p, s, images, jax.random.wrap_key_data(keys),
                                                                  n_samples), static_argnames="n_samples")
        self._probs_of_structures = jax.jit(lambda p, s, batch: forward(p, s, images_of(batch)))
        self._samples_of_structures = jax.jit(
            lambda p, s, batch, keys, n_samples: sampled(p, s, images_of(batch), jax.random.wrap_key_data(keys),
                                                         n_samples), static_argnames="n_samples")
        self._variables = (checkpoint.params, checkpoint.batch_stats)
        if mesh is not None:
            from crystaljax.learn.sharding import replicate

            self._variables = replicate(mesh, self._variables)

    @classmethod
    def load(cls, name_or_path=None, mesh=None) -> "Classifier":
        """From a shipped model's name (``default``, ``pristine``) or a model directory; None = ``default``.
        The thresholds of the unknown verdict are read from the directory's unknown.json when it has one.
        ``mesh``: as in the class docstring."""
        from crystaljax.learn.novelty import EmbeddingReference, load_thresholds

        clf = cls(_ckpt.load(name_or_path), mesh)
        model_dir = _ckpt.resolve_model_dir(name_or_path)
        clf.unknown_thresholds = load_thresholds(model_dir)
        clf.embedding_reference = EmbeddingReference.load(model_dir)
        return clf

    def on_mesh(self, mesh) -> "Classifier":
        """The same model (thresholds and reference included) with its batched calls split over ``mesh``."""
        clf = Classifier(self.checkpoint, mesh)
        clf.unknown_thresholds, clf.embedding_reference = self.unknown_thresholds, self.embedding_reference
        return clf

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def dropout_rate(self) -> float:
        return float(self.checkpoint.config.dropout)

    def model(self):
        """An NNX ConvNet with these weights."""
        return self.checkpoint.model()

    def apply(self, images) -> jax.Array:
        """images (B, H, W, 3) -> probabilities (B, C); traceable (use under jit/grad)."""
        return self._forward(self.checkpoint.params, self.checkpoint.batch_stats, images)

    def apply_mc(self, images, keys, n_samples: int) -> jax.Array:
        """images (B, H, W, 3), keys (B,) typed keys -> (B, K, C) MC dropout probabilities; traceable."""
        return self._sampled(self.checkpoint.params, self.checkpoint.batch_stats, images, keys, int(n_samples))

    def _map(self, fn, tree, batch_size: int):
        """``fn(params, batch_stats, chunk)`` over ``tree`` in fixed-size chunks (``structure.map_padded``); on a
        mesh the chunk size is rounded up to a multiple of the device count and each chunk is split over it."""
        params, stats = self._variables
        if self.mesh is None:
            return map_padded(lambda chunk: fn(params, stats, chunk), tree, batch_size)
        from crystaljax.learn.sharding import map_sharded

        return map_sharded(self.mesh, lambda chunk: fn(params, stats, chunk), tree, batch_size)

    def images(self, batch: Structure, batch_size: int = 32) -> np.ndarray:
        """Fingerprints (B, H, W, 3) float32 of a batched Structure, in fixed-size jitted chunks."""
        return self._map(lambda p, s, chunk: self._images(chunk), batch, batch_size)

    def structure_keys(self, n: int, key=None, start: int = 0) -> np.ndarray:
        """(n, 2) uint32 raw keys ``fold_in(key, start + i)``: one per structure, independent of batching."""
        base = as_key(key)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, start + n, dtype=jnp.uint32))
        return np.asarray(jax.random.key_data(keys))

    def probabilities_of_images(self, images, batch_size: int = 256) -> np.ndarray:
        """(N, C) deterministic probabilities of fingerprints (N, H, W, 3)."""
        return self._map(self._probs, np.asarray(images, np.float32), batch_size)

    def embeddings(self, images, batch_size: int = 256) -> np.ndarray:
        """(N, D) embeddings (``ConvNet.embed``, eval mode) of fingerprints (N, H, W, 3)."""
        return self._map(self._embed, np.asarray(images, np.float32), batch_size)

    def feature_distance(self, prediction: "Prediction") -> np.ndarray | None:
        """(N,) Mahalanobis distances of a Prediction's embeddings (``predict_images(..., embeddings=True)``)
        from its predicted classes' reference means (``embedding_reference``), or None when the model has no
        reference."""
        if self.embedding_reference is None:
            return None
        if prediction.embeddings is None:
            raise ValueError("the prediction carries no embeddings: use predict_images(..., embeddings=True)")
        return self.embedding_reference.distance(prediction.embeddings, prediction.indices)

    def predict_images(self, images, batch_size: int = 256, *, mc_samples: int = 0, key=None,
                       start: int = 0, embeddings: bool = False) -> Prediction:
        """Prediction for fingerprints (N, H, W, 3); ``mc_samples`` > 0: MC dropout with the keys
        ``fold_in(key, start + i)`` (as :meth:`predict`, so the same structures give the same samples).
        One jitted pass per chunk gives the probabilities (or samples) and the eval-mode embeddings (the
        convolutional trunk runs once for both); ``embeddings``: keep the embeddings in the Prediction."""
        images = np.asarray(images, np.float32)
        k = max(int(mc_samples), 0)
        keys = self.structure_keys(len(images), key, start)
        out, emb = self._map(lambda p, s, t: self._with_embeddings(p, s, t[0], t[1], n_samples=k), (images, keys),
                             batch_size)
        emb = emb if embeddings else None
        return Prediction(self.classes, out, None, emb) if k == 0 else Prediction.from_samples(self.classes, out, emb)

    def predict(self, batch: Structure, batch_size: int = 64, *, mc_samples: int = 0, key=None,
                start: int = 0) -> Prediction:
        """Prediction for a batched, prepared Structure (fingerprints and network in one jitted call per chunk).

        mc_samples: K > 0 runs K dropout passes per structure (batch norm on running statistics) with the
        keys ``fold_in(key, start + i)`` (key: a jax.random key or int seed; None = 0); the fingerprints are
        computed once.  0: one deterministic pass.
        """
        if mc_samples <= 0:
            return Prediction(self.classes, self._map(self._probs_of_structures, batch, batch_size))
        k = int(mc_samples)
        keys = self.structure_keys(len(batch.mask), key, start)
        samples = self._map(lambda p, s, t: self._samples_of_structures(p, s, t[0], t[1], n_samples=k),
                            (batch, keys), batch_size)
        return Prediction.from_samples(self.classes, samples)

    def classify(self, structures: Sequence, batch_size: int = 64, *, mc_samples: int = 0, key=None) -> Prediction:
        """Prediction for a list of ``ase.Atoms`` (any size, periodic or finite) through the host pipeline;
        ``mc_samples``/``key`` as in :meth:`predict` (structure i always gets ``fold_in(key, i)``)."""
        from crystaljax.pipeline import prepare_structures

        parts = []
        for start in range(0, len(structures), batch_size):
            batch = prepare_structures(list(structures[start:start + batch_size]), target=self.spec.cluster_target)
            parts.append(self.predict(batch, batch_size, mc_samples=mc_samples, key=key, start=start))
        if not parts:
            shape = (0, self.n_classes) if mc_samples <= 0 else (0, int(mc_samples), self.n_classes)
            empty = np.zeros(shape, np.float32)
            return Prediction(self.classes, empty) if mc_samples <= 0 else Prediction.from_samples(self.classes, empty)
        if mc_samples <= 0:
            return Prediction(self.classes, np.concatenate([p.probabilities for p in parts]))
        return Prediction.from_samples(self.classes, np.concatenate([p.samples for p in parts]))
