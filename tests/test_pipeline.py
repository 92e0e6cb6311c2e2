"""The public pipeline: files/Atoms -> clusters -> fingerprints."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import jax

import crystaljax
from crystaljax.structures.cell import random_rotation, rotate


def test_rotated_copy_gives_the_same_fingerprint():
    """The symmetry-free standard cell makes the fingerprint independent of the input orientation."""
    atoms = bulk("Ti", "hcp", a=2.95, c=4.68)
    rng = np.random.default_rng(0)
    copies = [atoms] + [rotate(atoms, random_rotation(rng)) for _ in range(3)]
    images = crystaljax.fingerprints(copies)
    for img in images[1:]:
        np.testing.assert_allclose(img, images[0], atol=2e-4)
    # and a random rotation key in the API does not change a periodic structure's fingerprint
    keyed = crystaljax.fingerprints([atoms], key=jax.random.key(3))
    np.testing.assert_allclose(keyed[0], images[0], atol=2e-4)


def test_light_elements_work_through_the_z_shift():
    """H and He (Z + 2 -> Li, Be form factors) give a proper, non-empty fingerprint."""
    h = bulk("Cu", "fcc", a=3.6)
    h.set_chemical_symbols(["H"])
    he = bulk("Cu", "bcc", a=2.9)
    he.set_chemical_symbols(["He"])
    images = crystaljax.fingerprints([h, he])
    assert np.all(np.isfinite(images)) and np.allclose(images.reshape(2, -1).max(1), 1.0)
    assert np.abs(images[0] - images[1]).max() > 0.1


def test_finite_structure_taken_as_given():
    cluster = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    cluster.pbc = False
    batch = crystaljax.prepare_structures([cluster])
    assert int(batch.mask.sum()) == len(cluster)
    pos = np.asarray(batch.positions[0])[np.asarray(batch.mask[0]) > 0]
    np.testing.assert_allclose(pos.mean(0), 0, atol=1e-5)


@pytest.mark.parametrize("atoms, message", [
    (Atoms(), "atoms"),
    (Atoms("Cu", positions=[[0, 0, 0]]), "atom"),
    (Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "NaN"),
    (Atoms("Cu", cell=[[1, 0, 0], [0, 1, 0], [0, 0, 0]], pbc=True), "volume"),
])
def test_bad_structures_raise_typed_errors(atoms, message):
    with pytest.raises(crystaljax.StructureError, match=message):
        crystaljax.fingerprints([atoms])


def test_batches_of_any_length_and_sizes():
    structures = [bulk("Fe", "bcc", a=2.87), bulk("Si", "diamond", a=5.43), bulk("Mg", "hcp", a=3.2, c=5.2)] * 12
    images = crystaljax.fingerprints(structures)  # 36 structures: more than one device batch
    assert images.shape == (36, 64, 64, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[33], images[0], atol=1e-5)
    assert np.abs(images[0] - images[1]).max() > 0.1


# ----------------------------------------------------------------------------------------------- buckets, streaming


def test_bucket_sizes_are_few_and_tight():
    from crystaljax.pipeline import BUCKETS, bucket_size

    sizes = np.arange(1, 5000)
    b = np.array([bucket_size(n) for n in sizes])
    assert np.all(b >= sizes) and np.all(np.isin(b, BUCKETS))
    assert np.all(b[sizes >= 96] * 0.75 <= sizes[sizes >= 96] + 1e-9)  # padding is <= 25 % of the rows
    mid = (sizes >= 256) & (sizes <= 512)
    assert np.all(b[mid] - sizes[mid] < 32)  # fine steps where the default ~250-atom clusters fall
    n_shapes = len(np.unique(b[(sizes >= 200) & (sizes <= 2600)]))
    assert n_shapes <= 20  # multiples of 16 would give 150
    assert bucket_size(10**6) % BUCKETS[-1] == 0 and bucket_size(10**6) >= 10**6


def test_compilations_counted_over_varying_atom_counts():
    """Batches of many different cluster sizes compile a jitted consumer once per bucket, not per size."""
    from crystaljax.pipeline import bucket_size, iter_prepared_batches

    traces = []

    @jax.jit
    def consume(s):
        traces.append(s.positions.shape)  # runs only while tracing
        return jax.numpy.sum(s.mask, axis=-1)

    frames, sizes = [], set()
    for reps in [(2, 2, 2), (3, 2, 2), (3, 3, 2), (3, 3, 3), (4, 3, 3), (4, 4, 3), (4, 4, 4), (5, 4, 4)]:
        at = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(reps)
        at.pbc = False  # finite: taken as a cluster of exactly this many atoms
        frames.append(at)
        sizes.add(len(at))
    n_seen, buckets = [], set()
    for pb in iter_prepared_batches(frames, batch_size=2, target=10**6):
        counts = np.asarray(consume(pb.batch))
        n_seen += list(counts[: pb.n_valid])
        buckets.add(pb.batch.positions.shape[1])
    assert sorted(n_seen) == sorted(len(f) for f in frames)
    assert len(traces) == len(buckets) < len(sizes)
    assert consume._cache_size() == len(buckets)
    assert buckets <= {bucket_size(n) for n in sizes}


def test_iter_prepared_batches_matches_prepare_structures_and_skips_bad_inputs():
    from crystaljax.pipeline import iter_prepared_batches

    good = [bulk("Fe", "bcc", a=2.87), bulk("Si", "diamond", a=5.43), bulk("Mg", "hcp", a=3.2, c=5.2),
            bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Po", "sc", a=3.35)]
    bad = Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    inputs = good[:2] + [bad] + good[2:]
    ref = crystaljax.prepare_structures(good)
    rows, idx, errors = [], [], []

    def features(atoms, cluster):  # run by the workers on each input and its prepared cluster
        return len(cluster), float(cluster.info["nn_distance"]), len(atoms)

    for pb in iter_prepared_batches(iter(inputs), batch_size=4, workers=2, cluster_features=features):
        assert pb.batch.positions.shape[0] == 4 and len(pb.features) == pb.n_valid
        for r in range(pb.n_valid):
            keep = np.asarray(pb.batch.mask[r]) > 0
            rows.append((np.asarray(pb.batch.positions[r])[keep], np.asarray(pb.batch.numbers[r])[keep]))
            assert pb.features[r][0] == keep.sum() and pb.features[r][1] > 1.0  # this row's cluster, Å
            assert pb.features[r][2] == len(inputs[pb.indices[r]])
        idx += list(pb.indices)
        errors += list(pb.errors)
    assert idx == [0, 1, 3, 4, 5]
    assert [i for i, _ in errors] == [2] and "NaN" in errors[0][1] and "\n" not in errors[0][1]
    for r, (pos, num) in enumerate(rows):
        keep = np.asarray(ref.mask[r]) > 0
        np.testing.assert_allclose(pos, np.asarray(ref.positions[r])[keep], atol=1e-6)
        np.testing.assert_array_equal(num, np.asarray(ref.numbers[r])[keep])


def test_prefetch_prepares_ahead_of_the_consumer():
    """While the caller holds batch i, the inputs of the next ``prefetch`` batches have been pulled and
    submitted (they are prepared in the worker threads, overlapping the caller's device work)."""
    from crystaljax.pipeline import iter_prepared_batches

    pulled = []

    def source():
        for i in range(12):
            pulled.append(i)
            yield bulk("Cu", "fcc", a=3.6)

    gen = iter_prepared_batches(source(), batch_size=2, prefetch=2, target=50)
    first = next(gen)
    assert list(first.indices) == [0, 1]
    assert len(pulled) >= 6  # batch 0 + two prefetched batches
    rest = list(gen)
    assert [list(b.indices) for b in rest] == [[2 * k, 2 * k + 1] for k in range(1, 6)]


def test_iter_fingerprints_equal_the_list_pipeline_and_report_bad_inputs():
    """Streamed fingerprints (bucketed per batch) equal those of the whole list padded to one size."""
    from crystaljax.pipeline import iter_fingerprints

    good = [bulk("Fe", "bcc", a=2.87), bulk("Cu", "fcc", a=3.6), bulk("Mg", "hcp", a=3.2, c=5.2)]
    bad = Atoms("Cu2", positions=[[0, 0, 0], [np.inf, 0, 0]])
    ref = crystaljax.fingerprints(good, target=60)
    parts, idx, errors = [], [], []
    for pb, images in iter_fingerprints([good[0], bad, *good[1:]], batch_size=2, target=60):
        assert images.shape[0] == pb.n_valid
        parts.append(images)
        idx += list(pb.indices)
        errors += [i for i, _ in pb.errors]
    assert idx == [0, 2, 3] and errors == [1]
    np.testing.assert_allclose(np.concatenate(parts), ref, atol=1e-5)
    assert np.abs(ref[0] - ref[1]).max() > 0.1  # bcc and fcc differ, so the order is checked
