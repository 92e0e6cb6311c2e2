"""Training-step throughput with fingerprints (and defects) computed inside the jitted step.

Reference in the same run: the same step fed precomputed fingerprints (network only), so the
ratio shows what on-the-fly imaging costs.  Also projects the full 5-epoch run on the data set.
Prints one JSON object as its last line.  Run:  python benchmarks/bench_train.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import jax
import jax.numpy as jnp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--train-size", type=int, default=8400, help="training structures (80 % of 10,500)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    from crystaljax.structures import dataset
    from crystaljax.physics.defects import DefectConfig, make_defect_fn
    from crystaljax.physics.fingerprint import make_fingerprint_fn
    from crystaljax.learn.model import ModelConfig
    from crystaljax.structure import pad_to, take as index
    from crystaljax.learn.train import OptimConfig, init_state, make_optimizer, make_train_step

    ds = dataset.tiny(seed=0, per_class=max(1, -(-args.batch // 7)))
    idx = np.arange(args.batch) % len(ds)
    structures = index(ds.structures, idx)
    labels = jnp.asarray(ds.labels[idx])
    optimizer = make_optimizer(OptimConfig())
    graphdef, state = init_state(ModelConfig(), optimizer, seed=0)
    fingerprint_fn = make_fingerprint_fn()
    images = jax.jit(jax.vmap(fingerprint_fn))(structures)

    def timed(step, batch):
        nonlocal state
        key = jax.random.key(0)
        s, m = step(state, batch, key)
        jax.block_until_ready(m)
        times = []
        for i in range(args.steps):
            t = time.perf_counter()
            s, m = step(s, batch, jax.random.fold_in(key, i))
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    on_the_fly = timed(make_train_step(graphdef, optimizer, fingerprint_fn), (structures, labels))
    augmented = timed(make_train_step(graphdef, optimizer, fingerprint_fn,
                                      make_defect_fn(DefectConfig(displacement_sigma=0.08, vacancy_fraction=0.6,
                                                                  random_levels=True))), (structures, labels))
    precomputed = timed(make_train_step(graphdef, optimizer, None), (images, labels))
    steps = args.epochs * -(-args.train_size // args.batch)
    result = {
        "batch": args.batch, "n_max": int(structures.positions.shape[1]),
        "step_s_fingerprints_inside": on_the_fly,
        "step_s_fingerprints_and_defects_inside": augmented,
        "step_s_precomputed_fingerprints": precomputed,
        "fingerprint_share_of_step": 1 - precomputed / on_the_fly,
        "projected_full_training_min": steps * on_the_fly / 60,
        "projected_full_training_augmented_min": steps * augmented / 60,
        "samples_per_s": args.batch / on_the_fly,
        "backend": jax.default_backend(),
    }
    if not args.json:
        print(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
