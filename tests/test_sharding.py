"""Data-parallel sharding on 4 forced CPU devices, the multi-host no-op, and the sharded data reader.

JAX in this process is already initialised with one CPU device, so the 4-device checks run in a
subprocess started with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

FOUR_DEVICES = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np
    from crystaljax.config import DetectorConfig
    from crystaljax.learn import sharding as S
    from crystaljax.learn import train as T
    from crystaljax.learn.model import ModelConfig
    from crystaljax.physics.fingerprint import make_fingerprint_fn
    from crystaljax.structure import Structure

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    B, N = 8, 16
    pos = rng.normal(0, 1.0, (B, N, 3)).astype(np.float32)
    mask = (rng.random((B, N)) < 0.8).astype(np.float32)
    numbers = np.where(mask > 0, rng.integers(3, 30, (B, N)), 0).astype(np.int32)
    s = Structure(pos, numbers, mask, np.zeros((B, N), np.int32), np.ones(B, np.float32))
    labels = jnp.asarray(np.arange(B) % 7, jnp.int32)

    def jitter(key, x):  # per-example keys must be the same whatever the sharding
        return x._replace(positions=x.positions + 0.05 * jax.random.normal(key, x.positions.shape))

    cfg = ModelConfig(filters=(4, 4, 4, 4, 4, 4), kernel=3, dense=16, image_size=16)
    fp = make_fingerprint_fn(DetectorConfig(n_pixels=16, pixel_size=1.6e-3))
    opt = T.make_optimizer(T.OptimConfig(name="sgd", learning_rate=0.05))  # Adam would amplify round-off of ~0 gradients to +-lr
    graphdef, state = T.init_state(cfg, opt, seed=0)
    key = jax.random.key(7)
    single = T.make_train_step(graphdef, opt, fp, jitter)
    ref, m_ref = single(state, (s, labels), key)
    ref2, m_ref2 = single(ref, (s, labels), jax.random.fold_in(key, 1))
    mesh = S.make_mesh(4)
    step = S.make_sharded_train_step(graphdef, opt, fp, jitter, mesh=mesh)
    batch = S.shard_batch(mesh, (s, labels))
    shd, m_shd = step(S.replicate(mesh, state), batch, key)
    shd2, m_shd2 = step(shd, batch, jax.random.fold_in(key, 1))
    diff = lambda a, b: max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    predict = S.make_sharded_predict(graphdef, fp, mesh)
    p_shd = predict(shd2.params, shd2.batch_stats, batch[0])
    p_ref = T.make_eval_step(graphdef, fp)(ref2, s)
    print(json.dumps({
        "devices": jax.device_count(),
        "batch_sharded_over": len(batch[0].positions.sharding.device_set),
        "params_replicated_on": len(jax.tree.leaves(shd2.params)[0].sharding.device_set),
        "loss_ref": float(m_ref["loss"]), "loss_shd": float(m_shd["loss"]),
        "loss_diff": abs(float(m_ref2["loss"]) - float(m_shd2["loss"])),
        "grad_norm_diff": abs(float(m_ref["grad_norm"]) - float(m_shd["grad_norm"])),
        "params_diff": diff(ref2.params, shd2.params),
        "stats_diff": diff(ref2.batch_stats, shd2.batch_stats),
        "params_moved": diff(state.params, ref2.params),
        "probs_diff": float(jnp.max(jnp.abs(p_shd - p_ref))),
    }))
''')


CLASSIFIER_ON_FOUR = textwrap.dedent('''
    import json
    import jax, numpy as np
    from ase.build import bulk
    from crystaljax.analysis.mapping import map_atoms
    from crystaljax.learn import sharding as S
    from crystaljax.learn.classifier import Classifier
    from crystaljax.pipeline import prepare_structures

    assert jax.device_count() == 4, jax.devices()
    clf = Classifier.load("default")
    on4 = clf.on_mesh(S.make_mesh(4))
    rng = np.random.default_rng(0)
    frames = []
    for i, (el, kind, a) in enumerate([("Cu", "fcc", 3.61), ("Fe", "bcc", 2.87), ("Si", "diamond", 5.43),
                                       ("Mg", "hcp", 3.21), ("W", "bcc", 3.16)]):  # 5 rows: not a multiple of 4
        atoms = bulk(el, kind, a=a, cubic=kind != "hcp").repeat((2, 2, 2))
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
        frames.append(atoms)
    batch = prepare_structures(frames)
    images = clf.images(batch, 3)
    images4 = on4.images(batch, 3)
    one = clf.predict_images(images, 3, mc_samples=4, key=5, embeddings=True)
    four = on4.predict_images(images, 3, mc_samples=4, key=5, embeddings=True)
    det, det4 = clf.predict(batch, 2), on4.predict(batch, 2)
    box = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((5, 5, 5))
    box.positions += rng.normal(0, 0.05, box.positions.shape)
    m1 = map_atoms(box, clf, stride=6.0, mc_samples=2, batch_size=8)
    m4 = map_atoms(box, on4, stride=6.0, mc_samples=2, batch_size=8)
    print(json.dumps({
        "weights_on_devices": len(jax.tree.leaves(on4._variables)[0].sharding.device_set),
        "images_diff": float(np.abs(images - images4).max()),
        "samples_diff": float(np.abs(one.samples - four.samples).max()),
        "embedding_diff": float(np.abs(one.embeddings - four.embeddings).max()),
        "distance_diff": float(np.abs(clf.feature_distance(one) - on4.feature_distance(four)).max()),
        "det_diff": float(np.abs(det.probabilities - det4.probabilities).max()),
        "map_diff": float(np.abs(m1.probabilities - m4.probabilities).max()),
        "map_atoms": int(len(m1.probabilities)),
        "labels": one.labels,
    }))
''')


def _run_on_four(script: str) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def four_devices():
    return _run_on_four(FOUR_DEVICES)


def test_sharded_train_step_equals_single_device(four_devices):
    r = four_devices
    assert r["devices"] == 4 and r["batch_sharded_over"] == 4 and r["params_replicated_on"] == 4
    assert r["params_moved"] > 1e-3  # two steps really changed the parameters
    assert abs(r["loss_ref"] - r["loss_shd"]) <= 1e-5
    assert r["loss_diff"] <= 1e-5 and r["grad_norm_diff"] <= 1e-4
    assert r["params_diff"] <= 1e-5 and r["stats_diff"] <= 1e-5


def test_sharded_inference_equals_unsharded(four_devices):
    assert four_devices["probs_diff"] <= 1e-5


def test_classifier_on_a_mesh_equals_one_device():
    """``Classifier.on_mesh``: fingerprints, MC-dropout samples with embeddings, the deterministic path and a
    map's windows split over 4 devices give the single-device numbers (5 rows: the last chunk is padded)."""
    r = _run_on_four(CLASSIFIER_ON_FOUR)
    assert r["weights_on_devices"] == 4
    assert r["images_diff"] <= 1e-5 and r["samples_diff"] <= 1e-5 and r["det_diff"] <= 1e-5
    assert r["embedding_diff"] <= 1e-4 and r["distance_diff"] <= 1e-3
    assert r["map_diff"] <= 1e-5 and r["map_atoms"] == 500
    assert r["labels"] == ["fcc", "bcc", "diam", "hex/rh", "bcc"]


