"""OVITO Python modifier: per-atom ``crystal_class``, ``class_probability``, ``uncertainty`` and the unknown
verdict (``unknown``, ``unknown_reason``) from crystaljax.

Needs the optional extra ``pip install crystaljax[ovito]`` (the ``ovito`` package from PyPI).

    from ovito.io import import_file
    from crystaljax.analysis.ovito_modifier import CrystalMapModifier

    pipeline = import_file("polycrystal.xyz")
    pipeline.modifiers.append(CrystalMapModifier(stride=6.0))
    data = pipeline.compute()
    data.particles["crystal_class"]          # typed property: one named type per class
    data.particles["class_probability"], data.particles["uncertainty"]
    data.particles["unknown"], data.particles["unknown_reason"]   # with mc_samples > 0 (the default)

In OVITO Pro's GUI: add a "Python script" modifier whose script is ``from crystaljax.analysis.ovito_modifier
import CrystalMapModifier`` and select it, or call :func:`modify` from a function modifier.
"""

from __future__ import annotations

import numpy as np

from crystaljax.analysis.map_plots import CLASS_COLOURS
from crystaljax.analysis.mapping import DEFAULT_MC_SAMPLES, DEFAULT_STRIDE, UNKNOWN, map_atoms

try:  # the base class exists only with ovito installed; the functions below work on any DataCollection
    from ovito.pipeline import ModifierInterface as _Base
except ImportError:  # pragma: no cover - exercised only without the extra
    _Base = object


def _hex_rgb(colour: str) -> tuple[float, float, float]:
    c = colour.lstrip("#")
    return tuple(int(c[i:i + 2], 16) / 255.0 for i in (0, 2, 4))


def add_map_properties(data, result) -> None:
    """Write a :class:`crystaljax.analysis.mapping.MapResult` into an OVITO ``DataCollection``: ``crystal_class``
    (integer property with one named, coloured type per class, ids 1..C, and type C+1 ``unknown`` for the
    atoms the unknown verdict flags, as in the extxyz), ``class_probability``, ``uncertainty`` (float),
    ``epistemic`` (float, with MC dropout) and, when the verdict is on, ``unknown`` (int 0/1) and
    ``unknown_reason`` (typed: 0 ``none``, 1.. the reasons of :data:`crystaljax.learn.novelty.REASONS`)."""
    from ovito.data import ElementType

    from crystaljax.learn.novelty import REASONS

    particles = data.particles_
    ids = result.class_index + 1
    if result.unknown is not None:
        ids = np.where(result.unknown, len(result.classes) + 1, ids)
    prop = particles.create_property("crystal_class", data=ids.astype(np.int32))
    for i, name in enumerate(result.classes):
        prop.types.append(ElementType(id=i + 1, name=name, color=_hex_rgb(CLASS_COLOURS.get(name, "#7f7f7f"))))
    particles.create_property("class_probability", data=result.class_probability.astype(np.float64))
    particles.create_property("uncertainty", data=result.uncertainty.astype(np.float64))
    if result.epistemic is not None:
        particles.create_property("epistemic", data=result.epistemic.astype(np.float64))
    if result.unknown is None:
        return
    prop.types.append(ElementType(id=len(result.classes) + 1, name=UNKNOWN,
                                  color=_hex_rgb(CLASS_COLOURS.get(UNKNOWN, "#7f7f7f"))))
    particles.create_property("unknown", data=result.unknown.astype(np.int32))
    code = {r: i + 1 for i, r in enumerate(REASONS)}
    reason = particles.create_property("unknown_reason",
                                       data=np.array([code.get(r, 0) for r in result.unknown_reason], np.int32))
    for i, name in enumerate(("none", *REASONS)):
        reason.types.append(ElementType(id=i, name=name))


def modify(frame, data, classifier=None, stride: float = DEFAULT_STRIDE, window=None,
           mc_samples: int = DEFAULT_MC_SAMPLES, unknown: bool = True, seed: int = 0):
    """Function-modifier form: map the particles of ``data`` (as ``crystaljax map``: MC dropout and the unknown
    verdict by default) and add the properties in place."""
    from ovito.io.ase import ovito_to_ase

    atoms = ovito_to_ase(data)
    result = map_atoms(atoms, classifier, stride=stride, window=window, mc_samples=mc_samples, unknown=unknown,
                       seed=seed)
    add_map_properties(data, result)
    return result


class CrystalMapModifier(_Base):
    """OVITO pipeline modifier running :func:`crystaljax.analysis.mapping.map_atoms` on every frame.

    model: ``default`` | ``pristine`` | a model directory (loaded once per modifier); stride (Å), window
    (atoms or Å radius), mc_samples, unknown (False = ``--no-unknown``) and seed as in ``crystaljax map``.
    """

    def __init__(self, model: str | None = None, stride: float = DEFAULT_STRIDE, window=None,
                 mc_samples: int = DEFAULT_MC_SAMPLES, unknown: bool = True, seed: int = 0, **kwargs):
        if _Base is not object:
            super().__init__(**kwargs)
        self._model_name = model
        self._stride = float(stride)
        self._window = window
        self._mc_samples = int(mc_samples)
        self._unknown = bool(unknown)
        self._seed = int(seed)
        self._classifier = None

    def _get_classifier(self):
        if self._classifier is None:
            from crystaljax.learn.classifier import Classifier

            self._classifier = Classifier.load(self._model_name)
        return self._classifier

    def modify(self, data, *, frame: int = 0, **kwargs):
        modify(frame, data, self._get_classifier(), self._stride, self._window, self._mc_samples, self._unknown,
               self._seed)
