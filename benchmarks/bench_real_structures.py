"""Held-out evaluation on real structures from measured lattices, through the user's path (files + the CLI).

In-class set: every element whose ground state in ASE's table of measured elemental reference states,
``ase.data.reference_states`` (experimental lattice constants, Kittel / Ashcroft-Mermin / Donohue), is fcc,
bcc, hcp, diamond, sc, bct (In; Pa, listed 'tetragonal' with c/a 0.825, is I4/mmm) or rhombohedral (As, Sb,
Bi, Hg, Sm), built with ``ase.build.bulk`` (Pa: body-centred tetragonal from the table's a, c/a) and labelled by
spglib's space group at symprec 1e-3 (any outside the 8 groups is skipped with a note: Se and Te, listed 'hcp',
are P3_121 chains and join the out-of-scope set instead).  Each is written as a user would hand it over:
conventional CIF, primitive POSCAR, a ~250-atom periodic supercell (extxyz) and a finite ~300-atom ball in a
random orientation (extxyz, no cell); the supercells also at the paper's defect levels (Gaussian
displacements sigma 0.06 Å per component, 40 % and 60 % vacancies, 25 % binary substitution with Cu, or Ag
for Cu hosts), fixed seed.

Out-of-scope set -- stand-ins for structures the model should not claim:
- elements whose table ground state is outside the 8 groups (alpha-Ga, alpha-U, alpha-Mn, I2, alpha-S,
  alpha-Np, T-50 B, Se, Te; alpha-Pu with the library example's lattice, the table giving none): the
  table's lattice lengths with the internal coordinates of the measured example of the same element and
  structure in the AFLOW prototype library (pymatgen's copy), verified with spglib.  NB: the unknown
  thresholds are calibrated on perturbed copies of these same library examples, so this category is *not*
  held out from calibration (Cl, Br, P skipped: no internal coordinates for their table cells);
- H2, N2, O2, F2 as molecular gases (table bond lengths, random centres >= 3.3 Å apart, random orientations,
  periodic box) and He as an atomic gas;
- ordered binary compounds with published lattice constants built with ``ase.build.bulk`` (rock salt,
  CsCl, zincblende, wurtzite, fluorite), none of the pairs in ``out_of_scope._COMPOUND_PAIRS`` (used for
  calibration);
- non-crystalline: random sequential addition with a minimum distance (dense periodic and dilute finite).

Every file is classified by ``crystaljax classify --json --quiet --model M FILES`` (one subprocess per model).
Reported: accuracy per class / representation / defect level (in-class), the rate flagged ``unknown`` per
category, confident errors (wrong label, not unknown, p >= 0.9; for out-of-scope: accepted with p >= 0.9),
AUROC (rank formula) of 1 - max p and of the MC mutual information between in-class pristine and each
out-of-scope category.  ``--write-docs PATH`` writes the provenance and result tables as markdown.

    python benchmarks/bench_real_structures.py [--models default,pristine] [--seed 0]
        [--write-docs docs/REAL_STRUCTURES.md] [--keep DIR]

The last line printed is JSON with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SYMPREC = 1e-3
IN_CLASS_SYMMETRIES = ("fcc", "bcc", "hcp", "diamond", "sc", "bct", "rhombohedral")
REPRESENTATIONS = ("cif", "poscar", "supercell", "ball")
DEFECTS = {  # name -> (sigma Å, vacancy fraction, substitution fraction)
    "sigma_0.06A": (0.06, 0.0, 0.0), "vacancies_40%": (0.0, 0.4, 0.0), "vacancies_60%": (0.0, 0.6, 0.0),
    "substitution_25%": (0.0, 0.0, 0.25),
}
CONFIDENT = 0.9
#: Out-of-scope elements of the table: symbol -> AFLOW library entry with that element's measured internal
#: coordinates (the table's lattice lengths replace the example's, matched by sorted length).
OOS_LIBRARY = {"Ga": "A_oC8_64_f-Ga", "U": "A_oC4_63_c-U", "Mn": "A_cI58_217_ac2g-Mn", "I": "A_oC8_64_f-I",
               "S": "A_oF128_70_4h-S", "Np": "A_oP8_62_2c-Np", "B": "A_tP50_134_b2m2n-B",
               "Pu": "A_mP16_11_8e-Pu", "Se": "A_hP3_152_a-Se", "Te": "A_hP3_152_a-Se"}
#: Te's chain coordinate x of 3a in P3_121 (Adenis, Langer & Lindqvist 1989); Se's is the library's.
TE_X = 0.2636
#: Held-out ordered compounds: (kind, formula for ase.build.bulk, a Å, extra kwargs); published room-temperature
#: lattice constants, none of them in out_of_scope._COMPOUND_PAIRS.
COMPOUNDS = (
    ("rocksalt", "KCl", 6.29, {}), ("rocksalt", "RbCl", 6.58, {}), ("rocksalt", "NaF", 4.63, {}),
    ("rocksalt", "LiCl", 5.13, {}), ("rocksalt", "AgBr", 5.77, {}), ("rocksalt", "NiO", 4.18, {}),
    ("rocksalt", "PbTe", 6.46, {}),
    ("cesiumchloride", "CsI", 4.57, {}), ("cesiumchloride", "TlCl", 3.84, {}), ("cesiumchloride", "CoAl", 2.86, {}),
    ("zincblende", "GaP", 5.45, {}), ("zincblende", "InAs", 6.06, {}), ("zincblende", "ZnSe", 5.67, {}),
    ("zincblende", "GaSb", 6.10, {}), ("zincblende", "InSb", 6.48, {}), ("zincblende", "CuBr", 5.69, {}),
    ("wurtzite", "CdSe", 4.30, {"c": 7.01, "u": 0.377}),
    ("fluorite", "SrCl2", 6.98, {}), ("fluorite", "PbF2", 5.94, {}), ("fluorite", "OLi2", 4.61, {}),
    ("fluorite", "SiMg2", 6.35, {}),
)
OOS_CATEGORIES = ("out-of-scope elemental", "molecular/atomic gas", "compound", "non-crystalline")


def spacegroup(atoms) -> int | None:
    """spglib's space-group number of a periodic ``atoms`` at :data:`SYMPREC`."""
    from crystaljax.structures.symmetry import spacegroup_number

    return spacegroup_number(atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers, SYMPREC)


