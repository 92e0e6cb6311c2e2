"""Classification throughput from files: reading, host clusters, device fingerprints and the network timed apart.

The reference, measured in the same run, is the same pipeline one structure at a time (batch 1).
Prints one JSON object as its last line.  Run:  python benchmarks/bench_predict.py --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def write_files(directory: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` CIF files of random prototypes/elements of the seven classes (made by crystaljax.structures.prototypes)."""
    import ase.io

    from crystaljax.structures import prototypes

    rng = np.random.default_rng(seed)
    names = sorted(prototypes.PROTOTYPES)
    elements = ["Cu", "Fe", "Mg", "Si", "Sn", "In", "Po", "W", "Al", "Ti", "Bi", "Sm"]
    paths = []
    for i in range(n):
        atoms = prototypes.build(names[rng.integers(len(names))], elements[rng.integers(len(elements))])
        path = directory / f"s{i:05d}.cif"
        ase.io.write(path, atoms)
        paths.append(path)
    return paths


def run(paths, batch: int, model_dir=None) -> dict:
    from crystaljax.structures.cluster import prepare
    from crystaljax.structures.io import read_structures
    from crystaljax.learn.predict import classify_batch, load_classifier
    from crystaljax.structure import from_ase, pad_to, stack

    clf = load_classifier(model_dir)
    t_read = t_prep = 0.0
    clf.timings.update(fingerprint_s=0.0, network_s=0.0)
    labels = []
    for start in range(0, len(paths), batch):
        t = time.perf_counter()
        atoms = [read_structures(p)[0] for p in paths[start:start + batch]]
        t_read += time.perf_counter() - t
        t = time.perf_counter()
        clusters = [from_ase(prepare(a, target=clf.target)) for a in atoms]
        structures = stack(clusters, n_max=pad_to(max(c.n_max for c in clusters), 32))
        t_prep += time.perf_counter() - t
        labels.append(np.argmax(classify_batch(clf, structures), -1))
    n = len(paths)
    total = t_read + t_prep + clf.timings["fingerprint_s"] + clf.timings["network_s"]
    return {"n": n, "batch": batch, "ms_per_structure": 1e3 * total / n, "read_ms": 1e3 * t_read / n,
            "cluster_ms": 1e3 * t_prep / n, "fingerprint_ms": 1e3 * clf.timings["fingerprint_s"] / n,
            "network_ms": 1e3 * clf.timings["network_s"] / n, "labels": np.concatenate(labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n-single", type=int, default=16, help="structures for the batch-1 reference")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), args.n)
        run(paths[: args.batch], args.batch, args.model)  # warm-up: compile the batch shapes
        run(paths[:2], 1, args.model)
        batched = run(paths, args.batch, args.model)
        single = run(paths[: args.n_single], 1, args.model)
    same = bool(np.array_equal(batched["labels"][: args.n_single], single["labels"]))
    for r in (batched, single):
        r.pop("labels")
    result = {"batched": batched, "one_at_a_time": single,
              "speedup_batched_vs_one_at_a_time": single["ms_per_structure"] / batched["ms_per_structure"],
              "same_labels": same, "ms_per_structure": batched["ms_per_structure"]}
    if not args.json:
        print(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
