"""Host-side routines against their time budgets (the wall-clock checks that used to be asserts in tests).

Side by side in one run, best of ``--repeat`` wall-clock times (s) and their ratio to the budget
(< 1 = within budget):

* ``estimate_lattice_300``  crystaljax.structures.lattice.estimate_lattice on a rotated 300-atom hcp Mg
                            fragment, 20 % vacancies, 3 % nn Gaussian noise (budget 0.2 s);
* ``mean_nn_25k``           crystaljax.structures.cluster.mean_nn_distance on 25,000 random atoms in a
                            70 Å box (budget 2 s);
* ``build_cluster_25k``     crystaljax.structures.cluster.build_cluster on the same atoms (budget 5 s).

    python benchmarks/bench_host_budgets.py               # JSON on the last line
    python benchmarks/bench_host_budgets.py --repeat 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

BUDGETS = {"estimate_lattice_300": 0.2, "mean_nn_25k": 2.0, "build_cluster_25k": 5.0}


def hcp_fragment(n: int = 300, seed: int = 8, noise: float = 0.03, vacancies: float = 0.2) -> np.ndarray:
    """Positions (Å, (m, 3)) of a rotated, noisy, incomplete ball of hcp Mg with about ``n`` atoms."""
    from ase.build import bulk

    from crystaljax.structures.cell import random_rotation

    rng = np.random.default_rng(seed)
    at = bulk("Mg", "hcp", a=3.21, c=5.21).repeat((12, 12, 8))
    pos = at.positions - at.positions.mean(0)
    keep = int(round(n / (1 - vacancies)))
    pos = pos[np.argsort(np.linalg.norm(pos, axis=1))[:keep]]
    pos = pos[rng.uniform(size=len(pos)) >= vacancies]
    pos = pos + rng.normal(0.0, noise * 3.2, pos.shape)
    return pos @ random_rotation(rng).T


def best_of(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args(argv)

    from ase import Atoms

    from crystaljax.structures.cluster import build_cluster, mean_nn_distance
    from crystaljax.structures.lattice import estimate_lattice

    fragment = hcp_fragment()
    rng = np.random.default_rng(1)
    big = Atoms(numbers=np.full(25_000, 29), positions=rng.uniform(0, 70, size=(25_000, 3)))
    estimate_lattice(fragment)  # warm-up (imports, caches of SciPy)
    seconds = {
        "estimate_lattice_300": best_of(lambda: estimate_lattice(fragment), args.repeat),
        "mean_nn_25k": best_of(lambda: mean_nn_distance(big), args.repeat),
        "build_cluster_25k": best_of(lambda: build_cluster(big), args.repeat),
    }
    result = {"n_fragment": int(len(fragment)), "repeat": args.repeat,
              "seconds": {k: round(v, 4) for k, v in seconds.items()}, "budget_seconds": BUDGETS,
              "ratio_to_budget": {k: round(seconds[k] / BUDGETS[k], 3) for k in BUDGETS},
              "within_budget": all(seconds[k] <= BUDGETS[k] for k in BUDGETS)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
