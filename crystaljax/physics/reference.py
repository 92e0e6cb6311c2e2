"""Plain NumPy float64 implementation of the same physics, for tests and benchmarks.

Straightforward and slow on purpose: it evaluates exp(-i q.x) with NumPy's complex
exponential for every (pixel, atom) pair, so it shares no code path with the JAX kernel
beyond the detector geometry.  Form factors come from xraydb's public ``f0(symbol, s)`` of the
neutral element, not from :mod:`crystaljax.physics.scattering`'s table, so a wrong row in that table
shows up as a difference.
"""

from __future__ import annotations

import numpy as np

from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig
from crystaljax.physics.detector import beam_stop_mask, pixel_coordinates

#: Metres per Ångström (kept here rather than imported, so the reference shares no module with the kernel).
ANGSTROM = 1.0e-10
#: Largest atomic number xraydb tabulates (Cf); Z + z_shift is clipped to it, as in the kernel.
Z_MAX = 98


def form_factor_xraydb(z: int, s) -> np.ndarray:
    """f0 (electrons) of the neutral element of atomic number ``z`` at ``s = sin(theta)/lambda`` (1/Å), float64,
    from xraydb's public API (``xraydb.f0(symbol, s)``)."""
    import xraydb

    s = np.asarray(s, dtype=np.float64)
    return np.asarray(xraydb.f0(xraydb.atomic_symbol(int(z)), s.ravel()), dtype=np.float64).reshape(s.shape)


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
        f = form_factor_xraydb(min(int(z) + z_shift, Z_MAX), s)
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
