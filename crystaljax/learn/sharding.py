"""Data parallelism over devices and hosts with ``jax.sharding`` (JAX's own runtime, nothing home-made).

One 1-D mesh with axis ``"data"``: batches are split along their leading axis, parameters and optimiser
state are replicated, and ``jax.jit`` with in/out shardings lets XLA insert the gradient all-reduce
(and the batch-norm statistics reductions), so a sharded step computes the same numbers as the
single-device step on the global batch.  Multi-host: call :func:`initialize_distributed` first (a no-op
on one process); each process then feeds its own part of the global batch to :func:`shard_batch`.
See docs/SCALING.md for launch recipes.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from crystaljax.structure import Structure, map_padded

DATA_AXIS = "data"

#: Environment variables that show this process is one of several (Slurm, Open MPI, TPU pods, explicit JAX).
_CLUSTER_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def _cluster_detected(environ: Mapping[str, str]) -> bool:
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    for name in _CLUSTER_ENV:
        try:
            if int(environ.get(name, "1")) > 1:
                return True
        except ValueError:
            pass
    hosts = environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h.strip()]) > 1


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_ids=None, *,
                           environ: Mapping[str, str] | None = None) -> dict:
    """``jax.distributed.initialize`` when this is one process of several, else nothing.

    Several = explicit ``num_processes > 1`` or a ``coordinator_address``, or a multi-process launch seen
    in the environment (Slurm ``SLURM_NTASKS > 1``, Open MPI, a multi-host TPU slice, or
    ``JAX_COORDINATOR_ADDRESS``); JAX then fills in whatever is not given from that environment.
    Call it before anything else touches JAX devices.  Returns ``{"initialized", "process_index",
    "process_count", "local_devices", "devices"}``.
    """
    environ = os.environ if environ is None else environ
    explicit = coordinator_address is not None or (num_processes is not None and int(num_processes) > 1)
    if explicit or (num_processes is None and _cluster_detected(environ)):
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids)
        initialized = True
    else:
        initialized = False
    return {"initialized": initialized, "process_index": jax.process_index(), "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(), "devices": jax.device_count()}


def make_mesh(n_devices: int | None = None, devices=None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: the first ``n_devices`` of ``jax.devices()``,
    all of them when None; across every host after :func:`initialize_distributed`)."""
    if devices is None:
        devices = jax.devices()
        if n_devices is not None:
            if not 1 <= int(n_devices) <= len(devices):
                raise ValueError(f"asked for {n_devices} devices, {len(devices)} available")
            devices = devices[: int(n_devices)]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def local_mesh(devices: int | None = None) -> Mesh | None:
    """A data mesh over this process's first ``devices`` devices (None: all of them), or None when that is one
    device (nothing to split).  What ``crystaljax classify/map --devices`` use."""
    available = jax.local_devices()
    n = len(available) if devices is None else int(devices)
    if not 1 <= n <= len(available):
        raise ValueError(f"--devices {n}: this process sees {len(available)} device(s)")
    return None if n == 1 else make_mesh(devices=available[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``"data"``, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(mesh: Mesh, tree):
    """Put a pytree of batched arrays on the mesh, split along the leading axis.

    One process: ``tree`` is the global batch; its leading size must be a multiple of the mesh size.
    Several processes: ``tree`` is this process's part (all processes pass equal sizes) and the result
    is the global array (``jax.make_array_from_process_local_data``)."""
    sharding = batch_sharding(mesh)
    local = mesh.size // jax.process_count() if jax.process_count() > 1 else mesh.size
    for x in jax.tree.leaves(tree):
        if np.ndim(x) == 0 or np.shape(x)[0] % local:
            raise ValueError(f"batch of leading size {np.shape(x)[:1]} does not split over {local} devices; "
                             f"use a multiple of {local}")
    if jax.process_count() > 1:
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
    return jax.device_put(tree, sharding)


def replicate(mesh: Mesh, tree):
    """Put a pytree (parameters, optimiser state, keys) on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def make_sharded_train_step(graphdef, optimizer, fingerprint_fn, defect_fn=None, *, mesh: Mesh,
                            donate: bool = False) -> Callable:
    """Data-parallel ``train_step(state, batch, key) -> (state, metrics)`` on ``mesh``.

    Same function as :func:`crystaljax.learn.train.make_train_step` (same arguments and results), jitted
    with the state and key replicated and the batch (structures or images, labels) split along its
    leading axis; XLA adds the cross-device reductions.  Global batch size: a multiple of the mesh size.
    """
    from crystaljax.learn.train import make_train_step

    inner = make_train_step(graphdef, optimizer, fingerprint_fn, defect_fn, jit=False)
    rep, split = replicated(mesh), batch_sharding(mesh)
    return jax.jit(inner, in_shardings=(rep, split, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,) if donate else ())


def make_sharded_predict(graphdef, fingerprint_fn, mesh: Mesh) -> Callable:
    """``probs(params, batch_stats, structures (B, n_max, ...)) -> (B, n_classes)`` with the batch split
    over ``mesh`` and the model replicated (eval mode).  ``fingerprint_fn=None``: the input is images."""
    from crystaljax.learn.train import make_eval_step

    eval_step = make_eval_step(graphdef, fingerprint_fn, jit=False)

    class _Vars:  # what eval_step reads
        def __init__(self, params, batch_stats):
            self.params, self.batch_stats = params, batch_stats

    def probs(params, batch_stats, inputs):
        return eval_step(_Vars(params, batch_stats), inputs)

    rep, split = replicated(mesh), batch_sharding(mesh)
    return jax.jit(probs, in_shardings=(rep, rep, split), out_shardings=split)


def sharded_predict(mesh: Mesh, classifier, batch: Structure, batch_size: int = 64):
    """``Classifier.predict`` with every chunk split over the devices of ``mesh`` (``classifier.on_mesh``).

    classifier: a :class:`crystaljax.learn.classifier.Classifier`; batch: a prepared, batched Structure
    (N, n_max, ...).  Returns a ``Prediction`` equal to ``classifier.predict(batch)``."""
    return classifier.on_mesh(mesh).predict(batch, batch_size)


def map_sharded(mesh: Mesh, fn, tree, batch_size: int) -> Any:
    """``structure.map_padded`` with each chunk split over ``mesh``: chunks of ``batch_size`` rows (at most
    the input's length) rounded up to a multiple of the mesh size, the last one padded by repeating its final
    row; ``fn(chunk)`` receives the sharded chunk.  Returns the pytree of NumPy arrays, padding dropped."""
    n = len(jax.tree.leaves(tree)[0])
    if n == 0:
        raise ValueError("map_sharded: empty input")
    size = -(-min(int(batch_size), n) // mesh.size) * mesh.size
    if n < size:
        pad = np.concatenate([np.arange(n), np.full(size - n, n - 1)])
        out = fn(shard_batch(mesh, jax.tree.map(lambda x: np.asarray(x)[pad], tree)))
        return jax.tree.map(lambda x: np.asarray(x)[:n], out)
    return map_padded(lambda chunk: fn(shard_batch(mesh, chunk)), tree, size)


__all__ = [
    "DATA_AXIS", "initialize_distributed", "make_mesh", "local_mesh", "batch_sharding", "replicated", "shard_batch",
    "replicate", "make_sharded_train_step", "make_sharded_predict", "sharded_predict", "map_sharded",
]
