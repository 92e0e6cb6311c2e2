"""The robust nearest-neighbour scale: bias under noise and vacancies, host == device, invariances."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

import jax
import jax.numpy as jnp

import crystaljax.physics.scale as dev
import crystaljax.structures.cluster as host
from crystaljax.structures import prototypes as P
from crystaljax.structures.cluster import mean_nn_distance, robust_nn_distance, sphere_cut

# class -> (prototype, free parameters); bct_139 at the In example (4 neighbours at d, 8 at 1.039 d),
# bct_141 at beta-Sn (4 at d, 2 at 1.053 d)
LATTICES = {
    "fcc": ("A_cF4_225_a", None), "bcc": ("A_cI2_229_a", None), "sc": ("A_cP1_221_a", None),
    "diamond": ("A_cF8_227_a", None), "hcp": ("A_hP2_194_c", None), "bct_139": ("A_tI2_139_a", None),
    "beta_Sn": ("A_tI4_141_a", None),
}
SIGMAS = (0.02, 0.04, 0.06, 0.1)      # per Cartesian component, fraction of d_NN
VACANCIES = (0.3, 0.5, 0.7)
# asserted |relative bias| bounds of the robust estimator (mean over draws); measured values in docs/RESULTS.md.
# Where two shells lie within the noise of each other (bcc 1 / 1.155, bct_139 1 / 1.039, beta-Sn 1 / 1.053)
# the first shell is not separable at large noise and the bound is looser.
NOISE_BOUND = {
    "fcc": (0.01, 0.01, 0.015, 0.02), "sc": (0.01, 0.01, 0.015, 0.04), "diamond": (0.01, 0.01, 0.025, 0.05),
    "hcp": (0.01, 0.01, 0.015, 0.025), "bcc": (0.01, 0.015, 0.05, 0.08), "bct_139": (0.035, 0.035, 0.035, 0.05),
    "beta_Sn": (0.015, 0.02, 0.03, 0.12),
}
VACANCY_BOUND = 0.002


def _ball(name, params, n=300):
    """Finite ball of ~n atoms of the prototype, scaled to d_NN = 1."""
    atoms = P.build(name, "Cu", params=params)
    ball, _ = sphere_cut(atoms, n)
    return ball.positions / P._min_distance(atoms)


def _finite(pos):
    return Atoms(numbers=np.full(len(pos), 29), positions=pos)


def _bias(estimator, base, rng, sigma=0.0, vacancy=0.0, draws=4):
    out = []
    for _ in range(draws):
        pos = base[rng.random(len(base)) >= vacancy] if vacancy else base
        pos = pos + rng.normal(0.0, sigma, pos.shape) if sigma else pos
        out.append(estimator(_finite(pos)))
    return float(np.mean(out)) - 1.0


@pytest.mark.parametrize("cls", sorted(LATTICES))
def test_pristine_value_is_the_nearest_neighbour_distance(cls):
    name, params = LATTICES[cls]
    atoms = P.build(name, "Cu", params=params)
    d0 = P._min_distance(atoms)
    assert robust_nn_distance(atoms) == pytest.approx(d0, rel=1e-9)  # periodic, images included
    assert robust_nn_distance(_finite(_ball(name, params))) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("cls", sorted(LATTICES))
def test_bias_under_noise_and_vacancies_is_bounded(cls):
    name, params = LATTICES[cls]
    base = _ball(name, params)
    rng = np.random.default_rng(7)
    noise = [_bias(robust_nn_distance, base, rng, sigma=s) for s in SIGMAS]
    vac = [_bias(robust_nn_distance, base, rng, vacancy=f) for f in VACANCIES]
    both = _bias(robust_nn_distance, base, rng, sigma=0.04, vacancy=0.6)
    table = f"{cls}: noise {np.round(100 * np.array(noise), 2)} %, vacancies {np.round(100 * np.array(vac), 2)} %"
    assert all(abs(b) <= bound for b, bound in zip(noise, NOISE_BOUND[cls])), table
    assert all(abs(b) <= VACANCY_BOUND for b in vac), table
    assert abs(both) <= max(NOISE_BOUND[cls][1], 0.015) + 0.01, f"{table}; 60 % vacancies + sigma 0.04: {both:.4f}"
    # the old estimator fails the same test: noise pulls it down, vacancies push it up
    assert _bias(mean_nn_distance, base, rng, sigma=0.04) < -0.04
    assert _bias(mean_nn_distance, base, rng, vacancy=0.7) > 0.01


def _padded(pos, keep, n_max):
    out = np.zeros((n_max, 3), np.float32)
    mask = np.zeros(n_max, np.float32)
    out[:len(pos)] = pos
    mask[:len(pos)] = keep
    return out, mask


@pytest.mark.parametrize("cls", ["fcc", "bcc", "diamond", "hcp", "beta_Sn"])
def test_host_and_device_compute_the_same_statistic(cls):
    name, params = LATTICES[cls]
    base = _ball(name, params, n=200)
    rng = np.random.default_rng(3)
    pos = base + rng.normal(0.0, 0.05, base.shape)
    keep = (rng.random(len(pos)) > 0.4).astype(np.float32)
    h = robust_nn_distance(_finite(pos[keep > 0].astype(np.float32).astype(np.float64)))
    p, m = _padded(pos, keep, 256)
    d = float(jax.jit(dev.nn_scale)(jnp.asarray(p), jnp.asarray(m)))
    assert d == pytest.approx(h, rel=2e-5)
    # the same core on the same neighbour table
    table = np.asarray(dev.neighbour_distances(jnp.asarray(p), jnp.asarray(m)), np.float64)[m > 0]
    assert host.scale_from_neighbour_distances(table) == pytest.approx(
        float(dev.scale_from_neighbour_distances(jnp.asarray(table, jnp.float32))), rel=2e-5)


def test_constants_in_step():
    for name in ("NEIGHBOURS", "ITERATIONS", "C_LOCATION", "LOWER_WINDOW", "FLOOR", "S_MAX", "MAD_TO_SIGMA"):
        assert getattr(dev, name) == getattr(host, "ROBUST_" + name), name


def test_device_scale_is_equivariant_invariant_and_batched():
    base = _ball("A_cI2_229_a", None, n=120)
    rng = np.random.default_rng(0)
    pos = base + rng.normal(0.0, 0.03, base.shape)
    keep = (rng.random(len(pos)) > 0.3).astype(np.float32)
    p, m = _padded(pos, keep, 128)
    f = jax.jit(dev.nn_scale)
    s0 = float(f(p, m))
    assert float(f(2.5 * p, m)) == pytest.approx(2.5 * s0, rel=1e-5)            # a length
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    assert float(f(p @ q.T + np.float32([3, -1, 7]), m)) == pytest.approx(s0, rel=1e-5)  # rotation, translation
    perm = rng.permutation(128)
    assert float(f(p[perm], m[perm])) == pytest.approx(s0, rel=1e-6)            # permutation, padding rows anywhere
    p2, m2 = _padded(base, np.ones(len(base), np.float32), 128)
    batch = jax.jit(jax.vmap(dev.nn_scale))(jnp.stack([p, p2]), jnp.stack([m, m2]))
    np.testing.assert_allclose(np.asarray(batch), [s0, float(f(p2, m2))], rtol=1e-6)
    assert float(batch[1]) == pytest.approx(1.0, rel=1e-5)
    # fewer than two present atoms: NaN (renormalize then leaves the cluster unchanged)
    assert np.isnan(float(f(p, np.eye(1, 128, 0, dtype=np.float32)[0])))


def test_device_scale_gradient_matches_finite_differences():
    base = _ball("A_cF4_225_a", None, n=60)
    rng = np.random.default_rng(1)
    pos = (base + rng.normal(0.0, 0.04, base.shape)).astype(np.float64)
    mask = np.ones(len(pos))
    with jax.enable_x64(True):
        f = jax.jit(dev.nn_scale)
        g = np.asarray(jax.grad(f)(jnp.asarray(pos), jnp.asarray(mask)))
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
        direction = rng.normal(size=pos.shape)
        eps = 1e-7  # piecewise smooth: a small step stays on the same piece
        fd = (float(f(pos + eps * direction, mask)) - float(f(pos - eps * direction, mask))) / (2 * eps)
        assert np.sum(g * direction) == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_scaling_makes_pristine_and_defective_crystals_agree():
    """Periodic supercells written as a file would be: the defective one gets the pristine scale."""
    from crystaljax.structures.cluster import prepare

    rng = np.random.default_rng(5)
    for name, reps in (("A_cF4_225_a", (4, 4, 4)), ("A_cF8_227_a", (3, 3, 3))):  # 256 and 216 atoms
        atoms = P.build(name, "Cu").repeat(reps)
        noisy = atoms.copy()
        noisy.positions += rng.normal(0.0, 0.1, noisy.positions.shape)  # 0.1 A = 4 % of d_NN
        holey = atoms[rng.random(len(atoms)) > 0.6]  # 60 % vacancies
        d0 = prepare(atoms).info["nn_distance"]
        assert d0 == pytest.approx(prepare(atoms, scale="mean").info["nn_distance"], rel=1e-9)  # pristine: same
        for defective in (noisy, holey):
            assert prepare(defective).info["nn_distance"] == pytest.approx(d0, rel=0.01)
        # the old scale did not: noise -7 % (fcc), 60 % vacancies in diamond +8 %
        assert prepare(noisy, scale="mean").info["nn_distance"] / d0 < 0.95
        if name == "A_cF8_227_a":
            assert prepare(holey, scale="mean").info["nn_distance"] / d0 > 1.03
