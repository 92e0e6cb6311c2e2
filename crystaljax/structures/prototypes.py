"""Elemental crystal prototypes of the seven classes, with their free parameters.

Each prototype (AFLOW label, e.g. ``A_cI2_229_a``) is built as its CONVENTIONAL cell (space group 166 in
the hexagonal setting) from ``a`` (Å) and its free parameters (``c/a``, Wyckoff ``x``);
``Prototype.windows`` lists the parameter values where it gains symmetry and changes class, which the
data-set sampler rejects.  Facts follow the AFLOW Library of Crystallographic Prototypes (Mehl et al.,
Comput. Mater. Sci. 136, S1 (2017); Hicks et al. 2019); the table of Wyckoff positions and special
values is in docs/DATASET.md ("Prototype definitions").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

CLASSES: tuple[str, ...] = ("bct_139", "bct_141", "hex/rh", "sc", "fcc", "diam", "bcc")
"""Class names; the index in this tuple is the integer label."""

SPACEGROUP_CLASS: dict[int, str] = {
    139: "bct_139", 141: "bct_141", 166: "hex/rh", 194: "hex/rh",
    221: "sc", 225: "fcc", 227: "diam", 229: "bcc",
}

PARAM_NAMES: tuple[str, ...] = ("c/a", "x")
"""Names of all free parameters besides ``a`` (a prototype uses a subset)."""

_F = ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0))
_I = ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5))
_R = ((0.0, 0.0, 0.0), (2.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0), (1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0))


def hr_alpha(c_over_a: float) -> float:
    """Rhombohedral angle (degrees) of an hR lattice with hexagonal axial ratio c/a.

    cos(alpha) = (2 mu^2 - 3) / (2 mu^2 + 6), mu = c/a: 109.47 at sqrt(3/8), 90 at sqrt(3/2), 60 at sqrt(6).
    """
    mu2 = float(c_over_a) ** 2
    return math.degrees(math.acos((2.0 * mu2 - 3.0) / (2.0 * mu2 + 6.0)))


def hr_c_over_a(alpha_deg: float) -> float:
    """Inverse of :func:`hr_alpha`: hexagonal c/a of a rhombohedral lattice with angle alpha (degrees)."""
    c = math.cos(math.radians(float(alpha_deg)))
    return math.sqrt((3.0 + 6.0 * c) / (2.0 - 2.0 * c))


@dataclass(frozen=True)
class Window:
    """A parameter region where the prototype (nearly) gains symmetry and changes class.

    ``centre`` maps parameter names to the special values; the region is every point within
    ``half_width`` (same keys) of all of them.  ``alpha`` as a key means the rhombohedral angle in
    degrees computed from c/a.
    """

    reason: str
    centre: Mapping[str, float]
    half_width: Mapping[str, float]

    def contains(self, params: Mapping[str, float]) -> bool:
        for key, value in self.centre.items():
            p = hr_alpha(params["c/a"]) if key == "alpha" else params[key]
            if abs(p - value) >= self.half_width[key]:
                return False
        return True


@dataclass(frozen=True)
class Prototype:
    """One AFLOW prototype.

    name: AFLOW label.  spacegroup: international number.  cls: class name (in CLASSES).
    lattice: 'cubic' | 'hexagonal' | 'tetragonal' (conventional cell shape).
    sites: fractional positions of the conventional cell as functions of x (see ``positions``).
    defaults: free parameters (besides a) at the AFLOW example structure.
    ranges: sampling ranges (lo, hi) per free parameter; key 'alpha' (degrees) replaces c/a for hR1.
    windows: regions rejected by the sampler (see ``Window``).
    example: (element, a) of the AFLOW example structure.
    """

    name: str
    spacegroup: int
    cls: str
    lattice: str
    n_atoms: int
    defaults: Mapping[str, float] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    windows: tuple[Window, ...] = ()
    example: tuple[str, float] = ("", 0.0)
    description: str = ""

    @property
    def label(self) -> int:
        return CLASSES.index(self.cls)

    @property
    def free_params(self) -> tuple[str, ...]:
        return tuple(k for k in PARAM_NAMES if k in self.defaults)


_SQ2, _SQ6, _SQ32, _SQ38 = math.sqrt(2.0), math.sqrt(6.0), math.sqrt(1.5), math.sqrt(3.0 / 8.0)

PROTOTYPES: dict[str, Prototype] = {
    p.name: p
    for p in (
        Prototype("A_cP1_221_a", 221, "sc", "cubic", 1, example=("Po", 3.34),
                  description="simple cubic (alpha-Po)"),
        Prototype("A_cF4_225_a", 225, "fcc", "cubic", 4, example=("Cu", 3.61491),
                  description="face-centred cubic (Cu)"),
        Prototype("A_cI2_229_a", 229, "bcc", "cubic", 2, example=("W", 3.155),
                  description="body-centred cubic (W); body-centre atom tagged 1"),
        Prototype("A_cF8_227_a", 227, "diam", "cubic", 8, example=("C", 3.55),
                  description="diamond (C)"),
        Prototype("A_hP2_194_c", 194, "hex/rh", "hexagonal", 2,
                  defaults={"c/a": 1.62359393014}, ranges={"c/a": (1.40, 1.90)},
                  example=("Mg", 3.2093), description="hexagonal close packed (Mg)"),
        Prototype("A_hP4_194_ac", 194, "hex/rh", "hexagonal", 4,
                  defaults={"c/a": 3.2175066313}, ranges={"c/a": (3.00, 3.40)},
                  example=("La", 3.77), description="double hcp (alpha-La)"),
        Prototype("A_hR1_166_a", 166, "hex/rh", "hexagonal", 3,
                  defaults={"c/a": 1.92728082582}, ranges={"alpha": (50.0, 105.0)},
                  windows=(
                      Window("near fcc (alpha ~ 60 deg)", {"alpha": 60.0}, {"alpha": 4.0}),
                      Window("near sc (alpha ~ 90 deg)", {"alpha": 90.0}, {"alpha": 4.0}),
                      Window("near bcc (alpha ~ 109.47 deg)", {"alpha": 109.4712206}, {"alpha": 4.0}),
                  ),
                  example=("Hg", 3.45741), description="alpha-Hg / beta-Po"),
        Prototype("A_hR2_166_c", 166, "hex/rh", "hexagonal", 6,
                  defaults={"c/a": 2.7815666977, "x": 0.22754},
                  ranges={"c/a": (2.30, 3.00), "x": (0.200, 0.245)},
                  windows=(
                      Window("near sc (x ~ 1/4, c/a ~ sqrt 6)", {"x": 0.25, "c/a": _SQ6}, {"x": 0.01, "c/a": 0.10}),
                  ),
                  example=("As", 3.7595), description="alpha-As / Sb / Bi"),
        Prototype("A_hR3_166_ac", 166, "hex/rh", "hexagonal", 9,
                  defaults={"c/a": 7.25049442597, "x": 0.22222},
                  ranges={"c/a": (6.80, 7.60), "x": (0.205, 0.240)},
                  example=("Sm", 3.62036), description="alpha-Sm (9R stacking)"),
        Prototype("A_tI2_139_a", 139, "bct_139", "tetragonal", 2,
                  defaults={"c/a": 1.52061313499}, ranges={"c/a": (0.70, 1.80)},
                  windows=(
                      Window("near bcc (c/a ~ 1)", {"c/a": 1.0}, {"c/a": 0.05}),
                      Window("near fcc (c/a ~ sqrt 2)", {"c/a": _SQ2}, {"c/a": 0.05}),
                  ),
                  example=("In", 3.25283), description="body-centred tetragonal (In, alpha-Pa)"),
        Prototype("A_tI4_141_a", 141, "bct_141", "tetragonal", 4,
                  defaults={"c/a": 0.545611989437}, ranges={"c/a": (0.45, 1.60)},
                  windows=(
                      Window("near diamond (c/a ~ sqrt 2)", {"c/a": _SQ2}, {"c/a": 0.08}),
                  ),
                  example=("Sn", 5.8318), description="beta-Sn"),
    )
}

REFERENCES: tuple[tuple[str, str, float, Mapping[str, float]], ...] = (
    # (prototype, element, a in Å, free parameters): the AFLOW library's example structures
    # (and the other library entries of these prototypes).  The generated data set excludes them.
    ("A_cP1_221_a", "Po", 3.34, {}),
    ("A_cF4_225_a", "Cu", 3.61491, {}),
    ("A_cI2_229_a", "W", 3.155, {}),
    ("A_cF8_227_a", "C", 3.55, {}),
    ("A_hP2_194_c", "Mg", 3.2093, {"c/a": 1.62359393014}),
    ("A_hP4_194_ac", "La", 3.77, {"c/a": 3.2175066313}),
    ("A_hR1_166_a", "Hg", 3.45741, {"c/a": 1.92728082582}),
    ("A_hR1_166_a", "Po", 5.07846, {"c/a": 0.968139947937}),
    ("A_hR2_166_c", "As", 3.7595, {"c/a": 2.7815666977, "x": 0.22754}),
    ("A_hR2_166_c", "O", 3.289, {"c/a": 3.42991790818, "x": 0.0543}),
    ("A_hR2_166_c", "C", 2.456, {"c/a": 4.08957654723, "x": 0.16667}),
    ("A_hR3_166_ac", "Sm", 3.62036, {"c/a": 7.25049442597, "x": 0.22222}),
    ("A_tI2_139_a", "In", 3.25283, {"c/a": 1.52061313499}),
    ("A_tI2_139_a", "Pa", 3.932, {"c/a": 0.823499491353}),
    ("A_tI4_141_a", "Sn", 5.8318, {"c/a": 0.545611989437}),
)

# Nearest-neighbour distances (Å) for elements whose ASE reference state is not a simple lattice and
# whose covalent radius badly misrepresents metallic bonding: twice the 12-coordinate metallic radius.
_NN_OVERRIDE: dict[str, float] = {"Mn": 2.54, "Pa": 3.26, "Np": 3.10, "Pu": 3.18}
_NN_CACHE: dict[int, float] = {}


def get_prototype(name: str) -> Prototype:
    """The prototype called ``name``; ValueError naming it if unknown."""
    try:
        return PROTOTYPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown prototype {name!r}; choose one of {sorted(PROTOTYPES)}") from None


def atomic_number(element) -> int:
    """Atomic number of a chemical symbol or number (1..118); ValueError naming a bad one."""
    from ase.data import atomic_numbers, chemical_symbols

    if isinstance(element, (int, np.integer)) and not isinstance(element, bool):
        if 1 <= int(element) < len(chemical_symbols):
            return int(element)
    elif isinstance(element, str) and element in atomic_numbers and element != "X":
        return int(atomic_numbers[element])
    raise ValueError(f"unknown element {element!r}")


def nn_distance(element) -> float:
    """A realistic nearest-neighbour distance (Å) of the element.

    From the ASE reference state when it is a simple lattice (fcc, bcc, hcp, diamond, sc, bct,
    rhombohedral), else a small table of metallic diameters, else twice the covalent radius.
    """
    z = atomic_number(element)
    if z in _NN_CACHE:
        return _NN_CACHE[z]
    from ase.data import chemical_symbols, covalent_radii, reference_states

    symbol = chemical_symbols[z]
    d = None
    state = reference_states[z] if z < len(reference_states) else None
    if symbol in _NN_OVERRIDE:
        d = _NN_OVERRIDE[symbol]
    elif state and state.get("symmetry") in {"fcc", "bcc", "hcp", "diamond", "sc", "bct", "rhombohedral"}:
        from ase.build import bulk

        try:
            d = float(_min_distance(bulk(symbol)))
        except Exception:  # noqa: BLE001 -- fall back to the covalent radius
            d = None
    if d is None or not np.isfinite(d) or d <= 0:
        d = 2.0 * float(covalent_radii[z])
    _NN_CACHE[z] = d
    return d


def _min_distance(atoms) -> float:
    """Shortest interatomic distance of a periodic ``ase.Atoms`` (Å), images included."""
    return _min_distance_cell(atoms.cell.array, atoms.get_scaled_positions(wrap=True))


def _min_distance_cell(cell, frac) -> float:
    """Shortest interatomic distance (Å) of a periodic cell (rows = vectors), images included.

    Fractional differences are wrapped into [-1/2, 1/2) and images within +-1 cell along each axis are
    searched: enough for the conventional cells here (orthogonal, hexagonal or rhombohedral-in-hexagonal).
    """
    cell = np.asarray(cell, float)
    frac = np.mod(np.asarray(frac, float), 1.0)
    rng = np.arange(-1, 2)
    shifts = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3).astype(float)
    diff = frac[:, None, :] - frac[None, :, :]
    diff -= np.round(diff)
    vec = (diff[:, :, None, :] + shifts[None, None, :, :]) @ cell
    d = np.linalg.norm(vec, axis=-1)
    d[d < 1e-8] = np.inf
    return float(d.min())


def _resolve_params(proto: Prototype, params) -> dict[str, float]:
    out = dict(proto.defaults)
    if params is None:
        return out
    if isinstance(params, Mapping):
        unknown = set(params) - set(proto.defaults)
        if unknown:
            raise ValueError(
                f"prototype {proto.name} has free parameters {list(proto.free_params)}, "
                f"not {sorted(unknown)}"
            )
        out.update({k: float(v) for k, v in params.items()})
        return out
    values = [float(v) for v in np.atleast_1d(np.asarray(params, dtype=float))]
    if len(values) != len(proto.free_params):
        raise ValueError(
            f"prototype {proto.name} takes {len(proto.free_params)} free parameters "
            f"{list(proto.free_params)}, got {len(values)}"
        )
    out.update(dict(zip(proto.free_params, values)))
    return out


def cell_and_positions(name: str, a: float = 1.0, params=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conventional cell (3, 3) Å (rows = lattice vectors), fractional positions (n, 3) and tags (n,)."""
    proto = get_prototype(name)
    p = _resolve_params(proto, params)
    a = float(a)
    if not a > 0:
        raise ValueError(f"lattice constant must be positive, got {a}")
    for key, value in p.items():
        if not np.isfinite(value) or (key == "c/a" and value <= 0):
            raise ValueError(f"bad {key}={value} for prototype {name}")
    if proto.lattice == "cubic":
        cell = np.eye(3) * a
    elif proto.lattice == "tetragonal":
        cell = np.diag([a, a, a * p["c/a"]])
    else:
        c = a * p["c/a"]
        cell = np.array([[a, 0.0, 0.0], [-0.5 * a, 0.5 * math.sqrt(3.0) * a, 0.0], [0.0, 0.0, c]])

    def centred(basis, translations):
        return [tuple(np.add(b, t)) for t in translations for b in basis]

    tags = None
    if name == "A_cP1_221_a":
        frac = [(0.0, 0.0, 0.0)]
    elif name == "A_cF4_225_a":
        frac = list(_F)
    elif name == "A_cI2_229_a":
        frac = list(_I)
        tags = [0, 1]
    elif name == "A_cF8_227_a":
        frac = centred([(0.0, 0.0, 0.0), (0.25, 0.25, 0.25)], _F)
    elif name == "A_hP2_194_c":
        frac = [(1 / 3, 2 / 3, 0.25), (2 / 3, 1 / 3, 0.75)]
    elif name == "A_hP4_194_ac":
        frac = [(0.0, 0.0, 0.0), (0.0, 0.0, 0.5), (1 / 3, 2 / 3, 0.25), (2 / 3, 1 / 3, 0.75)]
    elif name == "A_hR1_166_a":
        frac = centred([(0.0, 0.0, 0.0)], _R)
    elif name == "A_hR2_166_c":
        x = p["x"]
        frac = centred([(0.0, 0.0, x), (0.0, 0.0, -x)], _R)
    elif name == "A_hR3_166_ac":
        x = p["x"]
        frac = centred([(0.0, 0.0, 0.0), (0.0, 0.0, x), (0.0, 0.0, -x)], _R)
    elif name == "A_tI2_139_a":
        frac = list(_I)
    elif name == "A_tI4_141_a":
        frac = centred([(0.0, 0.0, 0.0), (0.0, 0.5, 0.25)], _I)
    else:  # pragma: no cover -- every PROTOTYPES entry is handled above
        raise ValueError(f"unknown prototype {name!r}")
    frac = np.mod(np.asarray(frac, dtype=np.float64), 1.0)
    frac[np.isclose(frac, 1.0, atol=1e-12)] = 0.0
    tags = np.zeros(len(frac), np.int32) if tags is None else np.asarray(tags, np.int32)
    return cell, frac, tags


