"""Cost of the unknown verdict, side by side with today's classification in one run.

Both paths start from the same prepared ~250-atom clusters of in-class and out-of-scope structures and run
MC dropout (16 passes, as ``crystaljax classify``): ``classify`` = ``Classifier.predict`` (fingerprints and
network in one jitted call); ``classify + unknown`` = ``Classifier.images`` + ``predict_images`` +
``novelty.assess`` (Warren-Cowley SRO, q6 crystallinity, site space group, fingerprint concentration on the
host).  Each is
run once to compile, then timed ``--repeats`` times (best).  Prints one JSON object as its last line.

    python benchmarks/bench_unknown.py [--n 64] [--repeats 3] [--mc-samples 16]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mc-samples", type=int, default=16)
    args = ap.parse_args()

    from ase.build import bulk

    from crystaljax.learn.classifier import Classifier
    from crystaljax.learn.novelty import assess, structure_features
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structures import out_of_scope
    from crystaljax.structures.cluster import prepare

    rng = np.random.default_rng(0)
    pool = ([bulk("Cu", "fcc", a=3.6), bulk("Fe", "bcc", a=2.87), bulk("Mg", "hcp", a=3.2, c=5.2),
             bulk("Si", "diamond", a=5.43)] + out_of_scope.ordered_compounds(rng, per_kind=1)
            + out_of_scope.random_alloys(rng, per_level=1) + out_of_scope.elemental_out_of_scope(rng, per_kind=1))
    structures = [pool[i % len(pool)] for i in range(args.n)]
    clf = Classifier.load("default")
    clusters = [prepare(a, target=clf.spec.cluster_target) for a in structures]
    batch = prepare_structures(structures, target=clf.spec.cluster_target)

    def plain():
        return clf.predict(batch, 64, mc_samples=args.mc_samples, key=0).probabilities

    def with_unknown():
        images = clf.images(batch, 64)
        pred = clf.predict_images(images, 64, mc_samples=args.mc_samples, key=0, embeddings=True)
        host = [structure_features(a, c) for a, c in zip(structures, clusters)]
        return assess(clf.unknown_thresholds, pred, host, images, clf.feature_distance(pred)).unknown

    times = {}
    for name, fn in (("classify", plain), ("classify + unknown", with_unknown)):
        fn()
        best = np.inf
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    t0 = time.perf_counter()
    for a, c in zip(structures, clusters):
        structure_features(a, c)
    host = time.perf_counter() - t0
    result = {"n_structures": args.n, "mc_samples": args.mc_samples,
              "seconds": {k: round(v, 3) for k, v in times.items()},
              "host_order_parameters_seconds": round(host, 3),
              "ratio_with_unknown_to_plain": round(times["classify + unknown"] / times["classify"], 3),
              "thresholds_loaded": clf.unknown_thresholds is not None}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
