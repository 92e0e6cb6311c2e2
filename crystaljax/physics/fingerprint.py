"""The two-dimensional diffraction fingerprint, as pure JAX functions.

For a cluster of atoms at positions x_j (Å) with atomic numbers Z_j and weights w_j (the mask),
the scattered amplitude at scattering vector q (1/Å) is

    F(q) = sum_j w_j f_{Z_j + shift}(s) exp(-i q . x_j),     s = |q| / (4 pi)

and the recorded intensity is I = Omega |F|^2 with Omega the pixel solid angle (detector.py).
The fingerprint rotates the cluster by +angle and -angle about x, y and z, sums the two
patterns of each axis into the R, G and B channels, zeroes the beam-stop region and divides
by the brightest pixel of the three channels.

The direct sum costs one sine and one cosine per (pixel, atom) pair.  XLA's CPU sin/cos are
scalar library calls, so :func:`sincos` evaluates both with a branch-free polynomial that XLA
vectorises and fuses with the phase computation; it is accurate to ~1e-6 absolute for the
phases met here (|q . x| < 1e4 rad).  The sum over atoms is a scan whose carry is the
(orientation, pixel) amplitude, so memory does not grow with the number of atoms.

Derivatives: :func:`structure_factor` carries a hand-written JVP (one more scan over atoms that
reuses sin/cos and never differentiates the polynomial); reverse mode is its transpose, so a
gradient with respect to positions or the mask costs about two forward passes (plain autodiff of
the scan: ~15).  Forward mode (``jax.jvp``) and traced wavelengths keep working.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig
from crystaljax.physics.cpu_flags import VECTOR_WIDTH_FLAG, configure_xla_cpu, cpu_has_avx512  # noqa: F401
from crystaljax.physics.detector import beam_stop_mask, scattering_vectors, solid_angles, validate_detector
from crystaljax.physics.scattering import Z_MAX_TABLE, form_factor
from crystaljax.structure import Structure

_TWO_PI_HI = 6.28125  # 2 pi split in two parts so that n * 2 pi is exact for n < 2^12 in float32
_TWO_PI_LO = 2.0 * np.pi - 6.28125


def _fit_odd_even(degree_sin: int = 13, degree_cos: int = 14):
    """Least-squares polynomial coefficients of sin (odd) and cos (even) on [-pi, pi], float64."""
    r = np.linspace(-np.pi, np.pi, 20001)
    odd = np.stack([r ** (2 * i + 1) for i in range(degree_sin // 2 + 1)], axis=1)
    even = np.stack([r ** (2 * i) for i in range(degree_cos // 2 + 1)], axis=1)
    return (tuple(float(c) for c in np.linalg.lstsq(odd, np.sin(r), rcond=None)[0]),
            tuple(float(c) for c in np.linalg.lstsq(even, np.cos(r), rcond=None)[0]))


_SIN_COEFFS, _COS_COEFFS = _fit_odd_even()  # fit error < 1e-8 on [-pi, pi]
# Kernel polynomials (sin, cos degrees) -> coefficients.  Max fit error on [-pi, pi]: (13, 14) 4e-9,
# (11, 12) 3e-7, (9, 10) 2e-5.  The kernel default (11, 12) stays below the float32 rounding of the
# reduced argument (~1e-6), so the fingerprint is as exact as with (13, 14) and ~10 % faster
# (benchmarks/bench_fingerprint.py).
SINCOS_COEFFS = {degrees: _fit_odd_even(*degrees) for degrees in ((13, 14), (11, 12), (9, 10))}
KERNEL_SINCOS_DEGREES = (11, 12)


def sincos(x, degrees: tuple[int, int] = (13, 14)):
    """(sin x, cos x): reduction to r in [-pi, pi], then odd/even polynomials in r (default degree 13 and 14;
    ``degrees`` picks another pair of :data:`SINCOS_COEFFS`).

    Branch-free and vectorisable; |error| <~ 1e-6 in float32 for |x| < 1e4 (the float32
    rounding of the reduced argument dominates).  Differentiable: the derivative of the
    polynomial is accurate to the same order.  Float64 inputs use the exact library functions:
    that is the reference path (finite differences of the polynomial would see its ~1e-8 jumps
    at the reduction boundaries).
    """
    if jnp.result_type(x) == jnp.float64:
        return jnp.sin(x), jnp.cos(x)
    n = jnp.round(x * (1.0 / (2.0 * np.pi)))
    r = (x - n * _TWO_PI_HI) - n * _TWO_PI_LO
    r2 = r * r
    sin_coeffs, cos_coeffs = SINCOS_COEFFS[tuple(degrees)]
    s = sin_coeffs[-1]
    for coeff in sin_coeffs[-2::-1]:
        s = s * r2 + coeff
    c = cos_coeffs[-1]
    for coeff in cos_coeffs[-2::-1]:
        c = c * r2 + coeff
    return s * r, c


def rotation_matrix(axis: int, angle):
    """Right-handed rotation by ``angle`` (radians) about Cartesian axis 0 (x), 1 (y) or 2 (z); (3, 3)."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = jnp.eye(3, dtype=jnp.result_type(angle, jnp.float32))
    m = m.at[i, i].set(c).at[j, j].set(c)
    return m.at[i, j].set(-s).at[j, i].set(s)


