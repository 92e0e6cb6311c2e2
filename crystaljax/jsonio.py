"""The one ``json.dumps(default=...)`` of crystaljax: NumPy/JAX values, dataclasses and paths as JSON.

Bottom layer (next to ``config`` and ``errors``): imports NumPy only, so every layer may use it.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def json_default(o):
    """JSON value of ``o`` for ``json.dumps(..., default=json_default)``: arrays (NumPy, JAX or anything with
    ``__array__``) -> nested lists, NumPy scalars -> Python scalars, dataclass instances -> dicts, paths and
    anything else -> ``str(o)``."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray) or hasattr(o, "__array__"):
        return np.asarray(o).tolist()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    return str(o)
