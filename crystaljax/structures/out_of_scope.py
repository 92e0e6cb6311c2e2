"""Builders of calibration data for the "unknown" verdict: structures the shipped model does not know.

Families, each a function ``(rng, ...) -> list[ase.Atoms]`` with ``atoms.info['category']`` and
``atoms.info['kind']``, built from a ``numpy.random.Generator`` so a seed gives the same set:

- :func:`ordered_compounds`: rock salt, CsCl, zincblende, wurtzite, fluorite (``ase.build.bulk``), L1_2 and
  L1_0 (by hand), with varied element pairs and lattice constants (+-5 %).
- :func:`random_alloys`: in-class crystals (fcc, bcc, sc, hcp, diamond, beta-Sn) with random substitutions at
  the paper's levels (binary / ternary, 10, 25, 50 %) -- these must NOT be flagged.
- :func:`non_crystalline`: gas (random sequential addition with a minimum distance), liquid-like (a dense
  random packing relaxed with a soft repulsion) and amorphous (the same, quenched further in a
  Lennard-Jones potential).
- :func:`molecular_gases`: gases of randomly oriented halogen molecules (:func:`dimer_gas`).
- :func:`elemental_out_of_scope`: elemental crystals outside the 8 space groups: the 32 such entries of
  the AFLOW prototype library (alpha-U, alpha-Ga, alpha- and beta-Mn, Se and Te chains, black P, I2, the
  Pu phases, beta-Np, T-50 B, N2, S, simple hexagonal Sn...), each drawn around the library's example.
"""

from __future__ import annotations

import numpy as np

#: (kind, ase.build.bulk crystal structure) of the binary compounds built with ase.
_ASE_COMPOUNDS = ("rocksalt", "cesiumchloride", "zincblende", "wurtzite", "fluorite")

#: Element pairs and a reference lattice constant (Å) per compound kind (published values, rounded).
_COMPOUND_PAIRS = {
    "rocksalt": [("Na", "Cl", 5.64), ("Mg", "O", 4.21), ("K", "Br", 6.60), ("Pb", "S", 5.94), ("Ti", "C", 4.33),
                 ("Li", "F", 4.03), ("Ca", "O", 4.81), ("Ag", "Cl", 5.55)],
    "cesiumchloride": [("Cs", "Cl", 4.12), ("Cs", "Br", 4.29), ("Ni", "Al", 2.88), ("Fe", "Al", 2.91),
                       ("Cu", "Zn", 2.95), ("Ti", "Ni", 3.01), ("Tl", "Br", 3.97), ("Co", "Ti", 2.99)],
    "zincblende": [("Ga", "As", 5.65), ("Zn", "S", 5.41), ("In", "P", 5.87), ("Cd", "Te", 6.48),
                   ("Si", "C", 4.36), ("B", "N", 3.62), ("Al", "P", 5.46), ("Cu", "Cl", 5.41)],
    "wurtzite": [("Ga", "N", 3.19), ("Zn", "O", 3.25), ("Al", "N", 3.11), ("Cd", "S", 4.14),
                 ("In", "N", 3.54), ("Zn", "S", 3.82), ("Be", "O", 2.70), ("Ag", "I", 4.59)],
    "fluorite": [("Ca", "F", 5.46), ("Ba", "F", 6.20), ("Zr", "O", 5.07), ("Ce", "O", 5.41),
                 ("U", "O", 5.47), ("Sr", "F", 5.80), ("Th", "O", 5.60), ("Cd", "F", 5.39)],
    "L1_2": [("Cu", "Au", 3.75), ("Ni", "Al", 3.57), ("Ni", "Fe", 3.55), ("Pt", "Fe", 3.87),
             ("Cu", "Pt", 3.71), ("Al", "Sc", 4.10), ("Ni", "Mn", 3.59), ("Pd", "Fe", 3.85)],
    "L1_0": [("Cu", "Au", 3.96), ("Fe", "Pt", 3.86), ("Co", "Pt", 3.80), ("Fe", "Pd", 3.85),
             ("Ti", "Al", 3.99), ("Mn", "Al", 3.92), ("Ni", "Pt", 3.82), ("Mn", "Ni", 3.74)],
}
#: c/a of the L1_0 kinds (per pair index), near 1 as in FePt (0.96), CuAu (0.93), TiAl (1.02).
_L10_C_OVER_A = (0.93, 0.96, 0.97, 0.97, 1.02, 0.90, 0.94, 0.94)

