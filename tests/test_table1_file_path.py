"""Table 1 through the file path: exact host defects, Wilson intervals, and a tiny run through the real CLI."""

import json

import numpy as np
import pytest

from crystaljax import config as C
from crystaljax.analysis import table1_file_path as T
from crystaljax.structures import prototypes as P


@pytest.fixture(scope="module")
def fcc_2048():
    """A 2048-atom periodic Cu fcc supercell (8 x 8 x 8 conventional cells)."""
    return P.build("A_cF4_225_a", "Cu").repeat((8, 8, 8))


@pytest.mark.parametrize("k, n, lo, hi", [  # Newcombe, Stat. Med. 17, 857 (1998), Table I, method 3
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
    (7, 7, 0.6457, 1.0)])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = T.wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=6e-5)
    assert got[0] <= k / n <= got[1]


def test_vacancies_remove_exactly_round_f_n(fcc_2048):
    n = len(fcc_2048)
    for f in (0.01, 0.25, 0.7):
        out = T.remove_atoms(fcc_2048, f, np.random.default_rng(0))
        assert n - len(out) == round(f * n)
        kept = {tuple(np.round(p, 6)) for p in out.positions}
        assert kept <= {tuple(np.round(p, 6)) for p in fcc_2048.positions}  # only deletions, nothing moved


def test_substitutions_are_exact_and_form_the_named_alloy(fcc_2048):
    n = len(fcc_2048)
    for level, species in (("binary_0.1", 2), ("ternary_0.5", 3)):
        out = T.apply_level(fcc_2048, "substitution", level, T.level_rng(0, "substitution", level, 0))
        frac = float(level.split("_")[1])
        assert int((out.numbers != fcc_2048.numbers).sum()) == round(frac * n)
        assert len(set(out.numbers)) == species and 29 in set(out.numbers)  # Cu host keeps its species
        assert set(out.numbers) <= {29, 47, 79}
        assert np.array_equal(out.positions, fcc_2048.positions)
    fe = fcc_2048.copy()
    fe.numbers[:] = 26  # a host outside the pool: binary = Fe + one of Cu/Ag
    out = T.apply_level(fe, "substitution", "binary_0.25", np.random.default_rng(1))
    assert len(set(out.numbers)) == 2 and int((out.numbers != 26).sum()) == round(0.25 * n)


def test_displacement_std_is_sigma_in_angstrom(fcc_2048):
    sigma = 0.05
    out = T.apply_level(fcc_2048, "displacement", sigma, T.level_rng(0, "displacement", sigma, 3))
    d = out.positions - fcc_2048.positions
    assert d.std() == pytest.approx(sigma, rel=0.03)  # 6144 components: relative std error ~0.9 %
    assert abs(d.mean()) < 4 * sigma / np.sqrt(d.size)
    assert len(out) == len(fcc_2048) and out.info == {}


def test_draws_depend_only_on_seed_kind_level_and_crystal():
    a = T.level_rng(0, "vacancies", 0.25, 7).random(3)
    assert np.array_equal(a, T.level_rng(0, "vacancies", 0.25, 7).random(3))
    for other in (T.level_rng(1, "vacancies", 0.25, 7), T.level_rng(0, "vacancies", 0.3, 7),
                  T.level_rng(0, "vacancies", 0.25, 8), T.level_rng(0, "displacement", 0.25, 7)):
        assert not np.array_equal(a, other.random(3))


def test_levels_are_those_of_table1():
    assert C.compose("table1_file_path").levels == C.compose("table1").levels


def test_rejected_files_count_as_wrong():
    items = [T.Item(f"f{i}", i, c, 225, "vacancies", "0.5", 0) for i, c in enumerate(["fcc", "fcc", "bcc", "sc"])]
    rep = T.level_report(items, [True, False, True, False], predicted=["fcc", None, "bcc", "bcc"],
                         unknown=[False, False, True, False])["vacancies"]["0.5"]
    assert (rep["k"], rep["n"], rep["accuracy"], rep["n_failed"], rep["unknown_rate"]) == (2, 4, 0.5, 1, 0.25)
    assert rep["per_class"]["fcc"] == 0.5 and rep["per_class"]["diam"] is None


@pytest.mark.slow
@pytest.mark.shipped_model
def test_tiny_run_through_the_cli(tmp_path):
    """7 crystals, 2 defect levels through `crystaljax classify` (the shipped default model in both columns, one CLI
    process), spglib on the same files."""
    cfg = C.compose("table1_file_path", [
        "run=smoke", "levels.displacement=[0.06]", "levels.vacancies=[0.25]", "levels.substitution=[]",
        "models.convnet=default",
        f"internal_from={tmp_path / 'internal.json'}", f"keep_files={tmp_path / 'files'}"])
    internal = {"convnet": {"pristine": 0.5}, "convnet_augmented": {"pristine": 0.6}, "spglib": {},
                "n_structures": 1, "seeds": [0]}
    (tmp_path / "internal.json").write_text(json.dumps(internal))
    res = T.run(cfg, tmp_path / "run")
    out = tmp_path / "run"
    assert json.loads((out / "table1.json").read_text()) == json.loads(json.dumps(res))
    for name in ("table1_file_path_details.json", "table1_file_path.png", "table1_file_path.md"):
        assert (out / name).is_file(), name
    assert set(res) == set(T.INNER_KEYS) | {"protocol", "intervals", "unknown_rate", "internal_protocol"}
    assert res["internal_protocol"] == internal and res["protocol"].startswith("file path")
    assert res["n_structures"] == 7 and res["seeds"] == [0]
    assert len(list((tmp_path / "files").glob("*.extxyz"))) == 7 * 3
    spg = res["spglib"]
    assert list(spg) == ["0.1", "0.01", "0.001", "1e-05"]
    assert all(spg[s]["pristine"] == 1.0 for s in spg)  # the parent space group is what the files hold
    assert spg["1e-05"]["vacancies"]["0.25"] == 0.0
    for name in ("convnet", "convnet_augmented"):
        assert set(res[name]) == {"pristine", "displacement", "vacancies"}
        assert set(res["unknown_rate"][name]["vacancies"]) == {"0.25"}
    for block, bounds in [(res[m], res["intervals"][m]) for m in ("convnet", "convnet_augmented")] + [
            (spg[s], res["intervals"]["spglib"][s]) for s in spg]:
        for kind, value in block.items():
            pairs = [(value, bounds[kind])] if kind == "pristine" else [(v, bounds[kind][k]) for k, v in value.items()]
            for acc, (lo, hi) in pairs:
                assert lo <= acc <= hi and hi - lo > 0.2  # n = 7: wide intervals
    assert res["convnet_augmented"]["pristine"] >= 6 / 7
    assert res["convnet"] == res["convnet_augmented"]  # one model, one CLI run
    details = json.loads((out / "table1_file_path_details.json").read_text())
    assert details["n_files"] == 21 and details["n_structures_spglib"] == 7
    assert details["convnet"]["convnet_augmented"]["pristine"]["n_failed"] == 0
    assert details["models"]["convnet_augmented"]["sha256"]
