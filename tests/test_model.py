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


# --------------------------------------------------------------------------------------------
# checkpoint + Classifier: a tiny model written through checkpoint.save (16-pixel detector)

TINY = ModelConfig(filters=(4, 4, 4, 4, 2, 2), kernel=3, dense=8, image_size=16)
TINY_CARD = {"classes": list("abcdefg"),
             "detector": {"name": "tiny", "n_pixels": 16, "pixel_size": 1.6e-3, "distance": 0.1,
                          "inner_mask_radius": 1.5}}


@pytest.fixture(scope="module")
def tiny_weights():
    """Random weights with non-trivial batch-norm running statistics (so they must be saved and used)."""
    from dataclasses import replace

    graphdef, params, stats = split_model(build_model(replace(TINY, dropout=0.5), seed=3))
    stats = jax.tree.map(lambda x: x + 0.3 * jax.random.uniform(jax.random.key(2), x.shape), stats)
    params = jax.tree.map(lambda x: 2.0 * x, params)  # sharper outputs than the initial near-uniform ones
    return graphdef, params, stats


def _tiny_classifier(tmp_path, weights, dropout):
    from dataclasses import replace

    from crystaljax.learn import checkpoint
    from crystaljax.learn.classifier import Classifier

    _, params, stats = weights
    directory = checkpoint.save(tmp_path / f"tiny_{dropout}", params, stats, replace(TINY, dropout=dropout), TINY_CARD)
    return Classifier.load(directory)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_weights):
    return _tiny_classifier(tmp_path_factory.mktemp("m"), tiny_weights, 0.5)


@pytest.fixture(scope="module")
def tiny_images():
    return np.asarray(jax.random.uniform(jax.random.key(5), (7, 16, 16, 3)))


def test_checkpoint_roundtrip_reproduces_the_network(tmp_path, tiny, tiny_weights, tiny_images):
    from crystaljax.errors import InputFileError
    from crystaljax.learn import checkpoint

    graphdef, params, stats = tiny_weights
    want = jax.nn.softmax(apply_model(graphdef, params, stats, jnp.asarray(tiny_images))[0], -1)
    np.testing.assert_allclose(tiny.predict_images(tiny_images).probabilities, np.asarray(want), rtol=1e-5, atol=1e-7)
    assert tiny.classes == tuple("abcdefg") and tiny.spec.detector.n_pixels == 16
    assert tiny.card["n_parameters"] == count_parameters(nnx.merge(graphdef, params, stats))
    # a corrupted weights file and a card of another architecture are refused with one-line errors
    directory = checkpoint.save(tmp_path / "m", params, stats, TINY, TINY_CARD)
    blob = bytearray((directory / checkpoint.MODEL_WEIGHTS).read_bytes())
    blob[-1] ^= 1
    (directory / checkpoint.MODEL_WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(InputFileError, match="checksum"):
        checkpoint.load(directory)
    with pytest.raises(InputFileError, match="no such model"):
        checkpoint.load(tmp_path / "nowhere")


def test_entropy_and_mutual_information_hand_example():
    from crystaljax.learn.classifier import Prediction

    # two confident samples that disagree: mean (1/2, 1/2), entropy log 2, each sample entropy 0 -> MI = log 2
    # two identical uncertain samples: entropy log 2, MI 0; (0.9, 0.1) x 2 vs (0.5, 0.5): hand-computed values
    samples = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]], [[0.9, 0.1], [0.5, 0.5]]])
    pred = Prediction.from_samples(("x", "y"), samples)
    h_mean = -(0.7 * np.log(0.7) + 0.3 * np.log(0.3))
    h_each = (-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) + np.log(2)) / 2
    np.testing.assert_allclose(pred.probabilities, [[0.5, 0.5], [0.5, 0.5], [0.7, 0.3]])
    np.testing.assert_allclose(pred.entropy, [np.log(2), np.log(2), h_mean], rtol=1e-6)
    np.testing.assert_allclose(pred.mutual_information, [np.log(2), 0.0, h_mean - h_each], rtol=1e-6, atol=1e-12)
    assert pred.n_samples == 2 and pred.labels[2] == "x"
    det = Prediction(("x", "y"), np.array([[0.25, 0.75]]))
    assert det.n_samples == 0 and det.mutual_information.tolist() == [0.0]


def test_mc_dropout_reproducible_and_independent_of_batching(tiny, tiny_images):
    a = tiny.predict_images(tiny_images, 4, mc_samples=8, key=jax.random.key(11))
    b = tiny.predict_images(tiny_images, 3, mc_samples=8, key=jax.random.key(11))
    c = tiny.predict_images(tiny_images, 4, mc_samples=8, key=jax.random.key(12))
    assert a.samples.shape == (7, 8, 7)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-4, atol=1e-6)  # same key: same masks, any chunking
    assert not np.allclose(a.samples, c.samples)
    # structure i's samples depend only on (key, i): the first rows alone give the same numbers
    first = tiny.predict_images(tiny_images[:2], 4, mc_samples=8, key=jax.random.key(11)).samples
    np.testing.assert_allclose(first, a.samples[:2], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.probabilities, a.samples.mean(1), rtol=1e-6)
    np.testing.assert_allclose(a.probabilities.sum(-1), 1.0, rtol=1e-5)


def test_mutual_information_bounds(tiny, tiny_images):
    mc = tiny.predict_images(tiny_images, mc_samples=16, key=0)
    assert np.all(mc.mutual_information >= 0) and np.all(mc.mutual_information <= mc.entropy + 1e-12)
    assert np.all(mc.mutual_information > 1e-6)  # dropout 0.5 on 32 features: the samples disagree
    assert np.all(mc.entropy <= np.log(7) + 1e-9)
    one = tiny.predict_images(tiny_images, mc_samples=1, key=0)
    assert one.n_samples == 1 and np.all(one.mutual_information == 0)
    det = tiny.predict_images(tiny_images)
    assert det.samples is None and np.all(det.mutual_information == 0)


def test_mc_mean_differs_from_deterministic_only_with_dropout(tmp_path, tiny, tiny_weights, tiny_images):
    det = tiny.predict_images(tiny_images).probabilities
    mc = tiny.predict_images(tiny_images, mc_samples=8, key=0)
    assert np.abs(mc.probabilities - det).max() > 1e-3
    # the same weights with dropout rate 0: every sample is the deterministic output
    plain = _tiny_classifier(tmp_path, tiny_weights, 0.0)
    mc0 = plain.predict_images(tiny_images, mc_samples=8, key=0)
    np.testing.assert_allclose(mc0.samples, np.broadcast_to(det[:, None], mc0.samples.shape), rtol=1e-5, atol=1e-7)
    assert np.all(mc0.mutual_information < 1e-6)


def test_mc_dropout_on_structures_shares_the_fingerprints(tiny):
    """predict(batch) images once then samples: the same numbers as sampling the images of that batch."""
    from ase.build import bulk

    from crystaljax.pipeline import prepare_structures

    batch = prepare_structures([bulk("Cu", "fcc", a=3.6), bulk("Fe", "bcc", a=2.87)], target=60)
    from_batch = tiny.predict(batch, mc_samples=4, key=9)
    from_images = tiny.predict_images(tiny.images(batch), mc_samples=4, key=9)
    np.testing.assert_allclose(from_batch.samples, from_images.samples, rtol=1e-5, atol=1e-6)
    assert from_batch.samples.shape == (2, 4, 7)
