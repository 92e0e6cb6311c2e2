"""Calibrate the "unknown" verdict of a shipped model and measure it on a held-out half built here.

    python experiments/calibrate_unknown.py [--model default] [--per-class 12] [--per-kind 6] [--write]

Features of both halves are cached in runs/unknown_<model>_<half>.npz (delete to rebuild); --write stores the
thresholds as <model dir>/unknown.json.  The last line printed is the JSON of the measurement.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from crystaljax.analysis import calibrate_unknown as cu
from crystaljax.learn import novelty
from crystaljax.learn.checkpoint import resolve_model_dir
from crystaljax.learn.classifier import Classifier


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--per-kind", type=int, default=6)
    ap.add_argument("--mc-samples", type=int, default=16)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    clf = Classifier.load(args.model)
    halves = {}
    for half in ("calibration", "measurement"):
        path = Path("runs") / f"unknown_{Path(args.model).name}_{half}_{args.per_class}_{args.per_kind}.npz"
        if path.is_file():
            halves[half] = dict(np.load(path, allow_pickle=False))
        else:
            halves[half] = cu.build_half(clf, half, per_class=args.per_class, per_kind=args.per_kind,
                                         mc_samples=args.mc_samples)
            path.parent.mkdir(exist_ok=True)
            np.savez(path, **halves[half])
    th = cu.fit(halves["calibration"])
    th = novelty.Thresholds(th.sro, th.image_concentration, th.crystallinity, th.confidence, th.mutual_information,
                            {**th.provenance, "command": "python experiments/calibrate_unknown.py " +
                             f"--model {args.model} --per-class {args.per_class} --per-kind {args.per_kind} "
                             f"--mc-samples {args.mc_samples} --write",
                             "mc_samples": args.mc_samples})
    if args.write:
        print("wrote", novelty.save_thresholds(th, resolve_model_dir(args.model)))
    result = {"model": args.model, "thresholds": th.to_dict(),
              "calibration": cu.measure(th, halves["calibration"]),
              "measurement": cu.measure(th, halves["measurement"])}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
