"""crystaljax: crystal-structure classification from differentiable 2-D diffraction fingerprints."""

from .config import BeamConfig, DetectorConfig, FingerprintConfig, detector_preset
from .errors import CrystalJaxError, InputFileError, StructureError
from .fingerprint import diffraction_pattern, make_fingerprint_fn
from .io import read_structures
from .pipeline import fingerprints, prepare_structures
from .structure import Structure

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
