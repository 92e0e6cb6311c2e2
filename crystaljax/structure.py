"""The ``Structure`` pytree: the boundary between the host pipeline and the device.

Every array has a static shape: a structure of n atoms is padded to ``n_max`` rows and the
``mask`` says which rows are atoms.  A vacancy is ``mask = 0``, so defective structures keep
their shape and a batch compiles once.  Batches are the same pytree with a leading axis.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

import jax.numpy as jnp


class Structure(NamedTuple):
    """A padded cluster.

    positions:   (n_max, 3) float32, Å, scaled so the mean nearest-neighbour distance is 1 Å.
    numbers:     (n_max,) int32, true atomic numbers (0 on padding rows).
    mask:        (n_max,) float32 in {0, 1}; 0 = padding or vacancy.
    tags:        (n_max,) int32 sublattice tag from the cluster builder (1 = bcc body centre).
    nn_distance: () float32, the physical mean nearest-neighbour distance in Å
                 (physical positions = positions * nn_distance).
    """

    positions: jnp.ndarray
    numbers: jnp.ndarray
    mask: jnp.ndarray
    tags: jnp.ndarray
    nn_distance: jnp.ndarray

    @property
    def n_max(self) -> int:
        return self.positions.shape[-2]


def pad_to(n: int, multiple: int = 16) -> int:
    """Smallest multiple of ``multiple`` that is >= n (bounded set of shapes -> few recompilations)."""
    return max(multiple, -(-n // multiple) * multiple)


def from_arrays(
    positions,
    numbers,
    *,
    n_max: int | None = None,
    tags=None,
    nn_distance: float = 1.0,
) -> Structure:
    """Pad host arrays (positions in Å, already scaled) into a ``Structure`` of ``n_max`` rows."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
    n = len(positions)
    if len(numbers) != n:
        raise ValueError(f"{n} positions but {len(numbers)} atomic numbers")
    n_max = pad_to(n) if n_max is None else int(n_max)
    if n > n_max:
        raise ValueError(f"structure has {n} atoms, more than n_max={n_max}")
    pos = np.zeros((n_max, 3), np.float32)
    pos[:n] = positions
    num = np.zeros(n_max, np.int32)
    num[:n] = numbers
    mask = np.zeros(n_max, np.float32)
    mask[:n] = 1.0
    tag = np.zeros(n_max, np.int32)
    if tags is not None:
        tag[:n] = np.asarray(tags, dtype=np.int32).reshape(-1)
    return Structure(pos, num, mask, tag, np.float32(nn_distance))


def from_ase(atoms, n_max: int | None = None) -> Structure:
    """Pad an ``ase.Atoms`` cluster (positions already scaled, e.g. from ``cluster.build_cluster``).

    Tags come from ``atoms.get_tags()``; the physical neighbour distance from
    ``atoms.info['nn_distance']`` (1.0 if absent).
    """
    return from_arrays(
        atoms.get_positions(),
        atoms.get_atomic_numbers(),
        n_max=n_max,
        tags=atoms.get_tags(),
        nn_distance=float(atoms.info.get("nn_distance", 1.0)),
    )


def stack(structures: Sequence[Structure], n_max: int | None = None) -> Structure:
    """Batch structures along a new leading axis, re-padding all to a common ``n_max``."""
    if len(structures) == 0:
        raise ValueError("cannot stack an empty list of structures")
    sizes = [int(np.asarray(s.mask).sum()) for s in structures]
    if n_max is None:
        n_max = max(s.positions.shape[-2] for s in structures)
    fields = []
    for s, n in zip(structures, sizes):
        if s.positions.shape[-2] != n_max:
            keep = np.asarray(s.mask) > 0.5
            s = from_arrays(
                np.asarray(s.positions)[keep], np.asarray(s.numbers)[keep], n_max=n_max,
                tags=np.asarray(s.tags)[keep], nn_distance=float(np.asarray(s.nn_distance)),
            )
        fields.append(s)
    return Structure(*(np.stack([np.asarray(getattr(s, f)) for s in fields]) for f in Structure._fields))


def take(tree, i):
    """Rows ``i`` (an int, slice or index array) of every leaf's leading axis: a batched Structure -> its
    items, or any pytree of batched arrays.  Host-side (NumPy) indexing."""
    import jax

    return jax.tree.map(lambda x: np.asarray(x)[i], tree)


def map_padded(fn, tree, batch_size: int):
    """``fn`` over the leading axis of ``tree`` in chunks of exactly ``batch_size`` rows (the last chunk
    padded by repeating its final row), outputs concatenated and the padding dropped.

    Every call of ``fn`` sees the same shapes, so a jitted ``fn`` compiles once whatever the length.
    ``fn(chunk) -> pytree of arrays with leading axis batch_size``; returns the same pytree of NumPy arrays.
    """
    import jax

    n = len(jax.tree.leaves(tree)[0])
    if n == 0:
        raise ValueError("map_padded: empty input")
    size = max(1, min(int(batch_size), n))
    outs = []
    for start in range(0, n, size):
        idx = np.arange(start, min(start + size, n))
        real = len(idx)
        if real < size:
            idx = np.concatenate([idx, np.full(size - real, idx[-1])])
        out = fn(take(tree, idx))
        outs.append(jax.tree.map(lambda x, r=real: np.asarray(x)[:r], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def n_atoms(structure: Structure) -> jnp.ndarray:
    """Number of atoms present (mask sum); works on batches (leading axes kept)."""
    return jnp.sum(structure.mask, axis=-1)
