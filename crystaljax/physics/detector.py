"""Detector geometry: exact flat-detector scattering vectors and pixel solid angles.

The beam travels along +z and hits a flat square detector normal to it at distance D.  Pixel
(i, j) (row i follows y, column j follows x) has its centre at
``u = (j - (n-1)/2) p``, ``v = (i - (n-1)/2) p`` (metres).  The outgoing direction is
``s_hat = (u, v, D) / R`` with ``R = sqrt(u^2 + v^2 + D^2)`` and the scattering vector is
``q = k (s_hat - z_hat)``, ``k = 2 pi / lambda``: the exact Ewald-sphere geometry, no
small-angle approximation.  The pixel solid angle is ``Omega = p^2 D / R^3`` (steradian).
"""

from __future__ import annotations

import numpy as np

import jax.numpy as jnp

from crystaljax.config import DetectorConfig
from crystaljax.physics.scattering import ANGSTROM


def pixel_coordinates(detector: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (u, v) in metres, each (n, n); u varies along columns, v along rows."""
    n, p = detector.n_pixels, detector.pixel_size
    centred = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * p
    v, u = np.meshgrid(centred, centred, indexing="ij")
    return u, v


def scattering_vectors(detector: DetectorConfig, wavelength):
    """q per pixel, (n, n, 3) in 1/Å, for ``wavelength`` in metres (may be a traced JAX scalar)."""
    u, v = pixel_coordinates(detector)
    d = detector.distance
    r = np.sqrt(u**2 + v**2 + d**2)
    direction_minus_beam = np.stack([u / r, v / r, d / r - 1.0], axis=-1)  # s_hat - z_hat, unitless
    k = 2.0 * jnp.pi / (jnp.asarray(wavelength, dtype=jnp.result_type(float)) / ANGSTROM)  # 1/Å
    return k * jnp.asarray(direction_minus_beam, dtype=k.dtype)


def solid_angles(detector: DetectorConfig) -> np.ndarray:
    """Pixel solid angle Omega = p^2 D / R^3 (steradian), (n, n)."""
    u, v = pixel_coordinates(detector)
    d, p = detector.distance, detector.pixel_size
    return p**2 * d / (u**2 + v**2 + d**2) ** 1.5


def radial_pixel_distance(detector: DetectorConfig) -> np.ndarray:
    """Distance of each pixel centre from the image centre, in pixels, (n, n)."""
    u, v = pixel_coordinates(detector)
    return np.hypot(u, v) / detector.pixel_size


def beam_stop_mask(detector: DetectorConfig) -> np.ndarray:
    """(n, n) float: 0 where r <= inner_mask_radius or r >= outer_mask_radius (pixels), else 1."""
    r = radial_pixel_distance(detector)
    keep = r > detector.inner_mask_radius
    if detector.outer_mask_radius is not None:
        keep &= r < detector.outer_mask_radius
    return keep.astype(np.float64)


def validate_detector(detector: DetectorConfig) -> DetectorConfig:
    """Raise ValueError for a non-physical detector; return it unchanged otherwise."""
    if detector.n_pixels < 2:
        raise ValueError(f"detector.n_pixels must be >= 2, got {detector.n_pixels}")
    if not detector.pixel_size > 0 or not detector.distance > 0:
        raise ValueError("detector.pixel_size and detector.distance must be positive (metres)")
    return detector