def channel_rotations(angle_deg: float) -> jnp.ndarray:
    """(6, 3, 3) float32: rotations +angle, -angle about x, then y, then z (R, G, B channel pairs); the
    matrices of :func:`rotation_matrix`, built in NumPy (a constant: no device dispatch at start-up)."""
    out = np.zeros((6, 3, 3))
    for k, (axis, sign) in enumerate((ax, sg) for ax in range(3) for sg in (1.0, -1.0)):
        a = sign * np.deg2rad(angle_deg)
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        out[k, axis, axis] = 1.0
        out[k, i, i] = out[k, j, j] = np.cos(a)
        out[k, i, j], out[k, j, i] = -np.sin(a), np.sin(a)
    return jnp.asarray(out, jnp.float32)


def _phase(x, q):
    """q . x for every (orientation, pixel): x (R, 3) Å, q (P, 3) 1/Å -> (R, P) rad (one fused loop)."""
    return x[:, None, 0] * q[None, :, 0] + x[:, None, 1] * q[None, :, 1] + x[:, None, 2] * q[None, :, 2]


def _accumulate_amplitude(q, rotated, numbers, weights, form_table, unroll: int, remat: bool = True,
                          degrees: tuple[int, int] = KERNEL_SINCOS_DEGREES):
    """Direct sum F(q) over atoms for all orientations at once, as a scan over atoms (plain autodiff).

    q: (P, 3) 1/Å; rotated: (N, R, 3) Å, atom-major; numbers: (N,) int; weights: (N,) mask;
    form_table: (Z, P) form factor of every element on the detector pixels.
    Returns (re, im), each (R, P).  The scan keeps the working set at (R, P) whatever N is, and
    each step is one fused, vectorised loop over (orientation, pixel).  With ``remat`` the body is
    rematerialised in the backward pass, so JAX's own gradients need memory O(N R) instead of
    O(N R P).  This is the reference for :func:`structure_factor` (same forward, hand-written JVP).
    ``degrees``: the sin/cos polynomial degrees (:data:`SINCOS_COEFFS`).
    """

    def add_atom(carry, atom):
        x, z, w = atom  # (R, 3) Å, (), ()
        amplitude = w * form_table[z]  # (P,)
        s, c = sincos(_phase(x, q), degrees)
        return (carry[0] + amplitude * c, carry[1] - amplitude * s), None

    zeros = jnp.zeros((rotated.shape[1], q.shape[0]), q.dtype)
    body = jax.checkpoint(add_atom) if remat else add_atom
    (re, im), _ = jax.lax.scan(body, (zeros, zeros), (rotated, numbers, weights), unroll=unroll)
    return re, im


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def structure_factor(q, rotated, numbers, weights, form_table, unroll: int = 16,
                     degrees: tuple[int, int] = KERNEL_SINCOS_DEGREES):
    """F(q) = sum_j w_j f_j(q) exp(-i q . x_j) for all orientations: (re, im), each (R, P).

    q (P, 3) 1/Å; rotated (N, R, 3) Å; numbers (N,) int row of ``form_table`` (Z, P); weights (N,).
    Same forward as the plain scan; its derivative is written by hand (custom JVP):

        dF = sum_j [dw_j f_j + w_j df_j - i w_j f_j (q . dx_j + dq . x_j)] exp(-i q . x_j)

    one more scan over atoms that reuses sin/cos and never differentiates the sin/cos polynomial.
    Forward mode (jax.jvp) runs that scan fused with the primal one; reverse mode (jax.grad/vjp)
    is JAX's transpose of it: a backward scan over atoms of about the forward's cost, whose body
    recomputes sin/cos (rematerialised), so memory stays O(N R + R P).  Tangents of q and the form
    table (a traced wavelength) are included; absent tangents cost nothing (symbolic zeros).
    """
    return _accumulate_amplitude(q, rotated, numbers, weights, form_table, unroll, remat=False, degrees=degrees)


