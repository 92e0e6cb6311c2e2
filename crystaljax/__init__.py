"""crystaljax: crystal-structure classification from differentiable 2-D diffraction fingerprints.

    import crystaljax
    clf = crystaljax.Classifier.load("default")      # or "pristine", or a model directory
    pred = clf.classify(crystaljax.read_structures("file.cif"), mc_samples=16)
    pred.labels, pred.probabilities, pred.entropy, pred.mutual_information

The names below are imported on first use, so ``import crystaljax`` (and ``crystaljax --version``) stays fast.
"""

from __future__ import annotations

import importlib

from crystaljax.physics.cpu_flags import configure_xla_cpu as _configure_xla_cpu

__version__ = "0.1.0"

#: XLA's CPU compiler is asked for 512-bit vectors on CPUs with AVX-512 when XLA_FLAGS is unset (before JAX
#: creates its CPU backend; same results, ~1.1x on the fingerprint: docs/PERFORMANCE.md).  The flag set, or None.
XLA_CPU_FLAG = _configure_xla_cpu()

#: public name -> module that defines it
_EXPORTS = {
    "BeamConfig": "crystaljax.config",
    "DetectorConfig": "crystaljax.config",
    "FingerprintConfig": "crystaljax.config",
    "detector_preset": "crystaljax.config",
    "CrystalJaxError": "crystaljax.errors",
    "InputFileError": "crystaljax.errors",
    "StructureError": "crystaljax.errors",
    "diffraction_pattern": "crystaljax.physics.fingerprint",
    "make_fingerprint_fn": "crystaljax.physics.fingerprint",
    "read_structures": "crystaljax.structures.io",
    "fingerprints": "crystaljax.pipeline",
    "prepare_structures": "crystaljax.pipeline",
    "Structure": "crystaljax.structure",
    "Classifier": "crystaljax.learn.classifier",
    "Prediction": "crystaljax.learn.classifier",
    "CLASS_MEANINGS": "crystaljax.learn.classifier",
    "map_atoms": "crystaljax.analysis.mapping",
}
_SUBMODULES = ("analysis", "config", "errors", "learn", "physics", "pipeline", "structure", "structures")

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"crystaljax.{name}")
    raise AttributeError(f"module 'crystaljax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])