def _standard(atoms, primitive: bool):
    """spglib's standard conventional (or primitive) cell of ``atoms`` as ase.Atoms."""
    from ase import Atoms

    from crystaljax.structures.symmetry import standardize

    lat, frac, num = standardize(atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers, SYMPREC,
                                 to_primitive=primitive)
    return Atoms(numbers=num, scaled_positions=frac, cell=lat, pbc=True)


def _entry(symbol: str, state: dict, atoms, source: str) -> dict:
    lengths = np.round(atoms.cell.cellpar()[:3], 4).tolist()
    params = {k: (round(float(v), 4) if np.isscalar(v) else np.round(np.asarray(v, float), 4).tolist())
              for k, v in state.items() if k != "symmetry" and v is not None}
    return {"element": symbol, "symmetry": state.get("symmetry", ""), "table": params, "cell_lengths": lengths,
            "source": source, "atoms": atoms}


def in_class_elements() -> tuple[list[dict], list[str]]:
    """([{element, symmetry, table, cell_lengths, source, atoms, spacegroup, label}], notes) of every table
    element with an in-class ground state, labelled by spglib's group at :data:`SYMPREC`."""
    from ase.build import bulk
    from ase.data import chemical_symbols, reference_states

    from crystaljax.structures.prototypes import SPACEGROUP_CLASS

    out, notes = [], []
    for z, state in enumerate(reference_states):
        if state is None:
            continue
        sym, symbol = state["symmetry"], chemical_symbols[z]
        if symbol == "Pa":  # listed 'tetragonal': body-centred, one atom (I4/mmm)
            atoms = bulk(symbol, "bct", a=state["a"], c=state["a"] * state["c/a"])
        elif sym in IN_CLASS_SYMMETRIES:
            try:
                atoms = bulk(symbol)
            except (ValueError, RuntimeError, NotImplementedError) as e:
                notes.append(f"{symbol} ({sym}): not built by ase.build.bulk ({e}); see the out-of-scope set")
                continue
        else:
            continue
        sg = spacegroup(atoms)
        if sg not in SPACEGROUP_CLASS:
            notes.append(f"{symbol} ({sym}): spglib group {sg} is not one of the 8; skipped")
            continue
        e = _entry(symbol, state, atoms, "ase.data.reference_states via ase.build.bulk")
        e.update(spacegroup=sg, label=SPACEGROUP_CLASS[sg])
        out.append(e)
    return out, notes


