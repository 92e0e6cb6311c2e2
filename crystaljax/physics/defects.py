"""On-device defect transformations: ``(key, Structure, level) -> Structure``.

Pure JAX, jit-, vmap- and grad-able, shape-preserving: a removed atom is ``mask = 0`` (its row,
number and tag stay), so a batch of defective structures has the pristine shapes and compiles once.
Each function acts on one (unbatched) ``Structure``; batch with ``jax.vmap``.

Units.  ``Structure.positions`` are in Å of the *scaled* cluster (mean nearest-neighbour distance
1 Å); ``Structure.nn_distance`` is the physical nearest-neighbour distance in Å, so
physical = scaled * nn_distance.  A displacement sigma is given in physical Å (as in the paper's
"sigma = 0.06 Å") and divided by ``nn_distance`` before it is applied; with ``relative=True`` it is
a fraction of the nearest-neighbour distance and is applied to the scaled positions as it is.

Counts are exact: a fraction f of the n eligible atoms removes/substitutes exactly
``k = round(f * n)`` of them (round half to even, like Python's ``round``; the product is evaluated
in float32), chosen uniformly at random among the eligible atoms only (padding, vacancies and, for
the sublattice, atoms of other tags are never chosen).  Levels may be Python numbers or traced JAX
values (a sweep can ``vmap`` over them); traced fractions are clipped to [0, 1].  A level of 0 is an
exact no-op (bit-identical output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import jax
import jax.numpy as jnp

from crystaljax.structure import Structure

MAX_Z = 96


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _is_static_zero(x) -> bool:
    """True for a concrete (non-traced) level equal to 0."""
    if _is_tracer(x):
        return False
    try:
        return float(x) == 0.0
    except (TypeError, ValueError):
        return False


def _check_number(name: str, value, lo: float, hi: float, hi_inclusive: bool):
    """Validate a concrete level in [lo, hi) or [lo, hi]; tracers pass through unchecked."""
    if _is_tracer(value):
        return value
    if isinstance(value, (bool, np.bool_)) or isinstance(value, str):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = lo <= v <= hi if hi_inclusive else lo <= v < hi
    if not ok:
        bracket = "]" if hi_inclusive else ")"
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}{bracket}, got {value!r}")
    return v


def _check_elements(value) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"substitution_elements must be a list of atomic numbers, got {value!r}")
    out = []
    for e in value:
        if isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, np.integer, float, np.floating)):
            raise ValueError(f"substitution_elements must hold atomic numbers, got {value!r}")
        if float(e) != int(e) or not 1 <= int(e) <= MAX_Z:
            raise ValueError(f"substitution_elements must hold atomic numbers in 1..{MAX_Z}, got {value!r}")
        out.append(int(e))
    if len(set(out)) != len(out):
        raise ValueError(f"substitution_elements has repeated elements: {value!r}")
    return tuple(out)


@dataclass(frozen=True)
class DefectConfig:
    """Which defects to apply, and how strongly (all levels 0 = pristine).

    displacement_sigma:    std of the Gaussian displacement of each Cartesian component, in Å of the
                           PHYSICAL structure (divided by ``structure.nn_distance`` before it is
                           applied to the scaled cluster).  With ``displacement_relative=True`` it is a
                           fraction of the nearest-neighbour distance, applied to the scaled
                           positions directly.
    vacancy_fraction:      fraction in [0, 1) of the present atoms turned into vacancies.
    substitution_fraction: fraction in [0, 1) of the present atoms given a new species.
    substitution_elements: atomic numbers (1..96) of the substituting species; 1 -> binary,
                           2 -> ternary alloy; each substituted atom picks one uniformly among the
                           listed species different from its own.
    sublattice_fraction:   fraction in [0, 1] of the present atoms with ``tags == sublattice_tag``
                           removed (1.0 on the bcc body centres gives sc).
    random_levels:         if true, every call draws each non-zero level uniformly in [0, level]
                           (per structure, from its own key stream): a spread of defect strengths
                           for training augmentation.
    renormalize:           if true, rescale the defective cluster to unit mean nearest-neighbour
                           distance at the end, as the host pipeline scales a defective input file.

    Lists (e.g. from Hydra) are converted to tuples.  Levels may also be traced JAX scalars (then
    they are not validated here; ``apply_defects`` clips fractions to [0, 1]).
    """

    name: str = "none"
    displacement_sigma: float = 0.0
    displacement_relative: bool = False
    vacancy_fraction: float = 0.0
    substitution_fraction: float = 0.0
    substitution_elements: tuple[int, ...] = ()
    sublattice_fraction: float = 0.0
    sublattice_tag: int = 1
    random_levels: bool = False
    renormalize: bool = False

    def __post_init__(self):
        def put(field, value):
            object.__setattr__(self, field, value)

        put("displacement_sigma", _check_number("displacement_sigma", self.displacement_sigma, 0.0, np.inf, True))
        put("vacancy_fraction", _check_number("vacancy_fraction", self.vacancy_fraction, 0.0, 1.0, False))
        put("substitution_fraction",
            _check_number("substitution_fraction", self.substitution_fraction, 0.0, 1.0, False))
        put("sublattice_fraction", _check_number("sublattice_fraction", self.sublattice_fraction, 0.0, 1.0, True))
        if not isinstance(self.displacement_relative, (bool, np.bool_)):
            raise ValueError(f"displacement_relative must be true or false, got {self.displacement_relative!r}")
        put("displacement_relative", bool(self.displacement_relative))
        if not isinstance(self.random_levels, (bool, np.bool_)):
            raise ValueError(f"random_levels must be true or false, got {self.random_levels!r}")
        put("random_levels", bool(self.random_levels))
        if not isinstance(self.renormalize, (bool, np.bool_)):
            raise ValueError(f"renormalize must be true or false, got {self.renormalize!r}")
        put("renormalize", bool(self.renormalize))
        st = self.sublattice_tag
        if isinstance(st, (bool, np.bool_)) or not isinstance(st, (int, np.integer)):
            raise ValueError(f"sublattice_tag must be an integer, got {st!r}")
        put("sublattice_tag", int(st))
        put("substitution_elements", _check_elements(self.substitution_elements))
        if not self.substitution_elements and not _is_static_zero(self.substitution_fraction):
            raise ValueError(
                f"substitution_elements is empty but substitution_fraction={self.substitution_fraction!r}; "
                "list the substituting atomic numbers, e.g. [29, 47]"
            )
        put("name", str(self.name))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "DefectConfig":
        """Build from a mapping (e.g. a Hydra/OmegaConf node); unknown keys are an error."""
        if values is None:
            return cls()
        values = dict(values)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown defect config field(s) {unknown}; valid: {sorted(names)}")
        return cls(**values)


# --------------------------------------------------------------------------------------------
# exact-count random selection


def _count(fraction, n: jnp.ndarray) -> jnp.ndarray:
    """round(fraction * n) as int32 (half to even, float32 product); fraction clipped to [0, 1]."""
    frac = jnp.clip(jnp.asarray(fraction, jnp.float32), 0.0, 1.0)
    return jnp.round(frac * n.astype(jnp.float32)).astype(jnp.int32)


def _select(key, eligible: jnp.ndarray, k) -> jnp.ndarray:
    """Boolean (n_max,): exactly min(k, n_eligible) eligible rows, chosen uniformly at random.

    Each row gets a distinct random priority (a random permutation); non-eligible rows are sorted
    after all eligible ones, and the k rows of lowest rank are taken.  Static shapes, no loops.
    """
    n_max = eligible.shape[0]
    priority = jax.random.permutation(key, n_max)
    score = jnp.where(eligible, priority, priority + n_max)
    rank = jnp.argsort(jnp.argsort(score))
    return eligible & (rank < k)


def _asjax(s: Structure) -> Structure:
    return Structure(*(jnp.asarray(x) for x in s))


# --------------------------------------------------------------------------------------------
# the transformations


def displace(key, s: Structure, sigma, relative: bool = False) -> Structure:
    """Gaussian displacement of every present atom, each Cartesian component ~ N(0, sigma^2).

    sigma: Å of the physical structure (applied as sigma / s.nn_distance to the scaled positions),
    or, if ``relative``, a fraction of the nearest-neighbour distance (applied as it is).
    Padding and vacancies keep their positions.  Differentiable in ``s.positions`` (and sigma).
    """
    s = _asjax(s)
    pos = s.positions
    scale = jnp.asarray(sigma, pos.dtype)
    if not relative:
        scale = scale / s.nn_distance.astype(pos.dtype)
    noise = jax.random.normal(key, pos.shape, pos.dtype)
    step = (scale * s.mask.astype(pos.dtype))[:, None] * noise
    return s._replace(positions=pos + step)


def vacancies(key, s: Structure, fraction) -> Structure:
    """Exactly round(fraction * n_present) of the present atoms (mask 1) get mask 0, uniformly."""
    s = _asjax(s)
    present = s.mask > 0.5
    chosen = _select(key, present, _count(fraction, jnp.sum(present, dtype=jnp.int32)))
    return s._replace(mask=jnp.where(chosen, jnp.zeros_like(s.mask), s.mask))


def remove_sublattice(key, s: Structure, fraction, tag: int = 1) -> Structure:
    """Exactly round(fraction * n_tagged) of the present atoms with ``tags == tag`` get mask 0.

    n_tagged counts present atoms with that tag; fraction 1 removes all of them (bcc -> sc).
    """
    s = _asjax(s)
    tagged = (s.mask > 0.5) & (s.tags == tag)
    chosen = _select(key, tagged, _count(fraction, jnp.sum(tagged, dtype=jnp.int32)))
    return s._replace(mask=jnp.where(chosen, jnp.zeros_like(s.mask), s.mask))


def substitute(key, s: Structure, fraction, elements) -> Structure:
    """Exactly round(fraction * n_present) present atoms change species.

    elements: atomic numbers (static tuple); each substituted atom draws one uniformly among those
    different from its current species.  Atoms whose species is the only listed element cannot be
    substituted and are not eligible (the count is then capped at the number of eligible atoms).
    """
    elements = _check_elements(elements)
    s = _asjax(s)
    if not elements:
        if _is_static_zero(fraction):
            return s
        raise ValueError("substitution_elements is empty; list the substituting atomic numbers")
    k_sel, k_elem = jax.random.split(key)
    elem = jnp.asarray(elements, s.numbers.dtype)
    valid = elem[None, :] != s.numbers[:, None]                      # (n_max, n_elements)
    present = s.mask > 0.5
    n_present = jnp.sum(present, dtype=jnp.int32)
    eligible = present & jnp.any(valid, axis=1)
    chosen = _select(k_sel, eligible, _count(fraction, n_present))  # k counts present atoms
    u = jax.random.uniform(k_elem, valid.shape)
    pick = jnp.argmax(jnp.where(valid, u, -1.0), axis=1)
    return s._replace(numbers=jnp.where(chosen, elem[pick], s.numbers))


def renormalize(s: Structure) -> Structure:
    """Rescale one cluster so the mean nearest-neighbour distance of its PRESENT atoms is 1 Å.

    What the host pipeline does to any input (``cluster.build_cluster`` scales by the structure's own
    mean nn distance), so a defective training cluster is scaled as a defective file would be;
    ``nn_distance`` is multiplied by the same factor (physical positions unchanged).  O(n_max^2).
    """
    pos = s.positions
    present = s.mask > 0.5
    n = pos.shape[0]
    d2 = jnp.sum((pos[:, None, :] - pos[None, :, :]) ** 2, axis=-1)
    ok = present[:, None] & present[None, :] & ~jnp.eye(n, dtype=bool)
    nn = jnp.sqrt(jnp.min(jnp.where(ok, d2, jnp.inf), axis=1))
    valid = present & jnp.isfinite(nn)
    count = jnp.sum(valid)
    mean = jnp.where(count > 0, jnp.sum(jnp.where(valid, nn, 0.0)) / jnp.maximum(count, 1), 1.0)
    mean = jax.lax.stop_gradient(jnp.where(mean > 0, mean, 1.0))
    return s._replace(positions=pos / mean, nn_distance=s.nn_distance * mean.astype(s.nn_distance.dtype))


def apply_defects(key, s: Structure, cfg: DefectConfig) -> Structure:
    """All defects of ``cfg`` in a fixed order: substitution, sublattice removal, vacancies,
    displacement.

    The key is split into four streams (one per purpose, always the same four), so switching one
    defect on does not change the random draws of the others.  Fractions of later steps apply to
    the atoms still present after the earlier ones.  Stages with a static level of 0 are skipped;
    an all-zero config returns the structure unchanged.  With ``cfg.random_levels`` each level is
    scaled by its own U(0, 1) draw from a fifth stream (``fold_in(key, 4)``).
    """
    s = _asjax(s)
    k_sub, k_lat, k_vac, k_disp = jax.random.split(key, 4)
    if cfg.random_levels:
        u = jax.random.uniform(jax.random.fold_in(key, 4), (4,))
        fields = ("substitution_fraction", "sublattice_fraction", "vacancy_fraction", "displacement_sigma")
        cfg = dataclasses.replace(cfg, random_levels=False, **{
            f: getattr(cfg, f) * u[i] for i, f in enumerate(fields) if not _is_static_zero(getattr(cfg, f))})
    if not _is_static_zero(cfg.substitution_fraction):
        s = substitute(k_sub, s, cfg.substitution_fraction, cfg.substitution_elements)
    if not _is_static_zero(cfg.sublattice_fraction):
        s = remove_sublattice(k_lat, s, cfg.sublattice_fraction, cfg.sublattice_tag)
    if not _is_static_zero(cfg.vacancy_fraction):
        s = vacancies(k_vac, s, cfg.vacancy_fraction)
    if not _is_static_zero(cfg.displacement_sigma):
        s = displace(k_disp, s, cfg.displacement_sigma, cfg.displacement_relative)
    if cfg.renormalize:
        s = renormalize(s)
    return s


def make_defect_fn(cfg: DefectConfig | Mapping[str, Any]) -> Callable[[jax.Array, Structure], Structure]:
    """``fn(key, Structure) -> Structure`` applying ``cfg`` (a DefectConfig or a mapping of its fields)."""
    if not isinstance(cfg, DefectConfig):
        cfg = DefectConfig.from_dict(cfg)

    def defect_fn(key, s: Structure) -> Structure:
        return apply_defects(key, s, cfg)

    defect_fn.config = cfg
    return defect_fn


__all__ = [
    "DefectConfig",
    "displace",
    "vacancies",
    "substitute",
    "remove_sublattice",
    "apply_defects",
    "renormalize",
    "make_defect_fn",
]
