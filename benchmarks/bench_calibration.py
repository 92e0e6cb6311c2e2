"""Calibration of a shipped model: deterministic vs MC dropout (K passes), side by side on one fresh data set.

A fresh AFLOW-like data set (``crystaljax.structures.dataset.generate``, seed 1 by default: the shipped models were
trained on seed 0) is imaged once; the network then runs deterministically and with K = 8, 16, 32 MC dropout
passes.  Reported per run: accuracy, expected calibration error (15 bins), mean predictive entropy and mutual
information (nats), negative log-likelihood, confident errors (wrong with p >= 0.9), and the time of the network
and of fingerprints + network relative to the deterministic run (settings timed interleaved, fastest of the rounds).  Prints one JSON object as its last line.

    python benchmarks/bench_calibration.py --per-class 60 --json --plot docs/figures/calibration_default.png
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def summarise(pred, labels) -> dict:
    from crystaljax.learn import evaluate

    probs = np.asarray(pred.probabilities, np.float64)
    wrong = pred.indices != labels
    p_true = probs[np.arange(len(labels)), labels]
    return {
        "mc_samples": pred.n_samples,
        "accuracy": float(np.mean(~wrong)),
        "ece": evaluate.expected_calibration_error(probs, labels, 15),
        "nll": float(-np.mean(np.log(np.clip(p_true, 1e-12, 1.0)))),
        "mean_entropy": float(pred.entropy.mean()),
        "mean_entropy_correct": float(pred.entropy[~wrong].mean()) if (~wrong).any() else None,
        "mean_entropy_wrong": float(pred.entropy[wrong].mean()) if wrong.any() else None,
        "mean_mutual_information": float(pred.mutual_information.mean()),
        "n_wrong": int(wrong.sum()),
        "confident_errors_p_ge_0.9": int(np.sum(wrong & (pred.confidence >= 0.9))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    parser.add_argument("--per-class", type=int, default=60, help="structures per class (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="data set seed (default 1; the models saw seed 0)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="default", help="default | pristine | model directory")
    parser.add_argument("--mc", default="8,16,32", help="comma-separated MC dropout sample counts")
    parser.add_argument("--batch", type=int, default=64, help="images per network call")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (settings interleaved); the fastest counts")
    parser.add_argument("--time-n", type=int, default=128, help="images per timed run (default 128)")
    parser.add_argument("--plot", help="write the reliability diagram (PNG) here")
    args = parser.parse_args()

    import jax

    from crystaljax.learn import evaluate
    from crystaljax.learn.classifier import Classifier
    from crystaljax.structures import dataset

    t = time.perf_counter()
    ds = dataset.generate(seed=args.seed, per_class=args.per_class, workers=args.workers, progress=False)
    t_data = time.perf_counter() - t
    labels = np.asarray(ds.labels, np.int64)
    clf = Classifier.load(args.model)
    if tuple(clf.classes) != tuple(ds.classes):
        raise SystemExit(f"model classes {clf.classes} differ from the data set's {ds.classes}")

    clf.images(dataset.subset(ds, np.arange(min(len(ds), 32))).structures, 32)  # compile
    t = time.perf_counter()
    images = clf.images(ds.structures, 32)
    t_fp = time.perf_counter() - t

    ks = [0, *[int(x) for x in args.mc.split(",") if x.strip()]]
    names = {k: "deterministic" if k == 0 else f"mc{k}" for k in ks}
    runs, curves = {}, {}
    for k in ks:
        pred = clf.predict_images(images, args.batch, mc_samples=k, key=jax.random.key(0))  # also compiles
        runs[names[k]] = summarise(pred, labels)
        curves[names[k]] = evaluate.reliability_bins(pred.probabilities, labels, 15)
    # timing: the settings interleaved, round after round, on the first --time-n images (full chunks only);
    # the machine is shared, so the fastest round of each setting counts
    n_time = max(args.batch, (min(args.time_n, len(images)) // args.batch) * args.batch)
    best = {k: float("inf") for k in ks}
    for _ in range(max(1, args.repeats)):
        for k in ks:
            t = time.perf_counter()
            clf.predict_images(images[:n_time], args.batch, mc_samples=k, key=jax.random.key(0))
            best[k] = min(best[k], time.perf_counter() - t)
    fp_ms = 1e3 * t_fp / len(ds)
    for k in ks:
        r = runs[names[k]]
        r["network_ms_per_structure"] = 1e3 * best[k] / n_time
        r["time_ratio_network"] = best[k] / best[0]
        r["time_ratio_fingerprint_and_network"] = (fp_ms + r["network_ms_per_structure"]) / (
            fp_ms + 1e3 * best[0] / n_time)
    result = {
        "model": args.model, "data": {"seed": args.seed, "per_class": args.per_class, "n": len(ds),
                                      "generate_s": round(t_data, 1)},
        "fingerprint_ms_per_structure": fp_ms, "timed_images": n_time, "runs": runs,
        "reliability_bins": {name: {k: [None if np.isnan(x) else float(x) for x in np.asarray(v, float)]
                                    for k, v in b.items()} for name, b in curves.items()},
    }
    if args.plot:
        title = f"{args.model} model, {len(ds)} fresh structures (seed {args.seed})"
        result["plot"] = str(evaluate.plot_reliability(
            {f"{n} (ECE {runs[n]['ece']:.4f})": b for n, b in curves.items()}, args.plot, title=title))
    if not args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "reliability_bins"}, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
