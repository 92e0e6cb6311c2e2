"""Train/eval steps, checkpoints, the shipped model format, metrics and tracking.

The real fingerprint is not used here: a differentiable Gaussian-splat stand-in makes small
images from the positions, so these tests exercise the training machinery alone.
"""

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crystaljax.learn import evaluate, tracking
from crystaljax.learn import train as T
from crystaljax.learn.model import ModelConfig
from crystaljax.structure import Structure
from crystaljax.structure import take as T_take

SMALL = ModelConfig(filters=(4, 4, 4, 4, 4, 4), kernel=3, dense=16, image_size=16)
N_MAX = 16


def standin_fingerprint(size: int = 16, width: float = 0.25, extent: float = 2.5):
    """Structure -> (size, size, 3): Gaussian splats of the masked atoms projected on xy, yz, zx."""
    grid = jnp.linspace(-extent, extent, size)

    def fp(s: Structure):
        chans = []
        for a, b in ((0, 1), (1, 2), (2, 0)):
            ga = jnp.exp(-((grid[:, None] - s.positions[None, :, a]) ** 2) / (2 * width**2))
            gb = jnp.exp(-((grid[:, None] - s.positions[None, :, b]) ** 2) / (2 * width**2))
            chans.append(jnp.einsum("in,jn,n->ij", gb, ga, s.mask))
        img = jnp.stack(chans, -1)
        return img / (jnp.max(img) + 1e-6)

    return fp


def jitter_defect(key, s: Structure) -> Structure:
    """Stand-in defect: Gaussian displacements of 0.02 Å."""
    return s._replace(positions=s.positions + 0.02 * jax.random.normal(key, s.positions.shape))


