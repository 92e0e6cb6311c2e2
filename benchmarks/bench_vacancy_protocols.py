"""Vacancy robustness of the shipped models under two protocols, side by side.

    python benchmarks/bench_vacancy_protocols.py --models pristine,default --per-class 3 --json

* ``paper``: the paper's protocol -- the pristine crystal is prepared (standard orientation, 1 Å scale, ~250-atom
  cluster) and then a fraction of the cluster's atoms is removed (same spatial extent, exact scale).
* ``file``: the user's path -- the fraction of atoms is removed from a ~250-atom periodic supercell, which then goes
  through ``cluster.prepare`` like a file would (robust scale, box route, ~250-atom ball).

Crystals: ``analysis.table1_file_path.crystals`` (free parameters outside the symmetry windows, real elements'
nearest-neighbour distances).  Prints accuracy per model, protocol and level; JSON as the last line with --json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _accuracy(clf, clusters, labels) -> dict:
    from crystaljax.pipeline import bucket_size
    from crystaljax.structure import from_ase, stack

    batch = [from_ase(c) for c in clusters]
    pred = clf.predict(stack(batch, n_max=bucket_size(max(b.n_max for b in batch))))
    ok = np.array([p == t for p, t in zip(pred.labels, labels)])
    per = {c: float(np.mean(ok[np.array(labels) == c])) for c in dict.fromkeys(labels)}
    return {"accuracy": float(ok.mean()), "per_class": per, "n": int(len(ok))}


def run(models, levels, per_class: int, seed: int) -> dict:
    from crystaljax.analysis import table1_file_path as T
    from crystaljax.learn.classifier import Classifier
    from crystaljax.structures.cluster import prepare

    crystals = T.crystals(per_class, seed=seed)
    labels = [c for c, _ in crystals]
    out = {}
    for model in models:
        clf = Classifier.load(model)
        out[model] = {}
        for level in levels:
            rng = np.random.default_rng(seed)
            paper, file = [], []
            for _, atoms in crystals:
                cluster = T.remove_atoms(prepare(atoms), level, rng)
                cluster.positions -= cluster.positions.mean(axis=0)
                paper.append(cluster)
                file.append(prepare(T.defective(atoms, 0.0, level, rng)))
            out[model][str(level)] = {"paper": _accuracy(clf, paper, labels), "file": _accuracy(clf, file, labels)}
            print(f"{model:9s} vacancies {level:4.0%}: paper protocol {out[model][str(level)]['paper']['accuracy']:.3f}"
                  f"  file path {out[model][str(level)]['file']['accuracy']:.3f}", flush=True)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="pristine,default")
    ap.add_argument("--levels", default="0.4,0.6,0.7")
    ap.add_argument("--per-class", type=int, default=3)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = {"per_class": args.per_class, "seed": args.seed,
           "results": run(args.models.split(","), [float(x) for x in args.levels.split(",")], args.per_class,
                          args.seed)}
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
