"""Tests for crystaljax.physics.defects: exact counts, statistics, jit/vmap/grad, configs, bcc -> sc."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from crystaljax import structure
from crystaljax.physics.defects import (
    DefectConfig,
    DefectLevels,
    DefectSpec,
    apply_defects,
    displace,
    make_defect_fn,
    remove_sublattice,
    substitute,
    vacancies,
)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "defect"


def random_structure(n, n_max=None, seed=0, z=26, nn=2.5, tags=None, n_vacant=0):
    """n atoms at random scaled positions, padded to n_max; the first n_vacant already vacant."""
    rng = np.random.default_rng(seed)
    s = structure.from_arrays(rng.normal(size=(n, 3)) * 3.0, np.full(n, z), n_max=n_max, tags=tags,
                              nn_distance=nn)
    if n_vacant:
        mask = np.array(s.mask)
        mask[:n_vacant] = 0.0
        s = s._replace(mask=mask)
    return s


def assert_same(a, b):
    for name, x, y in zip(structure.Structure._fields, a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y), name


def key(i=0):
    return jax.random.PRNGKey(i)


# ---------------------------------------------------------------------------------------------
# vacancies


@pytest.mark.parametrize("n,n_max,n_vacant", [(10, 16, 0), (50, 64, 10), (128, 128, 0), (250, 256, 7)])
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5, 0.6, 0.99])
def test_vacancy_exact_count(n, n_max, n_vacant, fraction):
    s = random_structure(n, n_max, n_vacant=n_vacant)
    n_present = n - n_vacant
    out = vacancies(key(n + n_vacant), s, fraction)
    mask_in, mask_out = np.asarray(s.mask), np.asarray(out.mask)
    removed = (mask_in == 1) & (mask_out == 0)
    assert removed.sum() == round(fraction * n_present)
    assert mask_out.sum() == n_present - round(fraction * n_present)
    assert set(np.unique(mask_out)) <= {0.0, 1.0}
    assert np.all(mask_out[mask_in == 0] == 0)          # padding / vacancies never come back
    # positions, numbers and tags untouched (shape-preserving)
    for f in ("positions", "numbers", "tags", "nn_distance"):
        assert np.array_equal(np.asarray(getattr(out, f)), np.asarray(getattr(s, f)))


def test_vacancies_uniform_over_present_atoms():
    s = random_structure(20, 32, n_vacant=5)            # rows 0-4 vacant, 20-31 padding
    keys = jax.random.split(key(3), 400)
    masks = np.asarray(jax.vmap(lambda k: vacancies(k, s, 0.4).mask)(keys))
    hits = (masks == 0).sum(0)
    assert np.all(hits[:5] == 400) and np.all(hits[20:] == 400)
    removed = 400 - (masks[:, 5:20] == 1).sum(0)
    # each of the 15 present atoms is removed with probability 6/15 = 0.4 (160 of 400, sd ~10)
    assert np.all(np.abs(removed - 160) < 60), removed


def test_vacancies_traced_fraction_vmap_over_levels():
    s = random_structure(100, 112, n_vacant=4)
    levels = jnp.array([0.0, 0.05, 0.2, 0.4, 0.6])
    counts = jax.vmap(lambda f: vacancies(key(1), s, f).mask.sum())(levels)
    expected = [96 - round(float(np.float32(f) * 96)) for f in np.asarray(levels)]
    assert np.asarray(counts).tolist() == expected
    # traced levels through the config path too
    fn = jax.jit(jax.vmap(lambda f: apply_defects(key(1), s, DefectConfig(vacancy_fraction=f)).mask.sum()))
    assert np.asarray(fn(levels)).tolist() == expected


# ---------------------------------------------------------------------------------------------
# displacements


def test_displacement_statistics_physical_angstrom():
    nn = 2.5
    sigma = 0.06
    s = random_structure(2000, 2048, nn=nn, n_vacant=100)
    out = displace(key(7), s, sigma)
    present = np.asarray(s.mask) == 1
    d = (np.asarray(out.positions, np.float64) - np.asarray(s.positions, np.float64))
    d_phys = d[present] * nn
    assert abs(d_phys.std() - sigma) < 0.03 * sigma
    assert abs(d_phys.mean()) < 4 * sigma / np.sqrt(d_phys.size)
    # each Cartesian component has the same spread
    assert np.allclose(d_phys.std(axis=0), sigma, rtol=0.06)
    # vacancies and padding keep their positions exactly
    assert np.array_equal(np.asarray(out.positions)[~present], np.asarray(s.positions)[~present])
    for f in ("numbers", "mask", "tags", "nn_distance"):
        assert np.array_equal(np.asarray(getattr(out, f)), np.asarray(getattr(s, f)))


def test_displacement_relative_is_in_scaled_units():
    s = random_structure(2000, 2000, nn=3.0)
    d = np.asarray(displace(key(8), s, 0.05, relative=True).positions) - np.asarray(s.positions)
    assert abs(d.std() - 0.05) < 0.03 * 0.05
    d_abs = np.asarray(displace(key(8), s, 0.05).positions) - np.asarray(s.positions)
    assert abs(d_abs.std() - 0.05 / 3.0) < 0.03 * 0.05 / 3.0


def test_displace_gradient_flows_to_positions():
    s = random_structure(30, 32, n_vacant=3)

    def total(pos, sigma):
        return jnp.sum(displace(key(2), s._replace(positions=pos), sigma).positions)

    g_pos, g_sigma = jax.grad(total, argnums=(0, 1))(jnp.asarray(s.positions), 0.05)
    assert np.allclose(np.asarray(g_pos), 1.0)
    assert np.isfinite(float(g_sigma)) and float(g_sigma) != 0.0


# ---------------------------------------------------------------------------------------------
# substitutions


@pytest.mark.parametrize("n,n_max,n_vacant,fraction", [(40, 48, 0, 0.2), (250, 256, 13, 0.35), (16, 16, 0, 0.5)])
@pytest.mark.parametrize("elements", [(29,), (29, 47)])
def test_substitution_exact_count_and_species(n, n_max, n_vacant, fraction, elements):
    s = random_structure(n, n_max, z=26, n_vacant=n_vacant)
    out = substitute(key(n), s, fraction, elements)
    num_in, num_out = np.asarray(s.numbers), np.asarray(out.numbers)
    present = np.asarray(s.mask) == 1
    changed = num_in != num_out
    assert changed.sum() == round(fraction * (n - n_vacant))
    assert not changed[~present].any()                     # padding and vacancies untouched
    assert set(num_out[changed]) <= set(elements)
    assert np.array_equal(np.asarray(out.mask), np.asarray(s.mask))
    assert np.array_equal(np.asarray(out.positions), np.asarray(s.positions))


def test_ternary_uses_both_elements():
    s = random_structure(250, 256, z=26)
    out = np.asarray(substitute(key(4), s, 0.4, (29, 47)).numbers)
    assert (out == 29).sum() > 20 and (out == 47).sum() > 20
    assert (out == 26).sum() == 250 - 100


def test_substitution_never_picks_own_species():
    s = random_structure(100, 112, z=29)
    out = np.asarray(substitute(key(5), s, 0.3, (29, 47)).numbers)
    assert (out[:100] == 47).sum() == 30                   # Cu host: only Ag is a substitution
    # a single element equal to the host: nothing can change
    same = substitute(key(5), s, 0.3, (29,))
    assert np.array_equal(np.asarray(same.numbers), np.asarray(s.numbers))


def test_substitution_empty_elements_raises():
    s = random_structure(10, 16)
    with pytest.raises(ValueError, match="substitution_elements"):
        substitute(key(), s, 0.2, ())


# ---------------------------------------------------------------------------------------------
# sublattice removal


def tagged_structure(n=100, n_max=112, seed=1):
    tags = np.random.default_rng(seed).integers(0, 3, n)    # tags 0, 1, 2 mixed
    return random_structure(n, n_max, tags=tags, n_vacant=6), tags


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("tag", [1, 2])
def test_sublattice_touches_only_tagged(fraction, tag):
    s, _ = tagged_structure()
    tags = np.asarray(s.tags)
    mask_in = np.asarray(s.mask)
    n_tagged = int(((mask_in == 1) & (tags == tag)).sum())
    out = remove_sublattice(key(9), s, fraction, tag=tag)
    mask_out = np.asarray(out.mask)
    removed = (mask_in == 1) & (mask_out == 0)
    assert removed.sum() == round(fraction * n_tagged)
    assert np.all(tags[removed] == tag)
    assert np.array_equal(mask_out[tags != tag], mask_in[tags != tag])
    if fraction == 1.0:
        assert not np.any((mask_out == 1) & (tags == tag))


def bcc_fe_supercell(reps=4):
    from ase import Atoms

    a = 2.87
    cell = Atoms("Fe2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[a, a, a], pbc=True,
                 tags=[0, 1])
    return cell.repeat((reps, reps, reps)), a


def spacegroup(positions_phys, numbers, box):
    import spglib

    lattice = np.eye(3) * box
    frac = np.mod(np.asarray(positions_phys, np.float64) / box, 1.0)
    return spglib.get_symmetry_dataset((lattice, frac, np.asarray(numbers)), symprec=1e-3).number


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # spglib 2.x error-handling notice
def test_bcc_to_sc_by_sublattice_removal():
    atoms, a = bcc_fe_supercell(4)
    nn = a * np.sqrt(3) / 2
    s = structure.from_arrays(atoms.get_positions() / nn, atoms.get_atomic_numbers(), n_max=144,
                              tags=atoms.get_tags(), nn_distance=nn)
    box = 4 * a

    def present_phys(st):
        keep = np.asarray(st.mask) == 1
        pos = np.asarray(st.positions, np.float64)[keep] * float(np.asarray(st.nn_distance))
        return pos, np.asarray(st.numbers)[keep]

    assert spacegroup(*present_phys(s), box) == 229
    cfg = DefectConfig(name="sublattice", sublattice_fraction=1.0)
    sc = jax.jit(make_defect_fn(cfg))(key(0), s)
    pos, num = present_phys(sc)
    assert len(pos) == 64
    assert spacegroup(pos, num, box) == 221
    # half the body centres gone is neither
    half = remove_sublattice(key(0), s, 0.5)
    assert spacegroup(*present_phys(half), box) not in (221, 229)


# ---------------------------------------------------------------------------------------------
# composition, transforms, determinism


FULL = DefectConfig(name="all", displacement_sigma=0.05, vacancy_fraction=0.2, substitution_fraction=0.3,
                    substitution_elements=(29, 47), sublattice_fraction=0.5)


def test_apply_defects_composes_all():
    s, tags = tagged_structure()
    out = apply_defects(key(11), s, FULL)
    assert all(np.shape(x) == np.shape(y) for x, y in zip(out, s))
    n_present = int(np.asarray(s.mask).sum())                        # 94
    n_tag1 = int(((np.asarray(s.mask) == 1) & (np.asarray(s.tags) == 1)).sum())
    after_lattice = n_present - round(0.5 * n_tag1)
    expected = after_lattice - round(float(np.float32(0.2) * np.float32(after_lattice)))
    assert int(np.asarray(out.mask).sum()) == expected
    assert (np.asarray(out.numbers) != np.asarray(s.numbers)).sum() == round(0.3 * n_present)
    moved = np.any(np.asarray(out.positions) != np.asarray(s.positions), axis=1)
    assert np.array_equal(moved, np.asarray(out.mask) == 1)


def test_vmap_over_keys_equals_loop():
    s, _ = tagged_structure()
    keys = jax.random.split(key(12), 5)
    fn = make_defect_fn(FULL)
    batched = jax.vmap(fn, in_axes=(0, None))(keys, s)
    for i, k in enumerate(keys):
        one = fn(k, s)
        for x, y in zip(batched, one):
            np.testing.assert_allclose(np.asarray(x)[i], np.asarray(y), rtol=0, atol=1e-6)


def test_vmap_over_structure_batch():
    batch = structure.stack([random_structure(30, 48, seed=i, n_vacant=i) for i in range(4)])
    keys = jax.random.split(key(13), 4)
    out = jax.vmap(lambda k, st: vacancies(k, st, 0.5))(keys, batch)
    assert np.asarray(out.mask).sum(axis=1).tolist() == [30 - i - round(0.5 * (30 - i)) for i in range(4)]


def test_jit_equals_eager():
    s, _ = tagged_structure()
    eager = apply_defects(key(14), s, FULL)
    jitted = jax.jit(apply_defects, static_argnums=2)(key(14), s, FULL)
    for x, y in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)
    assert np.array_equal(np.asarray(eager.mask), np.asarray(jitted.mask))
    assert np.array_equal(np.asarray(eager.numbers), np.asarray(jitted.numbers))


def test_deterministic_for_key_and_keys_differ():
    s, _ = tagged_structure()
    a = apply_defects(key(15), s, FULL)
    b = apply_defects(key(15), s, FULL)
    assert_same(a, b)
    c = apply_defects(key(16), s, FULL)
    assert not np.array_equal(np.asarray(a.mask), np.asarray(c.mask))
    assert not np.array_equal(np.asarray(a.numbers), np.asarray(c.numbers))
    assert not np.array_equal(np.asarray(a.positions), np.asarray(c.positions))


def test_zero_levels_are_exact_noops():
    s, _ = tagged_structure()
    sj = structure.Structure(*(jnp.asarray(x) for x in s))
    assert_same(apply_defects(key(17), s, DefectConfig()), sj)
    assert_same(displace(key(17), s, 0.0), sj)
    assert_same(vacancies(key(17), s, 0.0), sj)
    assert_same(substitute(key(17), s, 0.0, (29,)), sj)
    assert_same(remove_sublattice(key(17), s, 0.0), sj)
    # traced zeros too (jit with levels as arguments)
    traced = jax.jit(lambda sig, f: displace(key(17), vacancies(key(18), s, f), sig))(0.0, 0.0)
    assert_same(traced, sj)
    zero_cfg = DefectConfig(substitution_elements=(29, 47), displacement_relative=True)
    assert_same(jax.jit(make_defect_fn(zero_cfg))(key(19), s), sj)


def test_new_stages_do_not_reshuffle_others():
    s, _ = tagged_structure()
    only_vac = apply_defects(key(20), s, DefectConfig(vacancy_fraction=0.2))
    with_disp = apply_defects(key(20), s, DefectConfig(vacancy_fraction=0.2, displacement_sigma=0.1))
    assert np.array_equal(np.asarray(only_vac.mask), np.asarray(with_disp.mask))


# ---------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize("field,value", [
    ("vacancy_fraction", 1.0), ("vacancy_fraction", -0.1), ("vacancy_fraction", float("nan")),
    ("substitution_fraction", 1.5), ("sublattice_fraction", 1.01), ("sublattice_fraction", -0.5),
    ("displacement_sigma", -0.01), ("substitution_elements", (0,)), ("substitution_elements", (97,)),
    ("substitution_elements", (29, 29)), ("substitution_elements", "Cu"), ("displacement_relative", "yes"),
    ("sublattice_tag", 1.5), ("vacancy_fraction", "a lot"),
])
def test_invalid_config_raises_naming_field(field, value):
    kwargs = {field: value}
    if field == "substitution_elements":
        kwargs["substitution_fraction"] = 0.1
    with pytest.raises(ValueError, match=field):
        DefectConfig(**kwargs)


def test_substitution_fraction_without_elements_raises():
    with pytest.raises(ValueError, match="substitution_elements"):
        DefectConfig(substitution_fraction=0.2)


def test_config_accepts_lists_and_is_hashable():
    cfg = DefectConfig(substitution_fraction=0.2, substitution_elements=[29, 47], sublattice_fraction=1.0)
    assert cfg.substitution_elements == (29, 47)
    hash(cfg)
    with pytest.raises(ValueError, match="unknown"):
        DefectConfig.from_dict({"vacancy_frac": 0.1})


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_yaml_configs_match_schema(path):
    import dataclasses

    from omegaconf import OmegaConf

    text = path.read_text()
    assert text.startswith("# ")
    node = OmegaConf.load(path)
    assert "name" in node and set(node.keys()) <= {f.name for f in dataclasses.fields(DefectConfig)}
    cfg = DefectConfig.from_dict(OmegaConf.to_container(node))
    assert cfg.name == path.stem
    make_defect_fn(node)  # a DictConfig works directly


def test_yaml_expected_levels():
    from omegaconf import OmegaConf

    load = lambda name: DefectConfig.from_dict(OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml")))
    assert load("none") == DefectConfig()
    assert load("displacement").displacement_sigma == 0.06
    assert load("vacancies").vacancy_fraction == 0.25
    sub = load("substitution")
    assert sub.substitution_fraction == 0.2 and sub.substitution_elements == (29, 47)
    assert load("sublattice").sublattice_fraction == 1.0


def test_hydra_group_override(tmp_path):
    from hydra import compose, initialize_config_dir

    shutil.copytree(CONF_DIR, tmp_path / "defect")
    (tmp_path / "config.yaml").write_text("defaults:\n  - defect: none\n  - _self_\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        node = compose(config_name="config", overrides=["defect=vacancies", "defect.vacancy_fraction=0.4"])
    cfg = make_defect_fn(node.defect).config
    assert cfg.name == "vacancies" and cfg.vacancy_fraction == 0.4
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        node = compose(config_name="config", overrides=["defect=substitution",
                                                        "defect.substitution_elements=[13]"])
    assert DefectConfig.from_dict(node.defect).substitution_elements == (13,)


def test_random_levels_draw_a_spread_of_strengths():
    """random_levels: vacancy counts vary between keys, never exceed the maximum, and are reproducible."""
    from crystaljax.physics.defects import DefectConfig, apply_defects
    from crystaljax.structure import from_arrays

    s = from_arrays(np.random.default_rng(0).normal(size=(200, 3)), np.full(200, 26), n_max=208)
    cfg = DefectConfig(vacancy_fraction=0.5, random_levels=True)
    fn = jax.jit(jax.vmap(lambda k: apply_defects(k, s, cfg).mask.sum()))
    counts = np.asarray(fn(jax.random.split(jax.random.key(0), 64)))
    removed = 200 - counts
    assert removed.max() <= 100 and removed.min() >= 0
    assert len(np.unique(removed)) > 20  # a spread, not one level
    assert 30 < removed.mean() < 70       # uniform in [0, 100] has mean 50
    np.testing.assert_array_equal(counts, np.asarray(fn(jax.random.split(jax.random.key(0), 64))))
    with pytest.raises(ValueError, match="random_levels"):
        DefectConfig(random_levels="yes")


def test_renormalize_restores_unit_robust_nn_distance():
    from ase import Atoms
    from ase.build import bulk

    from crystaljax.structures.cluster import prepare, robust_nn_distance
    from crystaljax.physics.defects import DefectConfig, apply_defects
    from crystaljax.structure import from_ase

    s = from_ase(prepare(bulk("Cu", "fcc", a=3.6)))
    cfg = DefectConfig(displacement_sigma=0.2, renormalize=True)
    out = apply_defects(jax.random.key(1), s, cfg)
    pos = np.asarray(out.positions, np.float64)[np.asarray(out.mask) > 0]
    # the host estimator (the same statistic) sees unit scale
    assert robust_nn_distance(Atoms("Cu%d" % len(pos), positions=pos)) == pytest.approx(1.0, abs=1e-5)
    # physical positions are unchanged by the rescaling
    raw = apply_defects(jax.random.key(1), s, DefectConfig(displacement_sigma=0.2))
    np.testing.assert_allclose(np.asarray(out.positions) * float(out.nn_distance),
                               np.asarray(raw.positions) * float(raw.nn_distance), atol=1e-4)
    # noise (0.2 A = 8 % of d_NN) no longer shortens the scale as the mean nearest-neighbour distance did
    assert float(out.nn_distance) == pytest.approx(float(s.nn_distance), rel=0.03)  # mean nn: -15 %


# ---------------------------------------------------------------------------------------------
# make_defect_fn(spec) -> fn(key, structure, levels): static stages, traced levels


def test_levels_vmap_equals_loop_with_exact_counts():
    """One compiled function over a vmap of levels and keys gives what a loop of eager calls gives."""
    s = random_structure(60, 64, seed=4, n_vacant=4)
    spec = DefectSpec(("vacancies", "displacement", "substitution"))
    fn = make_defect_fn(spec)
    fracs = np.array([0.0, 0.1, 0.25, 0.5], np.float32)
    sigmas = np.array([0.0, 0.02, 0.05, 0.1], np.float32)
    subs = np.array([0.2, 0.0, 0.5, 0.3], np.float32)
    elements = np.array([[29, 47], [29, 0], [13, 0], [79, 29]], np.int32)
    levels = DefectLevels(sigmas, fracs, subs, np.zeros(4, np.float32), elements)
    keys = jax.random.split(key(5), 4)
    batched = jax.jit(jax.vmap(fn, in_axes=(0, None, 0)))(keys, s, levels)
    n_present = 56
    for i in range(4):
        one = fn(keys[i], s, DefectLevels(float(sigmas[i]), float(fracs[i]), float(subs[i]), 0.0, elements[i]))
        for name, a, b in zip(structure.Structure._fields, batched, one):
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b), rtol=1e-6, atol=1e-7, err_msg=name)
        out = jax.tree.map(lambda x: np.asarray(x)[i], batched)
        # exact counts: vacancies among the present atoms, substitutions before them (all present atoms)
        assert out.mask.sum() == n_present - round(float(fracs[i]) * n_present)
        changed = (np.asarray(s.numbers) > 0) & (out.numbers != 26)
        assert changed.sum() == round(float(subs[i]) * n_present)
        # the substituting species are those of this level's element array (0 = unused slot)
        assert set(np.unique(out.numbers[changed]).tolist()) <= set(int(e) for e in elements[i] if e > 0)
    # the binary level used only its one element; the ternary level used both
    out3 = jax.tree.map(lambda x: np.asarray(x)[3], batched)
    assert set(np.unique(out3.numbers[(np.asarray(s.numbers) > 0) & (out3.numbers != 26)]).tolist()) == {79, 29}


def test_substitution_array_equals_static_tuple_and_traced_elements():
    s = random_structure(40, 48, seed=6)
    a = substitute(key(7), s, 0.3, (29, 47))
    b = substitute(key(7), s, 0.3, np.array([29, 47], np.int32))
    c = jax.jit(substitute)(key(7), s, 0.3, jnp.array([29, 47]))
    assert_same(a, b)
    np.testing.assert_array_equal(np.asarray(a.numbers), np.asarray(c.numbers))
    # an unused slot (0) changes nothing for a binary alloy: same atoms, the one listed species
    d = substitute(key(7), s, 0.3, np.array([29, 0], np.int32))
    e = substitute(key(7), s, 0.3, (29,))
    np.testing.assert_array_equal(np.asarray(d.numbers), np.asarray(e.numbers))
    assert set(np.unique(np.asarray(d.numbers)[:40]).tolist()) == {26, 29}


def test_spec_from_config_matches_apply_defects():
    cfg = DefectConfig(displacement_sigma=0.05, vacancy_fraction=0.2, substitution_fraction=0.1,
                       substitution_elements=(29, 47))
    s = random_structure(50, 64, seed=8)
    fn = make_defect_fn(cfg)
    assert fn.spec.stages == ("substitution", "vacancies", "displacement") and fn.config == cfg
    assert_same(fn(key(9), s), apply_defects(key(9), s, cfg))
    # the same spec with the config's levels passed as a traced pytree
    traced = jax.jit(make_defect_fn(fn.spec))(key(9), s, DefectLevels.from_config(cfg))
    for a, b in zip(traced, fn(key(9), s)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_spec_validation_and_single_stream():
    with pytest.raises(ValueError, match="unknown defect stage"):
        DefectSpec(("melting",))
    with pytest.raises(ValueError, match="single stage"):
        DefectSpec(("vacancies", "displacement"), split_key=False)
    with pytest.raises(ValueError, match="levels"):
        make_defect_fn(DefectSpec(("vacancies",)))(key(0), random_structure(10, 16))
    # split_key=False: the stage draws from the key itself, as the stage function called directly
    s = random_structure(30, 32, seed=2)
    out = make_defect_fn(DefectSpec(("vacancies",), split_key=False))(key(3), s, DefectLevels(vacancy_fraction=0.3))
    assert_same(out, vacancies(key(3), s, 0.3))
    assert DefectSpec(("displacement", "vacancies")).stages == ("vacancies", "displacement")  # canonical order


# ---------------------------------------------------------------------------------------------
# scale jitter (the pristine model's recipe)


def test_scale_jitter_is_a_bounded_uniform_rescaling_that_keeps_physical_positions():
    from crystaljax.physics.defects import jitter_scale

    s = random_structure(40, 48, seed=3)
    keys = jax.random.split(key(7), 400)
    out = jax.vmap(lambda k: jitter_scale(k, s, 0.05))(keys)
    factor = np.asarray(out.positions)[:, 0, 0] / np.asarray(s.positions)[0, 0]
    # one factor per structure, applied to every coordinate of every atom
    np.testing.assert_allclose(np.asarray(out.positions), factor[:, None, None] * np.asarray(s.positions)[None],
                               rtol=1e-5, atol=1e-6)
    log_f = np.log(factor)
    assert np.all(np.abs(log_f) <= 0.05 + 1e-6)
    assert log_f.min() < -0.04 and log_f.max() > 0.04 and abs(log_f.mean()) < 0.01   # spread, centred
    physical = np.asarray(out.positions) * np.asarray(out.nn_distance)[:, None, None]
    expected = np.broadcast_to(np.asarray(s.positions) * float(s.nn_distance), physical.shape)
    np.testing.assert_allclose(physical, expected, rtol=1e-5, atol=1e-4)
    assert_same(jitter_scale(key(1), s, 0.0), jax.tree.map(jnp.asarray, s))


def test_scale_jitter_never_changes_the_defect_draws():
    s, _ = tagged_structure()
    cfg = dict(vacancy_fraction=0.3, displacement_sigma=0.1, random_levels=True)
    plain = apply_defects(key(4), s, DefectConfig(**cfg))
    jittered = apply_defects(key(4), s, DefectConfig(**cfg, scale_jitter=0.05))
    assert np.array_equal(np.asarray(plain.mask), np.asarray(jittered.mask))
    ratio = np.asarray(jittered.positions)[np.asarray(s.mask) > 0] / np.asarray(plain.positions)[np.asarray(s.mask) > 0]
    assert np.allclose(ratio, ratio.flat[0], rtol=1e-4) and abs(ratio.flat[0] - 1) > 1e-4
    assert not DefectConfig(scale_jitter=0.05).is_identity and DefectConfig().is_identity
    assert DefectConfig.from_dict({"scale_jitter": 0.05}).scale_jitter == 0.05
    with pytest.raises(ValueError, match="scale_jitter"):
        DefectConfig(scale_jitter=0.6)
