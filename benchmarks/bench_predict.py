"""Classification throughput from files: reading, host clusters, device fingerprints and the network timed apart.

Three input kinds (``--kinds``): ``cells`` (unit-cell CIFs of random prototypes and elements), ``md250``
(250-site bcc Fe 5x5x5 MD-like frames: 10 vacancies, sigma 0.05 Å, one extxyz file each) and ``md2000``
(2,000-site bcc Fe 10x10x10 frames, 80 vacancies).  For each, side by side in one run, through ``Classifier``
(crystaljax.learn.classifier): batched deterministic (one network pass), batched MC dropout (``--mc-samples``
passes, what ``crystaljax classify`` does by default) and the deterministic pipeline one structure at a time
(batch 1).  Prints one JSON object as its last line.  Run:  python benchmarks/bench_predict.py --json
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


def write_frames(directory: Path, n: int, reps: int, vacancies: int, seed: int = 0) -> list[Path]:
    """``n`` extxyz files of a periodic bcc Fe reps^3 box (2 reps^3 sites) with ``vacancies`` empty sites and
    N(0, 0.05^2) Å displacements, each frame with its own vacancies and displacements."""
    import ase.io
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    base = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((reps,) * 3)
    paths = []
    for i in range(n):
        atoms = base.copy()
        del atoms[np.sort(rng.choice(len(atoms), vacancies, replace=False))[::-1].tolist()]
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        path = directory / f"f{i:05d}.extxyz"
        ase.io.write(path, atoms, format="extxyz")
        paths.append(path)
    return paths


#: Input kinds: writer of n files in a directory, and the default count.
KINDS = {
    "cells": (lambda d, n: write_files(d, n), 256),
    "md250": (lambda d, n: write_frames(d, n, 5, 10), 256),
    "md2000": (lambda d, n: write_frames(d, n, 10, 80), 32),
}


def run(clf, paths, batch: int, mc_samples: int = 0) -> dict:
    """Classify ``paths`` in chunks of ``batch``; per-structure milliseconds of each stage and the labels."""
    import jax

    from crystaljax.structure import from_ase, pad_to, stack
    from crystaljax.structures.cluster import prepare
    from crystaljax.structures.io import read_structures

    t_read = t_prep = t_fp = t_net = 0.0
    labels = []
    for start in range(0, len(paths), batch):
        t = time.perf_counter()
        atoms = [read_structures(p)[0] for p in paths[start:start + batch]]
        t_read += time.perf_counter() - t
        t = time.perf_counter()
        clusters = [from_ase(prepare(a, target=clf.spec.cluster_target)) for a in atoms]
        structures = stack(clusters, n_max=pad_to(max(c.n_max for c in clusters), 32))
        t_prep += time.perf_counter() - t
        t = time.perf_counter()
        images = clf.images(structures, batch)
        t_fp += time.perf_counter() - t
        t = time.perf_counter()
        pred = clf.predict_images(images, batch, mc_samples=mc_samples, key=jax.random.key(0))
        t_net += time.perf_counter() - t
        labels.append(pred.indices)
    n = len(paths)
    total = t_read + t_prep + t_fp + t_net
    return {"n": n, "batch": batch, "mc_samples": mc_samples, "ms_per_structure": 1e3 * total / n,
            "read_ms": 1e3 * t_read / n, "cluster_ms": 1e3 * t_prep / n, "fingerprint_ms": 1e3 * t_fp / n,
            "network_ms": 1e3 * t_net / n, "labels": np.concatenate(labels)}


def compare(clf, paths, batch: int, n_single: int, mc_samples: int) -> dict:
    """Batched, batched MC and one-at-a-time runs of ``paths`` (after a warm-up that compiles every shape)."""
    run(clf, paths, batch)
    run(clf, paths, batch, mc_samples)
    run(clf, paths[:n_single], 1)
    batched = run(clf, paths, batch)
    mc = run(clf, paths, batch, mc_samples)
    single = run(clf, paths[:n_single], 1)
    same = bool(np.array_equal(batched["labels"][:n_single], single["labels"]))
    agree_mc = float(np.mean(batched["labels"] == mc["labels"]))
    for r in (batched, mc, single):
        r.pop("labels")
    return {"batched": batched, "batched_mc": mc, "one_at_a_time": single,
            "speedup_batched_vs_one_at_a_time": single["ms_per_structure"] / batched["ms_per_structure"],
            "cost_mc_vs_deterministic": mc["ms_per_structure"] / batched["ms_per_structure"],
            "network_cost_mc_vs_deterministic": mc["network_ms"] / batched["network_ms"],
            "same_labels": same, "label_agreement_mc_vs_deterministic": agree_mc,
            "ms_per_structure": batched["ms_per_structure"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--kinds", default="cells,md250,md2000", help="comma-separated input kinds (default all)")
    parser.add_argument("--n", type=int, help="structures per kind (default 256; 32 for md2000)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n-single", type=int, default=16, help="structures for the batch-1 reference")
    parser.add_argument("--model", default="default", help="default | pristine | model directory")
    parser.add_argument("--mc-samples", type=int, default=16, help="MC dropout passes of the MC run (default 16)")
    args = parser.parse_args()
    from crystaljax.learn.classifier import Classifier

    clf = Classifier.load(args.model)
    result = {}
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            raise SystemExit(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        write, default_n = KINDS[kind]
        n = args.n or default_n
        with tempfile.TemporaryDirectory() as tmp:
            paths = write(Path(tmp), n)
            result[kind] = compare(clf, paths, min(args.batch, n), min(args.n_single, n), args.mc_samples)
        print(f"{kind}: {result[kind]['ms_per_structure']:.2f} ms per structure batched, "
              f"{result[kind]['one_at_a_time']['ms_per_structure']:.2f} one at a time", flush=True)
    if "cells" in result:
        result["ms_per_structure"] = result["cells"]["ms_per_structure"]
    if not args.json:
        print(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
