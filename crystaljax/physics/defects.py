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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from crystaljax.config import DefectConfig  # the schema lives in crystaljax.config
from crystaljax.config import check_elements as _check_elements
from crystaljax.config import is_static_zero as _is_static_zero
from crystaljax.physics.scale import nn_scale
from crystaljax.structure import Structure

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

    elements: atomic numbers, a static tuple or an int array (traced allowed, e.g. vmapped over
    structures); 0 marks an unused slot, so binary and ternary alloys share the shape (2,).  Each
    substituted atom draws one uniformly among the listed species different from its current one.
    Atoms whose species is the only listed element cannot be substituted and are not eligible (the
    count is then capped at the number of eligible atoms).
    """
    if not isinstance(elements, (jax.Array, np.ndarray)):
        elements = _check_elements(elements)
        if not elements:
            if _is_static_zero(fraction):
                return _asjax(s)
            raise ValueError("substitution_elements is empty; list the substituting atomic numbers")
    s = _asjax(s)
    k_sel, k_elem = jax.random.split(key)
    elem = jnp.asarray(elements, s.numbers.dtype).reshape(-1)
    valid = (elem[None, :] != s.numbers[:, None]) & (elem[None, :] > 0)   # (n_max, n_elements)
    present = s.mask > 0.5
    n_present = jnp.sum(present, dtype=jnp.int32)
    eligible = present & jnp.any(valid, axis=1)
    chosen = _select(k_sel, eligible, _count(fraction, n_present))  # k counts present atoms
    u = jax.random.uniform(k_elem, valid.shape)
    pick = jnp.argmax(jnp.where(valid, u, -1.0), axis=1)
    return s._replace(numbers=jnp.where(chosen, elem[pick], s.numbers))


def renormalize(s: Structure) -> Structure:
    """Rescale one cluster so the robust nearest-neighbour distance of its PRESENT atoms is 1 Å.

    What the host pipeline does to any input (``cluster.build_cluster`` scales by the structure's own
    robust nn distance; the same statistic, :func:`crystaljax.physics.scale.nn_scale`), so a defective
    training cluster is scaled as a defective file would be; ``nn_distance`` is multiplied by the same
    factor (physical positions unchanged).  Fewer than two present atoms: unchanged.  O(n_max^2).
    """
    pos = s.positions
    scale = nn_scale(pos, s.mask)
    scale = jax.lax.stop_gradient(jnp.where(jnp.isfinite(scale) & (scale > 0), scale, 1.0))
    return s._replace(positions=pos / scale, nn_distance=s.nn_distance * scale.astype(s.nn_distance.dtype))


def jitter_scale(key, s: Structure, half_width: float) -> Structure:
    """Multiply the scaled positions by exp(U(-half_width, half_width)) and divide ``nn_distance`` by the
    same factor (physical positions unchanged): a random relative error of the length scale, as a scale
    estimator makes on a defective file.  ``half_width`` is static; 0 is an exact no-op."""
    s = _asjax(s)
    if half_width == 0:
        return s
    factor = jnp.exp(jax.random.uniform(key, (), s.positions.dtype, -half_width, half_width))
    return s._replace(positions=s.positions * factor, nn_distance=s.nn_distance / factor.astype(s.nn_distance.dtype))


STAGES: tuple[str, ...] = ("substitution", "sublattice", "vacancies", "displacement")
"""The defect stages, in the order they are applied (each draws from its own key stream)."""


class DefectLevels(NamedTuple):
    """The traced part of a defect: how strong.  A pytree; vmap over it to sweep levels.

    displacement_sigma:    () float, Å of the physical structure (or a fraction of d_NN, see the spec).
    vacancy_fraction:      () float in [0, 1].
    substitution_fraction: () float in [0, 1].
    sublattice_fraction:   () float in [0, 1].
    substitution_elements: (n_elements,) int32 atomic numbers; 0 = unused slot.
    """

    displacement_sigma: Any = 0.0
    vacancy_fraction: Any = 0.0
    substitution_fraction: Any = 0.0
    sublattice_fraction: Any = 0.0
    substitution_elements: Any = ()

    @classmethod
    def from_config(cls, cfg: DefectConfig) -> "DefectLevels":
        return cls(cfg.displacement_sigma, cfg.vacancy_fraction, cfg.substitution_fraction, cfg.sublattice_fraction,
                   jnp.asarray(cfg.substitution_elements, jnp.int32).reshape(-1))

    def level(self, stage: str):
        return {"substitution": self.substitution_fraction, "sublattice": self.sublattice_fraction,
                "vacancies": self.vacancy_fraction, "displacement": self.displacement_sigma}[stage]


@dataclass(frozen=True)
class DefectSpec:
    """The static part of a defect: which stages run and how (levels come separately, traced).

    stages:       subset of :data:`STAGES`; they run in the order of STAGES whatever the order here.
    split_key:    True: the key is split into four streams, one per stage (switching a stage on never
                  changes the draws of the others).  False: the one stage draws from the key as given
                  (only with a single stage; for sweeps whose keys are already specific to the kind).
    random_levels / renormalize / displacement_relative / sublattice_tag / scale_jitter: as in
                  :class:`DefectConfig` (the jitter draws from ``fold_in(key, 5)``, so it never changes the
                  defect draws).
    """

    stages: tuple[str, ...] = ()
    displacement_relative: bool = False
    sublattice_tag: int = 1
    random_levels: bool = False
    renormalize: bool = False
    split_key: bool = True
    scale_jitter: float = 0.0

    def __post_init__(self):
        stages = (self.stages,) if isinstance(self.stages, str) else tuple(self.stages)
        unknown = [x for x in stages if x not in STAGES]
        if unknown:
            raise ValueError(f"unknown defect stage(s) {unknown}; choose from {STAGES}")
        object.__setattr__(self, "stages", tuple(x for x in STAGES if x in stages))
        if not self.split_key and len(self.stages) > 1:
            raise ValueError("split_key=False draws every stage from one key: give a single stage")

    @classmethod
    def from_config(cls, cfg: DefectConfig) -> "DefectSpec":
        """Stages = those of ``cfg`` whose level is not a static 0."""
        levels = DefectLevels.from_config(cfg)
        return cls(tuple(x for x in STAGES if not _is_static_zero(levels.level(x))), cfg.displacement_relative,
                   cfg.sublattice_tag, cfg.random_levels, cfg.renormalize, scale_jitter=cfg.scale_jitter)


def _run_stages(spec: DefectSpec, key, s: Structure, levels: DefectLevels) -> Structure:
    s = _asjax(s)
    if spec.split_key:
        keys = dict(zip(STAGES, jax.random.split(key, 4)))
    else:
        keys = {x: key for x in STAGES}
    if spec.random_levels:
        u = jax.random.uniform(jax.random.fold_in(key, 4), (4,))
        scaled = {x: levels.level(x) * u[i] for i, x in enumerate(STAGES) if x in spec.stages}
        levels = levels._replace(substitution_fraction=scaled.get("substitution", levels.substitution_fraction),
                                 sublattice_fraction=scaled.get("sublattice", levels.sublattice_fraction),
                                 vacancy_fraction=scaled.get("vacancies", levels.vacancy_fraction),
                                 displacement_sigma=scaled.get("displacement", levels.displacement_sigma))
    if "substitution" in spec.stages:
        s = substitute(keys["substitution"], s, levels.substitution_fraction,
                       jnp.asarray(levels.substitution_elements, jnp.int32))
    if "sublattice" in spec.stages:
        s = remove_sublattice(keys["sublattice"], s, levels.sublattice_fraction, spec.sublattice_tag)
    if "vacancies" in spec.stages:
        s = vacancies(keys["vacancies"], s, levels.vacancy_fraction)
    if "displacement" in spec.stages:
        s = displace(keys["displacement"], s, levels.displacement_sigma, spec.displacement_relative)
    if spec.renormalize:
        s = renormalize(s)
    if spec.scale_jitter:
        s = jitter_scale(jax.random.fold_in(key, 5), s, spec.scale_jitter)
    return s


def apply_defects(key, s: Structure, cfg: DefectConfig) -> Structure:
    """All defects of ``cfg`` in a fixed order: substitution, sublattice removal, vacancies,
    displacement.

    The key is split into four streams (one per purpose, always the same four), so switching one
    defect on does not change the random draws of the others.  Fractions of later steps apply to
    the atoms still present after the earlier ones.  Stages with a static level of 0 are skipped;
    an all-zero config returns the structure unchanged.  With ``cfg.random_levels`` each level is
    scaled by its own U(0, 1) draw from a fifth stream (``fold_in(key, 4)``).
    """
    return _run_stages(DefectSpec.from_config(cfg), key, s, DefectLevels.from_config(cfg))


def make_defect_fn(spec: DefectSpec | DefectConfig | Mapping[str, Any]) -> Callable[..., Structure]:
    """``fn(key, structure, levels=None) -> Structure``, pure and traceable.

    spec: a :class:`DefectSpec` (static: which stages, key handling, renormalisation), or a
    :class:`DefectConfig` / mapping of its fields (its stages are those with a non-zero level, and its
    levels are the default ``levels``).  ``levels``: a :class:`DefectLevels` pytree of traced values,
    so a sweep is ``jax.vmap`` over levels and keys with one compilation.  ``fn.spec`` (and, from a
    config, ``fn.config``) record what was built.
    """
    config = None
    if not isinstance(spec, DefectSpec):
        config = spec if isinstance(spec, DefectConfig) else DefectConfig.from_dict(spec)
        spec = DefectSpec.from_config(config)
    default = None if config is None else DefectLevels.from_config(config)

    def defect_fn(key, s: Structure, levels: DefectLevels | None = None) -> Structure:
        if levels is None:
            if default is None:
                raise ValueError("this defect function was built from a DefectSpec: pass levels=DefectLevels(...)")
            levels = default
        return _run_stages(spec, key, s, levels)

    defect_fn.spec = spec
    defect_fn.config = config
    return defect_fn


__all__ = [
    "DefectConfig",
    "DefectLevels",
    "DefectSpec",
    "STAGES",
    "displace",
    "vacancies",
    "substitute",
    "remove_sublattice",
    "apply_defects",
    "renormalize",
    "jitter_scale",
    "make_defect_fn",
]
