"""From ``ase.Atoms`` to device batches and fingerprints (host -> device glue).

``prepare_structures`` runs the host pipeline (validate, standard cell, ~250-atom cluster) and
pads the clusters into one batched :class:`Structure`; ``fingerprints`` images them on device
in fixed-size batches, so a list of any length compiles once per padded size.  Padded sizes come from
a fixed list of buckets (:data:`BUCKETS`), so a long run of structures of varying size compiles a handful of
times.  ``iter_prepared_batches`` streams fixed-shape batches from any iterable of structures while
worker threads prepare the next ones, so host preparation overlaps device work (JAX dispatches
asynchronously: the consumer's device call returns at once and the workers keep going).
"""

from __future__ import annotations

import concurrent.futures
import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

import jax

from crystaljax.structures.cell import random_rotation, rotate
from crystaljax.structures.cluster import prepare
from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig
from crystaljax.physics.fingerprint import make_fingerprint_fn
from crystaljax.errors import CrystalJaxError
from crystaljax.structure import Structure, from_ase, map_padded, stack

#: Structures imaged per device call by :func:`fingerprints`.
DEVICE_BATCH = 32

#: Padded atom counts: multiples of 32 up to 512 (default ~250-atom clusters, whose shell-cut counts straddle
#: 256, land in 256 or 288), then three per octave (x1, x1.25, x1.5 of a power of two).  From 96 atoms on,
#: padding is at most 25 % of the rows (12.5 % from 256 to 512; the fingerprint costs ~ linear in the padded
#: size), and a run compiles once per bucket it meets.
BUCKETS: tuple[int, ...] = tuple(sorted({32 * k for k in range(1, 17)}
                                        | {int(m * 2**k) for k in range(9, 15) for m in (1.0, 1.25, 1.5)}))


