"""Atomic X-ray form factors and physical constants.

The angle-dependent form factor f0(s) of Waasmaier & Kirfel (Acta Cryst. A51, 416, 1995) is
``f0(s) = c + sum_i a_i exp(-b_i s^2)`` with ``s = sin(theta) / lambda`` in 1/Å.  The
coefficients, taken from the ``xraydb`` package (:func:`coefficient_table_from_xraydb`), ship as a small
table indexed by atomic number (``waasmaier_kirfel.npy``; importing xraydb costs ~1 s of start-up), so the
jitted fingerprint only gathers rows of a constant array.  tests/test_fingerprint.py checks that the shipped
table is xraydb's.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

import jax.numpy as jnp

#: Largest atomic number with tabulated coefficients (Cf).
Z_MAX_TABLE = 98
#: Metres per Ångström.
ANGSTROM = 1.0e-10
#: The shipped coefficient table (:func:`coefficient_table_from_xraydb`, saved with ``np.save``).
TABLE_FILE = Path(__file__).with_name("waasmaier_kirfel.npy")


@functools.lru_cache(maxsize=1)
def coefficient_table() -> np.ndarray:
    """(Z_MAX_TABLE + 1, 11) float64: row Z = [c, a_1..a_5, b_1..b_5] for the neutral atom; row 0 is zero
    (the shipped copy of :func:`coefficient_table_from_xraydb`)."""
    table = np.load(TABLE_FILE)
    if table.shape != (Z_MAX_TABLE + 1, 11):  # pragma: no cover - a damaged installation
        raise RuntimeError(f"{TABLE_FILE}: form-factor table of shape {table.shape}")
    return table


def coefficient_table_from_xraydb() -> np.ndarray:
    """The table of :func:`coefficient_table` built from ``xraydb``: row Z is the entry whose label is exactly
    the element symbol of Z (neutral atom)."""
    import xraydb

    table = np.zeros((Z_MAX_TABLE + 1, 11), dtype=np.float64)
    rows = xraydb.get_xraydb().get_cache("Waasmaier")
    for row in rows:
        z = int(row.atomic_number)
        if not 1 <= z <= Z_MAX_TABLE:
            continue
        # only the row labelled with the exact element symbol is the neutral atom: the table also holds
        # ions ('Fe2+') and valence-electron entries ('Cval', 'Siva') for the same Z
        if str(row.ion).strip() != xraydb.atomic_symbol(z):
            continue
        table[z, 0] = row.offset
        table[z, 1:6] = json.loads(row.scale)
        table[z, 6:11] = json.loads(row.exponents)
    missing = [z for z in range(1, Z_MAX_TABLE + 1) if table[z, 1:6].sum() == 0.0]
    if missing:
        raise RuntimeError(f"form-factor table incomplete for Z = {missing}")
    return table


def form_factor(z, s):
    """f0 of element(s) ``z`` (int array, broadcastable) at ``s = sin(theta)/lambda`` (1/Å), in electrons.

    Differentiable in ``s``.  ``z = 0`` gives 0 (used for padding).
    """
    table = jnp.asarray(coefficient_table(), dtype=jnp.result_type(s, jnp.float32))
    coeffs = table[jnp.asarray(z)]
    s2 = jnp.asarray(s)[..., None] ** 2
    return coeffs[..., 0] + jnp.sum(coeffs[..., 1:6] * jnp.exp(-coeffs[..., 6:11] * s2), axis=-1)


def form_factor_numpy(z: int, s: np.ndarray) -> np.ndarray:
    """Float64 host version of :func:`form_factor` for references and tests."""
    c = coefficient_table()[z]
    s2 = np.asarray(s, dtype=np.float64)[..., None] ** 2
    return c[0] + np.sum(c[1:6] * np.exp(-c[6:11] * s2), axis=-1)