def test_initialize_distributed_is_a_noop_on_one_process(monkeypatch):
    from crystaljax.learn import sharding as S

    calls = []
    monkeypatch.setattr(S.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    info = S.initialize_distributed(environ={"SLURM_NTASKS": "1", "TPU_WORKER_HOSTNAMES": "localhost"})
    assert calls == [] and not info["initialized"] and info["process_count"] == 1
    # a multi-task Slurm step or an explicit coordinator does call JAX's runtime (stubbed here)
    S.initialize_distributed(environ={"SLURM_NTASKS": "8"})
    S.initialize_distributed("10.0.0.1:1234", num_processes=2, process_id=1, environ={})
    assert calls[0]["coordinator_address"] is None
    assert calls[1] == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1,
                        "local_device_ids": None}
    S.initialize_distributed(environ={"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"})
    assert len(calls) == 3


def test_shard_batch_refuses_an_uneven_batch():
    from crystaljax.learn import sharding as S

    mesh = S.make_mesh(1)
    x = S.shard_batch(mesh, {"a": np.arange(6.0)})
    np.testing.assert_array_equal(np.asarray(x["a"]), np.arange(6.0))
    with pytest.raises(ValueError, match="does not split"):
        S.shard_batch(mesh, {"a": np.float32(1.0)})
    with pytest.raises(ValueError, match="devices"):
        S.make_mesh(99)


def _structures(n: int, n_max: int = 6, seed: int = 0):
    from crystaljax.structure import Structure

    rng = np.random.default_rng(seed)
    mask = (rng.random((n, n_max)) < 0.7).astype(np.float32)
    return Structure(rng.normal(size=(n, n_max, 3)).astype(np.float32),
                     (rng.integers(1, 90, (n, n_max)) * mask).astype(np.int32), mask,
                     rng.integers(0, 2, (n, n_max)).astype(np.int32), rng.random(n).astype(np.float32) + 1)