COMPOUND_KINDS = tuple(_COMPOUND_PAIRS)


def _l12(a_el: str, b_el: str, a: float):
    """L1_2 A3B: fcc cubic cell with B on the corner."""
    from ase import Atoms

    return Atoms([b_el, a_el, a_el, a_el], scaled_positions=[(0, 0, 0), (0, .5, .5), (.5, 0, .5), (.5, .5, 0)],
                 cell=[a, a, a], pbc=True)


def _l10(a_el: str, b_el: str, a: float, c_over_a: float):
    """L1_0 AB: fcc-derived tetragonal cell (a, a, c), alternating (001) planes of A and B."""
    from ase import Atoms

    return Atoms([a_el, a_el, b_el, b_el], scaled_positions=[(0, 0, 0), (.5, .5, 0), (.5, 0, .5), (0, .5, .5)],
                 cell=[a, a, a * c_over_a], pbc=True)


def ordered_compounds(rng: np.random.Generator, per_kind: int = 8, pairs: slice = slice(None)) -> list:
    """``per_kind`` ordered compounds of every kind in :data:`COMPOUND_KINDS`, element pair drawn from
    ``_COMPOUND_PAIRS[kind][pairs]`` (use disjoint slices for calibration and held-out sets), lattice
    constant x U(0.95, 1.05)."""
    from ase.build import bulk

    out = []
    for kind in COMPOUND_KINDS:
        choices = list(range(len(_COMPOUND_PAIRS[kind])))[pairs]
        for _ in range(per_kind):
            k = int(rng.choice(choices))
            a_el, b_el, a0 = _COMPOUND_PAIRS[kind][k]
            a = a0 * rng.uniform(0.95, 1.05)
            if kind == "L1_2":
                atoms = _l12(a_el, b_el, a)
            elif kind == "L1_0":
                atoms = _l10(a_el, b_el, a, _L10_C_OVER_A[k] * rng.uniform(0.98, 1.02))
            elif kind == "wurtzite":
                atoms = bulk(a_el + b_el, kind, a=a, c=a * 1.60 * rng.uniform(0.99, 1.01), u=0.38)
            else:
                atoms = bulk(a_el + b_el + (b_el if kind == "fluorite" else ""), kind, a=a)
            atoms.info.update(category="ordered compound", kind=kind)
            out.append(atoms)
    return out


#: In-class host crystals for the random alloys: (kind, ase.build.bulk args).
_HOSTS = (("fcc", "Cu", {}), ("fcc", "Al", {}), ("bcc", "Fe", {}), ("bcc", "W", {}), ("hcp", "Mg", {}),
          ("hcp", "Ti", {}), ("diamond", "Si", {}), ("sc", "Po", {"a": 3.35}))
#: Substituting elements.
_SUBSTITUENTS = ("Ni", "Co", "Cr", "Mo", "Zn", "Ag", "Au", "Pt", "V", "Nb", "Ge", "Sn")
#: The paper's substitution levels (fraction of atoms replaced) and the number of new species.
SUBSTITUTION_LEVELS = ((0.10, 1), (0.25, 1), (0.50, 1), (0.10, 2), (0.25, 2), (0.50, 2))


