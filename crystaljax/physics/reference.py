"""Plain NumPy float64 implementation of the same physics, for tests and benchmarks.

Straightforward and slow on purpose: it evaluates exp(-i q.x) with NumPy's complex
exponential for every (pixel, atom) pair, so it shares no code path with the JAX kernel
beyond the detector geometry and the form-factor coefficients.
"""

from __future__ import annotations

import numpy as np

from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig
from crystaljax.physics.detector import beam_stop_mask, pixel_coordinates
from crystaljax.physics.scattering import ANGSTROM, Z_MAX_TABLE, form_factor_numpy


def pattern_numpy(positions, numbers, mask=None, detector: DetectorConfig | None = None,
                  beam: BeamConfig | None = None, z_shift: int = 2) -> np.ndarray:
    """I = Omega |F|^2 on the detector, float64 (n, n); positions (N, 3) in Å, beam along +z."""
    detector = detector or DetectorConfig()
    beam = beam or BeamConfig()
    positions = np.asarray(positions, np.float64)
    numbers = np.asarray(numbers, np.int64)
    weights = np.ones(len(numbers)) if mask is None else np.asarray(mask, np.float64)
    u, v = pixel_coordinates(detector)
    d = detector.distance
    r = np.sqrt(u**2 + v**2 + d**2)
    k = 2.0 * np.pi / (beam.wavelength / ANGSTROM)
    q = k * np.stack([u / r, v / r, d / r - 1.0], axis=-1)  # (n, n, 3) 1/Å
    s = np.linalg.norm(q, axis=-1) / (4.0 * np.pi)
    amplitude = np.zeros(u.shape, np.complex128)
    for z in np.unique(numbers[numbers > 0]):
        sel = numbers == z
        f = form_factor_numpy(min(int(z) + z_shift, Z_MAX_TABLE), s)
        amplitude += f * (np.exp(-1j * (q @ positions[sel].T)) @ weights[sel])
    omega = detector.pixel_size**2 * d / r**3
    return omega * np.abs(amplitude) ** 2


def rotation_numpy(axis: int, angle: float) -> np.ndarray:
    """Right-handed rotation matrix about Cartesian axis 0/1/2 by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i] = m[j, j] = c
    m[i, j], m[j, i] = -s, s
    return m


def fingerprint_numpy(positions, numbers, mask=None, detector: DetectorConfig | None = None,
                      beam: BeamConfig | None = None, fp: FingerprintConfig | None = None) -> np.ndarray:
    """The (n, n, 3) fingerprint of an already centred and scaled cluster, float64."""
    detector = detector or DetectorConfig()
    fp = fp or FingerprintConfig()
    a = np.deg2rad(fp.angle)
    channels = []
    for axis in range(3):
        channels.append(sum(pattern_numpy(np.asarray(positions) @ rotation_numpy(axis, sign * a).T, numbers, mask,
                                          detector, beam, fp.z_shift) for sign in (1.0, -1.0)))
    rgb = np.stack(channels, axis=-1) * beam_stop_mask(detector)[:, :, None]
    return rgb / rgb.max()
