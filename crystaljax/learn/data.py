"""Streaming input: a data set stored as ``.npz`` shards, read a shard at a time.

``write_shards`` (or a :class:`ShardWriter` fed batch by batch, so the set never has to be in memory)
writes ``shard_00000.npz, ...`` (Structure fields + labels (+ split)) and ``index.json``.
:class:`ShardedDataset` is random access (``len``, ``ds[i]``, the protocol of Grain's
``RandomAccessDataSource``, so ``grain.MapDataset.source(ds)`` works where Grain is installed), and
:func:`iterate_batches` streams fixed-size batches for one process of ``process_count``: process i
reads shards i, i+n, i+2n, ... only.  Memory: about two shards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from crystaljax.structure import Structure

INDEX = "index.json"
FORMAT = "crystaljax-shards/1"
_FIELDS = Structure._fields


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.npz"


class ShardWriter:
    """Append batches of structures; every ``shard_size`` rows become one ``.npz`` file.

    ``add(structures (B, n_max, ...), labels (B,), split (B,) or None)``; ``close()`` (or the ``with``
    block) writes the last partial shard and ``index.json``.  n_max is fixed by the first batch."""

    def __init__(self, directory, shard_size: int = 4096):
        if int(shard_size) < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard_size = int(shard_size)
        self._parts: list[dict] = []
        self._buffered = 0
        self._counts: list[int] = []
        self.n_max: int | None = None
        self._has_split: bool | None = None

    def add(self, structures: Structure, labels, split=None) -> None:
        rows = {f: np.asarray(getattr(structures, f)) for f in _FIELDS}
        rows["labels"] = np.asarray(labels, np.int32)
        n = len(rows["labels"])
        if any(len(v) != n for v in rows.values()):
            raise ValueError("structures and labels must have the same leading size")
        n_max = rows["positions"].shape[1]
        if self.n_max is None:
            self.n_max, self._has_split = n_max, split is not None
        elif n_max != self.n_max:
            raise ValueError(f"n_max {n_max} differs from the first batch's {self.n_max}")
        if (split is not None) != self._has_split:
            raise ValueError("give split for every batch or for none")
        if split is not None:
            rows["split"] = np.asarray(split).astype("U5")
        self._parts.append(rows)
        self._buffered += n
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        merged = {k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}
        np.savez(self.directory / _shard_name(len(self._counts)), **{k: v[:n] for k, v in merged.items()})
        self._counts.append(n)
        rest = {k: v[n:] for k, v in merged.items()}
        self._buffered -= n
        self._parts = [rest] if self._buffered else []

    def close(self) -> Path:
        if self._buffered:
            self._flush(self._buffered)
        index = {"format": FORMAT, "n": int(sum(self._counts)), "shard_size": self.shard_size,
                 "counts": self._counts, "files": [_shard_name(i) for i in range(len(self._counts))],
                 "n_max": self.n_max, "has_split": bool(self._has_split)}
        (self.directory / INDEX).write_text(json.dumps(index, indent=1) + "\n")
        return self.directory

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()


def write_shards(directory, structures: Structure, labels, split=None, shard_size: int = 4096) -> Path:
    """Write an in-memory batched Structure (N, n_max, ...) + labels (N,) (+ split (N,)) as shards."""
    with ShardWriter(directory, shard_size) as w:
        w.add(structures, labels, split)
    return Path(directory)


class ShardedDataset:
    """A directory written by :func:`write_shards`: ``len(ds)``, ``ds[i] -> (Structure, label)`` (one
    shard cached), ``ds.shard(k) -> (Structure (n_k, n_max, ...), labels, split or None)``."""

    def __init__(self, directory):
        self.directory = Path(directory)
        path = self.directory / INDEX
        if not path.is_file():
            from crystaljax.errors import InputFileError

            raise InputFileError(f"{self.directory}: no {INDEX} (write the shards with crystaljax.learn.data.write_shards)")
        self.index = json.loads(path.read_text())
        self.counts = np.asarray(self.index["counts"], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self._cached: tuple[int, tuple] | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_shards(self) -> int:
        return len(self.counts)

    @property
    def n_max(self) -> int:
        return int(self.index["n_max"])

    def shard(self, k: int):
        if self._cached is not None and self._cached[0] == k:
            return self._cached[1]
        with np.load(self.directory / self.index["files"][k]) as z:
            out = (Structure(*(z[f] for f in _FIELDS)), z["labels"], z["split"] if "split" in z.files else None)
        self._cached = (k, out)
        return out

    def __getitem__(self, i: int):
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        s, labels, _ = self.shard(k)
        j = i - self.offsets[k]
        return Structure(*(x[j] for x in s)), int(labels[j])


def shards_for_process(n_shards: int, process_index: int, process_count: int) -> np.ndarray:
    """Shard numbers read by process ``process_index`` of ``process_count``: every process_count-th."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return np.arange(process_index, n_shards, process_count)


def iterate_batches(ds: ShardedDataset, batch_size: int, *, seed: int = 0, epoch: int = 0, split: str | None = None,
                    process_index: int = 0, process_count: int = 1, shuffle: bool = True,
                    drop_remainder: bool = True) -> Iterator[tuple[Structure, np.ndarray]]:
    """Batches ``(Structure (batch_size, n_max, ...), labels (batch_size,))`` of this process's shards.

    Shard order and the rows inside a window of two shards are shuffled from ``(seed, epoch)``; ``split``
    keeps only rows of that split.  ``drop_remainder=False`` yields the last short batch too.  Only this
    process's shards are opened, so n processes read disjoint parts of the set."""
    rng = np.random.default_rng([seed, epoch, process_index])
    mine = shards_for_process(ds.n_shards, process_index, process_count)
    if shuffle:
        mine = rng.permutation(mine)
    buf_s: list[Structure] = []
    buf_y: list[np.ndarray] = []
    held = 0

    def pool():
        s = Structure(*(np.concatenate(xs) for xs in zip(*buf_s)))
        return s, np.concatenate(buf_y)

    for k in mine:
        s, y, sp = ds.shard(int(k))
        if split is not None:
            if sp is None:
                raise ValueError(f"{ds.directory}: written without split, cannot select split={split!r}")
            keep = np.flatnonzero(sp == split)
            s, y = Structure(*(x[keep] for x in s)), y[keep]
        buf_s.append(s)
        buf_y.append(y)
        held += len(y)
        if held < 2 * batch_size and k != mine[-1]:
            continue
        s_all, y_all = pool()
        order = rng.permutation(len(y_all)) if shuffle else np.arange(len(y_all))
        n_full = len(order) // batch_size * batch_size
        for start in range(0, n_full, batch_size):
            idx = order[start:start + batch_size]
            yield Structure(*(x[idx] for x in s_all)), y_all[idx]
        rest = order[n_full:]
        buf_s, buf_y = [Structure(*(x[rest] for x in s_all))], [y_all[rest]]
        held = len(rest)
    if held and not drop_remainder:
        s_all, y_all = pool()
        yield s_all, y_all


__all__ = ["ShardWriter", "write_shards", "ShardedDataset", "shards_for_process", "iterate_batches"]
