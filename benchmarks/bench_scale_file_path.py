"""Old (mean nearest-neighbour) vs new (robust) scale estimator, measured through the real file path.

Defective ~250-atom periodic supercells of prototype crystals (crystaljax.structures.prototypes, realistic
nearest-neighbour distances of the chosen elements, free parameters drawn outside the high-symmetry windows)
are written to extxyz files in a temporary directory and classified by the command-line tool,
``crystaljax classify --json --model default|pristine FILES``.  The new scale is the package default; the old
one is the same command with ``--scale mean`` (one subprocess per model and estimator; nothing else differs).
Also reported: the scale each estimator gives the defective supercell relative to its pristine version
(median and max |ratio - 1|).

    python benchmarks/bench_scale_file_path.py [--per-class 10] [--seed 0] [--target 250]
    python benchmarks/bench_scale_file_path.py --bias [--draws 8]

``--bias`` prints instead the relative bias of both estimators (mean over draws, and the largest single draw)
on finite ~300-atom balls with d_NN = 1 under Gaussian displacements (sigma per Cartesian component, as a
fraction of d_NN) and random vacancies, per lattice type.  The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from crystaljax.analysis.table1_file_path import CLASS_PROTOTYPES, classify_files, defective
from crystaljax.analysis.table1_file_path import crystals as structures
from crystaljax.structures import prototypes as P
from crystaljax.structures.cluster import nn_scale

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = {  # name -> (sigma in Å, vacancy fraction)
    "pristine": (0.0, 0.0), "sigma_0.06A": (0.06, 0.0), "sigma_0.1A": (0.1, 0.0),
    "vacancies_40%": (0.0, 0.4), "vacancies_60%": (0.0, 0.6),
}


def classify(files, model: str, scale: str) -> list[dict]:
    """``crystaljax classify --json`` rows of ``files`` with ``model`` and the scale estimator ``scale``."""
    return classify_files(files, model, scale=scale, cwd=ROOT)


BIAS_LATTICES = {
    "fcc": ("A_cF4_225_a", None), "bcc": ("A_cI2_229_a", None), "sc": ("A_cP1_221_a", None),
    "diamond": ("A_cF8_227_a", None), "hcp": ("A_hP2_194_c", None), "bct_139 (In)": ("A_tI2_139_a", None),
    "bct_139 (Pa)": ("A_tI2_139_a", {"c/a": 0.8235}), "beta-Sn": ("A_tI4_141_a", None),
    "alpha-As": ("A_hR2_166_c", None), "alpha-Hg": ("A_hR1_166_a", None), "alpha-La": ("A_hP4_194_ac", None),
    "alpha-Sm": ("A_hR3_166_ac", None),
}
BIAS_SIGMAS = (0.02, 0.04, 0.06, 0.08, 0.1)
BIAS_VACANCIES = (0.3, 0.5, 0.7)


def bias_tables(draws: int, seed: int) -> dict:
    """{lattice: {estimator: {condition: (mean, max-abs) relative bias}}} on finite balls."""
    from ase import Atoms

    from crystaljax.structures.cluster import sphere_cut

    rng = np.random.default_rng(seed)
    out = {}
    for name, (proto, params) in BIAS_LATTICES.items():
        atoms = P.build(proto, "Cu", params=params)
        base = sphere_cut(atoms, 300)[0].positions / P._min_distance(atoms)
        conds = [(f"sigma {s}", s, 0.0) for s in BIAS_SIGMAS] + [(f"vacancies {f}", 0.0, f) for f in BIAS_VACANCIES]
        conds.append(("vacancies 0.6 + sigma 0.04", 0.04, 0.6))
        samples = {c: [] for c, _, _ in conds}
        for cond, sigma, vac in conds:
            for _ in range(draws):
                pos = base[rng.random(len(base)) >= vac] if vac else base
                pos = pos + rng.normal(0.0, sigma, pos.shape) if sigma else pos
                samples[cond].append(Atoms(numbers=np.full(len(pos), 29), positions=pos))
        out[name] = {}
        for est in ("mean", "robust"):
            row = {"pristine": nn_scale(Atoms(numbers=np.full(len(base), 29), positions=base), est) - 1.0}
            for cond in samples:
                r = np.array([nn_scale(a, est) for a in samples[cond]]) - 1.0
                row[cond] = [float(r.mean()), float(np.abs(r).max())]
            out[name][est] = row
        print(name, {c: round(100 * v[0], 2) for c, v in out[name]["robust"].items() if c != "pristine"},
              file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=int, default=250)
    ap.add_argument("--models", default="default,pristine")
    ap.add_argument("--bias", action="store_true", help="print the estimators' bias tables instead")
    ap.add_argument("--draws", type=int, default=8)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.bias:
        result = {"draws": args.draws, "seed": args.seed, "bias": bias_tables(args.draws, args.seed)}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(result))
        return 0
    items = structures(args.per_class, args.seed, args.target)
    labels = [cls for cls, _ in items]
    rng = np.random.default_rng(args.seed + 1)
    result = {"per_class": args.per_class, "n_structures": len(items), "seed": args.seed,
              "atoms_mean": float(np.mean([len(a) for _, a in items])), "scale_bias": {}, "accuracy": {},
              "per_class_accuracy": {}}
    with tempfile.TemporaryDirectory() as tmp:
        from ase.io import write

        files = {}
        pristine_scale = {e: np.array([nn_scale(a, e) for _, a in items]) for e in ("mean", "robust")}
        for cond, (sigma, vac) in CONDITIONS.items():
            frames = [defective(a, sigma, vac, rng) for _, a in items]
            path = Path(tmp) / f"{cond}.extxyz"
            write(path, frames, format="extxyz")
            files[cond] = path
            result["scale_bias"][cond] = {}
            for est in ("mean", "robust"):
                r = np.array([nn_scale(f, est) for f in frames]) / pristine_scale[est] - 1.0
                result["scale_bias"][cond][est] = {"median_abs": float(np.median(np.abs(r))),
                                                   "max_abs": float(np.max(np.abs(r))), "mean": float(np.mean(r))}
        for model in args.models.split(","):
            for est in ("mean", "robust"):
                rows = classify(list(files.values()), model, est)
                by_file = {}
                for row in rows:
                    by_file.setdefault(Path(row["file"]).stem, {})[int(row.get("frame", 0))] = row["label"]
                for cond in CONDITIONS:
                    got = by_file.get(cond, {})
                    ok = np.array([got.get(i) == labels[i] for i in range(len(items))])
                    result["accuracy"].setdefault(model, {}).setdefault(cond, {})[est] = float(ok.mean())
                    per = {c: float(ok[[j for j, l in enumerate(labels) if l == c]].mean()) for c in CLASS_PROTOTYPES}
                    result["per_class_accuracy"].setdefault(model, {}).setdefault(cond, {})[est] = per
                print(f"{model:9s} {est:6s} " + "  ".join(
                    f"{c} {result['accuracy'][model][c][est]:.3f}" for c in CONDITIONS), file=sys.stderr, flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
