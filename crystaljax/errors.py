"""Typed exceptions raised for bad user input; the CLI turns them into one-line messages."""


class CrystalJaxError(Exception):
    """Base class of every error crystaljax raises on purpose."""


class StructureError(CrystalJaxError, ValueError):
    """A structure that cannot be imaged: empty, one atom, NaN/inf coordinates, zero-volume cell, unknown element."""


class InputFileError(CrystalJaxError, OSError):
    """A file that is missing or cannot be read as a structure."""
