"""Data-parallel train step, inference and map windows on 1, 2 and 4 devices (forced CPU devices by default).

Sets ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX starts (unless XLA_FLAGS is
already set), so on a CPU machine the "devices" are slices of the same cores: the throughput column
shows the overhead of sharding, not a speed-up.  ``max_abs_diff``: largest difference of loss and
updated parameters between the 4-device step and the single-device step.  Map windows: ``crystaljax.map_atoms``
of a noisy fcc Cu box (``--map-cells``^3 cubic cells, MC dropout 4) with the shipped default model on a mesh
(``Classifier.on_mesh``) vs one device; ``map_max_abs_diff``: largest per-atom probability difference.
Last line: JSON.
Run:  python benchmarks/bench_sharding.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--batch", type=int, default=16, help="global batch (a multiple of 4)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--n-atoms", type=int, default=64)
    parser.add_argument("--map-cells", type=int, default=6, help="fcc Cu box of n^3 cubic cells for the map rows")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from crystaljax.learn import sharding as S
    from crystaljax.learn import train as T
    from crystaljax.learn.model import ModelConfig
    from crystaljax.physics.fingerprint import make_fingerprint_fn
    from crystaljax.structure import Structure

    rng = np.random.default_rng(0)
    B, N = args.batch, args.n_atoms
    pos = rng.normal(0, 2.0, (B, N, 3)).astype(np.float32)
    mask = np.ones((B, N), np.float32)
    s = Structure(pos, np.full((B, N), 26, np.int32), mask, np.zeros((B, N), np.int32), np.ones(B, np.float32))
    labels = jnp.asarray(np.arange(B) % 7, jnp.int32)
    cfg = ModelConfig()
    fp = make_fingerprint_fn()
    opt = T.make_optimizer(T.OptimConfig(name="sgd", learning_rate=0.05))  # Adam turns round-off of ~0 gradients into +-lr
    graphdef, state = T.init_state(cfg, opt, seed=0)
    key = jax.random.key(0)

    def timed(fn):
        out = fn()
        jax.block_until_ready(out)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t)
        return out, statistics.median(times)

    single = T.make_train_step(graphdef, opt, fp)
    (ref_state, ref_m), t_single = timed(lambda: single(state, (s, labels), key))
    rows = []
    max_diff = 0.0
    for n in (1, 2, 4):
        if n > jax.device_count():
            break
        mesh = S.make_mesh(n)
        step = S.make_sharded_train_step(graphdef, opt, fp, mesh=mesh)
        batch = S.shard_batch(mesh, (s, labels))
        rep = S.replicate(mesh, state)
        (new, m), t_step = timed(lambda: step(rep, batch, key))
        predict = S.make_sharded_predict(graphdef, fp, mesh)
        _, t_pred = timed(lambda: predict(rep.params, rep.batch_stats, batch[0]))
        diff = max([abs(float(m["loss"]) - float(ref_m["loss"]))] + [
            float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref_state.params))])
        if n == 4 or n == jax.device_count():
            max_diff = diff
        rows.append({"devices": n, "train_samples_per_s": B / t_step, "predict_structures_per_s": B / t_pred,
                     "max_abs_diff_vs_single": diff})
    from ase.build import bulk

    from crystaljax.analysis.mapping import map_atoms
    from crystaljax.learn.classifier import Classifier

    box = bulk("Cu", "fcc", a=3.615, cubic=True).repeat((args.map_cells,) * 3)
    box.positions += rng.normal(0.0, 0.05, box.positions.shape)
    clf = Classifier.load("default")
    reference = None
    map_diff = 0.0
    for row in rows:
        n = row["devices"]
        model = clf if n == 1 else clf.on_mesh(S.make_mesh(n))
        run = lambda: map_atoms(box, model, stride=6.0, mc_samples=4, batch_size=16)  # noqa: E731
        run()  # compile
        t = time.perf_counter()
        result = run()
        row["map_windows_per_s"] = len(result.window_centres) / (time.perf_counter() - t)
        reference = result if reference is None else reference
        row["map_max_abs_diff_vs_single"] = float(np.abs(result.probabilities - reference.probabilities).max())
        map_diff = max(map_diff, row["map_max_abs_diff_vs_single"])
    result = {
        "devices": jax.device_count(), "platform": jax.default_backend(),
        "forced_cpu_devices": "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""),
        "cores": os.cpu_count(), "batch": B, "n_atoms": N, "max_abs_diff": max_diff,
        "map_atoms": len(box), "map_max_abs_diff": map_diff,
        "single_device_train_samples_per_s": B / t_single, "by_devices": rows,
    }
    if not args.json:
        print(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
