"""Prototypes: intended space groups, conventional cells, special points, AFLOW library agreement."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from crystaljax.structures import prototypes as P
from crystaljax.structures import symmetry

REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "prototypes"  # see tests/data/README.md
CONVENTIONAL_ATOMS = {
    "A_cP1_221_a": 1, "A_cF4_225_a": 4, "A_cI2_229_a": 2, "A_cF8_227_a": 8,
    "A_hP2_194_c": 2, "A_hP4_194_ac": 4, "A_hR1_166_a": 3, "A_hR2_166_c": 6, "A_hR3_166_ac": 9,
    "A_tI2_139_a": 2, "A_tI4_141_a": 4,
}


def sg(atoms, symprec=1e-3):
    return symmetry.spacegroup_number(atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers, symprec)


def test_classes_and_prototype_table():
    assert P.CLASSES == ("bct_139", "bct_141", "hex/rh", "sc", "fcc", "diam", "bcc")
    assert set(P.PROTOTYPES) == set(CONVENTIONAL_ATOMS)
    for name, proto in P.PROTOTYPES.items():
        assert P.SPACEGROUP_CLASS[proto.spacegroup] == proto.cls
        assert P.CLASSES[proto.label] == proto.cls
        assert f"_{proto.spacegroup}_" in name


@pytest.mark.parametrize("name", sorted(CONVENTIONAL_ATOMS))
def test_default_build_has_intended_spacegroup(name):
    proto = P.PROTOTYPES[name]
    atoms = P.build(name, proto.example[0])
    assert len(atoms) == CONVENTIONAL_ATOMS[name]
    assert atoms.pbc.all()
    precs = (1e-3, 1e-6) if proto.spacegroup in (166, 194) else (1e-3, 1e-6, 1e-9)
    assert [sg(atoms, s) for s in precs] == [proto.spacegroup] * len(precs)
    # default scale: nearest-neighbour distance of the element
    assert P._min_distance(atoms) == pytest.approx(P.nn_distance(proto.example[0]), rel=1e-9)
    # explicit lattice constant
    atoms = P.build(name, "Cu", a=4.0)
    assert np.linalg.norm(atoms.cell[0]) == pytest.approx(4.0)
    assert set(atoms.numbers) == {29}


def test_bcc_body_centre_tag():
    atoms = P.build("A_cI2_229_a", "Fe", a=2.87)
    frac = atoms.get_scaled_positions()
    tags = atoms.get_tags()
    assert list(tags) == [0, 1]
    assert np.allclose(frac[tags == 1], 0.5)
    for name in P.PROTOTYPES:
        if name != "A_cI2_229_a":
            assert not P.build(name, "Fe").get_tags().any()


def test_free_parameters_change_the_cell():
    atoms = P.build("A_hR2_166_c", "Bi", a=4.5, params={"c/a": 2.6, "x": 0.234})
    assert atoms.cell[2, 2] == pytest.approx(4.5 * 2.6)
    assert sorted(np.round(atoms.get_scaled_positions()[:, 2], 6))[:2] == pytest.approx([0.099333, 0.234])
    same = P.build("A_hR2_166_c", "Bi", a=4.5, params=[2.6, 0.234])
    assert np.allclose(same.positions, atoms.positions)
    with pytest.raises(ValueError, match="free parameters"):
        P.build("A_cF4_225_a", "Cu", params={"c/a": 1.2})
    with pytest.raises(ValueError, match="takes 2 free parameters"):
        P.build("A_hR2_166_c", "Bi", params=[2.6])


def test_bad_names_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="A_xx_999"):
        P.build("A_xx_999", "Cu")
    with pytest.raises(ValueError, match="Qq"):
        P.build("A_cF4_225_a", "Qq")
    with pytest.raises(ValueError, match="'X'"):
        P.build("A_cF4_225_a", "X")
    with pytest.raises(ValueError, match="0"):
        P.build("A_cF4_225_a", 0)


def test_rhombohedral_path_special_points():
    assert sg(P.rhombohedral_path(math.sqrt(3 / 8)), 1e-5) == 229
    assert sg(P.rhombohedral_path(math.sqrt(3 / 2)), 1e-5) == 221
    assert sg(P.rhombohedral_path(math.sqrt(6)), 1e-5) == 225
    for mu in (0.7, 1.0, 1.6, 2.0, 3.0):
        assert sg(P.rhombohedral_path(mu, "Bi"), 1e-5) == 166
    # alpha <-> mu: 109.47 / 90 / 60 degrees
    assert P.hr_alpha(P.MU_BCC) == pytest.approx(math.degrees(math.acos(-1 / 3)))
    assert P.hr_alpha(P.MU_SC) == pytest.approx(90.0)
    assert P.hr_alpha(P.MU_FCC) == pytest.approx(60.0)
    for alpha in (55.0, 75.0, 100.0):
        assert P.hr_alpha(P.hr_c_over_a(alpha)) == pytest.approx(alpha)
    # fixed nearest-neighbour distance along the path
    assert P._min_distance(P.rhombohedral_path(0.9, nn=2.5)) == pytest.approx(2.5)
    # the path's rhombohedral angle agrees with the primitive cell's
    atoms = P.rhombohedral_path(1.1)
    prim = symmetry.standardize(atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers, symprec=1e-5,
                                to_primitive=True, no_idealize=True)
    a1, a2 = prim[0][0], prim[0][1]
    cosang = a1 @ a2 / np.linalg.norm(a1) / np.linalg.norm(a2)
    assert math.degrees(math.acos(cosang)) == pytest.approx(atoms.info["alpha"], abs=1e-6)


@pytest.mark.parametrize("name", [n for n, p in P.PROTOTYPES.items() if p.windows])
def test_window_centres_really_gain_symmetry(name):
    """Every rejected window is centred on a point where the prototype is no longer its space group."""
    proto = P.PROTOTYPES[name]
    for window in proto.windows:
        params = dict(proto.defaults)
        for key, value in window.centre.items():
            if key == "alpha":
                params["c/a"] = P.hr_c_over_a(value)
            else:
                params[key] = value
        assert window.contains(params)
        assert sg(P.build(name, "Cu", params=params), 1e-5) != proto.spacegroup, window.reason


def test_known_transitions():
    assert sg(P.build("A_tI2_139_a", "In", params={"c/a": 1.0})) == 229
    assert sg(P.build("A_tI2_139_a", "In", params={"c/a": math.sqrt(2)})) == 225
    assert sg(P.build("A_tI4_141_a", "Sn", params={"c/a": math.sqrt(2)})) == 227
    assert sg(P.build("A_hR2_166_c", "As", params={"c/a": math.sqrt(6), "x": 0.25})) == 221
    assert sg(P.build("A_hR2_166_c", "C", params={"c/a": math.sqrt(6), "x": 0.125})) == 227


def _conventional_lengths(cell, frac, numbers):
    std = symmetry.standardize(cell, frac, numbers, symprec=1e-5)
    lengths = np.linalg.norm(std[0], axis=1)
    return np.sort(lengths), len(std[2])


def _reference_files():
    out = []
    for path in sorted(REFERENCE_DIR.glob("*/*.in")):
        header = path.read_text().splitlines()[0]
        m = re.search(r"(A_[A-Za-z0-9]+_\d+_[a-z]+)(?:\.A)? params=([-\d.,e]+)", header)
        if m and m.group(1) in P.PROTOTYPES:
            out.append((path, m.group(1), [float(v) for v in m.group(2).split(",")]))
    return out


def test_builds_reproduce_aflow_library_structures():
    """Our conventional cells at the library parameters are the library structures (given as primitive cells)."""
    import ase.io

    files = _reference_files()
    assert {name for _, name, _ in files} == set(P.PROTOTYPES)
    for path, name, values in files:
        ref = ase.io.read(path, format="aims")
        proto = P.PROTOTYPES[name]
        element = ref.get_chemical_symbols()[0]
        atoms = P.build(name, element, a=values[0], params=values[1:])
        assert sg(ref, 1e-5) == sg(atoms, 1e-5) == proto.spacegroup, path.name
        ref_len, ref_n = _conventional_lengths(ref.cell.array, ref.get_scaled_positions(), ref.numbers)
        our_len, our_n = _conventional_lengths(atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
        assert ref_n == our_n == len(atoms), path.name
        assert np.allclose(ref_len, our_len, atol=1e-6), path.name
        assert len(ref) * abs(np.linalg.det(atoms.cell)) == pytest.approx(len(atoms) * ref.get_volume())
        # same nearest-neighbour distance (positions, not just the lattice)
        assert P._min_distance(atoms) == pytest.approx(P._min_distance(ref), rel=1e-6), path.name
        # the library's examples are what the data set excludes
        assert any(r[0] == name and r[1] == element and r[2] == pytest.approx(values[0]) for r in P.REFERENCES)