def build(name: str, element, *, a: float | None = None, params=None):
    """The conventional periodic cell of prototype ``name`` for ``element`` as ``ase.Atoms``.

    a: conventional lattice constant in Å (the hexagonal a for space group 166/194); None scales
       the cell so the nearest-neighbour distance equals :func:`nn_distance` of the element.
    params: free parameters besides a, as a mapping ({'c/a': 1.6, 'x': 0.22}) or a sequence in the
       order of ``PROTOTYPES[name].free_params``; missing ones take the AFLOW example values.

    Tags: 1 on the bcc body-centre atom (A_cI2_229_a), 0 elsewhere.  ``atoms.info`` holds
    prototype, spacegroup, label, params and a.  Unknown prototype or element -> ValueError.
    """
    from ase import Atoms

    proto = get_prototype(name)
    z = atomic_number(element)
    p = _resolve_params(proto, params)
    if a is None:
        cell, frac, _ = cell_and_positions(name, 1.0, p)
        a = nn_distance(z) / _min_distance_cell(cell, frac)
    cell, frac, tags = cell_and_positions(name, float(a), p)
    atoms = Atoms(numbers=[z] * len(frac), scaled_positions=frac, cell=cell, pbc=True)
    atoms.set_tags(tags)
    atoms.info.update(
        prototype=name, spacegroup=proto.spacegroup, label=proto.label, a=float(a),
        params={k: float(v) for k, v in p.items()},
    )
    return atoms


