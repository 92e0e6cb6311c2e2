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
from typing import Any, Callable

import numpy as np

import jax
import jax.numpy as jnp

from crystaljax.config import DefectConfig  # the schema lives in crystaljax.config
from crystaljax.config import check_elements as _check_elements
from crystaljax.config import is_static_zero as _is_static_zero
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
