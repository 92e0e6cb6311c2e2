"""Shared fixtures: small clusters built directly with NumPy (independent of the host pipeline)."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
os.environ.setdefault("CRYSTALJAX_CACHE", "off")  # the CLI's compilation cache is tested on its own (test_cli)

import numpy as np
import pytest

import crystaljax.structures.symmetry  # noqa: F401,E402  spglib in exception mode for tests calling it directly


def lattice_cluster(basis, cell, reps, jitter=0.0, seed=0):
    """Cartesian positions (Å) of ``reps`` replicas of ``basis`` (fractional) in ``cell``, centred."""
    basis = np.asarray(basis, float)
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    frac = (grid[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    pos = frac @ np.asarray(cell, float)
    pos -= pos.mean(0)
    if jitter:
        pos += np.random.default_rng(seed).normal(0, jitter, pos.shape)
    return pos


@pytest.fixture
def sc_cluster():
    """6 x 6 x 7 simple-cubic Cu cluster, spacing 1 Å (252 atoms)."""
    pos = lattice_cluster([[0, 0, 0]], np.eye(3), (6, 6, 7))
    return pos, np.full(len(pos), 29)