def _from_library(symbol: str, state: dict):
    """The table's lattice lengths on the library example's cell (axes matched by sorted length) with the
    example's internal coordinates; None when the table gives no lengths (the example's are kept)."""
    from ase import Atoms

    from crystaljax.structures.aflow_library import get_entry

    entry = get_entry(OOS_LIBRARY[symbol])
    cell, frac = np.asarray(entry.cell, float), np.asarray(entry.frac, float).copy()
    if symbol == "Te":  # P3_121 3a: (x, 0, 1/3), (0, x, 2/3), (-x, -x, 0)
        frac = np.array([[TE_X, 0, 1 / 3], [0, TE_X, 2 / 3], [-TE_X, -TE_X, 0]]) % 1.0
    if "a" in state:
        a = state["a"]
        if state["symmetry"] == "hcp":
            cell = cell * np.array([a, a, a * state["c/a"]])[:, None] / np.linalg.norm(cell, axis=1)[:, None]
        else:
            want = np.sort([a, a * state.get("b/a", 1.0), a * state.get("c/a", 1.0)])
            if state["symmetry"] == "tetragonal":  # a, a, c
                want = np.sort([a, a, a * state["c/a"]])
            have = np.linalg.norm(cell, axis=1)
            scale = np.empty(3)
            scale[np.argsort(have, kind="stable")] = want
            cell = cell * (scale / have)[:, None]
    return Atoms(symbols=[symbol] * len(frac), scaled_positions=frac, cell=cell, pbc=True), entry


def out_of_scope_elements() -> tuple[list[dict], list[str]]:
    """Crystalline out-of-scope elements of the table (see the module docstring), spglib-checked."""
    from ase.data import atomic_numbers, reference_states

    out, notes = [], []
    for symbol in OOS_LIBRARY:
        state = reference_states[atomic_numbers[symbol]]
        atoms, entry = _from_library(symbol, state)
        sg = spacegroup(atoms)
        if sg != entry.spacegroup:
            notes.append(f"{symbol}: spglib group {sg} != {entry.spacegroup} of {entry.name}; skipped")
            continue
        src = (f"ase.data.reference_states lengths + internal coordinates of AFLOW {entry.label}"
               if "a" in state else f"AFLOW {entry.label} (measured example; the table gives no lattice)")
        e = _entry(symbol, state, atoms, src + (f", x = {TE_X}" if symbol == "Te" else ""))
        e.update(spacegroup=sg, category="out-of-scope elemental", kind=entry.label)
        out.append(e)
    for symbol in ("Cl", "Br", "P"):
        notes.append(f"{symbol} ({reference_states[atomic_numbers[symbol]]['symmetry']}): no internal "
                     "coordinates in the table; not built")
    return out, notes


