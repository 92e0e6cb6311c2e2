"""The Table 2 ConvNet: size, shapes, modes."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crystaljax.learn.model import ConvNet, ModelConfig, build_model, count_parameters
from crystaljax.learn.train import apply_model, split_model


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(), seed=0)


def test_parameter_count_table2(model):
    assert count_parameters(model) == 365_719
    assert count_parameters(model, include_batch_stats=False) == 365_719 - 256
    n = lambda m, f=nnx.Param: sum(np.size(x) for x in jax.tree.leaves(nnx.state(m, f)))  # noqa: E731
    assert n(model.convs) == 102_032
    assert n(model.hidden) == 262_272
    assert n(model.bn, (nnx.Param, nnx.BatchStat)) == 512
    assert n(model.out) == 903
    assert model.flat_features == 2048
    # nothing but parameters and batch statistics (dropout holds no RNG state)
    assert count_parameters(model) == sum(np.size(x) for x in jax.tree.leaves(nnx.state(model)))


def test_output_shape_and_softmax(model):
    x = jax.random.uniform(jax.random.key(0), (3, 64, 64, 3))
    logits = model(x)
    assert logits.shape == (3, 7) and logits.dtype == jnp.float32
    p = jax.nn.softmax(logits)
    np.testing.assert_allclose(np.asarray(p.sum(-1)), 1.0, rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(logits)))


def test_config_roundtrip_and_constructor_signature():
    cfg = ModelConfig(filters=(4, 4, 4, 4, 2, 2), dense=8, image_size=16)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict({"filters": [32, 32, 16, 16, 8, 8], "unknown": 1}) == ModelConfig()
    m = nnx.eval_shape(lambda: ConvNet(n_classes=5, filters=(4, 4, 4, 4, 2, 2), kernel=3, dense=8,
                                       dropout=0.25, image_size=16, rngs=nnx.Rngs(1)))
    out = nnx.eval_shape(lambda m, x: m(x), m, jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32))
    assert out.shape == (2, 5)


def test_eval_deterministic_train_stochastic(model):
    graphdef, params, stats = split_model(model)
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    f = jax.jit(partial(apply_model, graphdef), static_argnames="train")
    e1, s1 = f(params, stats, x, train=False)
    e2, _ = f(params, stats, x, train=False)
    np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
    a, _ = f(params, stats, x, train=True, key=jax.random.key(0))
    b, _ = f(params, stats, x, train=True, key=jax.random.key(1))
    assert not np.allclose(np.asarray(a), np.asarray(b))
