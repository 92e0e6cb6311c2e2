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
