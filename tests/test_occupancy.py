"""Partial and mixed CIF site occupancies: random draws (crystaljax.structures.occupancy) and the classify CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from crystaljax.cli import main
from crystaljax.structures.io import read_structures
from crystaljax.structures.occupancy import draws, partial_sites

ROOT = Path(__file__).resolve().parents[1]
CU_FCC = ROOT / "crystaljax" / "examples" / "Cu_fcc.cif"


def _cif(path: Path, sites, a=3.615, group=("F m -3 m", 225)) -> Path:
    """A cubic CIF with ``sites`` [(label, symbol, (x, y, z), occupancy), ...] in space group ``group``."""
    rows = "\n".join(f"{label} {sym} {x} {y} {z} {occ}" for label, sym, (x, y, z), occ in sites)
    path.write_text(f"""data_test
_cell_length_a {a}
_cell_length_b {a}
_cell_length_c {a}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M '{group[0]}'
_symmetry_Int_Tables_number {group[1]}
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
{rows}
""")
    return path


def _read(path):
    (atoms,) = read_structures(path)
    return atoms


def test_half_occupied_fcc_site_gives_half_the_atoms(tmp_path):
    atoms = _read(_cif(tmp_path / "cu.cif", [("Cu1", "Cu", (0, 0, 0), 0.5)]))
    assert len(atoms) == 4 and partial_sites(atoms) == 1  # ASE expanded Fm-3m: 4 atoms of one site, all Cu
    configs = draws(atoms, 40, seed=0)
    boxes = {round(float(c.cell.volume), 6) for c in configs}
    assert len(boxes) == 1  # every draw lives in the same (repeated) box
    n_sites = round(boxes.pop() / atoms.cell.volume) * len(atoms)
    assert n_sites >= 500  # repeated to ~DRAW_SITES sites: vacancies are not one small cell repeated
    counts = np.array([len(c) for c in configs])
    # Binomial(n_sites, 1/2) per draw: the mean of 40 draws has sd sqrt(n / 160) ~ 2.5 atoms for n = 1000
    assert abs(counts.mean() / n_sites - 0.5) < 0.015
    assert counts.std() > 0  # really random, not a fixed half
    assert all(set(c.get_chemical_symbols()) == {"Cu"} and "occupancy" not in c.info for c in configs)


def test_mixed_site_fractions_and_untouched_full_site(tmp_path):
    # CsCl-type cell: a full Cs site, a mixed Cu/Au site and, for the vacancy, Fe at 0.7 on a third site
    sites = [("Cs1", "Cs", (0, 0, 0), 1.0), ("Cu1", "Cu", (0.5, 0.5, 0.5), 0.5), ("Au1", "Au", (0.5, 0.5, 0.5), 0.5),
             ("Fe1", "Fe", (0.5, 0, 0), 0.7)]
    atoms = _read(_cif(tmp_path / "mix.cif", sites, a=4.2, group=("P m -3 m", 221)))
    assert partial_sites(atoms) == 2  # the Cu/Au site and the Fe site; Cs is full
    totals = {"Cs": 0, "Cu": 0, "Au": 0, "Fe": 0}
    configs = draws(atoms, 20, seed=3)
    for c in configs:
        n_cells = round(c.cell.volume / atoms.cell.volume)
        symbols = np.array(c.get_chemical_symbols())
        assert (symbols == "Cs").sum() == n_cells  # full single-species sites are never touched
        assert ((symbols == "Cu") | (symbols == "Au")).sum() == n_cells  # a mixed site is never empty
        for s in totals:
            totals[s] += int((symbols == s).sum())
    per_site = n_cells * len(configs)
    assert totals["Cu"] / per_site == pytest.approx(0.5, abs=0.03)
    assert totals["Fe"] / (3 * per_site) == pytest.approx(0.7, abs=0.03)  # Fe on 3d: 3 sites per cell


def test_draws_reproduce_from_the_seed(tmp_path):
    atoms = _read(_cif(tmp_path / "cu.cif", [("Cu1", "Cu", (0, 0, 0), 0.5), ("Au1", "Au", (0, 0, 0), 0.3)]))
    a, b, c = draws(atoms, 3, seed=7), draws(atoms, 3, seed=7), draws(atoms, 3, seed=8)
    assert all(np.array_equal(x.numbers, y.numbers) and np.allclose(x.positions, y.positions) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.array_equal(x.numbers, y.numbers) for x, y in zip(a, c))


def test_fully_occupied_cif_has_no_draws():
    atoms = _read(CU_FCC)
    assert partial_sites(atoms) == 0 and draws(atoms, 8, seed=0) == []


def test_cli_averages_draws_of_a_partially_occupied_fcc_cif(tmp_path, capsys):
    path = _cif(tmp_path / "cu90.cif", [("Cu1", "Cu", (0, 0, 0), 0.9)])
    assert main(["classify", "--json", "--quiet", "--mc-samples", "4", str(path), str(CU_FCC)]) == 0
    out, err = capsys.readouterr()
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {path} has partial occupancies (1 site); averaged over 8 random draws"]
    partial, full = json.loads(out)
    assert partial["file"] == str(path) and partial["label"] == "fcc" and partial["occupancy_draws"] == 8
    assert "occupancy_draws" not in full and "item" not in full
    p = np.array(list(partial["probabilities"].values()))
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    u = partial["uncertainty"]
    assert u["entropy"] == pytest.approx(-np.sum(p[p > 0] * np.log(p[p > 0])), abs=1e-6)
    assert 0.0 <= u["mutual_information"] <= u["entropy"]
