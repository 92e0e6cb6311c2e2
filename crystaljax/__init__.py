"""crystaljax: crystal-structure classification from differentiable 2-D diffraction fingerprints."""

from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, detector_preset
from crystaljax.errors import CrystalJaxError, InputFileError, StructureError
from crystaljax.physics.fingerprint import diffraction_pattern, make_fingerprint_fn
from crystaljax.structures.io import read_structures
from crystaljax.pipeline import fingerprints, prepare_structures
from crystaljax.structure import Structure

__version__ = "0.1.0"

__all__ = [
    "BeamConfig",
    "DetectorConfig",
    "FingerprintConfig",
    "detector_preset",
    "CrystalJaxError",
    "InputFileError",
    "StructureError",
    "diffraction_pattern",
    "make_fingerprint_fn",
    "read_structures",
    "fingerprints",
    "prepare_structures",
    "Structure",
]
