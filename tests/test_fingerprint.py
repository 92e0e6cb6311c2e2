"""Physics and invariances of the diffraction pattern and fingerprint."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from conftest import lattice_cluster
from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, detector_preset
from crystaljax.physics.detector import pixel_coordinates, radial_pixel_distance
from crystaljax.physics.fingerprint import (batch_fingerprints, diffraction_pattern, make_fingerprint_fn, rotation_matrix,
                                    sincos)
from crystaljax.physics.reference import fingerprint_numpy, pattern_numpy
from crystaljax.structure import from_arrays, stack

FCC = ([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]], np.eye(3) * np.sqrt(2))
BCC = ([[0, 0, 0], [.5, .5, .5]], np.eye(3) * 2 / np.sqrt(3))
SC = ([[0, 0, 0]], np.eye(3))
DIAM = ([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.25, .25, .25], [.25, .75, .75], [.75, .25, .75],
         [.75, .75, .25]], np.eye(3) * 4 / np.sqrt(3))
HCP = ([[1 / 3, 2 / 3, .25], [2 / 3, 1 / 3, .75]],
       np.array([[1, 0, 0], [-.5, np.sqrt(3) / 2, 0], [0, 0, np.sqrt(8 / 3)]]))


_FP = jax.jit(make_fingerprint_fn())  # one compilation per cluster size, shared by the module


def fp_of(pos, z=29, n_max=None):
    return np.asarray(_FP(from_arrays(pos, np.full(len(pos), z), n_max=n_max)))


def test_sincos_accuracy():
    x = np.linspace(-3000, 3000, 400_001).astype(np.float32)
    s, c = sincos(jnp.asarray(x))
    x64 = x.astype(np.float64)
    assert np.abs(np.asarray(s) - np.sin(x64)).max() < 2e-6
    assert np.abs(np.asarray(c) - np.cos(x64)).max() < 2e-6


def test_pattern_matches_float64_reference(sc_cluster):
    rng = np.random.default_rng(1)
    pos, _ = sc_cluster
    pos = pos + rng.normal(0, 0.05, pos.shape)
    z = rng.choice([1, 26, 79], len(pos))  # H works through the Z+2 shift; three species
    ref = pattern_numpy(pos, z)
    out = np.asarray(diffraction_pattern(pos, z))
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-4


def test_fingerprint_matches_float64_reference():
    pos = lattice_cluster(*BCC, (5, 5, 5), jitter=0.02)
    ref = fingerprint_numpy(pos, np.full(len(pos), 42))
    out = fp_of(pos, 42)
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-4
    assert out.max() == pytest.approx(1.0)


def test_invariant_to_permutation_translation_and_padding(sc_cluster):
    pos, z = sc_cluster
    base = fp_of(pos)
    perm = np.random.default_rng(0).permutation(len(pos))
    np.testing.assert_allclose(fp_of(pos[perm]), base, atol=2e-5)
    np.testing.assert_allclose(fp_of(pos + np.array([3.3, -1.7, 0.9])), base, atol=2e-4)
    np.testing.assert_allclose(fp_of(pos, n_max=512), base, atol=2e-5)


def test_masked_atoms_do_not_scatter(sc_cluster):
    pos, z = sc_cluster
    st = from_arrays(pos, z)
    st_masked = st._replace(mask=st.mask.copy())
    st_masked.mask[:40] = 0.0
    fn = make_fingerprint_fn()
    st_removed = from_arrays(pos[40:], z[40:], n_max=st.n_max)
    np.testing.assert_allclose(np.asarray(fn(st_masked)), np.asarray(fn(st_removed)), atol=2e-5)


def test_peaks_where_the_reciprocal_lattice_says():
    """Simple cubic, spacing a: peaks at q_perp = 2 pi (h, k) / a on the flat detector."""
    a = 1.0
    pos = lattice_cluster(*SC, (9, 9, 9)) * a
    det = DetectorConfig()
    img = np.asarray(diffraction_pattern(pos, np.full(len(pos), 29), detector=det))
    k = 2 * np.pi / (BeamConfig().wavelength * 1e10)
    u, v = pixel_coordinates(det)
    for h, l in [(1, 0), (0, 1), (-1, 0), (1, 1), (-1, 1)]:
        # outgoing direction with transverse momentum 2 pi (h, l) / a on the Ewald sphere
        qx, qy = 2 * np.pi * h / a, 2 * np.pi * l / a
        sx, sy = qx / k, qy / k
        sz = np.sqrt(1 - sx**2 - sy**2)
        x_m, y_m = det.distance * sx / sz, det.distance * sy / sz
        col = x_m / det.pixel_size + (det.n_pixels - 1) / 2
        row = y_m / det.pixel_size + (det.n_pixels - 1) / 2
        r0, c0 = int(round(row)), int(round(col))
        window = img[r0 - 2:r0 + 3, c0 - 2:c0 + 3]
        peak = np.unravel_index(np.argmax(window), window.shape)
        assert abs(r0 - 2 + peak[0] - row) <= 1.0 and abs(c0 - 2 + peak[1] - col) <= 1.0, (h, l)
        # a real Bragg peak: far above the mid-point between peaks
        mid = img[int(round((row + (det.n_pixels - 1) / 2) / 2)), int(round((col + (det.n_pixels - 1) / 2) / 2))]
        assert window.max() > 20 * mid


def test_rows_follow_y_columns_follow_x():
    """A lattice periodic only along x (atoms on a line) gives streaks that vary along columns."""
    pos = np.zeros((24, 3))
    pos[:, 0] = np.arange(24) - 11.5
    img = np.asarray(diffraction_pattern(pos, np.full(24, 29)))
    c = (64 - 1) / 2
    # first-order peak of spacing 1 Å is ~12.5 px from the centre along x (columns), constant along rows
    col_profile = img[31, :]
    row_profile = img[:, 31]
    assert abs(np.argmax(col_profile[40:]) + 40 - (c + 12.5)) <= 1.5
    assert row_profile[44] < 0.05 * col_profile[44]


def local_peaks(img, rel=0.2):
    """(row, col) of 3x3 local maxima above ``rel`` of the maximum."""
    padded = np.pad(img, 1, constant_values=-np.inf)
    neighbours = np.stack([padded[1 + dr:65 + dr, 1 + dc:65 + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                           if (dr, dc) != (0, 0)])
    return np.argwhere((img >= neighbours.max(0)) & (img > rel * img.max()))


def test_same_peaks_for_250_and_1000_atoms():
    small = fp_of(lattice_cluster(*FCC, (4, 4, 4)))  # 256 atoms
    large = fp_of(lattice_cluster(*FCC, (6, 6, 7)))  # 1008 atoms
    for ch in range(3):
        ps, pl = local_peaks(small[..., ch]), local_peaks(large[..., ch])
        assert len(ps) >= 4
        dist = np.abs(ps[:, None, :] - pl[None, :, :]).max(-1)
        assert dist.min(1).max() <= 1 and dist.min(0).max() <= 1, ch
    assert np.corrcoef(small.ravel(), large.ravel())[0, 1] > 0.8


def test_classes_differ_clearly():
    # every cluster padded to 512 rows (padding changes nothing, see above): one compiled shape
    fps = {name: fp_of(lattice_cluster(*proto, reps), n_max=512) for name, proto, reps in [
        ("fcc", FCC, (4, 4, 4)), ("bcc", BCC, (5, 5, 5)), ("sc", SC, (6, 6, 7)), ("diam", DIAM, (3, 3, 4)),
        ("hcp", HCP, (6, 6, 4))]}
    same = fp_of(lattice_cluster(*FCC, (5, 5, 5)), n_max=512)
    d_same = np.linalg.norm(same - fps["fcc"]) / np.linalg.norm(fps["fcc"])
    names = list(fps)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = np.linalg.norm(fps[a] - fps[b]) / np.linalg.norm(fps[a])
            assert d > 0.3 and d > 2 * d_same, (a, b, d, d_same)


def test_vmap_equals_loop_and_jit_equals_eager():
    rng = np.random.default_rng(3)
    structures = [from_arrays(lattice_cluster(*BCC, (4, 4, 4), jitter=0.03, seed=i), rng.choice([26, 28], 128),
                              n_max=128) for i in range(3)]
    batch = stack(structures)
    fn = make_fingerprint_fn()
    looped = np.stack([np.asarray(_FP(s)) for s in structures])  # jitted, one structure at a time
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(batch)), looped, atol=1e-5)  # eager
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(fn))(batch)), looped, atol=1e-5)
    np.testing.assert_allclose(np.asarray(batch_fingerprints(fn, batch, chunk=2)), looped, atol=1e-5)


def test_gradients_match_finite_differences():
    pos = lattice_cluster(*SC, (3, 3, 3), jitter=0.05)
    z = np.full(len(pos), 29)
    with jax.enable_x64(True):
        weights = jnp.asarray(np.random.default_rng(0).random((16, 16)))
        det = DetectorConfig(n_pixels=16, inner_mask_radius=0.0)

        def scalar(p, wavelength):
            img = diffraction_pattern(p, z, detector=det, beam=BeamConfig(wavelength))
            return jnp.sum(weights * img) / 1e-9

        value_and_grad = jax.jit(jax.value_and_grad(scalar))  # one compilation, also for the FD points
        p0 = jnp.asarray(pos)
        g = value_and_grad(p0, 5e-12)[1]
        assert g.dtype == jnp.float64 and np.all(np.isfinite(np.asarray(g)))
        eps = 1e-5
        for atom, axis in [(0, 0), (5, 1), (13, 2), (26, 0)]:
            d = jnp.zeros_like(p0).at[atom, axis].set(eps)
            fd = (value_and_grad(p0 + d, 5e-12)[0] - value_and_grad(p0 - d, 5e-12)[0]) / (2 * eps)
            assert float(g[atom, axis]) == pytest.approx(float(fd), rel=1e-5, abs=1e-6 * abs(float(fd)) + 1e-9)
        fn = make_fingerprint_fn(det, wavelength_arg=True)
        st = from_arrays(pos, z)
        st = st._replace(positions=jnp.asarray(st.positions, jnp.float64))

        def fp_scalar(wl):
            return jnp.sum(weights[:, :, None] * fn(st, wl))

        fp_value_and_grad = jax.jit(jax.value_and_grad(fp_scalar))  # one compilation
        gw = fp_value_and_grad(5e-12)[1]
        h = 1e-16
        fdw = (fp_value_and_grad(5e-12 + h)[0] - fp_value_and_grad(5e-12 - h)[0]) / (2 * h)
        assert float(gw) == pytest.approx(float(fdw), rel=1e-4)


def test_float32_gradient_matches_float64_gradient():
    """The fast polynomial path differentiates like the exact float64 one."""
    fn = make_fingerprint_fn()
    st = from_arrays(lattice_cluster(*FCC, (3, 3, 3), jitter=0.03), np.full(108, 29))
    weights = np.random.default_rng(2).random((64, 64, 3))

    def loss(p):
        return jnp.sum(weights * fn(st._replace(positions=p)))

    g32 = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(st.positions)))
    with jax.enable_x64(True):
        g64 = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(st.positions, jnp.float64)))
    assert np.all(np.isfinite(g32)) and np.abs(g64).max() > 0
    assert np.linalg.norm(g32 - g64) / np.linalg.norm(g64) < 1e-3


def test_ai4materials_preset_masks_what_it_says():
    det = detector_preset("ai4materials")
    pos = lattice_cluster(*SC, (5, 5, 5), jitter=0.1)
    img = np.asarray(make_fingerprint_fn(det)(from_arrays(pos, np.full(len(pos), 29)))).sum(-1)
    r = radial_pixel_distance(det)
    assert np.all(img[r <= 10] == 0) and np.all(img[r >= 30] == 0)
    assert np.all(img[(r > 10) & (r < 30)] > 0)
    paper = np.asarray(make_fingerprint_fn()(from_arrays(pos, np.full(len(pos), 29)))).sum(-1)
    rp = radial_pixel_distance(DetectorConfig())
    assert np.all(paper[rp <= 5] == 0) and np.all(paper[rp > 5] > 0)


def test_rotation_convention():
    rz = np.asarray(rotation_matrix(2, np.pi / 2))
    np.testing.assert_allclose(rz @ [1, 0, 0], [0, 1, 0], atol=1e-7)
    rx = np.asarray(rotation_matrix(0, np.pi / 2))
    np.testing.assert_allclose(rx @ [0, 1, 0], [0, 0, 1], atol=1e-7)
    ry = np.asarray(rotation_matrix(1, np.pi / 2))
    np.testing.assert_allclose(ry @ [0, 0, 1], [1, 0, 0], atol=1e-7)


def test_bad_detector_rejected():
    with pytest.raises(ValueError):
        make_fingerprint_fn(DetectorConfig(n_pixels=1))
    with pytest.raises(ValueError):
        detector_preset("nope")


# ------------------------------------------------------------------------------------------------ form factors


def test_shipped_form_factor_table_is_the_one_built_from_xraydb():
    from crystaljax.physics.scattering import coefficient_table, coefficient_table_from_xraydb

    np.testing.assert_array_equal(coefficient_table(), coefficient_table_from_xraydb())


def test_every_tabulated_form_factor_is_the_neutral_element_of_xraydb():
    """Row Z of the table is xraydb's neutral-atom entry (not an ion or a 'Cval'/'Siva' valence entry)."""
    import xraydb

    from crystaljax.physics.scattering import Z_MAX_TABLE, form_factor, form_factor_numpy

    s = np.array([0.0, 0.15, 0.4, 0.9, 1.6])
    for z in range(1, Z_MAX_TABLE + 1):
        ref = xraydb.f0(xraydb.atomic_symbol(z), s)
        np.testing.assert_allclose(form_factor_numpy(z, s), ref, rtol=1e-12, err_msg=f"Z={z}")
        np.testing.assert_allclose(np.asarray(form_factor(z, jnp.asarray(s, jnp.float32))), ref, rtol=2e-6,
                                   atol=1e-6, err_msg=f"Z={z}")
    # neutral atoms: f0(s = 0) equals the electron count Z
    z = np.arange(1, Z_MAX_TABLE + 1)
    assert np.all(np.abs(np.array([form_factor_numpy(int(k), 0.0) for k in z]) - z) < 0.1)


@pytest.mark.parametrize("z", [4, 12])  # Be -> C and Mg -> Si with the Z + 2 shift
def test_fingerprint_of_be_and_mg_match_independent_reference(z):
    pos = lattice_cluster(*HCP, (5, 5, 4))
    ref = fingerprint_numpy(pos, np.full(len(pos), z))  # form factors from xraydb.f0('C' / 'Si')
    out = fp_of(pos, z)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) <= 1e-5