def molecular_gases(rng: np.random.Generator, n_atoms: int = 250) -> list[dict]:
    """H2, N2, O2, F2 (table bond length d) as periodic molecular gases of n_atoms/2 randomly oriented
    molecules with centres >= 3.3 Å apart at ~10 % packing of 3.3 Å spheres (``out_of_scope.dimer_gas``); He as
    an atomic gas."""
    from ase import Atoms
    from ase.data import atomic_numbers, reference_states

    from crystaljax.structures.out_of_scope import _rsa, dimer_gas

    out = []
    for symbol in ("H", "N", "O", "F", "He"):
        state = reference_states[atomic_numbers[symbol]]
        if state["symmetry"] == "diatom":
            atoms = dimer_gas(rng, symbol, state["d"], n_molecules=n_atoms // 2)
        else:
            box = (n_atoms * np.pi / 6 * 3.3 ** 3 / 0.10) ** (1 / 3)
            atoms = Atoms([symbol] * n_atoms, positions=_rsa(rng, n_atoms, box, 3.3), cell=[box] * 3, pbc=True)
        e = _entry(symbol, state, atoms, "ase.data.reference_states (bond length)" if "d" in state else "random")
        e.update(category="molecular/atomic gas", kind=f"{state['symmetry']} gas")
        out.append(e)
    return out


def compounds() -> list[dict]:
    """The held-out ordered compounds of :data:`COMPOUNDS` (ase.build.bulk, primitive cells)."""
    from ase.build import bulk

    from crystaljax.structures.out_of_scope import _COMPOUND_PAIRS

    used = {frozenset(p[:2]) for pairs in _COMPOUND_PAIRS.values() for p in pairs}
    out = []
    for kind, formula, a, kw in COMPOUNDS:
        atoms = bulk(formula, kind, a=a, **kw)
        assert frozenset(atoms.get_chemical_symbols()) not in used, f"{formula} is a calibration pair"
        out.append({"element": formula, "symmetry": kind, "table": {"a": a, **kw},
                    "cell_lengths": np.round(atoms.cell.cellpar()[:3], 4).tolist(),
                    "source": "published lattice constant (room temperature)", "atoms": atoms,
                    "spacegroup": spacegroup(atoms), "category": "compound", "kind": kind})
    return out


def non_crystalline(rng: np.random.Generator, n_atoms: int = 250) -> list[dict]:
    """Random sequential addition: dense periodic (packing ~0.30, d_min = the element's table d_NN) and
    dilute finite (packing 0.08) gases of Cu, Fe and Si; stand-ins for amorphous / gas structures."""
    from ase import Atoms
    from ase.build import bulk

    from crystaljax.structures.io import nearest_neighbour_distances
    from crystaljax.structures.out_of_scope import _rsa

    out = []
    for symbol in ("Cu", "Fe", "Si"):
        d = float(np.min(nearest_neighbour_distances(bulk(symbol))))
        for kind, packing, periodic in (("dense random", 0.30, True), ("dilute gas", 0.08, False)):
            box = (n_atoms * np.pi / 6 * d ** 3 / packing) ** (1 / 3)
            pos = _rsa(rng, n_atoms, box, d)
            atoms = Atoms([symbol] * len(pos), positions=pos, cell=[box] * 3 if periodic else None, pbc=periodic)
            out.append({"element": symbol, "symmetry": kind, "table": {"d_min": round(d, 3), "packing": packing},
                        "cell_lengths": [round(box, 3)] * 3, "source": "random positions", "atoms": atoms,
                        "spacegroup": None, "category": "non-crystalline", "kind": kind})
    return out


def supercell(atoms, target: int = 250):
    """Periodic supercell of ~target atoms (``cluster.replication`` of ``atoms``' cell)."""
    from crystaljax.structures.cluster import replication

    return atoms.repeat(replication(len(atoms), atoms.cell[:], target))


def ball(atoms, rng: np.random.Generator, target: int = 300):
    """Finite ball of whole shells (~target atoms) in a random orientation, no cell, pbc False."""
    from scipy.spatial.transform import Rotation

    from crystaljax.structures.cluster import sphere_cut

    b = sphere_cut(atoms, target)[0]
    b.positions = Rotation.random(random_state=rng).apply(b.positions - b.positions.mean(axis=0))
    b.set_tags(0)
    return b


def representations(atoms, rng: np.random.Generator) -> dict:
    """{representation: ase.Atoms} of a periodic crystal, keys :data:`REPRESENTATIONS`."""
    return {"cif": _standard(atoms, False), "poscar": _standard(atoms, True), "supercell": supercell(atoms),
            "ball": ball(atoms, rng)}


def defective(atoms, sigma: float, vacancy: float, substitution: float, rng: np.random.Generator):
    """A copy of ``atoms`` with round(vacancy N) atoms removed, round(substitution N) replaced by Cu (Ag in
    a Cu host) and Gaussian displacements of ``sigma`` Å per Cartesian component."""
    a = atoms.copy()
    if vacancy:
        del a[sorted(rng.choice(len(a), int(round(vacancy * len(a))), replace=False).tolist())]
    if substitution:
        symbols = a.get_chemical_symbols()
        new = "Ag" if "Cu" in symbols else "Cu"
        for i in rng.choice(len(a), int(round(substitution * len(a))), replace=False):
            symbols[i] = new
        a.set_chemical_symbols(symbols)
    if sigma:
        a.positions = a.positions + rng.normal(0.0, sigma, a.positions.shape)
    return a


def build_set(seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """(items, provenance, notes): items = [{atoms, group (file stem), label or None, category, element,
    representation, defect, kind}] of the whole benchmark, provenance = the structure entries."""
    rng = np.random.default_rng(seed)
    inside, notes = in_class_elements()
    oos, more = out_of_scope_elements()
    notes += more
    outside = oos + molecular_gases(rng) + compounds() + non_crystalline(rng)
    items = []
    for e in inside:
        reps = representations(e["atoms"], rng)
        for rep, atoms in reps.items():
            items.append({"atoms": atoms, "group": rep, "label": e["label"], "category": "in-class pristine",
                          "element": e["element"], "representation": rep, "defect": "pristine"})
        for name, (s, v, sub) in DEFECTS.items():
            items.append({"atoms": defective(reps["supercell"], s, v, sub, rng), "group": name, "label": e["label"],
                          "category": "in-class defective", "element": e["element"], "representation": "supercell",
                          "defect": name})
    for e in outside:
        reps = (representations(e["atoms"], rng) if e["category"] in ("out-of-scope elemental", "compound")
                else {"supercell": e["atoms"]})
        for rep, atoms in reps.items():
            items.append({"atoms": atoms, "group": f"oos_{rep}", "label": None, "category": e["category"],
                          "element": e["element"], "representation": rep, "defect": "pristine", "kind": e["kind"]})
    return items, inside + outside, notes


def write_files(items: list[dict], directory: Path) -> list[Path]:
    """Write CIF / POSCAR one structure per file, extxyz one file per group (multi-frame); sets item['file'],
    item['frame'].  Returns the file list."""
    from ase.io import write

    files, groups = [], {}
    for i, it in enumerate(items):
        rep, tag = it["representation"], f"{i:04d}_{it['element']}"
        if rep == "cif":
            path = directory / f"{tag}.cif"
            write(path, it["atoms"], format="cif")
        elif rep == "poscar":
            path = directory / f"POSCAR_{tag}"
            write(path, it["atoms"], format="vasp", direct=True)
        else:
            groups.setdefault(it["group"], []).append(it)
            continue
        it["file"], it["frame"] = str(path), 0
        files.append(path)
    for group, members in groups.items():
        path = directory / f"{group}.extxyz"
        frames = []
        for k, it in enumerate(members):
            a = it["atoms"].copy()
            a.info = {}
            frames.append(a)
            it["file"], it["frame"] = str(path), k
        write(path, frames, format="extxyz")
        files.append(path)
    return files


def classify(files, model: str) -> list[dict]:
    """``crystaljax classify --json --quiet --model model FILES`` rows."""
    cmd = ["crystaljax", "classify", "--json", "--quiet", "--model", model, *map(str, files)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"crystaljax classify --model {model} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted 1/2 (Mann-Whitney rank formula)."""
    neg, pos = np.asarray(negative, float), np.asarray(positive, float)
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.concatenate([neg, pos]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based ranks, ties share their mean rank
    return float((ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _rate(mask) -> float | None:
    mask = np.asarray(mask, bool)
    return round(float(mask.mean()), 4) if mask.size else None


def evaluate(items: list[dict], rows: list[dict]) -> dict:
    """Accuracy, unknown rates, confident errors and AUROC of one model's rows."""
    by = {(str(Path(r["file"])), int(r.get("frame", 0))): r for r in rows}
    res = [by.get((it["file"], it["frame"])) for it in items]
    missing = [f"{it['file']}[{it['frame']}]" for it, r in zip(items, res) if r is None]
    ok = [(it, r) for it, r in zip(items, res) if r is not None]
    pmax = {id(it): max(r["probabilities"].values()) for it, r in ok}
    inc = [(it, r) for it, r in ok if it["label"] is not None]
    correct = lambda pair: pair[1]["label"] == pair[0]["label"]  # noqa: E731

    def acc(pairs):
        return _rate([correct(p) for p in pairs])

    out = {"n_rows": len(ok), "missing_rows": missing,
           "accuracy_in_class_pristine": acc([p for p in inc if p[0]["defect"] == "pristine"]),
           "accuracy_per_class": {c: acc([p for p in inc if p[0]["label"] == c and p[0]["defect"] == "pristine"])
                                  for c in sorted({it["label"] for it, _ in inc})},
           "accuracy_per_representation": {rep: acc([p for p in inc if p[0]["representation"] == rep
                                                     and p[0]["defect"] == "pristine"]) for rep in REPRESENTATIONS},
           "accuracy_per_defect": {d: acc([p for p in inc if p[0]["defect"] == d]) for d in ("pristine", *DEFECTS)},
           "accuracy_known_only_per_defect": {d: acc([p for p in inc if p[0]["defect"] == d and not p[1]["unknown"]])
                                              for d in ("pristine", *DEFECTS)},
           "unknown_rate": {c: _rate([r["unknown"] for it, r in ok if it["category"] == c])
                            for c in ("in-class pristine", "in-class defective", *OOS_CATEGORIES)},
           "unknown_rate_per_defect": {d: _rate([r["unknown"] for it, r in inc if it["defect"] == d])
                                       for d in ("pristine", *DEFECTS)},
           "unknown_rate_per_oos_representation": {
               rep: _rate([r["unknown"] for it, r in ok if it["label"] is None and it["representation"] == rep])
               for rep in REPRESENTATIONS}}
    conf_err = [(it, r) for it, r in inc if not correct((it, r)) and not r["unknown"] and pmax[id(it)] >= CONFIDENT]
    conf_acc = [(it, r) for it, r in ok if it["label"] is None and not r["unknown"] and pmax[id(it)] >= CONFIDENT]
    def row(it, r):
        what = it["defect"] if it["label"] else it["kind"]
        return (f"{it['element']} {it['representation']} {what}: {it['label'] or it['category']} -> {r['label']} "
                f"p={pmax[id(it)]:.3f}")

    out["confident_errors_in_class"] = len(conf_err)
    out["confident_errors_in_class_list"] = [row(it, r) for it, r in conf_err]
    out["confident_accepted_out_of_scope"] = len(conf_acc)
    out["confident_accepted_out_of_scope_list"] = [row(it, r) for it, r in conf_acc]
    out["wrong_in_class_list"] = [row(it, r) + (" (unknown)" if r["unknown"] else "")
                                  for it, r in inc if not correct((it, r)) and it["defect"] == "pristine"]
    neg = [(it, r) for it, r in ok if it["category"] == "in-class pristine"]
    scores = {"1-max_p": lambda it, r: 1.0 - pmax[id(it)],
              "mutual_information": lambda it, r: r["uncertainty"]["mutual_information"]}
    out["auroc"] = {}
    for sname, f in scores.items():
        n = [f(it, r) for it, r in neg]
        out["auroc"][sname] = {c: round(auroc(n, [f(it, r) for it, r in ok if it["category"] == c]), 4)
                               for c in OOS_CATEGORIES}
        out["auroc"][sname]["all out-of-scope"] = round(
            auroc(n, [f(it, r) for it, r in ok if it["label"] is None]), 4)
    out["unknown_reasons"] = {}
    for it, r in ok:
        if r["unknown"]:
            key = f"{it['category']}: {str(r.get('unknown_reason') or '').split(':')[0][:60]}"
            out["unknown_reasons"][key] = out["unknown_reasons"].get(key, 0) + 1
    return out


def _fmt(v) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def markdown(provenance: list[dict], notes: list[str], results: dict, meta: dict) -> str:
    """The docs page: provenance table, then per model the result tables."""
    lines = ["# Held-out evaluation on real structures (measured lattices)", "",
             "Generated by `python benchmarks/bench_real_structures.py --write-docs docs/REAL_STRUCTURES.md` "
             f"(seed {meta['seed']}, {meta['n_files']} files, {meta['n_structures']} structures, "
             f"{meta['seconds']} s). Do not edit by hand.", "",
             "Structures are written to CIF (conventional), POSCAR (primitive), extxyz (~250-atom periodic "
             "supercell) and extxyz (~300-atom finite ball, random orientation) and classified with "
             "`crystaljax classify --json --model M FILES`. Defects are applied to the supercells. Labels are "
             f"spglib's space group at symprec {SYMPREC}. Confident = not unknown and max p >= {CONFIDENT}.", "",
             "Out-of-scope entries are stand-ins: the elemental ones reuse the internal coordinates of the AFLOW "
             "library examples on which the unknown thresholds are calibrated (not held out from calibration); "
             "compounds are pairs absent from the calibration list; non-crystalline = random sequential addition.",
             ""]
    for model, r in results.items():
        lines += [f"## Model `{model}`", "", "| figure | value |", "|---|---|"]
        lines += [f"| accuracy, in-class pristine (all representations) | {_fmt(r['accuracy_in_class_pristine'])} |"]
        lines += [f"| accuracy, {rep} | {_fmt(v)} |" for rep, v in r["accuracy_per_representation"].items()]
        lines += [f"| accuracy, supercell {d} | {_fmt(v)} |" for d, v in r["accuracy_per_defect"].items()
                  if d != "pristine"]
        lines += [f"| unknown rate, {c} | {_fmt(v)} |" for c, v in r["unknown_rate"].items()]
        lines += [f"| unknown rate, in-class supercell {d} | {_fmt(v)} |"
                  for d, v in r["unknown_rate_per_defect"].items() if d != "pristine"]
        lines += [f"| AUROC ({s}), in-class pristine vs {c} | {_fmt(v)} |" for s, d in r["auroc"].items()
                  for c, v in d.items()]
        lines += [f"| confident errors, in-class | {r['confident_errors_in_class']} |",
                  f"| confidently accepted, out-of-scope | {r['confident_accepted_out_of_scope']} |", ""]
        lines += ["Accuracy per class (pristine, all representations): " + ", ".join(
            f"{c} {_fmt(v)}" for c, v in r["accuracy_per_class"].items()), ""]
        for title, key in (("Confident in-class errors", "confident_errors_in_class_list"),
                           ("Confidently accepted out-of-scope structures", "confident_accepted_out_of_scope_list"),
                           ("Wrong labels on pristine in-class structures", "wrong_in_class_list")):
            lines += [f"{title}:", ""] + [f"- {x}" for x in r[key]] + (["- none"] if not r[key] else []) + [""]
    lines += ["## Provenance", "", "| element / formula | structure (table) | space group | table values | "
              "cell lengths (Å) | class / category | source |", "|---|---|---|---|---|---|---|"]
    for e in provenance:
        table = ", ".join(f"{k} {v}" for k, v in e["table"].items())
        lines.append(f"| {e['element']} | {e['symmetry']} | {_fmt(e.get('spacegroup'))} | {table} | "
                     f"{', '.join(f'{x:.3f}' for x in e['cell_lengths'])} | {e.get('label') or e.get('category')} | "
                     f"{e['source']} |")
    lines += ["", "`ase.data.reference_states` holds the measured (experimental) ground-state lattice constants "
              "collected in ASE (Kittel, *Introduction to Solid State Physics*; Ashcroft & Mermin; Donohue, "
              "*The Structures of the Elements*).", "", "Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="default", help="comma-separated models (default: default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-docs", metavar="PATH", help="write the provenance and result tables as markdown")
    ap.add_argument("--keep", metavar="DIR", help="write the structure files to DIR instead of a temporary one")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    items, provenance, notes = build_set(args.seed)
    for n in notes:
        print("note:", n, file=sys.stderr)
    results, cli_seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.keep) if args.keep else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        files = write_files(items, directory)
        print(f"{len(items)} structures in {len(files)} files ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        for model in args.models.split(","):
            t1 = time.perf_counter()
            rows = classify(files, model)
            cli_seconds[model] = round(time.perf_counter() - t1, 1)
            results[model] = evaluate(items, rows)
            print(f"{model}: {json.dumps({k: v for k, v in results[model].items() if not k.endswith('_list')})}",
                  file=sys.stderr, flush=True)
    meta = {"seed": args.seed, "n_files": len(files), "n_structures": len(items),
            "seconds": round(time.perf_counter() - t0, 1)}
    if args.write_docs:
        Path(args.write_docs).write_text(markdown(provenance, notes, results, meta))
    headline = {**meta, "cli_seconds": cli_seconds,
                "n_in_class_elements": sum(1 for e in provenance if e.get("label")),
                "n_out_of_scope": sum(1 for it in items if it["label"] is None),
                "models": {m: {"accuracy_in_class_pristine": r["accuracy_in_class_pristine"],
                               "accuracy_per_class": r["accuracy_per_class"],
                               "accuracy_per_representation": r["accuracy_per_representation"],
                               "accuracy_per_defect": r["accuracy_per_defect"],
                               "unknown_rate": r["unknown_rate"],
                               "confident_errors_in_class": r["confident_errors_in_class"],
                               "confident_accepted_out_of_scope": r["confident_accepted_out_of_scope"],
                               "auroc_all_out_of_scope": {s: d["all out-of-scope"] for s, d in r["auroc"].items()}}
                           for m, r in results.items()}}
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