def test_shards_round_trip_and_stream_every_row_once(tmp_path):
    from crystaljax.learn import data as D

    n = 23
    s = _structures(n)
    labels = np.arange(n, dtype=np.int32)  # the label is the row number, to follow rows through the reader
    split = np.where(np.arange(n) % 4 == 0, "test", "train")
    with D.ShardWriter(tmp_path, shard_size=5) as w:  # fed in uneven pieces
        for a, b in ((0, 7), (7, 8), (8, 23)):
            w.add(type(s)(*(x[a:b] for x in s)), labels[a:b], split[a:b])
    ds = D.ShardedDataset(tmp_path)
    assert len(ds) == n and ds.n_shards == 5 and list(ds.counts) == [5, 5, 5, 5, 3] and ds.n_max == 6
    for i in (0, 4, 5, 17, 22, -1):
        item, label = ds[i]
        assert label == labels[i]
        for got, want in zip(item, s):
            np.testing.assert_array_equal(got, want[i])
    with pytest.raises(IndexError):
        ds[n]
    rows = [y for _, y in D.iterate_batches(ds, 4, seed=1, drop_remainder=False)]
    assert sorted(np.concatenate(rows).tolist()) == list(range(n))
    full = [b for b in D.iterate_batches(ds, 4, seed=1)]
    assert all(len(y) == 4 for _, y in full) and len(full) == n // 4
    for batch, y in full:  # each yielded structure is the one with that label
        np.testing.assert_array_equal(batch.positions, s.positions[y])
    # a different epoch is a different order of the same rows
    again = np.concatenate([y for _, y in D.iterate_batches(ds, 4, seed=1, epoch=1, drop_remainder=False)])
    assert sorted(again.tolist()) == list(range(n)) and again.tolist() != np.concatenate(rows).tolist()
    test_rows = np.concatenate([y for _, y in D.iterate_batches(ds, 2, split="test", drop_remainder=False)])
    assert sorted(test_rows.tolist()) == np.flatnonzero(split == "test").tolist()


def test_each_process_reads_only_its_shards(tmp_path):
    from crystaljax.learn import data as D

    n = 40
    D.write_shards(tmp_path, _structures(n, seed=3), np.arange(n), shard_size=4)
    ds = D.ShardedDataset(tmp_path)
    seen = []
    for p in range(3):
        mine = D.shards_for_process(ds.n_shards, p, 3)
        rows = np.concatenate([y for _, y in D.iterate_batches(ds, 3, process_index=p, process_count=3,
                                                               drop_remainder=False)])
        expected = np.concatenate([np.arange(ds.offsets[k], ds.offsets[k + 1]) for k in mine])
        assert sorted(rows.tolist()) == sorted(expected.tolist())
        seen.append(set(rows.tolist()))
    assert set.union(*seen) == set(range(n)) and sum(len(x) for x in seen) == n  # disjoint and complete
    with pytest.raises(ValueError):
        D.shards_for_process(10, 3, 3)
    from crystaljax.errors import InputFileError

    with pytest.raises(InputFileError):
        D.ShardedDataset(tmp_path / "missing")


def test_classify_command_splits_batches_over_devices():
    """``crystaljax classify --devices 4`` (4 forced CPU devices) prints the rows of ``--devices 1``; a device
    count the process does not have is a one-line error."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    files = [str(p) for p in sorted((ROOT / "crystaljax" / "examples").iterdir())]

    def classify(devices: str):
        return subprocess.run([sys.executable, "-m", "crystaljax.cli", "classify", "--json", "--quiet", "--batch", "3",
                               "--devices", devices, *files], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=900)

    one, four, five = classify("1"), classify("4"), classify("5")
    assert one.returncode == 0 and four.returncode == 0, four.stderr[-2000:]
    rows1, rows4 = json.loads(one.stdout), json.loads(four.stdout)
    assert len(rows1) == len(rows4) >= len(files)
    for a, b in zip(rows1, rows4):
        assert (a["file"], a["frame"], a["label"], a["unknown"]) == (b["file"], b["frame"], b["label"], b["unknown"])
        assert max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in a["probabilities"]) <= 1e-5
    assert five.returncode != 0 and five.stderr.strip().splitlines()[-1].startswith("crystaljax: error:")
    assert "Traceback" not in five.stderr
