"""Label flips of the shipped default model under tiny symmetric strains: current standard cell vs the one
before the symmetrised-basis fix (git revision ``--old-rev``, loaded from git), side by side in one run.

    python benchmarks/orientation_flips.py --n 34 --old-rev 4215d4d

~N strained primitive cells each of fcc Cu, diamond Si and hcp Mg (random symmetric strain, largest entry
10^U(-5, -3), random rotation) are classified through the real pipeline; for each standard-cell version the
fraction of labels differing from the unstrained cell's label and the max |p - p_unstrained| are reported.
A cell the old version cannot reduce (ASE Niggli RuntimeError) counts as a crash.  JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
from ase.build import bulk

ROOT = Path(__file__).resolve().parents[1]


def _old_module(rev: str) -> types.ModuleType:
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:crystaljax/structures/cell.py"],
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("old_cell")
    exec(compile(src, "old_cell.py", "exec"), mod.__dict__)  # noqa: S102 - our own file from git
    return mod


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=34, help="strained cells per crystal")
    ap.add_argument("--old-rev", default="4215d4d")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import crystaljax.structures.cell as cellmod
    from crystaljax.learn.classifier import Classifier
    from crystaljax.structures.cell import random_rotation, rotate

    clf = Classifier.load("default")
    rng = np.random.default_rng(args.seed)
    crystals = {"fcc": bulk("Cu", "fcc", a=3.61), "diamond": bulk("Si", "diamond", a=5.43),
                "hcp": bulk("Mg", "hcp", a=3.21, c=5.21)}
    strained = {k: [] for k in crystals}
    for name, atoms in crystals.items():
        for _ in range(args.n):
            e = rng.normal(size=(3, 3))
            e = (e + e.T) / 2
            e *= 10 ** rng.uniform(-5, -3) / np.abs(e).max()
            a = atoms.copy()
            a.set_cell(a.cell.array @ (np.eye(3) + e), scale_atoms=True)
            strained[name].append(rotate(a, random_rotation(rng)))

    new_fn, old_fn = cellmod.standard_cell, _old_module(args.old_rev).standard_cell
    out = {"n_per_crystal": args.n, "old_rev": args.old_rev}
    for version, fn in (("old", old_fn), ("new", new_fn)):
        cellmod.standard_cell = fn
        try:
            res = {}
            for name, atoms in crystals.items():
                p0 = clf.classify([atoms]).probabilities[0]
                ok, crashes = [], 0
                for a in strained[name]:
                    try:
                        fn(a)
                    except RuntimeError:
                        crashes += 1
                        continue
                    ok.append(a)
                P = clf.classify(ok).probabilities
                flips = int(np.sum(np.argmax(P, 1) != np.argmax(p0)))
                res[name] = {"label": clf.classes[int(np.argmax(p0))], "flips": flips, "crashes": crashes,
                             "flip_fraction": flips / len(strained[name]),
                             "max_dp": float(np.abs(P - p0).max())}
            tot = sum(r["flips"] for r in res.values())
            res["all"] = {"flip_fraction": tot / (3 * args.n),
                          "crash_fraction": sum(r["crashes"] for r in res.values()) / (3 * args.n),
                          "max_dp": max(r["max_dp"] for r in res.values())}
            out[version] = res
        finally:
            cellmod.standard_cell = new_fn
    for version in ("old", "new"):
        print(version, json.dumps(out[version]), file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
