"""From ``ase.Atoms`` to device batches and fingerprints (host -> device glue).

``prepare_structures`` runs the host pipeline (validate, standard cell, ~250-atom cluster) and
pads the clusters into one batched :class:`Structure`; ``fingerprints`` images them on device
in fixed-size batches, so a list of any length compiles once per padded size.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

import jax

from crystaljax.structures.cell import random_rotation, rotate
from crystaljax.structures.cluster import prepare
from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig
from crystaljax.physics.fingerprint import make_fingerprint_fn
from crystaljax.structure import Structure, from_ase, map_padded, pad_to, stack

#: Structures imaged per device call by :func:`fingerprints`.
DEVICE_BATCH = 32


def prepare_structures(structures: Sequence, *, target: int = 250, key=None, n_max: int | None = None) -> Structure:
    """Clusters of ``structures`` (list of ``ase.Atoms``) padded into one batched Structure.

    ``key`` (a ``jax.random`` key), if given, rotates each input at random first; the standard
    cell makes periodic inputs independent of that rotation, finite inputs are seen from a new
    direction.  Raises ``StructureError`` naming the bad structure.
    """
    rng = None if key is None else np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    clusters = []
    for atoms in structures:
        if rng is not None:
            atoms = rotate(atoms, random_rotation(rng))
        clusters.append(from_ase(prepare(atoms, target=target)))
    if not clusters:
        raise ValueError("no structures given")
    size = pad_to(max(c.n_max for c in clusters)) if n_max is None else n_max
    return stack(clusters, n_max=size)


def fingerprint_batch(batch: Structure, *, detector: DetectorConfig | None = None, beam: BeamConfig | None = None,
                      fp: FingerprintConfig | None = None, batch_size: int = DEVICE_BATCH) -> np.ndarray:
    """Fingerprints (B, n, n, 3) float32 of an already prepared batched Structure, in fixed-size jitted chunks."""
    fn = make_fingerprint_fn(detector or DetectorConfig(), beam or BeamConfig(), fp or FingerprintConfig())
    return map_padded(jax.jit(jax.vmap(fn)), batch, batch_size)


def fingerprints(structures: Sequence, *, key=None, detector: DetectorConfig | None = None,
                 beam: BeamConfig | None = None, fp: FingerprintConfig | None = None, target: int = 250,
                 ) -> np.ndarray:
    """The whole pipeline for a list of ``ase.Atoms``: (B, n, n, 3) float32 fingerprints."""
    batch = prepare_structures(list(structures), target=target, key=key)
    return fingerprint_batch(batch, detector=detector, beam=beam, fp=fp)
