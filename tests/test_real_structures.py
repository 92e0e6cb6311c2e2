"""Builders of the real-structure benchmark (benchmarks/bench_real_structures.py): labels agree with spglib,
supercells have ~250 atoms, balls are finite, written files read back with the same atoms; no CLI run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_real_structures.py"
_spec = importlib.util.spec_from_file_location("bench_real_structures", _PATH)
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)


@pytest.fixture(scope="module")
def in_class():
    return B.in_class_elements()


def test_in_class_labels_are_spglib_groups(in_class):
    from crystaljax.structures.prototypes import SPACEGROUP_CLASS

    entries, notes = in_class
    by = {e["element"]: e for e in entries}
    # the table's ground states: fcc Cu, bcc Fe, hcp Mg, diamond Si, sc Po, bct In / Pa, beta-Sn, A7 Bi, alpha-Sm
    expected = {"Cu": 225, "Fe": 229, "Mg": 194, "Si": 227, "Po": 221, "In": 139, "Pa": 139, "Sn": 141, "Bi": 166,
                "Sm": 166}
    assert {el: by[el]["spacegroup"] for el in expected} == expected
    assert all(e["label"] == SPACEGROUP_CLASS[B.spacegroup(e["atoms"])] for e in entries)
    assert len(entries) >= 65 and {"Se", "Te"}.isdisjoint(by)  # P3_121 chains are not in class
    assert {e["label"] for e in entries} == set(SPACEGROUP_CLASS.values())


def test_representations_keep_the_group_and_sizes(in_class):
    entries, _ = in_class
    rng = np.random.default_rng(0)
    for e in [x for x in entries if x["element"] in ("Cu", "Mg", "Sn", "Sm", "Pa")]:
        reps = B.representations(e["atoms"], rng)
        for rep in ("cif", "poscar", "supercell"):
            assert B.spacegroup(reps[rep]) == e["spacegroup"], (e["element"], rep)
        assert 200 <= len(reps["supercell"]) <= 320, (e["element"], len(reps["supercell"]))
        assert len(reps["poscar"]) == len(e["atoms"]) and len(reps["cif"]) >= len(reps["poscar"])
        assert not reps["ball"].pbc.any() and 250 <= len(reps["ball"]) <= 350
        # the ball is a rigid copy of shells: its shortest distance is the crystal's
        d = np.linalg.norm(reps["ball"].positions[:, None] - reps["ball"].positions[None], axis=-1)
        d_cell = reps["supercell"].get_all_distances(mic=True)
        assert np.isclose(d[d > 0].min(), d_cell[d_cell > 0].min(), rtol=1e-6)


def test_out_of_scope_groups_and_held_out_compounds():
    from crystaljax.structures.out_of_scope import _COMPOUND_PAIRS
    from crystaljax.structures.prototypes import SPACEGROUP_CLASS

    entries, _ = B.out_of_scope_elements()
    groups = {e["element"]: e["spacegroup"] for e in entries}
    assert groups["Ga"] == 64 and groups["U"] == 63 and groups["Mn"] == 217 and groups["Te"] == 152
    assert not set(groups.values()) & set(SPACEGROUP_CLASS)
    # the table's lattice lengths are the ones used (alpha-U: a 2.85, b/a 1.736, c/a 2.056)
    assert np.allclose(sorted(next(e for e in entries if e["element"] == "U")["cell_lengths"]),
                       sorted([2.85, 2.85 * 1.736, 2.85 * 2.056]), atol=1e-3)
    used = {frozenset(p[:2]) for pairs in _COMPOUND_PAIRS.values() for p in pairs}
    comps = B.compounds()
    assert all(frozenset(c["atoms"].get_chemical_symbols()) not in used for c in comps)
    assert {c["spacegroup"] for c in comps} == {225, 221, 216, 186}


def test_defects_and_file_round_trip(tmp_path, in_class):
    from ase.io import read

    entries, _ = in_class
    cu = next(e for e in entries if e["element"] == "Cu")
    rng = np.random.default_rng(1)
    reps = B.representations(cu["atoms"], rng)
    sub = B.defective(reps["supercell"], 0.0, 0.0, 0.25, rng)
    assert sub.get_chemical_symbols().count("Ag") == round(0.25 * len(sub))
    vac = B.defective(reps["supercell"], 0.06, 0.4, 0.0, rng)
    assert len(vac) == len(reps["supercell"]) - round(0.4 * len(reps["supercell"]))
    items = [{"atoms": a, "group": rep, "element": "Cu", "representation": rep} for rep, a in reps.items()]
    items.append({"atoms": vac, "group": "vacancies", "element": "Cu", "representation": "supercell"})
    files = B.write_files(items, tmp_path)
    assert len(files) == 5
    for it in items:
        back = read(it["file"], index=it["frame"])
        assert back.get_chemical_symbols() == it["atoms"].get_chemical_symbols()
        assert np.allclose(back.positions, it["atoms"].positions, atol=1e-4)
        assert bool(back.pbc.any()) == (it["representation"] != "ball")


def test_auroc_rank_formula():
    assert B.auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert B.auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert B.auroc([0.5, 0.5], [0.5]) == 0.5
    assert np.isclose(B.auroc([0.1, 0.3, 0.5], [0.2, 0.4]), 3 / 6)


def test_evaluate_counts_confident_errors_and_unknowns():
    def item(label, category, rep="cif", defect="pristine"):
        return {"element": "X", "representation": rep, "defect": defect, "label": label, "category": category,
                "kind": "k", "file": "f", "frame": len(items)}

    def row(it, label, p, unknown, mi=0.0):
        probs = {"fcc": p if label == "fcc" else 1 - p, "bcc": p if label == "bcc" else 1 - p}
        return {"file": "f", "frame": it["frame"], "label": label, "probabilities": probs, "unknown": unknown,
                "unknown_reason": "low confidence" if unknown else None, "uncertainty": {"mutual_information": mi}}

    items, rows = [], []
    for label, cat, got, p, unk in (("fcc", "in-class pristine", "fcc", 0.99, False),
                                    ("fcc", "in-class pristine", "bcc", 0.95, False),   # confident error
                                    ("bcc", "in-class pristine", "fcc", 0.95, True),    # wrong but flagged
                                    (None, "compound", "fcc", 0.97, False),             # confidently accepted
                                    (None, "compound", "bcc", 0.60, True)):
        items.append(item(label, cat))
        rows.append(row(items[-1], got, p, unk))
    out = B.evaluate(items, rows)
    assert out["accuracy_in_class_pristine"] == round(1 / 3, 4)
    assert out["confident_errors_in_class"] == 1 and out["confident_accepted_out_of_scope"] == 1
    assert out["unknown_rate"]["compound"] == 0.5 and out["unknown_rate"]["in-class pristine"] == round(1 / 3, 4)
    # 1 - max p: in-class {0.01, 0.05, 0.05} vs compounds {0.03, 0.40}: pairs won 0.5 * 3/3 + 0.5 * 1/3
    assert np.isclose(out["auroc"]["1-max_p"]["compound"], round(2 / 3, 4))