def random_alloys(rng: np.random.Generator, per_level: int = 8, n_atoms: int = 250) -> list:
    """Random substitutional alloys of in-class crystals: a ~``n_atoms`` periodic supercell of a host
    crystal with round(f * N) atoms replaced by 1 (binary) or 2 (ternary, equal shares) other species, for every
    level in :data:`SUBSTITUTION_LEVELS`."""
    from ase.build import bulk

    out = []
    for frac, n_new in SUBSTITUTION_LEVELS:
        for _ in range(per_level):
            kind, el, kw = _HOSTS[int(rng.integers(len(_HOSTS)))]
            atoms = bulk(el, kind, cubic=kind != "hcp", **kw) if kind != "sc" else bulk(el, "sc", **kw)
            reps = max(1, int(round((n_atoms / len(atoms)) ** (1 / 3))))
            atoms = atoms.repeat(reps)
            k = int(round(frac * len(atoms)))
            chosen = rng.choice(len(atoms), size=k, replace=False)
            new = rng.choice(_SUBSTITUENTS, size=n_new, replace=False)
            numbers = atoms.get_chemical_symbols()
            for t, i in enumerate(chosen):
                numbers[i] = str(new[t % n_new])
            atoms.set_chemical_symbols(numbers)
            atoms.info.update(category="random alloy", kind=f"{'binary' if n_new == 1 else 'ternary'} {frac:.0%}",
                              parent=kind)
            out.append(atoms)
    return out


def _rsa(rng: np.random.Generator, n: int, box: float, d_min: float, tries: int = 200000) -> np.ndarray:
    """Random sequential addition of up to n points in a cube of side ``box`` (Å) with pair distances >=
    d_min (non-periodic); (m, 3) positions, m <= n."""
    pos = np.zeros((0, 3))
    cand = rng.uniform(0, box, size=(tries, 3))
    for c in cand:  # host-side builder of test data: a loop over candidate points is fine here
        if len(pos) == 0 or np.min(np.sum((pos - c) ** 2, axis=1)) >= d_min * d_min:
            pos = np.vstack([pos, c])
            if len(pos) == n:
                break
    return pos


def _relax_soft(pos: np.ndarray, box: float, d0: float, steps: int = 200, periodic: bool = True) -> np.ndarray:
    """Steepest descent on the harmonic overlap energy sum (d0 - r)^2 over pairs closer than d0."""
    pos = pos.copy()
    for _ in range(steps):
        diff = pos[:, None, :] - pos[None, :, :]
        if periodic:
            diff -= box * np.round(diff / box)
        r = np.linalg.norm(diff, axis=-1) + np.eye(len(pos)) * 1e9
        over = np.clip(d0 - r, 0.0, None)
        force = np.sum((over / r)[..., None] * diff, axis=1)
        pos += 0.3 * force
        if periodic:
            pos %= box
    return pos


def non_crystalline(rng: np.random.Generator, per_kind: int = 8, n_atoms: int = 250,
                    elements=("Cu", "Fe", "Al", "Ni", "Ag", "Pt", "Mo", "W")) -> list:
    """Gas (finite: random sequential addition at 5-15 % packing, minimum distance 0.8-0.95 d),
    liquid-like (periodic dense random packing, soft repulsion relaxed) and amorphous (the same with a
    Lennard-Jones quench, FIRE, periodic), ``per_kind`` each of ``n_atoms`` atoms, d = 2.5 Å."""
    from ase import Atoms
    from ase.calculators.lj import LennardJones
    from ase.optimize import FIRE

    d = 2.5
    out = []
    for kind in ("gas", "liquid-like", "amorphous"):
        for _ in range(per_kind):
            el = str(rng.choice(elements))
            if kind == "gas":
                packing = rng.uniform(0.05, 0.15)
                box = (n_atoms * np.pi / 6 * d ** 3 / packing) ** (1 / 3)
                pos = _rsa(rng, n_atoms, box, d * rng.uniform(0.8, 0.95))
                atoms = Atoms([el] * len(pos), positions=pos, pbc=False)
            else:
                box = (n_atoms / rng.uniform(1.2, 1.4) * d ** 3) ** (1 / 3)   # ~ close-packed density
                pos = _rsa(rng, n_atoms, box, 0.6 * d)
                pos = _relax_soft(pos + rng.uniform(0, 1e-3, pos.shape), box, d, steps=60)
                atoms = Atoms([el] * len(pos), positions=pos, cell=[box] * 3, pbc=True)
                if kind == "amorphous":
                    atoms.calc = LennardJones(sigma=d / 2 ** (1 / 6), epsilon=1.0, rc=2.5 * d, smooth=True)
                    FIRE(atoms, logfile=None).run(fmax=0.05, steps=150)
                    atoms.calc = None
            atoms.info.update(category="non-crystalline", kind=kind)
            out.append(atoms)
    return out


