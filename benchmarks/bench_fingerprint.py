"""Fingerprint kernel: forward and gradient rates, and the kernel variants tried, side by side in one run.

Rows (all at ~250 atoms unless said, one process, interleaved timing = the best of several rounds,
so a shared machine perturbs ratios less than absolute figures; *_per_cpu_s rates divide by the
process CPU time instead of wall time, which is what a shared machine perturbs least):
  forward           the default direct sum (make_fingerprint_fn), fingerprints/s
  forward_sincos_*  the same with the sin/cos polynomial of degrees 13/14 (previous default) and 9/10
  gradient_custom   d(sum fp^2)/d positions through the hand-written JVP (structure_factor), /s
  gradient_autodiff the same gradient through plain autodiff of the scan (the old path), /s
  mirror_symmetry   sin/cos shared by the four mirror pixels (+-u, +-v) (experimental, here only)
  vector_width_512  forward in a fresh process with XLA_FLAGS=--xla_cpu_prefer_vector_width=512,
                    against a fresh process without it (child processes, alternated)
  nufft             jax-finufft type-3 NUFFT (only if importable; not a dependency)
Every variant's fingerprint is compared with the float64 NumPy reference (relative L2).

Prints one JSON object as its last line.  Run:  python benchmarks/bench_fingerprint.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from crystaljax.config import DetectorConfig  # noqa: E402
from crystaljax.structures.cluster import prepare  # noqa: E402
from crystaljax.physics.detector import beam_stop_mask  # noqa: E402
from crystaljax.physics.fingerprint import (VECTOR_WIDTH_FLAG, batch_fingerprints, channel_rotations,  # noqa: E402
                                            combine_channels, cpu_has_avx512, detector_arrays, make_fingerprint_fn,
                                            patterns, sincos)
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
    """Best wall time of ``repeats`` calls after a compile + warm-up call (seconds)."""
    return interleaved({"f": (fn, args)}, rounds=repeats)["f"]


def interleaved(calls: dict, rounds: int, clock=time.perf_counter) -> dict:
    """{name: (fn, args)} -> {name: best seconds}, the calls alternated round after round.

    clock: time.perf_counter (wall) or time.process_time (CPU seconds of all this process's threads).
    """
    for fn, args in calls.values():
        jax.block_until_ready(fn(*args))
    best = {name: float("inf") for name in calls}
    for _ in range(rounds):
        for name, (fn, args) in calls.items():
            t = clock()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], clock() - t)
    return best


def mirror_fingerprint_fn(detector: DetectorConfig | None = None, unroll: int = 8):
    """Experimental: the four mirror pixels (u, v), (-u, v), (u, -v), (-u, -v) share |q_x|, |q_y| and
    q_z (the Ewald term depends on u^2 + v^2 only), so exp(-i q.x) = e^{-i qz z} e^{-/+i qx x} e^{-/+i qy y}
    needs three sin/cos per four pixels instead of four.  Exact (same physics); single element only."""
    detector = detector or DetectorConfig()
    n = detector.n_pixels
    h = n // 2
    q, omega, table = detector_arrays(detector, 5e-12, 2)
    q_quadrant = q.reshape(n, n, 3)[h:, h:].reshape(-1, 3)
    table_quadrant = table.reshape(-1, n, n)[:, h:, h:].reshape(table.shape[0], -1)
    rotations = channel_rotations(45.0)
    stop = jnp.asarray(beam_stop_mask(detector), jnp.float32)

    def fn(structure):
        rotated = jnp.einsum("rab,nb->nra", rotations, structure.positions)

        def add_atom(acc, atom):
            x, z, w = atom
            amplitude = w * table_quadrant[z]
            s, c = sincos(x.T[:, :, None] * q_quadrant.T[:, None, :])  # (3, R, Q): qx x, qy y, qz z
            gr, gi = amplitude * c[2], -amplitude * s[2]
            cc, ss, sc, cs = c[0] * c[1], s[0] * s[1], s[0] * c[1], c[0] * s[1]
            return acc + jnp.stack([gr * cc, gi * cc, gr * ss, gi * ss, gr * sc, gi * sc, gr * cs, gi * cs]), None

        zeros = jnp.zeros((8, rotated.shape[1], q_quadrant.shape[0]))
        acc, _ = jax.lax.scan(add_atom, zeros, (rotated, structure.numbers, structure.mask.astype(jnp.float32)),
                              unroll=unroll)
        scc, sss, ssc, scs = (acc[2 * i] + 1j * acc[2 * i + 1] for i in range(4))
        quads = {}
        for su in (1, -1):
            for sv in (1, -1):
                amp = scc - su * sv * sss - 1j * (su * ssc + sv * scs)
                quads[su, sv] = (jnp.abs(amp) ** 2).reshape(-1, h, h)
        top = jnp.concatenate([quads[-1, -1][:, ::-1, ::-1], quads[1, -1][:, ::-1, :]], axis=2)
        bottom = jnp.concatenate([quads[-1, 1][:, :, ::-1], quads[1, 1]], axis=2)
        intensities = jnp.concatenate([top, bottom], axis=1) * omega.reshape(n, n)
        return combine_channels(intensities, stop)

    return fn


def nufft_fingerprint_fn(detector: DetectorConfig | None = None, eps: float = 1e-4):
    """Type-3 NUFFT (jax-finufft) of the same sum, single element: F_r(q) = f(q) sum_j w_j exp(-i (R_r^T q).x_j)."""
    from jax_finufft import nufft3

    detector = detector or DetectorConfig()
    q, omega, table = detector_arrays(detector, 5e-12, 2)
    rotations = channel_rotations(45.0)
    targets = jnp.einsum("rba,pb->rpa", rotations, q).reshape(-1, 3)
    stop = jnp.asarray(beam_stop_mask(detector), jnp.float32)
    n = detector.n_pixels

    def fn(structure):
        x = structure.positions
        amp = nufft3(structure.mask.astype(jnp.complex64), x[:, 0], x[:, 1], x[:, 2],
                     targets[:, 0], targets[:, 1], targets[:, 2], iflag=-1, eps=eps)
        form = table[jnp.max(structure.numbers)]
        intensities = (jnp.abs(amp) ** 2).reshape(6, -1) * (form * form * omega)[None]
        return combine_channels(intensities.reshape(6, n, n), stop)

    return fn


def _child_forward(batch_size: int, repeats: int) -> dict:
    """Forward rate of the default kernel in this (fresh) process."""
    fn = make_fingerprint_fn()
    forward = jax.jit(lambda b: batch_fingerprints(fn, b))
    batch, _ = clusters(250, batch_size)
    t = timed(forward, batch, repeats=repeats)
    t_cpu = interleaved({"f": (forward, (batch,))}, rounds=repeats, clock=time.process_time)["f"]
    return {"fingerprints_per_s": batch_size / t, "fingerprints_per_cpu_s": batch_size / t_cpu,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _flag_comparison(batch_size: int, repeats: int, alternations: int = 2) -> dict:
    """Fresh processes with XLA_FLAGS unset-equivalent ('') and with the 512-bit flag, alternated."""
    best = {(flags, key): 0.0 for flags in ("", VECTOR_WIDTH_FLAG) for key in ("per_s", "per_cpu_s")}
    for _ in range(alternations):
        for flags in ("", VECTOR_WIDTH_FLAG):
            env = dict(os.environ, XLA_FLAGS=flags)
            out = subprocess.run([sys.executable, __file__, "--child", "--batch", str(batch_size),
                                  "--repeats", str(repeats)], env=env, capture_output=True, text=True, check=True)
            child = json.loads(out.stdout.strip().splitlines()[-1])
            for key in ("per_s", "per_cpu_s"):
                best[flags, key] = max(best[flags, key], child[f"fingerprints_{key}"])
    result = {}
    for key in ("per_s", "per_cpu_s"):
        result[f"forward_default_flags_child_{key}"] = best["", key]
        result[f"forward_vector_width_512_child_{key}"] = best[VECTOR_WIDTH_FLAG, key]
        result[f"vector_width_512_speedup_{key}"] = best[VECTOR_WIDTH_FLAG, key] / best["", key]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large", type=int, default=2000, help="atoms of the large cluster (0 = skip)")
    parser.add_argument("--numpy-samples", type=int, default=1)
    parser.add_argument("--no-flag", action="store_true", help="skip the XLA-flag child processes")
    parser.add_argument("--no-variants", action="store_true", help="skip the mirror and NUFFT experiments")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child_forward(args.batch, args.repeats)))
        return

    fn = make_fingerprint_fn()
    forward = jax.jit(lambda b: batch_fingerprints(fn, b))
    batch, n_atoms = clusters(250, args.batch)
    weights = jnp.asarray(np.random.default_rng(1).random((64, 64, 3)), jnp.float32)
    rotations = channel_rotations(45.0)
    arrays = jax.tree.map(jnp.asarray, detector_arrays(DetectorConfig(), 5e-12, 2))
    stop = jnp.asarray(beam_stop_mask(DetectorConfig()), jnp.float32)

    def gradient(custom: bool):
        def one(structure):
            intensities = patterns(structure.positions, structure.numbers, structure.mask, rotations, arrays,
                                   n_pixels=64, custom_derivative=custom)
            return combine_channels(intensities, stop)

        def loss(positions, b):
            return jnp.sum(weights * batch_fingerprints(one, b._replace(positions=positions)) ** 2)

        return jax.jit(jax.grad(loss))

    def forward_with(degrees):
        def one(structure):
            intensities = patterns(structure.positions, structure.numbers, structure.mask, rotations, arrays,
                                   n_pixels=64, sincos_degrees=degrees)
            return combine_channels(intensities, stop)

        return jax.jit(lambda b: batch_fingerprints(one, b))

    g_custom, g_plain = gradient(True), gradient(False)
    positions = jnp.asarray(batch.positions)
    degree_variants = {f"forward_sincos_{s}_{c}": forward_with((s, c)) for s, c in ((13, 14), (9, 10))}
    calls = {"forward": (forward, (batch,)), "gradient_custom": (g_custom, (positions, batch)),
             "gradient_autodiff": (g_plain, (positions, batch)),
             **{name: (f, (batch,)) for name, f in degree_variants.items()}}
    times = interleaved(calls, rounds=args.repeats)
    cpu_times = interleaved(calls, rounds=max(2, args.repeats // 2), clock=time.process_time)
    gc, gp = np.asarray(g_custom(positions, batch)), np.asarray(g_plain(positions, batch))
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    result = {
        "n_atoms": n_atoms,
        "batch": args.batch,
        "patterns_per_fingerprint": 6,
        "fingerprints_per_s": args.batch / times["forward"],
        "ms_per_fingerprint": 1e3 * times["forward"] / args.batch,
        "gradient_fingerprints_per_s": args.batch / times["gradient_custom"],
        "gradient_autodiff_fingerprints_per_s": args.batch / times["gradient_autodiff"],
        "gradient_over_forward_time": times["gradient_custom"] / times["forward"],
        "gradient_autodiff_over_forward_time": times["gradient_autodiff"] / times["forward"],
        "gradient_custom_vs_autodiff_relative_l2": float(np.linalg.norm(gc - gp) / np.linalg.norm(gp)),
        "peak_rss_gb_after_gradient": peak_rss_gb,
        **{f"{name}_per_s": args.batch / times[name] for name in degree_variants},
        **{f"{name}_per_cpu_s": args.batch / t for name, t in cpu_times.items()},
        "gradient_over_forward_cpu_time": cpu_times["gradient_custom"] / cpu_times["forward"],
        "gradient_autodiff_over_forward_cpu_time": cpu_times["gradient_autodiff"] / cpu_times["forward"],
    }

    # plain NumPy float64 reference of the same physics, same structure, same process
    one = jax.tree.map(lambda a: a[0], batch)
    pos, numbers, mask = np.asarray(one.positions, np.float64), np.asarray(one.numbers), np.asarray(one.mask)
    t = time.perf_counter()
    for _ in range(args.numpy_samples):
        ref = fingerprint_numpy(pos, numbers, mask)
    t_np = (time.perf_counter() - t) / args.numpy_samples

    def rel_l2(image):
        return float(np.linalg.norm(np.asarray(image) - ref) / np.linalg.norm(ref))

    result.update({
        "numpy_reference_per_s": 1.0 / t_np,
        "speedup_vs_numpy": (args.batch / times["forward"]) * t_np,
        "relative_l2_vs_float64_reference": rel_l2(np.asarray(forward(batch))[0]),
        **{f"{name}_relative_l2_vs_float64_reference": rel_l2(np.asarray(f(batch))[0])
           for name, f in degree_variants.items()},
        "pairs_per_ns": args.batch * 6 * 4096 * batch.positions.shape[1] / times["forward"] / 1e9,
    })

    if not args.no_variants:
        single = jax.jit(fn)
        variants = {"direct": (single, (one,)), "mirror_symmetry": (jax.jit(mirror_fingerprint_fn()), (one,))}
        try:
            variants["nufft"] = (jax.jit(nufft_fingerprint_fn()), (one,))
        except ImportError:
            result["nufft"] = "jax-finufft not installed"
        vt = interleaved(variants, rounds=max(2, args.repeats // 2))
        for name, (f, a) in variants.items():
            result[f"{name}_single_fingerprints_per_s"] = 1.0 / vt[name]
            result[f"{name}_relative_l2_vs_float64_reference"] = rel_l2(f(*a))

    if args.large:
        large, n_large = clusters(args.large, 4)
        t_large = timed(forward, large, repeats=max(2, args.repeats // 2))
        result.update({"n_atoms_large": n_large, "fingerprints_per_s_large": 4 / t_large})
        if not args.no_variants and "nufft" in variants:
            large_one = jax.tree.map(lambda a: a[0], large)
            ref_large = fingerprint_numpy(np.asarray(large_one.positions, np.float64), np.asarray(large_one.numbers),
                                          np.asarray(large_one.mask))
            nufft = jax.jit(nufft_fingerprint_fn())
            lt = interleaved({"direct": (single, (large_one,)), "nufft": (nufft, (large_one,))}, rounds=2)
            result.update({
                "large_direct_single_per_s": 1.0 / lt["direct"], "large_nufft_single_per_s": 1.0 / lt["nufft"],
                "large_nufft_relative_l2_vs_float64_reference":
                    float(np.linalg.norm(np.asarray(nufft(large_one)) - ref_large) / np.linalg.norm(ref_large)),
                "large_direct_relative_l2_vs_float64_reference":
                    float(np.linalg.norm(np.asarray(single(large_one)) - ref_large) / np.linalg.norm(ref_large)),
            })

    if not args.no_flag:
        result.update(_flag_comparison(max(4, args.batch // 4), max(2, args.repeats // 2)))
    result.update({
        "cpu_has_avx512": cpu_has_avx512(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "machine": platform.machine(),
        "jax": jax.__version__,
    })
    if not args.json:
        for k, v in result.items():
            print(f"{k:>48}: {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
