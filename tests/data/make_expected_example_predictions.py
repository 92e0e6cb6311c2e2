"""Rewrite tests/data/expected_example_predictions.json from the shipped models (after a retraining).

    python tests/data/make_expected_example_predictions.py "why the predictions moved"

The rows are what ``Classifier.load(model).classify(atoms)`` gives on every frame of crystaljax/examples (the
deterministic pass the test compares against).  Run it only when a change legitimately moves the shipped
predictions, and say why in the comment argument and the commit.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(reason: str) -> None:
    from crystaljax.learn.classifier import Classifier
    from crystaljax.structures.io import read_structures

    files = sorted(p.name for p in (ROOT / "crystaljax" / "examples").iterdir() if not p.name.startswith("."))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    models = {}
    for model in ("default", "pristine"):
        clf = Classifier.load(model)
        rows = []
        for f in files:
            atoms = read_structures(ROOT / "crystaljax" / "examples" / f)
            probs = clf.classify(atoms).probabilities
            for frame, p in enumerate(probs):
                rows.append({"file": f, "frame": frame, "label": clf.classes[int(p.argmax())],
                             "probabilities": {c: float(x) for c, x in zip(clf.classes, p)}})
        models[model] = rows
    out = {"comment": f"Predictions of the shipped models on crystaljax/examples (Classifier.classify, one deterministic "
                      f"pass), written by tests/data/make_expected_example_predictions.py at commit {commit}: {reason}",
           "models": models}
    (ROOT / "tests" / "data" / "expected_example_predictions.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "regenerated")
