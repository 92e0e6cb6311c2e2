"""``crystaljax classify`` on a multi-frame file through the streaming pipeline: same rows as frame by frame,
one compilation per bucket of padded sizes."""

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from crystaljax.cli import _progress, main
from crystaljax.learn.classifier import Classifier
from crystaljax.pipeline import balanced_batch, bucket_size
from crystaljax.structures.cluster import prepare
from crystaljax.structures.io import read_structures

# finite clusters are taken whole (up to the 250-atom target): sizes 32 .. 144 atoms, so the batches of 4 below
# land in different buckets; two periodic frames give ~250-atom clusters
REPS = [(2, 2, 2), (2, 2, 3), (2, 2, 2), (2, 2, 3), (2, 3, 3), (3, 3, 3), (2, 3, 3), (2, 2, 2),
        None, (3, 3, 4), (2, 2, 3), None]


def _frames(seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for i, reps in enumerate(REPS):
        element, lattice, a = ("Cu", "fcc", 3.615) if i % 2 == 0 else ("Fe", "bcc", 2.87)
        atoms = bulk(element, lattice, a=a, cubic=True).repeat(reps or (5, 5, 5))
        atoms.pbc = reps is None
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)  # thermal displacements, Å
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def clf():
    return Classifier.load("default")


def _classify(argv, clf, monkeypatch, capsys):
    monkeypatch.setattr(Classifier, "load", classmethod(lambda cls, name=None, mesh=None: clf))
    assert main(["classify", "--json", "--quiet", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_trajectory_rows_match_frame_by_frame_and_compile_once_per_bucket(tmp_path, clf, monkeypatch, capsys):
    frames = _frames()
    traj = tmp_path / "traj.extxyz"
    write(traj, frames, format="extxyz")
    frames = read_structures(traj)  # the frames as the command sees them (extxyz keeps 8 decimals)
    batch = 4
    sizes = [len(prepare(f.copy(), target=clf.spec.cluster_target)) for f in frames]
    buckets = {bucket_size(max(sizes[i:i + batch])) for i in range(0, len(sizes), batch)}
    assert len(buckets) >= 2 and len(set(map(bucket_size, sizes))) >= 4
    images0, probs0 = clf._images._cache_size(), clf._with_embeddings._cache_size()

    rows = _classify(["--mc-samples", "0", "--batch", str(batch), str(traj)], clf, monkeypatch, capsys)

    # one fingerprint compilation per bucket met, one network compilation (every batch has `batch` rows)
    assert clf._images._cache_size() - images0 == len(buckets)
    assert clf._with_embeddings._cache_size() - probs0 == 1
    assert [(r["file"], r["frame"]) for r in rows] == [(str(traj), i) for i in range(len(frames))]
    alone = np.concatenate([clf.classify([f]).probabilities for f in frames])  # each frame on its own
    got = np.array([list(r["probabilities"].values()) for r in rows])
    np.testing.assert_allclose(got, alone, atol=2e-5)
    assert [r["label"] for r in rows] == [clf.classes[i] for i in alone.argmax(axis=1)]
    assert len({r["label"] for r in rows}) >= 2  # fcc and bcc frames are told apart, so the order is checked


def test_streamed_and_former_path_agree_with_mc_dropout(tmp_path, clf, monkeypatch, capsys):
    """Same MC keys per structure (fold_in(seed, i)) whatever the batching, so the same samples."""
    frames = _frames(seed=1)[:7]
    traj = tmp_path / "traj.extxyz"
    write(traj, frames, format="extxyz")
    single = tmp_path / "Cu.extxyz"
    write(single, bulk("Cu", "fcc", a=3.615), format="extxyz")
    argv = ["--mc-samples", "3", "--batch", "3", str(traj), str(tmp_path / "missing.cif"), str(single)]
    monkeypatch.setattr(Classifier, "load", classmethod(lambda cls, name=None, mesh=None: clf))
    assert main(["classify", "--json", "--quiet", *argv]) == 2  # the missing file: one line, the others classified
    out, err = capsys.readouterr()
    new = json.loads(out)
    assert err.count("\n") == 1 and "missing.cif" in err
    assert main(["classify", "--json", "--quiet", "--legacy-batching", *argv]) == 2
    out, err_old = capsys.readouterr()
    old = json.loads(out)
    assert err_old == err
    assert [(r["file"], r["frame"], r["label"], r["unknown"]) for r in new] == \
        [(r["file"], r["frame"], r["label"], r["unknown"]) for r in old]
    assert len(new) == 8 and new[-1]["file"] == str(single) and new[-1]["label"] == "fcc"
    assert main(["classify", "--json", "--quiet", "--workers", "3", *argv]) == 2  # threads change nothing
    assert json.loads(capsys.readouterr().out) == new
    for a, b in zip(new, old):
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=2e-5)
        np.testing.assert_allclose(list(a["uncertainty"].values()), list(b["uncertainty"].values()), atol=2e-5)


def test_balanced_batches_and_progress_bar_rule():
    assert [balanced_batch(n, 64) for n in (1, 12, 64, 65, 200, 1000)] == [1, 12, 64, 33, 50, 63]
    assert _progress(1000, quiet=True) is None and _progress(1, quiet=False) is None
    bar = _progress(51, quiet=False)  # pytest's captured stderr is no terminal: only long runs get a bar
    assert bar is not None and bar.total == 51
    bar.close()
    assert _progress(10, quiet=False) is None