def _structure_factor_jvp(unroll, degrees, primals, tangents):
    q, rotated, numbers, weights, form_table = primals
    dq, dx, _, dw, dform = tangents
    has_dq, has_dx, has_dw, has_df = (not isinstance(t, SymbolicZero) for t in (dq, dx, dw, dform))
    # scanned tangents: a placeholder of the right leading length when absent
    dx = dx if has_dx else jnp.zeros(rotated.shape[:1], q.dtype)
    dw = dw if has_dw else jnp.zeros(weights.shape, q.dtype)

    @jax.checkpoint
    def add_atom(carry, atom):
        re, im, dre, dim = carry
        x, z, w, tx, tw = atom
        f = form_table[z]  # (P,)
        amplitude = w * f
        s, c = sincos(_phase(x, q), degrees)
        re, im = re + amplitude * c, im - amplitude * s
        t = None  # d(q . x) (R, P)
        if has_dx:  # a matrix product, so that its transpose is one too (one reduction per atom)
            t = jnp.dot(tx, q.T, precision=jax.lax.Precision.HIGHEST)
        if has_dq:
            t = _phase(x, dq) if t is None else t + _phase(x, dq)
        da = None  # d(w f) (P,)
        if has_dw:
            da = tw * f
        if has_df:
            da = w * dform[z] if da is None else da + w * dform[z]
        if t is not None:
            at = amplitude * t
            dre, dim = dre - at * s, dim - at * c
        if da is not None:
            dre, dim = dre + da * c, dim - da * s
        return (re, im, dre, dim), None

    zeros = jnp.zeros((rotated.shape[1], q.shape[0]), q.dtype)
    (re, im, dre, dim), _ = jax.lax.scan(add_atom, (zeros,) * 4, (rotated, numbers, weights, dx, dw), unroll=unroll)
    return (re, im), (dre, dim)


structure_factor.defjvp(_structure_factor_jvp, symbolic_zeros=True)


def detector_arrays(detector: DetectorConfig, wavelength, z_shift: int = 2):
    """Per-pixel constants of the flattened detector.

    Returns q (P, 3) 1/Å, Omega (P,) sr and the form-factor table (Z_MAX+1, P): row Z holds
    f_{Z + z_shift}(s_p) with s = |q| / 4 pi (row 0 is zero, for padding).  ``wavelength`` in
    metres may be traced (gradients with respect to it flow through q and the form factors).
    """
    q = scattering_vectors(detector, wavelength).reshape(-1, 3)
    s = jnp.sqrt(jnp.sum(q * q, axis=-1)) / (4.0 * jnp.pi)
    omega = jnp.asarray(solid_angles(detector).reshape(-1), q.dtype)
    z_all = jnp.arange(Z_MAX_TABLE + 1)
    z_eff = jnp.where(z_all > 0, jnp.clip(z_all + z_shift, 0, Z_MAX_TABLE), 0)
    form_table = form_factor(z_eff[:, None], s[None, :]).astype(q.dtype)
    return q, omega, form_table


def patterns(positions, numbers, mask, rotations, arrays, *, n_pixels: int, unroll: int = 16,
             custom_derivative: bool = True, sincos_degrees: tuple[int, int] = KERNEL_SINCOS_DEGREES):
    """Raw intensities I = Omega |F|^2 for each rotation, (R, n, n); no beam stop, no normalisation.

    positions (N, 3) Å; numbers (N,) true atomic numbers (0 = padding); mask (N,) weights;
    rotations (R, 3, 3) applied as x -> R x; arrays = :func:`detector_arrays` (q, Omega, form table).
    custom_derivative: use :func:`structure_factor` (hand-written JVP, fast gradients); False
    differentiates the plain scan (the reference; same forward values).  sincos_degrees: the
    sin/cos polynomial (:data:`SINCOS_COEFFS`; float64 inputs use the exact functions).
    """
    dtype = jnp.result_type(positions, arrays[0])
    q, omega, form_table = (jnp.asarray(a, dtype) for a in arrays)
    numbers = jnp.clip(jnp.asarray(numbers, jnp.int32), 0, Z_MAX_TABLE)
    rotated = jnp.einsum("rab,nb->nra", rotations.astype(q.dtype), jnp.asarray(positions, q.dtype))
    weights, degrees = jnp.asarray(mask, q.dtype), tuple(sincos_degrees)
    if custom_derivative:
        re, im = structure_factor(q, rotated, numbers, weights, form_table, unroll, degrees)
    else:
        re, im = _accumulate_amplitude(q, rotated, numbers, weights, form_table, unroll, degrees=degrees)
    intensity = omega[None, :] * (re * re + im * im)
    return intensity.reshape(-1, n_pixels, n_pixels)


