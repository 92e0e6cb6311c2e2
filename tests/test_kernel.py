"""The direct-sum kernel: its hand-written derivative (custom JVP) against autodiff of the plain sum
and finite differences in float64."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from conftest import lattice_cluster
from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig
from crystaljax.physics.fingerprint import (channel_rotations, combine_channels, detector_arrays, make_fingerprint_fn,
                                            patterns, structure_factor, _accumulate_amplitude)
from crystaljax.physics.detector import beam_stop_mask
from crystaljax.structure import from_arrays, stack

DET = DetectorConfig(n_pixels=16, inner_mask_radius=2.0)
BCC = ([[0, 0, 0], [.5, .5, .5]], np.eye(3) * 2 / np.sqrt(3))


def _structure(seed=0, n_max=24, vacancies=(3, 7)):
    """~16 bcc atoms, two of them masked (vacancies), padded to n_max; a mixture of Fe and Ni."""
    pos = lattice_cluster(*BCC, (2, 2, 2), jitter=0.05, seed=seed)
    numbers = np.where(np.arange(len(pos)) % 3 == 0, 28, 26)
    st = from_arrays(pos, numbers, n_max=n_max)
    mask = np.asarray(st.mask, np.float32).copy()
    mask[list(vacancies)] = 0.0
    return st._replace(mask=jnp.asarray(mask))


def _fingerprint(custom: bool, detector=DET, wavelength=5e-12):
    """Structure -> (n, n, 3) through patterns(custom_derivative=custom), float dtype of the input."""
    rotations = channel_rotations(45.0)
    stop = beam_stop_mask(detector)

    def fn(st, wl=wavelength):
        arrays = detector_arrays(detector, jnp.asarray(wl, st.positions.dtype), 2)
        intensities = patterns(st.positions, st.numbers, st.mask, rotations.astype(st.positions.dtype), arrays,
                               n_pixels=detector.n_pixels, unroll=4, custom_derivative=custom)
        return combine_channels(intensities, jnp.asarray(stop, intensities.dtype))

    return fn


def _loss(fn, weights):
    return lambda st: jnp.sum(weights * fn(st))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_forward_is_the_plain_sum():
    st = _structure()
    np.testing.assert_array_equal(np.asarray(_fingerprint(True)(st)), np.asarray(_fingerprint(False)(st)))


def test_gradient_equals_autodiff_of_the_plain_sum():
    """Positions and mask (occupancy) cotangents, float32: custom JVP (transposed) == jax.grad of the plain scan."""
    st = _structure()
    weights = jnp.asarray(np.random.default_rng(1).random((16, 16, 3)), jnp.float32)

    def grads(custom):
        fn = _fingerprint(custom)
        return jax.jit(jax.grad(lambda p, m: _loss(fn, weights)(st._replace(positions=p, mask=m)),
                                argnums=(0, 1)))(st.positions, st.mask)

    (gp, gm), (rp, rm) = grads(True), grads(False)
    assert np.abs(np.asarray(rp)).max() > 0 and np.abs(np.asarray(rm)).max() > 0
    assert _rel(gp, rp) < 1e-5
    assert _rel(gm, rm) < 1e-5


def test_gradient_matches_float64_finite_differences():
    st = _structure()
    with jax.enable_x64(True):
        st64 = st._replace(positions=jnp.asarray(st.positions, jnp.float64), mask=jnp.asarray(st.mask, jnp.float64))
        weights = jnp.asarray(np.random.default_rng(2).random((16, 16, 3)))
        loss = _loss(_fingerprint(True), weights)
        f = lambda p, m: loss(st64._replace(positions=p, mask=m))  # noqa: E731
        gp, gm = jax.grad(f, argnums=(0, 1))(st64.positions, st64.mask)
        assert gp.dtype == jnp.float64
        eps = 1e-6
        for atom, axis in [(0, 0), (5, 1), (9, 2), (14, 0)]:
            d = jnp.zeros_like(st64.positions).at[atom, axis].set(eps)
            fd = (f(st64.positions + d, st64.mask) - f(st64.positions - d, st64.mask)) / (2 * eps)
            assert float(gp[atom, axis]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)
        for atom in (0, 3, 10):  # a present atom, a vacancy (mask 0: putting it back), another present one
            d = jnp.zeros_like(st64.mask).at[atom].set(eps)
            fd = (f(st64.positions, st64.mask + d) - f(st64.positions, st64.mask - d)) / (2 * eps)
            assert float(gm[atom]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)


def test_masked_and_padding_atoms_have_zero_position_gradient():
    st = _structure()
    weights = jnp.asarray(np.random.default_rng(3).random((16, 16, 3)), jnp.float32)
    g = np.asarray(jax.grad(lambda p: _loss(_fingerprint(True), weights)(st._replace(positions=p)))(st.positions))
    present = np.asarray(st.mask) > 0
    assert np.all(g[~present] == 0.0)
    assert np.all(np.linalg.norm(g[present], axis=1) > 0)


def test_forward_mode_and_wavelength_derivative_equal_autodiff():
    """jax.jvp (used by the sensitivity analysis) and d/d wavelength (tangents of q and the form factors)."""
    st = _structure()
    tangent = jnp.asarray(np.random.default_rng(4).normal(size=st.positions.shape), jnp.float32)
    out = {}
    for custom in (True, False):
        fn = _fingerprint(custom)
        _, jv = jax.jvp(lambda p: fn(st._replace(positions=p)), (st.positions,), (tangent,))
        _, jw = jax.jvp(lambda wl: fn(st, wl * 1e-12), (jnp.float32(5.0),), (jnp.float32(1.0),))
        gw = jax.grad(lambda wl: jnp.sum(fn(st, wl * 1e-12) ** 2))(jnp.float32(5.0))
        out[custom] = (jv, jw, gw)
    for a, b in zip(out[True], out[False]):
        assert np.abs(np.asarray(b)).max() > 0
        assert _rel(a, b) < 1e-5


def test_vmap_and_jit_of_the_gradient_equal_a_loop():
    batch = stack([_structure(seed=s) for s in range(3)])
    weights = jnp.asarray(np.random.default_rng(5).random((16, 16, 3)), jnp.float32)
    loss = _loss(_fingerprint(True), weights)
    g = jax.grad(lambda p, st: loss(st._replace(positions=p)))
    batched = np.asarray(jax.jit(jax.vmap(g))(batch.positions, batch))
    for i in range(3):
        st = jax.tree.map(lambda a: a[i], batch)
        np.testing.assert_allclose(batched[i], np.asarray(g(st.positions, st)), rtol=1e-5, atol=1e-6)


def test_structure_factor_is_the_direct_sum():
    """F against exp(-i q.x) summed in NumPy complex128 (independent of the sin/cos polynomial)."""
    rng = np.random.default_rng(6)
    q = rng.normal(0, 3, (40, 3)).astype(np.float32)
    x = rng.normal(0, 2, (7, 2, 3)).astype(np.float32)
    numbers = np.array([1, 2, 1, 0, 2, 1, 1])
    weights = np.array([1, 1, .5, 1, 1, 0, 1], np.float32)
    table = np.abs(rng.normal(1, .3, (3, 40))).astype(np.float32)
    table[0] = 0
    re, im = structure_factor(jnp.asarray(q), jnp.asarray(x), jnp.asarray(numbers), jnp.asarray(weights),
                              jnp.asarray(table), 2)
    ref = np.einsum("n,np,nrp->rp", weights, table[numbers], np.exp(-1j * np.einsum("nra,pa->nrp", x, q)))
    np.testing.assert_allclose(np.asarray(re) + 1j * np.asarray(im), ref, atol=2e-5 * np.abs(ref).max())
    re2, im2 = _accumulate_amplitude(jnp.asarray(q), jnp.asarray(x), jnp.asarray(numbers), jnp.asarray(weights),
                                     jnp.asarray(table), 2)
    np.testing.assert_array_equal(np.asarray(re), np.asarray(re2))


def test_configure_xla_cpu_respects_the_user_and_the_cpu(tmp_path):
    from crystaljax.physics.fingerprint import VECTOR_WIDTH_FLAG, configure_xla_cpu

    with_avx512 = tmp_path / "a"
    with_avx512.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512bw\n")
    without = tmp_path / "b"
    without.write_text("processor : 0\nflags : fpu sse avx2 fma\n")
    env = {}
    assert configure_xla_cpu(env, str(with_avx512)) == VECTOR_WIDTH_FLAG and env["XLA_FLAGS"] == VECTOR_WIDTH_FLAG
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    assert configure_xla_cpu(env, str(with_avx512)) is None
    assert env == {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env = {}
    assert configure_xla_cpu(env, str(without)) is None and env == {}
    assert configure_xla_cpu(env, str(without), required_cpu_flag="avx2") == VECTOR_WIDTH_FLAG
    assert configure_xla_cpu({}, str(tmp_path / "missing")) is None


_FLAG_SCRIPT = """
import sys, numpy as np, jax
sys.path.insert(0, {tests!r})
from conftest import lattice_cluster
from crystaljax.config import DetectorConfig
from crystaljax.physics.fingerprint import make_fingerprint_fn
from crystaljax.structure import from_arrays
pos = lattice_cluster([[0, 0, 0], [.5, .5, .5]], np.eye(3) * 1.1547, (3, 3, 3), jitter=0.05)
st = from_arrays(pos, np.full(len(pos), 26))
np.save({out!r}, np.asarray(jax.jit(make_fingerprint_fn(DetectorConfig(n_pixels=32)))(st)))
"""


def test_vector_width_flag_does_not_change_results(tmp_path):
    """The same fingerprint with and without --xla_cpu_prefer_vector_width=512 (fresh processes)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from crystaljax.physics.fingerprint import VECTOR_WIDTH_FLAG

    tests = str(Path(__file__).resolve().parent)
    paths = [str(tmp_path / f"fp{i}.npy") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _FLAG_SCRIPT.format(tests=tests, out=out)],
                              env=dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu"))
             for flags, out in zip(("", VECTOR_WIDTH_FLAG), paths)]  # both processes at once
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    outs = [np.load(out) for out in paths]
    assert outs[0].max() == pytest.approx(1.0)
    np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=1e-6)


def test_package_import_sets_the_vector_width_only_where_it_applies():
    """``import crystaljax`` in a fresh process without XLA_FLAGS sets the 512-bit flag exactly when the CPU lists
    AVX-512F, and leaves a user's XLA_FLAGS alone."""
    import json
    import os
    import subprocess
    import sys

    from crystaljax.physics.cpu_flags import VECTOR_WIDTH_FLAG, cpu_has_avx512

    script = "import json, os, crystaljax; print(json.dumps([crystaljax.XLA_CPU_FLAG, os.environ.get('XLA_FLAGS')]))"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    unset = json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                      timeout=120, check=True).stdout)
    want = VECTOR_WIDTH_FLAG if cpu_has_avx512() else None
    assert unset == [want, want]
    mine = json.loads(subprocess.run([sys.executable, "-c", script], env=dict(env, XLA_FLAGS="--xla_cpu_ftz=true"),
                                     capture_output=True, text=True, timeout=120, check=True).stdout)
    assert mine == [None, "--xla_cpu_ftz=true"]