def rhombohedral_path(mu: float, element="Po", *, nn: float | None = None):
    """A_hR1_166_a with hexagonal axial ratio ``mu`` = c/a (the paper's Fig. 4c transition path).

    mu = sqrt(3/8) is bcc, sqrt(3/2) is sc, sqrt(6) is fcc; anything else is rhombohedral (166).
    The cell is scaled so the nearest-neighbour distance is ``nn`` (default: the element's).
    """
    mu = float(mu)
    if not mu > 0:
        raise ValueError(f"mu = c/a must be positive, got {mu}")
    atoms = build("A_hR1_166_a", element, params={"c/a": mu})
    if nn is not None:
        scale = float(nn) / _min_distance(atoms)
        atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
        atoms.info["a"] = float(atoms.info["a"]) * scale
    atoms.info["mu"] = mu
    atoms.info["alpha"] = hr_alpha(mu)
    return atoms


MU_BCC, MU_SC, MU_FCC = _SQ38, _SQ32, _SQ6

__all__ = [
    "CLASSES", "SPACEGROUP_CLASS", "PARAM_NAMES", "PROTOTYPES", "REFERENCES", "Prototype", "Window",
    "get_prototype", "atomic_number", "nn_distance", "cell_and_positions", "build", "rhombohedral_path",
    "hr_alpha", "hr_c_over_a", "MU_BCC", "MU_SC", "MU_FCC",
]
