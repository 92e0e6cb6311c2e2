"""Reading and validating structures: typed one-line errors, formats, the shipped prototype files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
import ase.io

from crystaljax.errors import CrystalJaxError, InputFileError, StructureError
from crystaljax.structures.io import is_periodic, read_structures, validate

PROTOTYPE_DIR = Path(__file__).resolve().parent / "data" / "prototypes"  # see tests/data/README.md
PROTOTYPES = sorted(PROTOTYPE_DIR.glob("*/*.in"))
EXAMPLES = Path(__file__).resolve().parents[1] / "crystaljax" / "examples"


def _one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# ----------------------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path):
    p = tmp_path / "nope.cif"
    with pytest.raises(InputFileError) as e:
        read_structures(p)
    _one_line(e, "nope.cif", "no such file")
    assert isinstance(e.value, CrystalJaxError)


def test_garbage_file(tmp_path):
    p = tmp_path / "garbage.xyz"
    p.write_text("hello world\nthis is not\n a structure\n")
    with pytest.raises(InputFileError) as e:
        read_structures(p)
    _one_line(e, "garbage.xyz")


def test_unknown_format(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("some notes\nmore notes\n")
    with pytest.raises(InputFileError) as e:
        read_structures(p)
    _one_line(e, "notes.txt")


def test_empty_file_and_directory(tmp_path):
    p = tmp_path / "empty.cif"
    p.write_text("")
    with pytest.raises(InputFileError) as e:
        read_structures(p)
    _one_line(e, "empty.cif", "empty")
    with pytest.raises(InputFileError):
        read_structures(tmp_path)


def test_bad_frame_in_file_names_file(tmp_path):
    p = tmp_path / "lonely.xyz"
    ase.io.write(p, Atoms("Cu", positions=[[0, 0, 0]]))
    with pytest.raises(StructureError) as e:
        read_structures(p)
    _one_line(e, "lonely.xyz", "single atom")


# ----------------------------------------------------------------------------------------- validate


def _ok_cluster():
    return Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: Atoms(), "no atoms"),
        (lambda: Atoms(cell=np.eye(3) * 3, pbc=True), "no atoms"),
        (lambda: Atoms("Cu", positions=[[0, 0, 0]]), "single atom"),
        (lambda: Atoms("Cu", positions=[[0, 0, 0]], cell=np.eye(3) * 3, pbc=[True, True, False]), "single atom"),
        (lambda: Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "NaN"),
        (lambda: Atoms("Cu2", positions=[[0, 0, 0], [np.inf, 0, 0]]), "NaN or inf"),
        (lambda: Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 1]], cell=np.diag([3, 3, np.nan]), pbc=True), "cell"),
        (lambda: Atoms(numbers=[0, 29], positions=[[0, 0, 0], [2, 0, 0]]), "atomic number 0"),
        (lambda: Atoms(numbers=[29, 118], positions=[[0, 0, 0], [2, 0, 0]]), "atomic number 118"),
        (lambda: Atoms(numbers=[29, 97], positions=[[0, 0, 0], [2, 0, 0]]), "atomic number 97"),
        (lambda: Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 0]], cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True),
         "zero volume"),
        (lambda: Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 0]], cell=np.diag([3, 3, 1e-8]), pbc=True), "zero volume"),
        (lambda: Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 0]], pbc=True), "no cell"),
        (lambda: Atoms("Cu3", positions=[[0, 0, 0], [2, 0, 0], [2, 0, 1e-4]]), "overlapping"),
        # an atom sitting on its neighbour's periodic image
        (lambda: Atoms("Cu2", positions=[[0, 0, 0], [3.0 - 1e-5, 0, 0]], cell=np.eye(3) * 3, pbc=True),
         "overlapping"),
    ],
)
def test_validate_rejects(make, needle):
    with pytest.raises(StructureError) as e:
        validate(make(), source="input.xyz")
    msg = _one_line(e, needle)
    assert msg.startswith("input.xyz: ")


@pytest.mark.parametrize(
    "atoms",
    [
        Atoms("Po", positions=[[0, 0, 0]], cell=np.eye(3) * 3.35, pbc=True),  # 1-atom periodic cell is fine
        bulk("Fe", "bcc", a=2.87),
        _ok_cluster(),
        Atoms("Cm2", positions=[[0, 0, 0], [3, 0, 0]]),  # Z = 96, the largest supported
        # partial pbc with a missing third vector: treated as a finite structure
        Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]], cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]],
              pbc=[True, True, False]),
    ],
)
def test_validate_accepts_and_returns_same_object(atoms):
    assert validate(atoms) is atoms


def test_is_periodic():
    assert is_periodic(bulk("Cu"))
    slab = bulk("Cu", cubic=True)
    slab.pbc = [True, True, False]
    assert not is_periodic(slab)
    assert not is_periodic(_ok_cluster())


# ----------------------------------------------------------------------------------------- formats


def test_multiframe_extxyz(tmp_path):
    p = tmp_path / "traj.extxyz"
    frames = []
    for i, a in enumerate([3.5, 3.6, 3.7, 3.8]):
        at = bulk("Cu", "fcc", a=a, cubic=True)
        at.info["frame"] = i
        frames.append(at)
    ase.io.write(p, frames, format="extxyz")
    got = read_structures(p)
    assert len(got) == 4
    for i, (g, a) in enumerate(zip(got, [3.5, 3.6, 3.7, 3.8])):
        assert len(g) == 4 and np.allclose(np.diag(g.cell.array), a)
        assert g.info["frame"] == i
    one = read_structures(p, index=2)
    assert len(one) == 1 and np.isclose(one[0].cell[0, 0], 3.7)
    assert len(read_structures(p, index="1:3")) == 2


def test_bad_frame_in_multiframe_names_frame(tmp_path):
    p = tmp_path / "traj.extxyz"
    bad = Atoms("Cu2", positions=[[0, 0, 0], [1e-5, 0, 0]])
    ase.io.write(p, [_ok_cluster(), bad], format="extxyz")
    with pytest.raises(StructureError) as e:
        read_structures(p)
    _one_line(e, "traj.extxyz", "frame 1", "overlapping")


@pytest.mark.parametrize("fmt, name", [("cif", "s.cif"), ("vasp", "POSCAR"), ("extxyz", "s.xyz"),
                                       ("lammps-data", "s.data"), ("aims", "geometry.in")])
def test_roundtrip_formats(tmp_path, fmt, name):
    rng = np.random.default_rng(3)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    p = tmp_path / name
    kwargs = {"masses": True} if fmt == "lammps-data" else {}
    ase.io.write(p, atoms, format=fmt, **kwargs)
    got = read_structures(p, format="lammps-data" if fmt == "lammps-data" else None)
    assert len(got) == 1
    g = got[0]
    assert list(g.numbers) == [29] * 4
    assert np.allclose(g.cell.cellpar(), atoms.cell.cellpar(), atol=1e-4)
    d_in = atoms.get_all_distances(mic=True)
    d_out = g.get_all_distances(mic=True)
    assert np.allclose(np.sort(d_in.ravel()), np.sort(d_out.ravel()), atol=1e-4)


def test_in_suffix_read_as_aims(tmp_path):
    src = PROTOTYPE_DIR / "bcc_W_A_cI2_229_a" / "bcc_W_A_cI2_229_a.in"
    for name in ["geometry.in", "w.in"]:
        shutil.copy(src, tmp_path / name)
        (g,) = read_structures(tmp_path / name)
        assert g.get_chemical_symbols() == ["W"]
        assert np.isclose(g.get_volume(), 3.155**3 / 2)


def test_examples():
    (cu,) = read_structures(EXAMPLES / "Cu_fcc.cif")
    assert cu.get_chemical_formula() == "Cu4" and is_periodic(cu)
    (fe,) = read_structures(EXAMPLES / "Fe_bcc.POSCAR")
    assert fe.get_chemical_formula() == "Fe2" and np.isclose(fe.get_volume(), 2.8665**3)


def test_read_all_prototypes():
    assert len(PROTOTYPES) >= 20
    for path in PROTOTYPES:
        frames = read_structures(path)
        ref = ase.io.read(path, format="aims")
        assert len(frames) == 1, path
        g = frames[0]
        assert is_periodic(g), path
        assert len(g) == len(ref) and len(g) >= 1
        assert np.array_equal(g.numbers, ref.numbers)
        assert np.allclose(g.cell.array, ref.cell.array)
        # the number of atoms is the one written in the AFLOW label, e.g. ..._A_cF4_... -> 4 atoms per
        # conventional cell; the files hold primitive cells, so it must divide it
        label = path.name.split("_")
        pearson = next(t for t in label if t[:2].isalpha() and t[2:].isdigit() and t[0].islower())
        n_conv = int(pearson[2:])
        centring = {"P": 1, "R": 1, "I": 2, "C": 2, "A": 2, "F": 4}[pearson[1]]
        assert len(g) * centring == n_conv, (path, len(g), pearson)


def test_xyz_with_a_header_that_does_not_match_its_columns_falls_back_to_plain_xyz(tmp_path):
    """An extended-XYZ 'Properties' line announcing a column the rows do not have: read as plain XYZ."""
    path = tmp_path / "mismatch.xyz"
    path.write_text('3\n# Properties=species:S:1:pos:R:3:Z:I:1 pbc="F F F"\n'
                    "Fe 0 0 0\nFe 2.5 0 0\nFe 0 2.5 0\n")
    (atoms,) = read_structures(path)
    assert atoms.get_chemical_symbols() == ["Fe"] * 3
    np.testing.assert_allclose(atoms.positions[1], [2.5, 0, 0])
