"""Gradient step of the paper's ConvNet convolutions alone (pure jax.lax, no Flax), to compare JAX versions.

Six 'same' 7x7 convolutions (32, 32, 16, 16, 8, 8 filters, 2x2 max-pool after the 2nd and 4th) on a batch
of 32 images of 64x64x3, forward + backward, jitted; the median of ``--repeats`` calls after one warm-up.
Run it in two environments with different JAX versions, side by side on the same machine:

    python benchmarks/bench_conv_step.py            # prints {"jax": ..., "seconds": ...} as its last line
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    key = jax.random.key(0)
    weights, c = [], 3
    for out in (32, 32, 16, 16, 8, 8):
        key, sub = jax.random.split(key)
        weights.append(jax.random.normal(sub, (7, 7, c, out)) * 0.05)
        c = out

    def net(ws, x):
        for i, w in enumerate(ws):
            x = jax.nn.relu(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
            if i in (1, 3):
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return x.sum()

    x = jax.random.uniform(key, (args.batch, 64, 64, 3))
    grad = jax.jit(jax.grad(net))
    jax.block_until_ready(grad(weights, x))
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(grad(weights, x))
        times.append(time.perf_counter() - t0)
    print(json.dumps({"jax": jax.__version__, "batch": args.batch, "seconds": statistics.median(times)}))


if __name__ == "__main__":
    main()
