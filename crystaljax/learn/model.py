"""The ConvNet of Table 2 (Flax NNX).

input (B, 64, 64, 3) NHWC -> conv 7x7 x32, x32 (same, ReLU) -> max-pool 2 -> conv 7x7 x16, x16
-> max-pool 2 -> conv 7x7 x8, x8 -> dropout 0.25 -> flatten (2048) -> dense 128 ReLU -> batch norm
-> dense 7 -> logits.  Softmax is applied by callers (``jax.nn.softmax``).

365,719 numbers including the batch-norm running mean/variance (102,032 conv + 262,272 dense
+ 512 batch norm + 903 output).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from crystaljax.config import ModelConfig  # the schema lives in crystaljax.config



POOL_AFTER = (1, 3)  # max-pool 2x2 after the 2nd and 4th convolution (0-based indices)


class ConvNet(nnx.Module):
    """Table 2 ConvNet.  ``__call__(x (B, H, W, C) float32, train=False, rngs=None) -> logits (B, n_classes)``.

    Train mode (``train=True``) applies dropout (needs ``rngs``: an ``nnx.Rngs`` with a 'dropout'
    stream or a key) and updates the batch-norm running statistics from the batch; eval mode uses
    the running statistics and no dropout.  The Dropout layer holds no RNG state, so
    ``nnx.state(model)`` is exactly parameters + batch statistics.
    """

    def __init__(
        self,
        n_classes: int = 7,
        filters: tuple[int, ...] = (32, 32, 16, 16, 8, 8),
        kernel: int = 7,
        dense: int = 128,
        dropout: float = 0.25,
        *,
        image_size: int = 64,
        channels: int = 3,
        bn_momentum: float = 0.99,
        bn_epsilon: float = 1e-3,
        rngs: nnx.Rngs,
    ):
        convs = []
        c_in = channels
        for c_out in filters:
            convs.append(nnx.Conv(c_in, c_out, (kernel, kernel), padding="SAME", rngs=rngs))
            c_in = c_out
        self.convs = nnx.List(convs)
        self.dropout = nnx.Dropout(dropout)
        n_pool = sum(1 for i in POOL_AFTER if i < len(filters))
        side = image_size // (2**n_pool)
        self.flat_features = side * side * c_in
        self.hidden = nnx.Linear(self.flat_features, dense, rngs=rngs)
        self.bn = nnx.BatchNorm(dense, momentum=bn_momentum, epsilon=bn_epsilon, rngs=rngs)
        self.out = nnx.Linear(dense, n_classes, rngs=rngs)

    @classmethod
    def from_config(cls, cfg: ModelConfig, *, rngs: nnx.Rngs) -> "ConvNet":
        return cls(
            n_classes=cfg.n_classes, filters=tuple(cfg.filters), kernel=cfg.kernel, dense=cfg.dense,
            dropout=cfg.dropout, image_size=cfg.image_size, channels=cfg.channels,
            bn_momentum=cfg.bn_momentum, bn_epsilon=cfg.bn_epsilon, rngs=rngs,
        )

    def __call__(self, x: jax.Array, *, train: bool = False, rngs: Any = None, mc_dropout: bool = False) -> jax.Array:
        """x (B, H, W, C) -> logits (B, n_classes).  ``mc_dropout=True`` (with ``train=False``): dropout on
        (needs ``rngs``), batch norm on its running statistics -- one Monte Carlo dropout sample."""
        return self.out(self.embed(x, train=train, rngs=rngs, mc_dropout=mc_dropout))

    def embed(self, x: jax.Array, *, train: bool = False, rngs: Any = None, mc_dropout: bool = False) -> jax.Array:
        """x (B, H, W, C) -> (B, dense): the batch-normalised hidden layer the output layer reads (the feature
        space of the unknown verdict's distance gate, ``crystaljax.learn.novelty``); arguments as ``__call__``."""
        return self.head(self.features(x), train=train, rngs=rngs, mc_dropout=mc_dropout)

    def features(self, x: jax.Array) -> jax.Array:
        """x (B, H, W, C) -> (B, H', W', C'): the convolutional trunk (no dropout, no batch norm), the part an
        MC-dropout sample shares with every other sample and with the deterministic embedding."""
        for i, conv in enumerate(self.convs):
            x = jax.nn.relu(conv(x))
            if i in POOL_AFTER:
                x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
        return x

    def head(self, x: jax.Array, *, train: bool = False, rngs: Any = None, mc_dropout: bool = False) -> jax.Array:
        """Trunk features (B, H', W', C') (:meth:`features`) -> the embedding (B, dense): dropout, dense, batch
        norm; arguments as ``__call__``."""
        drop = train or mc_dropout
        if mc_dropout and not train:  # the same elementwise mask on the flat features: a 2-D mask compiles
            x = x.reshape(x.shape[0], -1)  # ~10x faster than a 4-D one on CPU
        x = self.dropout(x, deterministic=not drop, rngs=rngs if drop else None)
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(self.hidden(x))
        return self.bn(x, use_running_average=not train)


def build_model(cfg: ModelConfig = ModelConfig(), seed: int = 0) -> ConvNet:
    """A freshly initialised ConvNet from a config; same weights as ``ConvNet.from_config(cfg,
    rngs=nnx.Rngs(seed))`` but initialised under one ``jax.jit`` (faster than eager op dispatch)."""

    abstract = nnx.eval_shape(lambda: ConvNet.from_config(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, _initial_values(cfg, int(seed)))
    return nnx.merge(graphdef, state)


def _initial_values(cfg: ModelConfig, seed: int) -> dict:
    """Pure dict of the initial weights of ``cfg`` for ``seed`` (one jitted initialisation)."""

    def init(key):
        return nnx.to_pure_dict(nnx.state(ConvNet.from_config(cfg, rngs=nnx.Rngs(key))))

    return jax.jit(init)(jax.random.key(seed))


def count_parameters(model: nnx.Module, include_batch_stats: bool = True) -> int:
    """Number of scalars in the model (parameters, plus batch-norm running mean/var if asked)."""
    filt = nnx.Param if not include_batch_stats else (nnx.Param, nnx.BatchStat)
    state = nnx.state(model, filt)
    return int(sum(np.size(x) for x in jax.tree.leaves(state)))


def probabilities(logits: jax.Array) -> jax.Array:
    """Softmax over the last axis: logits (B, n) -> probabilities (B, n)."""
    return jax.nn.softmax(logits, axis=-1)


__all__ = ["ModelConfig", "ConvNet", "build_model", "count_parameters", "probabilities"]
