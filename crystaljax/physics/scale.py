"""Robust nearest-neighbour scale of a (defective) cluster, on the device.

The length scale that makes fingerprints size-free is the first-shell neighbour distance d_NN.  The
plain mean over atoms of the distance to the nearest other atom is biased: Gaussian displacements pull
it down (a minimum over ~12 noisy neighbours), vacancies push it up (an atom that lost its whole first
shell reports a second-shell distance).  This module estimates d_NN from the *pair* distances of the
first shell instead, which vacancies only thin out, and corrects the small upward shift that noise
gives pair distances.

The statistic (identical in :func:`crystaljax.structures.cluster.robust_nn_distance`, the host
version, which must keep the constants below in step; a test checks that both agree):

1. For every present atom, the distances to its ``NEIGHBOURS`` nearest present atoms (fewer -> +inf).
2. Start: m = lower quartile (sorted[(n - 1) // 4]) over atoms of the nearest-neighbour distance (an atom
   that lost its whole first shell to vacancies reports a longer one), s = min(median |nn - m| / 0.6745,
   S_MAX * m).
3. ``ITERATIONS`` times:
   m <- median of the neighbour distances d with |d - m| < C_LOCATION * max(s, FLOOR * m)
        (a symmetric window: the median of a symmetric peak is its centre, wherever the window starts);
   s <- median of (m - d) over d in ((1 - LOWER_WINDOW) * m, m), / 0.6745, at most S_MAX * m
        (the spread from the LOWER side of the first peak only, which no other shell contaminates; a
        pristine crystal has nothing there, so s = 0 and the window stays on its first shell).
4. d_NN = m - s^2 / m  (an isotropic pair displacement of spread s per component lengthens a bond of
   length r by s^2 / r on average, to first order).

"Median" is NumPy's (mean of the two middle values).  A pristine crystal whose atoms all have the same
nearest-neighbour distance gives exactly that distance (within rounding); random vacancies leave the
estimate unchanged unless an atom keeps no neighbour at all; for Gaussian displacements see
docs/RESULTS.md ("Scale estimator") and tests/test_scale.py for the measured bias per lattice type.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Neighbours per atom that enter the statistic.
NEIGHBOURS = 16
#: Fixed-point iterations (static: no data-dependent loop on the device).
ITERATIONS = 30
#: Half-width of the location window, in units of the spread.
C_LOCATION = 1.0
#: Width of the lower-side window used for the spread, as a fraction of m (no shell lies below the first).
LOWER_WINDOW = 0.45
#: Smallest spread used for the windows, as a fraction of m (a pristine crystal has s = 0).
FLOOR = 0.001
#: Largest spread, as a fraction of m (keeps the location window off the second shell).
S_MAX = 0.1
#: MAD / 0.6745 = standard deviation of a Gaussian.
MAD_TO_SIGMA = 0.6745


def masked_median(values: jnp.ndarray, valid: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Median of ``values[valid]`` (any shape, flattened) and the count; NaN if nothing is valid.

    The mean of the two middle values, like ``numpy.median``.  Sort-based: differentiable almost everywhere.
    """
    v = jnp.where(valid, values, jnp.inf).ravel()
    n = jnp.sum(valid, dtype=jnp.int32)
    srt = jnp.sort(v)
    lo = srt[jnp.maximum((n - 1) // 2, 0)]
    hi = srt[jnp.maximum(n // 2, 0)]
    med = 0.5 * (lo + hi)
    return jnp.where(n > 0, med, jnp.nan), n


def scale_from_neighbour_distances(d: jnp.ndarray) -> jnp.ndarray:
    """The robust d_NN (same units as ``d``) from a table ``d`` (n, K) of distances from each present atom
    to its nearest other atoms (+inf where absent; rows of absent atoms all +inf).  NaN if no atom has a
    neighbour.  jit/vmap-able."""
    d = jnp.asarray(d)
    nn = d[:, 0]
    has = jnp.isfinite(nn)
    n_nn = jnp.sum(has, dtype=jnp.int32)
    m = jnp.sort(jnp.where(has, nn, jnp.inf))[jnp.maximum((n_nn - 1) // 4, 0)]  # lower quartile
    m = jnp.where(n_nn > 0, m, jnp.nan)
    s, _ = masked_median(jnp.abs(nn - m), has)
    s = jnp.minimum(s / MAD_TO_SIGMA, S_MAX * m)
    finite = jnp.isfinite(d)

    def step(_, carry):
        m, s = carry
        h = C_LOCATION * jnp.maximum(s, FLOOR * m)
        m_new, n = masked_median(d, finite & (jnp.abs(d - m) < h))
        m = jnp.where(n > 0, m_new, m)
        low = finite & (d < m) & (d > (1.0 - LOWER_WINDOW) * m)
        q, k = masked_median(m - d, low)
        s = jnp.minimum(jnp.where(k > 0, q / MAD_TO_SIGMA, 0.0), S_MAX * m)
        return m, s

    m, s = jax.lax.fori_loop(0, ITERATIONS, step, (m, s))
    return m - s * s / m


def neighbour_distances(positions: jnp.ndarray, mask: jnp.ndarray, k: int = NEIGHBOURS) -> jnp.ndarray:
    """(n_max, min(k, n_max - 1)) distances (Å) from each present atom to its nearest present atoms, ascending;
    +inf for missing neighbours and on rows of absent atoms.  O(n_max^2) memory."""
    pos = jnp.asarray(positions)
    present = jnp.asarray(mask) > 0.5
    n = pos.shape[0]
    k = max(1, min(int(k), n - 1))
    diff = pos[:, None, :] - pos[None, :, :]
    ok = present[:, None] & present[None, :] & ~jnp.eye(n, dtype=bool)
    d2 = jnp.where(ok, jnp.sum(diff * diff, axis=-1), jnp.inf)
    neg, _ = jax.lax.top_k(-d2, k)
    d2k = -neg
    # sqrt with a safe gradient: inf rows stay inf, their gradient is zero
    finite = jnp.isfinite(d2k)
    return jnp.where(finite, jnp.sqrt(jnp.where(finite, d2k, 1.0)), jnp.inf)


def nn_scale(positions: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Robust first-shell neighbour distance (units of ``positions``) of one cluster: positions (n_max, 3),
    mask (n_max,) 1 = present.  NaN if fewer than two atoms are present.  jit/vmap/grad-able (a.e.)."""
    return scale_from_neighbour_distances(neighbour_distances(positions, mask))


__all__ = ["NEIGHBOURS", "ITERATIONS", "C_LOCATION", "LOWER_WINDOW", "FLOOR", "S_MAX", "MAD_TO_SIGMA",
           "masked_median", "scale_from_neighbour_distances", "neighbour_distances", "nn_scale"]