def diffraction_pattern(positions, numbers, mask=None, *, detector: DetectorConfig | None = None,
                        beam: BeamConfig | None = None, z_shift: int = 2):
    """One raw diffraction pattern I = Omega |F|^2 for the beam along +z, (n, n).

    positions: (N, 3) Å as given (no rotation, centring or scaling); numbers: (N,) true atomic
    numbers (the form factor of Z + ``z_shift`` is used); mask: optional (N,) weights.  Rows follow
    y, columns follow x.  No beam stop and no normalisation.  Pure and differentiable; float64
    inputs give a float64 pattern when ``jax_enable_x64`` is on.
    """
    detector = validate_detector(detector or DetectorConfig())
    beam = beam or BeamConfig()
    positions = jnp.asarray(positions)
    if not jnp.issubdtype(positions.dtype, jnp.floating):
        positions = positions.astype(jnp.float32)
    numbers = jnp.asarray(numbers, jnp.int32)
    mask = jnp.ones(numbers.shape, positions.dtype) if mask is None else jnp.asarray(mask, positions.dtype)
    wavelength = jnp.asarray(beam.wavelength, positions.dtype)
    arrays = detector_arrays(detector, wavelength, z_shift)
    eye = jnp.eye(3, dtype=positions.dtype)[None]
    return patterns(positions, numbers, mask, eye, arrays, n_pixels=detector.n_pixels)[0]


def combine_channels(intensities, beam_stop):
    """(6, n, n) patterns -> (n, n, 3) fingerprint: pair sums, beam stop, divide by the brightest pixel."""
    rgb = jnp.stack([intensities[0] + intensities[1], intensities[2] + intensities[3],
                     intensities[4] + intensities[5]], axis=-1)
    rgb = rgb * beam_stop[:, :, None]
    peak = jnp.max(rgb)
    return rgb / jnp.where(peak > 0, peak, 1.0)


def make_fingerprint_fn(detector: DetectorConfig | None = None, beam: BeamConfig | None = None,
                        fp: FingerprintConfig | None = None, *, wavelength_arg: bool = False) -> Callable:
    """Build ``fn(structure) -> (n, n, 3) float32`` for one (unbatched) :class:`Structure`.

    Pure, jit/vmap/grad-able; ``jax.vmap(fn)`` (or :func:`batch_fingerprints`) images a batch.
    The detector constants (q, Omega, form-factor table) are computed once here.  With
    ``wavelength_arg=True`` the function is ``fn(structure, wavelength_m)`` and recomputes them
    from the traced wavelength, so gradients with respect to the wavelength can be taken.
    """
    detector = validate_detector(detector or DetectorConfig())
    beam = beam or BeamConfig()
    fp = fp or FingerprintConfig()
    rotations = channel_rotations(fp.angle)
    beam_stop = jnp.asarray(beam_stop_mask(detector), jnp.float32)
    fixed_arrays = jax.tree.map(jnp.asarray, jax.jit(detector_arrays, static_argnums=(0, 2))(detector, beam.wavelength, fp.z_shift))

    def image(structure: Structure, arrays):
        intensities = patterns(structure.positions, structure.numbers, structure.mask, rotations, arrays,
                               n_pixels=detector.n_pixels, unroll=fp.unroll)
        return combine_channels(intensities, beam_stop.astype(intensities.dtype))

    if wavelength_arg:
        return lambda structure, wavelength: image(structure, detector_arrays(detector, wavelength, fp.z_shift))
    return lambda structure: image(structure, fixed_arrays)


def batch_fingerprints(fingerprint_fn: Callable, structures: Structure, chunk: int | None = None):
    """Apply ``fingerprint_fn`` to a batched Structure, (B, n, n, 3).

    ``chunk`` structures are imaged together (vmap) and chunks run in sequence (``lax.map``):
    on a CPU a small chunk keeps the working set in cache; on an accelerator the whole batch is
    one vmap.  ``None`` picks by backend.
    """
    if chunk is None:
        chunk = 1 if jax.default_backend() == "cpu" else structures.positions.shape[0]
    return jax.lax.map(fingerprint_fn, structures, batch_size=chunk)
