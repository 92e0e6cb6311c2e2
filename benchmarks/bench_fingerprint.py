"""Fingerprint throughput: the jitted JAX pipeline against the plain NumPy float64 reference.

Prints one JSON object as its last line.  Run:  python benchmarks/bench_fingerprint.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from crystaljax.structures.cluster import prepare  # noqa: E402
from crystaljax.physics.fingerprint import batch_fingerprints, make_fingerprint_fn  # noqa: E402
from crystaljax.physics.reference import fingerprint_numpy  # noqa: E402
from crystaljax.structure import from_ase, stack  # noqa: E402


def clusters(n_atoms: int, batch: int, seed: int = 0):
    """``batch`` bcc Fe clusters of ~n_atoms with small random displacements, one padded batch."""
    from ase.build import bulk

    atoms = prepare(bulk("Fe", "bcc", a=2.87, cubic=True), target=n_atoms)
    base = from_ase(atoms)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        pos = np.asarray(base.positions) + rng.normal(0, 0.02, base.positions.shape).astype(np.float32)
        out.append(base._replace(positions=pos * np.asarray(base.mask)[:, None]))
    return stack(out), int(np.asarray(base.mask).sum())


def timed(fn, *args, repeats: int):
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large", type=int, default=2000, help="atoms of the large cluster (0 = skip)")
    parser.add_argument("--numpy-samples", type=int, default=2)
    args = parser.parse_args()

    fn = make_fingerprint_fn()
    forward = jax.jit(lambda b: batch_fingerprints(fn, b))
    batch, n_atoms = clusters(250, args.batch)
    t_fwd = timed(forward, batch, repeats=args.repeats)

    def loss(positions, b):
        return jnp.sum(batch_fingerprints(fn, b._replace(positions=positions)) ** 2)

    grad = jax.jit(jax.grad(loss))
    t_grad = timed(grad, jnp.asarray(batch.positions), batch, repeats=max(2, args.repeats // 2))
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    result = {
        "n_atoms": n_atoms,
        "batch": args.batch,
        "patterns_per_fingerprint": 6,
        "fingerprints_per_s": args.batch / t_fwd,
        "ms_per_fingerprint": 1e3 * t_fwd / args.batch,
        "gradient_fingerprints_per_s": args.batch / t_grad,
        "peak_rss_gb_after_gradient": peak_rss_gb,
    }
    if args.large:
        large, n_large = clusters(args.large, 8)
        t_large = timed(forward, large, repeats=max(2, args.repeats // 2))
        result.update({"n_atoms_large": n_large, "fingerprints_per_s_large": 8 / t_large})

    # plain NumPy float64 reference of the same physics, same structures, same process
    pos = np.asarray(batch.positions[0], np.float64)
    numbers = np.asarray(batch.numbers[0])
    mask = np.asarray(batch.mask[0])
    t = time.perf_counter()
    for _ in range(args.numpy_samples):
        ref = fingerprint_numpy(pos, numbers, mask)
    t_np = (time.perf_counter() - t) / args.numpy_samples
    jax_fp = np.asarray(forward(batch))[0]
    result.update({
        "numpy_reference_per_s": 1.0 / t_np,
        "speedup_vs_numpy": (args.batch / t_fwd) * t_np,
        "relative_l2_vs_float64_reference": float(np.linalg.norm(jax_fp - ref) / np.linalg.norm(ref)),
        "pairs_per_ns": args.batch * 6 * 4096 * batch.positions.shape[1] / t_fwd / 1e9,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
    })
    if not args.json:
        for k, v in result.items():
            print(f"{k:>40}: {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