def dimer_gas(rng: np.random.Generator, symbol: str = "N", bond: float = 1.1, n_molecules: int = 125,
              spacing: float = 3.3, packing: float = 0.10, periodic: bool = True):
    """A molecular gas: ``n_molecules`` randomly oriented dimers of ``symbol`` (bond length ``bond`` Å) centred by
    random sequential addition >= ``spacing`` Å apart, at ``packing`` of the centres' ``spacing``-wide spheres, in a
    periodic cube (or a finite cloud)."""
    from ase import Atoms
    from scipy.spatial.transform import Rotation

    box = (n_molecules * np.pi / 6 * spacing ** 3 / packing) ** (1 / 3)
    centres = _rsa(rng, n_molecules, box, spacing)
    axes = Rotation.random(len(centres), random_state=rng).apply([0.0, 0.0, 0.5 * bond])
    pos = np.concatenate([centres + axes, centres - axes])
    return Atoms([symbol] * len(pos), positions=pos, cell=[box] * 3 if periodic else None, pbc=periodic)


#: Bond lengths (Å) of the halogen molecules of :func:`molecular_gases` (gas-phase values, rounded).
_HALOGEN_BONDS = {"Cl": 1.99, "Br": 2.28, "I": 2.67}


def molecular_gases(rng: np.random.Generator, per_kind: int = 8, n_atoms: int = 250) -> list:
    """``per_kind`` periodic gases of ``n_atoms // 2`` randomly oriented Cl2, Br2 or I2 molecules
    (:func:`dimer_gas`, centres >= 2.5 bond lengths apart at 10 % packing): non-crystalline, kind "molecular gas"."""
    out = []
    for _ in range(per_kind):
        symbol = str(rng.choice(list(_HALOGEN_BONDS)))
        bond = _HALOGEN_BONDS[symbol]
        atoms = dimer_gas(rng, symbol, bond, n_molecules=n_atoms // 2, spacing=2.5 * bond)
        atoms.info.update(category="non-crystalline", kind="molecular gas")
        out.append(atoms)
    return out


def elemental_kinds() -> tuple[str, ...]:
    """Names of the out-of-scope elemental prototypes: every single-element entry of the AFLOW library
    outside the 8 space groups (``aflow_library.out_of_scope_entries``) whose element is at most Pu (31 of 32:
    high-pressure Cf is left out, the fingerprint has no form factor for it)."""
    return tuple(e.name for e in _imageable_out_of_scope())


def _imageable_out_of_scope():
    """The library's out-of-scope elemental entries whose element has form factors (Z <= 94: Cf is left out)."""
    from ase.data import atomic_numbers

    from crystaljax.structures import aflow_library

    return [e for e in aflow_library.out_of_scope_entries() if atomic_numbers[e.element] <= 94]


def elemental_out_of_scope(rng: np.random.Generator, per_kind: int = 4, kinds=None) -> list:
    """Elemental crystals outside the 8 space groups: ``per_kind`` members of each library prototype of
    :func:`elemental_kinds` (or of ``kinds``), drawn around the library's example with
    ``aflow_library.perturbed_cell`` (lengths within +-5 % in the lattice system, symmetrised displacements
    of 4 % of the nearest-neighbour distance), in the example's element."""
    from ase import Atoms

    from crystaljax.structures import aflow_library

    out = []
    for entry in _imageable_out_of_scope():
        if kinds is not None and entry.name not in kinds:
            continue
        kind = f"{entry.name} ({entry.mineral})" if entry.mineral else entry.name
        for _ in range(per_kind):
            cell, frac = aflow_library.perturbed_cell(entry, rng)
            atoms = Atoms(symbols=[entry.element] * len(frac), scaled_positions=frac, cell=cell, pbc=True)
            atoms.info.update(category="out-of-scope element", kind=kind)
            out.append(atoms)
    return out
