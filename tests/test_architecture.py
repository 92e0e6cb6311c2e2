"""The package keeps its layering (import-linter contracts in pyproject.toml) and its predictions."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """`lint-imports` with the contracts of pyproject.toml: layers and 'physics never imports ase'."""
    from importlinter.cli import lint_imports

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
    assert status == 0


@pytest.mark.shipped_model
@pytest.mark.parametrize("model", ["default", "pristine"])
def test_shipped_models_keep_their_predictions_on_the_examples(model):
    """Same labels, probabilities within 1e-4, as recorded in tests/data/expected_example_predictions.json."""
    from crystaljax.learn.classifier import Classifier
    from crystaljax.structures.io import read_structures

    expected = json.loads((ROOT / "tests" / "data" / "expected_example_predictions.json").read_text())["models"][model]
    files = sorted({row["file"] for row in expected})
    atoms = [a for f in files for a in read_structures(ROOT / "crystaljax" / "examples" / f)]
    probs = Classifier.load(model).classify(atoms).probabilities
    assert len(probs) == len(expected)
    rows = sorted(expected, key=lambda r: (files.index(r["file"]), r["frame"]))
    classes = list(rows[0]["probabilities"])
    want = np.array([[r["probabilities"][c] for c in classes] for r in rows])
    assert [classes[i] for i in probs.argmax(1)] == [r["label"] for r in rows]
    np.testing.assert_allclose(probs, want, atol=1e-4)