def synthetic(n: int, seed: int = 0):
    """n structures (2x2x2 cubes, edge 0.5 + 0.25*class, random shift) -> (Structure, labels)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int32) % 7
    rng.shuffle(labels)
    cube = np.stack(np.meshgrid([-0.5, 0.5], [-0.5, 0.5], [-0.5, 0.5], indexing="ij"), -1).reshape(8, 3)
    pos = np.zeros((n, N_MAX, 3), np.float32)
    mask = np.zeros((n, N_MAX), np.float32)
    for i, c in enumerate(labels):
        pos[i, :8] = cube * (0.5 + 0.25 * c) + rng.normal(0, 0.05, 3) + rng.normal(0, 0.02, (8, 3))
        mask[i, :8] = 1
    s = Structure(pos, (mask * 3).astype(np.int32), mask, np.zeros((n, N_MAX), np.int32), np.ones(n, np.float32))
    return s, labels


@pytest.fixture(scope="module")
def setup():
    opt = T.make_optimizer(T.OptimConfig(learning_rate=3e-3, batch_size=14))
    graphdef, state = T.init_state(SMALL, opt, seed=0)
    return opt, graphdef, state


def test_train_step_lowers_loss(setup):
    opt, graphdef, state = setup
    step = T.make_train_step(graphdef, opt, standin_fingerprint(), jitter_defect)
    s, y = synthetic(14)
    batch = (s, jnp.asarray(y))
    losses = []
    for i in range(25):
        state, m = step(state, batch, jax.random.key(i))
        losses.append(float(m["loss"]))
    assert int(state.step) == 25
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


def test_eval_step_jit_equals_eager_and_normalised(setup):
    _, graphdef, state = setup
    s, _ = synthetic(5)
    fp = standin_fingerprint()
    p_jit = T.make_eval_step(graphdef, fp)(state, s)
    p_eager = T.make_eval_step(graphdef, fp, jit=False)(state, s)
    assert p_jit.shape == (5, 7)
    np.testing.assert_allclose(np.asarray(p_jit), np.asarray(p_eager), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(p_jit).sum(-1), 1.0, rtol=1e-5)
    # precomputed images give the same answer
    images = jax.vmap(fp)(s)
    np.testing.assert_allclose(T.predict_from_fingerprints(graphdef, state, images, batch_size=2),
                               np.asarray(p_jit), rtol=1e-5, atol=1e-6)


def test_batch_stats_change_in_train_mode_only(setup):
    opt, graphdef, state = setup
    s, y = synthetic(14, seed=1)
    images = jax.vmap(standin_fingerprint())(s)
    apply = jax.jit(partial(T.apply_model, graphdef), static_argnames="train")
    _, stats_eval = apply(state.params, state.batch_stats, images, train=False)
    k_dropout = jax.random.split(jax.random.key(0))[1]  # train_step splits its key into (defect, dropout)
    _, stats_train = apply(state.params, state.batch_stats, images, train=True, key=k_dropout)
    for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(stats_eval)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.allclose(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(stats_train)))
    # the train step (precomputed-image form) carries the new statistics in the state
    step = T.make_train_step(graphdef, opt, None)
    new, _ = step(state, (images, jnp.asarray(y)), jax.random.key(0))
    for a, b in zip(jax.tree.leaves(stats_train), jax.tree.leaves(new.batch_stats)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_save_load_roundtrip_default_model(tmp_path):
    opt = T.make_optimizer(T.OptimConfig())
    graphdef, state = T.init_state(ModelConfig(), opt, seed=1)
    # non-trivial running statistics, so they must be saved to reproduce predictions
    stats = jax.tree.map(lambda x: x + 0.3 * jax.random.uniform(jax.random.key(2), x.shape), state.batch_stats)
    state = state._replace(batch_stats=stats)
    from crystaljax.errors import InputFileError
    from crystaljax.learn import checkpoint
    from crystaljax.learn.classifier import Classifier

    checkpoint.save(tmp_path / "m", state.params, state.batch_stats, ModelConfig(),
                    {"classes": list("abcdefg"), "metrics": {"acc": np.float32(0.5)}})
    size = (tmp_path / "m" / checkpoint.MODEL_WEIGHTS).stat().st_size
    assert 1.4e6 < size < 1.6e6
    clf = Classifier.load(tmp_path / "m")
    card = clf.card
    assert card["classes"] == list("abcdefg") and card["n_parameters"] == 365_719
    assert ModelConfig.from_dict(card["model_config"]) == ModelConfig()
    images = jax.random.uniform(jax.random.key(3), (3, 64, 64, 3))
    want = T.predict_from_fingerprints(graphdef, state, images)
    np.testing.assert_allclose(clf.probabilities_of_images(images), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(clf.apply(images)), want, rtol=1e-6)
    # a corrupted weights file is refused
    blob = bytearray((tmp_path / "m" / checkpoint.MODEL_WEIGHTS).read_bytes())
    blob[-1] ^= 1
    (tmp_path / "m" / checkpoint.MODEL_WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(InputFileError):
        checkpoint.load(tmp_path / "m")


def test_fit_checkpoint_resume_continues(tmp_path):
    s, y = synthetic(28, seed=2)
    split = np.array(["train"] * 20 + ["val"] * 4 + ["test"] * 4)
    ocfg = T.OptimConfig(learning_rate=3e-3, batch_size=8, epochs=1, eval_batch_size=8)
    kw = dict(seed=0, progress=False, eval_every_epoch=False, class_names=list("abcdefg"))
    fp = standin_fingerprint()
    r1 = T.fit(SMALL, ocfg, s, y, split, fp, run_dir=tmp_path / "a", eval_splits=(), **kw)
    assert r1.metrics["steps"] == 3 and r1.metrics["resumed_from_epoch"] == 0  # ceil(20 / 8)
    r2 = T.fit(SMALL, replace(ocfg, epochs=2), s, y, split, fp, run_dir=tmp_path / "a", eval_splits=(), **kw)
    assert r2.metrics["resumed_from_epoch"] == 1
    assert int(r2.state.step) == 6 and len(r2.history) == 1
    # a resumed run is the same as an uninterrupted one
    r3 = T.fit(SMALL, replace(ocfg, epochs=2), s, y, split, fp, run_dir=tmp_path / "b", **kw)
    for a, b in zip(jax.tree.leaves(r2.state.params), jax.tree.leaves(r3.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert set(r3.metrics) >= {"val", "test"}
    assert r3.metrics["test"]["n"] == 4 and np.array(r3.metrics["val"]["confusion_matrix"]).shape == (7, 7)
    assert r3.probabilities["val"].shape == (4, 7)


def _fit_small(tmp_path=None, epochs=2, seed=0, defect_fn=jitter_defect, **kw):
    s, y = synthetic(28, seed=2)
    split = np.array(["train"] * 20 + ["val"] * 4 + ["test"] * 4)
    ocfg = T.OptimConfig(learning_rate=3e-3, batch_size=8, epochs=epochs, eval_batch_size=8)
    return T.fit(SMALL, ocfg, s, y, split, standin_fingerprint(), defect_fn, seed=seed, progress=False,
                 checkpoint=False, class_names=list("abcdefg"), **kw)


def test_fit_step_compiles_once_and_is_deterministic():
    """Six steps over two epochs (the last batch of each padded) trace the step once; a second run with the
    same seed gives bit-identical parameters, another seed does not."""
    traces = []

    def counting_defect(key, s):
        traces.append(1)  # runs only while the step is being traced
        return jitter_defect(key, s)

    r1 = _fit_small(defect_fn=counting_defect, log_every=2)
    assert r1.metrics["steps"] == 6 and r1.metrics["data_on_device"]
    assert len(traces) == 1, f"the train step was traced {len(traces)} times"
    r2 = _fit_small(defect_fn=counting_defect, log_every=2)
    for a, b in zip(jax.tree.leaves(r1.state.params), jax.tree.leaves(r2.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert r1.history == r2.history and np.isfinite(r1.history[-1]["train/epoch_loss"])
    r3 = _fit_small(seed=1, eval_splits=())  # only its parameters are compared
    assert any(not np.allclose(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(r1.state.params), jax.tree.leaves(r3.state.params)))


def test_fit_equals_an_explicit_loop_and_the_host_path():
    """The device-resident loop takes the same steps as make_train_step fed the same batches and keys, and the
    host-gathered path (data set over the device budget) gives the same parameters."""
    s, y = synthetic(28, seed=2)
    opt = T.make_optimizer(T.OptimConfig(learning_rate=3e-3, batch_size=8))
    graphdef, state = T.init_state(SMALL, opt, seed=0)
    step = T.make_train_step(graphdef, opt, standin_fingerprint(), jitter_defect)
    root = jax.random.key(0)
    order = np.asarray(T.epoch_order(jax.random.fold_in(root, 2), np.arange(20), 0, 8))
    assert order.shape == (3, 8) and set(order[:2].ravel()) | set(order[2]) == set(range(20))
    for i, idx in enumerate(order):
        batch = (T_take(s, idx), jnp.asarray(y[idx]))
        state, _ = step(state, batch, jax.random.fold_in(jax.random.fold_in(root, 1), i))
    dev = _fit_small(epochs=1, eval_splits=("test",))  # evaluating the test split changes no parameter
    assert dev.metrics["data_on_device"]
    host = _fit_small(epochs=1, eval_splits=("test",), device_budget_bytes=0)
    assert not host.metrics["data_on_device"]
    for r in (dev, host):
        for a, b in zip(jax.tree.leaves(r.state.params), jax.tree.leaves(state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host.probabilities["test"], dev.probabilities["test"], rtol=1e-5, atol=1e-6)


def test_confusion_matrix_hand_example(tmp_path):
    labels = [0, 0, 1, 1, 1, 2]
    preds = [0, 1, 1, 1, 0, 2]
    cm = evaluate.confusion_matrix(labels, preds, 4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert evaluate.accuracy(labels, preds) == pytest.approx(4 / 6)
    pca = evaluate.per_class_accuracy(labels, preds, 4)
    np.testing.assert_allclose(pca[:3], [0.5, 2 / 3, 1.0])
    assert np.isnan(pca[3])
    probs = np.eye(4)[preds] * 0.9 + 0.025
    assert evaluate.accuracy(labels, probs) == pytest.approx(4 / 6)
    rep = evaluate.classification_report(labels, preds, ["w", "x", "y", "z"])
    assert rep["per_class_accuracy"]["z"] is None and rep["support"]["x"] == 3
    json.dumps(rep)
    path = evaluate.plot_confusion(cm, ["w", "x", "y", "z"], tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        evaluate.confusion_matrix([0, 5], [0, 1], 4)


def test_tracking_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")
    run = tracking.start({"a": 1}, {"name": "none"})
    tracking.log(run, {"loss": np.float32(1.5)}, step=1)
    assert run.history == [{"step": 1, "loss": 1.5}]
    assert tracking.finish(run)["mode"] == "none"

    run = tracking.start({"a": 1}, tracking.LoggerConfig(name="wandb", mode="disabled"), tmp_path)
    tracking.log(run, {"loss": 1.0}, step=1)
    tracking.set_summary(run, {"val/accuracy": 0.5})
    assert tracking.finish(run)["mode"] == "disabled"

    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment overrides an offline config
    with tracking.Tracker({"a": 1}, {"name": "wandb", "mode": "offline"}, tmp_path / "w") as t:
        t.log({"x": 2.0}, step=3)
    assert t.info["mode"] == "disabled" and t.info["dir"] is None
    assert not (tmp_path / "w" / "wandb").exists()


@pytest.mark.slow
def test_train_and_evaluate_smoke(tmp_path, monkeypatch):
    """train_and_evaluate on data=tiny, one epoch: every artefact is written and the exported model loads."""
    from crystaljax.config import compose
    from crystaljax.learn import checkpoint as ckpt
    from crystaljax.learn.experiment import train_and_evaluate

    monkeypatch.chdir(tmp_path)
    cfg = compose("config", ["run=smoke", "data.per_class=2", "logger=wandb", "export_to=exported"])
    metrics = train_and_evaluate(cfg, tmp_path / "run")
    assert metrics["steps"] == metrics["steps_per_epoch"] >= 1
    for f in ("config_resolved.yaml", "metrics.json", "model/model_card.json", "model/model.msgpack"):
        assert (tmp_path / "run" / f).is_file(), f
    assert any((tmp_path / "run").glob("confusion_*.png"))
    evaluated = [s for s in ("val", "test") if s in metrics]
    assert evaluated
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    loaded = ckpt.load(tmp_path / "exported")
    assert loaded.card["classes"] and loaded.card["detector"]["n_pixels"] == 64 and loaded.card["n_parameters"] == 365_719
    assert loaded.card["cluster_target"] == cfg.cluster_target
    # the exported model reproduces the written confusion matrix on the (regenerated, seeded) data set
    from crystaljax.learn.classifier import Classifier
    from crystaljax.learn.experiment import load_data

    ds = load_data(cfg)
    name = evaluated[0]
    idx = np.flatnonzero(np.asarray(ds.split).astype(str) == name)
    pred = Classifier.load(tmp_path / "exported").predict(T_take(ds.structures, idx))
    cm = evaluate.confusion_matrix(ds.labels[idx], pred.indices, len(pred.classes))
    np.testing.assert_array_equal(cm, np.array(saved[name]["confusion_matrix"]))


def test_fingerprints_inside_the_step_equal_the_standalone_ones():
    """A step imaging structures on device takes exactly the step fed the public API's fingerprints."""
    from ase.build import bulk

    import crystaljax
    from crystaljax.physics.fingerprint import make_fingerprint_fn

    atoms = [bulk("Cu", "fcc", a=3.6), bulk("Fe", "bcc", a=2.87), bulk("Mg", "hcp", a=3.2, c=5.2),
             bulk("Si", "diamond", a=5.43)]
    structures = crystaljax.prepare_structures(atoms)
    images = crystaljax.fingerprints(atoms)  # host API, batched on device by its own jitted function
    labels = jnp.asarray([4, 6, 2, 5], jnp.int32)
    optimizer = T.make_optimizer(T.OptimConfig())
    graphdef, state = T.init_state(replace(SMALL, image_size=64), optimizer, seed=0)  # the fingerprint's 64 pixels
    key = jax.random.key(3)
    inside, m_inside = T.make_train_step(graphdef, optimizer, make_fingerprint_fn())(state, (structures, labels), key)
    outside, m_outside = T.make_train_step(graphdef, optimizer, None)(state, (jnp.asarray(images), labels), key)
    assert float(m_inside["loss"]) == pytest.approx(float(m_outside["loss"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(inside.params), jax.tree.leaves(outside.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