def bucket_size(n: int) -> int:
    """The padded size for a structure of ``n`` atoms: the smallest bucket >= n (multiples of the largest
    bucket beyond it)."""
    n = int(n)
    for b in BUCKETS:
        if b >= n:
            return b
    top = BUCKETS[-1]
    return -(-n // top) * top


def prepare_structures(structures: Sequence, *, target: int = 250, key=None, n_max: int | None = None,
                       scale: str = "robust") -> Structure:
    """Clusters of ``structures`` (list of ``ase.Atoms``) padded into one batched Structure.

    ``key`` (a ``jax.random`` key), if given, rotates each input at random first; the standard
    cell makes periodic inputs independent of that rotation, finite inputs are seen from a new
    direction.  ``scale``: the length-scale estimator of the clusters (``crystaljax.structures.cluster.SCALES``).
    Raises ``StructureError`` naming the bad structure.
    """
    rng = None if key is None else np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    clusters = []
    for atoms in structures:
        if rng is not None:
            atoms = rotate(atoms, random_rotation(rng))
        clusters.append(from_ase(prepare(atoms, target=target, scale=scale)))
    if not clusters:
        raise ValueError("no structures given")
    size = bucket_size(max(c.n_max for c in clusters)) if n_max is None else n_max
    return stack(clusters, n_max=size)


def fingerprint_batch(batch: Structure, *, detector: DetectorConfig | None = None, beam: BeamConfig | None = None,
                      fp: FingerprintConfig | None = None, batch_size: int = DEVICE_BATCH) -> np.ndarray:
    """Fingerprints (B, n, n, 3) float32 of an already prepared batched Structure, in fixed-size jitted chunks."""
    fn = make_fingerprint_fn(detector or DetectorConfig(), beam or BeamConfig(), fp or FingerprintConfig())
    return map_padded(jax.jit(jax.vmap(fn)), batch, batch_size)


def fingerprints(structures: Sequence, *, key=None, detector: DetectorConfig | None = None,
                 beam: BeamConfig | None = None, fp: FingerprintConfig | None = None, target: int = 250,
                 scale: str = "robust") -> np.ndarray:
    """The whole pipeline for a list of ``ase.Atoms``: (B, n, n, 3) float32 fingerprints (``scale``: as in
    :func:`prepare_structures`)."""
    batch = prepare_structures(list(structures), target=target, key=key, scale=scale)
    return fingerprint_batch(batch, detector=detector, beam=beam, fp=fp)


# ----------------------------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class PreparedBatch:
    """One fixed-shape batch from :func:`iter_prepared_batches`.

    batch: Structure with leading axis exactly ``batch_size`` and padded size from :data:`BUCKETS`; rows
        beyond ``n_valid`` repeat the last valid row (drop their outputs).
    indices: (n_valid,) int, position in the input iterable of each valid row.
    errors: ((index, one-line message), ...) for the inputs of this batch that could not be prepared
        (``CrystalJaxError``: bad structure); they take no row.
    features: ``cluster_features(atoms, cluster)`` of the valid rows (the input ``ase.Atoms`` and its prepared
        cluster: scaled positions, ``info['nn_distance']``), computed by the workers, when asked for; else ().
    """

    batch: Structure | None
    indices: np.ndarray
    errors: tuple[tuple[int, str], ...]
    features: tuple = ()

    @property
    def n_valid(self) -> int:
        return int(len(self.indices))


def balanced_batch(n: int, batch_size: int) -> int:
    """Rows per batch for ``n`` inputs in batches of at most ``batch_size``: as few batches as that allows, all
    of one size (e.g. 200 in batches of <= 64 -> 4 x 50), so fixed-shape batches pad at most a few rows."""
    n, batch_size = max(1, int(n)), max(1, int(batch_size))
    return -(-n // -(-n // batch_size))


def _prepare_one(index: int, atoms, target: int, seed, scale: str = "robust", cluster_features=None):
    """(index, Structure or None, one-line error or None, ``cluster_features(atoms, cluster)`` or None)."""
    try:
        if seed is not None:
            atoms = rotate(atoms, random_rotation(np.random.default_rng([*seed, index])))
        cluster = prepare(atoms, target=target, scale=scale)
        return index, from_ase(cluster), None, None if cluster_features is None else cluster_features(atoms, cluster)
    except CrystalJaxError as err:
        return index, None, str(err).splitlines()[0] if str(err) else type(err).__name__, None


def _assemble(results, batch_size: int, n_max: int | None, with_features: bool) -> PreparedBatch:
    good = [(i, s, a) for i, s, _, a in results if s is not None]
    errors = tuple((i, e) for i, s, e, _ in results if s is None)
    if not good:
        return PreparedBatch(None, np.zeros(0, np.int64), errors)
    idx = np.array([i for i, _, _ in good], np.int64)
    clusters = [s for _, s, _ in good]
    clusters += [clusters[-1]] * (batch_size - len(clusters))
    size = bucket_size(max(c.n_max for c in clusters)) if n_max is None else int(n_max)
    kept = tuple(a for _, _, a in good) if with_features else ()
    return PreparedBatch(stack(clusters, n_max=size), idx, errors, kept)


def iter_prepared_batches(structures: Iterable, batch_size: int = DEVICE_BATCH, *, target: int = 250,
                          workers: int = 1, prefetch: int = 2, key=None, n_max: int | None = None,
                          scale: str = "robust", cluster_features=None) -> Iterator[PreparedBatch]:
    """Fixed-shape batches of clusters from an iterable (or generator) of ``ase.Atoms``, prepared ahead.

    The inputs are read lazily in groups of ``batch_size``; up to ``prefetch`` groups beyond the one being
    consumed are prepared by a pool of ``workers`` threads, so the preparation of batch i+1 runs while the
    caller's (asynchronously dispatched) device work on batch i does.  Every batch has exactly
    ``batch_size`` rows and a padded size from :data:`BUCKETS` (or ``n_max``), so a jitted consumer compiles
    once per bucket met.  A structure that cannot be prepared (``CrystalJaxError``, e.g. ``StructureError``)
    is reported in ``errors`` and skipped; the others are unaffected.  ``key`` (a ``jax.random`` key) rotates
    input i by a rotation seeded by (key, i), independent of ``workers`` and batching.  ``scale``: the
    length-scale estimator (as in :func:`prepare_structures`).  ``cluster_features``: a function of an input
    ``ase.Atoms`` and its prepared cluster run by the workers too (e.g. the unknown verdict's host features),
    results in ``PreparedBatch.features``.  Yields
    :class:`PreparedBatch` in input order.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    seed = None if key is None else [int(x) for x in np.asarray(jax.random.key_data(key)).ravel()]
    it = iter(enumerate(structures))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(workers)))
    pending: list[list[concurrent.futures.Future]] = []

    def submit_next() -> bool:
        group = list(itertools.islice(it, batch_size))
        if not group:
            return False
        pending.append([pool.submit(_prepare_one, i, a, target, seed, scale, cluster_features) for i, a in group])
        return True

    try:
        for _ in range(1 + max(0, int(prefetch))):
            if not submit_next():
                break
        while pending:
            futures = pending.pop(0)
            submit_next()
            yield _assemble([f.result() for f in futures], batch_size, n_max, cluster_features is not None)
    finally:
        for futures in pending:
            for f in futures:
                f.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def iter_fingerprints(structures: Iterable, batch_size: int = DEVICE_BATCH, *,
                      detector: DetectorConfig | None = None, beam: BeamConfig | None = None,
                      fp: FingerprintConfig | None = None, **options) -> Iterator[tuple[PreparedBatch, np.ndarray]]:
    """(PreparedBatch, fingerprints (n_valid, n, n, 3) float32) per batch of :func:`iter_prepared_batches`
    (``options``: its keyword arguments), imaged by one jitted function, so a run compiles once per bucket
    and the next batch is prepared while this one is imaged."""
    fn = jax.jit(jax.vmap(make_fingerprint_fn(detector or DetectorConfig(), beam or BeamConfig(),
                                              fp or FingerprintConfig())))
    for pb in iter_prepared_batches(structures, batch_size, **options):
        if pb.batch is None:
            yield pb, np.zeros((0,) * 4, np.float32)
            continue
        yield pb, np.asarray(fn(pb.batch))[:pb.n_valid]
