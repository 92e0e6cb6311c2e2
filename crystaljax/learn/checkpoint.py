"""The shipped model format: ``model.msgpack`` (float32 parameters + batch statistics) + ``model_card.json``.

Self-contained (flax.serialization only: no Orbax, no network).  A model is named by a directory or
by the name of a model shipped in the package (``default``, ``pristine``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crystaljax.errors import InputFileError
from crystaljax.jsonio import json_default
from crystaljax.learn.model import ConvNet, ModelConfig

MODEL_WEIGHTS = "model.msgpack"
MODEL_CARD = "model_card.json"
MODEL_FORMAT = "crystaljax-convnet/1"

#: Models shipped inside the package, by name.
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
SHIPPED_MODELS = ("default", "pristine")


@dataclass(frozen=True)
class Checkpoint:
    """A trained ConvNet as pure pytrees: static ``graphdef``, ``params`` and ``batch_stats`` (nested dicts of
    arrays), its ``ModelConfig`` and its model card (classes, fingerprint settings, metrics, provenance)."""

    graphdef: Any
    params: Any
    batch_stats: Any
    config: ModelConfig
    card: dict

    def model(self) -> ConvNet:
        """An NNX ConvNet holding these weights (a fresh module each call)."""
        return nnx.merge(self.graphdef, self.params, self.batch_stats)


def resolve_model_dir(name_or_path: str | Path | None = None) -> Path:
    """``None`` or a shipped name (``default``, ``pristine``) -> its package directory; anything else is a path.

    Raises ``InputFileError`` (one line) when there is no model card there."""
    if name_or_path is None:
        name_or_path = "default"
    if isinstance(name_or_path, str) and name_or_path in SHIPPED_MODELS:
        directory = PRETRAINED_DIR / name_or_path
    else:
        directory = Path(name_or_path)
    if not directory.is_dir():
        raise InputFileError(f"{name_or_path}: no such model (give a model directory or one of {', '.join(SHIPPED_MODELS)})")
    if not (directory / MODEL_CARD).is_file():
        raise InputFileError(f"{directory}: not a crystaljax model (no {MODEL_CARD})")
    return directory


def save(directory, params, batch_stats, model_cfg: ModelConfig, card: Mapping[str, Any] | None = None) -> Path:
    """Write ``directory/model.msgpack`` and ``directory/model_card.json``; returns the directory.

    ``card``: free JSON-able metadata (classes, detector/beam/fingerprint settings, metrics, config); the
    format, the ModelConfig, the parameter count and a SHA-256 of the weights are added.
    """
    from flax import serialization

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"params": _to_numpy(params), "batch_stats": _to_numpy(batch_stats)}
    blob = serialization.msgpack_serialize(_str_keys(payload))
    (directory / MODEL_WEIGHTS).write_bytes(blob)
    out = dict(card or {})
    out.update({
        "format": MODEL_FORMAT,
        "weights": MODEL_WEIGHTS,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "model_config": model_cfg.to_dict(),
        "n_parameters": int(sum(np.size(x) for x in jax.tree.leaves(payload))),
    })
    (directory / MODEL_CARD).write_text(json.dumps(out, indent=2, default=json_default) + "\n")
    return directory


def load(name_or_path: str | Path | None = None) -> Checkpoint:
    """Read a model written by :func:`save` (or a shipped one by name); checks the SHA-256 and every shape.

    Raises ``InputFileError`` with a one-line message for a missing or broken model."""
    from flax import serialization

    directory = resolve_model_dir(name_or_path)
    try:
        card = json.loads((directory / MODEL_CARD).read_text())
        blob = (directory / card.get("weights", MODEL_WEIGHTS)).read_bytes()
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{directory}: not a crystaljax model ({str(exc).splitlines()[0]})") from None
    if "sha256" in card and hashlib.sha256(blob).hexdigest() != card["sha256"]:
        raise InputFileError(f"{directory / MODEL_WEIGHTS}: does not match the checksum in its model card")
    cfg = ModelConfig.from_dict(card.get("model_config"))
    abstract = nnx.eval_shape(lambda: ConvNet.from_config(cfg, rngs=nnx.Rngs(0)))
    graphdef, a_params, a_rest = nnx.split(abstract, nnx.Param, ...)
    want = jax.tree.map(lambda x: tuple(x.shape), (nnx.to_pure_dict(a_params), nnx.to_pure_dict(a_rest)))
    try:
        raw = serialization.msgpack_restore(blob)
        params = _fill(a_params, raw["params"])
        batch_stats = _fill(a_rest, raw["batch_stats"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputFileError(f"{directory}: weights do not fit the model config in the card ({exc})") from None
    if jax.tree.map(lambda x: tuple(x.shape), (params, batch_stats)) != want:
        raise InputFileError(f"{directory}: parameter shapes do not match the model config in the card")
    card.setdefault("path", str(directory))
    return Checkpoint(graphdef, params, batch_stats, cfg, card)


def _fill(abstract_state, values):
    nnx.replace_by_pure_dict(abstract_state, values)
    tree = nnx.to_pure_dict(abstract_state)
    if any(not isinstance(x, np.ndarray) for x in jax.tree.leaves(tree)):
        raise ValueError("the weights file is missing entries for this model config")
    return jax.tree.map(jnp.asarray, tree)


def _to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(x, dtype=np.float32), tree)


def _str_keys(tree):
    if isinstance(tree, Mapping):
        return {str(k): _str_keys(v) for k, v in tree.items()}
    return tree
