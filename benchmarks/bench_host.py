"""Host pipeline per frame (standard cell, ball, scale): vectorised search vs the one-at-a-time reference.

Side by side in one run, CPU time of this process (``time.process_time``, so other jobs on a shared machine
do not count) per structure, for three inputs:

* ``md250``   250-site bcc Fe supercell (5x5x5 conventional cells, 10 vacancies, sigma = 0.05 A rattle), a
              new rattle every frame on the same cell (an MD trajectory);
* ``cif``     unit-cell CIFs (crystaljax/examples/*.cif), read once;
* ``big2000`` a 2,000-site bcc Fe frame (10x10x10, 40 vacancies, same rattle).

``new``: crystaljax.structures.cell.standard_cell now; ``reference``: the per-operation loop of git revision
``--old-rev`` (loaded from git; one Python iteration per lattice automorphism, each scoring every
candidate origin).  ``prepare`` = standard cell + ball + scale (crystaljax.structures.cluster.prepare, the
same code for both but for the standard cell).  Also the streaming throughput of
``pipeline.iter_prepared_batches`` (host only) with 1 and 2 worker threads vs ``prepare_structures``.

Host code of the box route (``host``): ``cluster.prepare`` (validate, ball, lattice finder, scale) and
``order.host_features`` of the lattice/cluster/order/io modules now vs those of git revision ``--old-host-rev``
(loaded from git, same inputs, same process), on fresh 250-atom frames; ``same_result`` says whether the two
gave identical clusters (positions, rotation, scale) and features.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_host.py            # JSON on the last line
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_host.py --quick    # fewer frames
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _old_cell_module(rev: str) -> types.ModuleType:
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:crystaljax/structures/cell.py"],
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("reference_cell")
    exec(compile(src, "reference_cell.py", "exec"), mod.__dict__)  # noqa: S102 - our own file from git
    return mod


#: Host modules whose revision ``--old-host-rev`` is compared with the working tree (order last: it imports cluster).
HOST_MODULES = ("io", "lattice", "cluster", "order")


def _old_host_modules(rev: str) -> tuple[dict, contextlib.AbstractContextManager]:
    """The modules of :data:`HOST_MODULES` at git revision ``rev`` and a context that makes their (lazy)
    imports of each other resolve to these old versions."""
    import importlib

    mods: dict = {}
    names = {name: f"crystaljax.structures.{name}" for name in HOST_MODULES}
    for full in names.values():  # the working tree's modules first, so that they are the ones restored
        importlib.import_module(full)

    @contextlib.contextmanager
    def active():
        saved = {full: sys.modules.get(full) for full in names.values()}
        sys.modules.update({names[name]: mod for name, mod in mods.items()})
        try:
            yield
        finally:
            for full, mod in saved.items():
                if mod is None:
                    sys.modules.pop(full, None)
                else:
                    sys.modules[full] = mod

    for name in HOST_MODULES:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:crystaljax/structures/{name}.py"],
                             check=True, capture_output=True, text=True).stdout
        mod = types.ModuleType(names[name])
        with active():
            exec(compile(src, f"reference_{name}.py", "exec"), mod.__dict__)  # noqa: S102 - our own file from git
        mods[name] = mod
    return mods, active


def md_frames(reps: int, vacancies: int, n: int, seed: int = 0, sigma: float = 0.05, element: str = "Fe") -> list:
    """``n`` frames of a rattled supercell of ``element`` (bcc Fe: reps^3 conventional cells; fcc Cu: the cubic
    cell) with ``vacancies`` sites empty."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    unit = bulk("Fe", "bcc", a=2.87, cubic=True) if element == "Fe" else bulk("Cu", "fcc", a=3.61, cubic=True)
    base = unit.repeat((reps, reps, reps))
    frames = []
    for _ in range(n):
        a = base.copy()
        del a[rng.choice(len(a), vacancies, replace=False)]
        a.positions += rng.normal(scale=sigma, size=a.positions.shape)
        frames.append(a)
    return frames


def cpu_ms(fn, items, repeat: int = 1) -> float:
    """CPU milliseconds per item of ``fn`` over ``items`` (best of ``repeat`` passes)."""
    fn(items[0])  # warm-up (imports, first-call costs)
    best = np.inf
    for _ in range(repeat):
        t0 = time.process_time()
        for it in items:
            fn(it)
        best = min(best, (time.process_time() - t0) / len(items))
    return 1e3 * best


def host_rows(rev: str, n_frames: int) -> dict:
    """CPU ms per frame of prepare and host_features, working tree vs the host modules of ``rev``."""
    from crystaljax.structures import cluster, io, lattice, order

    old, active = _old_host_modules(rev)

    def old_prepare(atoms):
        with active():
            return old["cluster"].prepare(atoms)

    def old_features(c):
        with active():
            return old["order"].host_features(c)

    inputs = {"bcc_fe_5x5x5_sigma0.05": md_frames(5, 0, n_frames, seed=2),
              "bcc_fe_5x5x5_10vac": md_frames(5, 10, n_frames, seed=3),
              "fcc_cu_4x4x4_sigma0.1": md_frames(4, 0, n_frames, seed=4, sigma=0.1, element="Cu")}
    rows = {}
    for name, frames in inputs.items():
        new_c, old_c = [cluster.prepare(a) for a in frames], [old_prepare(a) for a in frames]
        same = all(np.array_equal(a.positions, b.positions) and a.info["nn_distance"] == b.info["nn_distance"]
                   and np.array_equal(a.info.get("rotation"), b.info.get("rotation")) for a, b in zip(new_c, old_c))
        same = same and [order.host_features(c) for c in new_c] == [old_features(c) for c in new_c]
        row = {"atoms": int(np.mean([len(a) for a in frames])),
               "prepare_new": cpu_ms(cluster.prepare, frames, repeat=3),
               "prepare_reference": cpu_ms(old_prepare, frames, repeat=2),
               "host_features_new": cpu_ms(order.host_features, new_c, repeat=3),
               "host_features_reference": cpu_ms(old_features, new_c, repeat=2),
               "same_result": bool(same)}
        row["prepare_speedup"] = row["prepare_reference"] / row["prepare_new"]
        row["host_features_speedup"] = row["host_features_reference"] / row["host_features_new"]
        rows[name] = row
        print("host", name, json.dumps(row), file=sys.stderr)
    frames = inputs["bcc_fe_5x5x5_sigma0.05"]
    new_stages = _stages(cluster, lattice, io, frames)
    with active():
        old_stages = _stages(old["cluster"], old["lattice"], old["io"], frames)
    rows["stages_bcc_fe_5x5x5_sigma0.05"] = {k: {"reference": old_stages[k], "new": new_stages[k]} for k in new_stages}
    print("host stages", json.dumps(rows["stages_bcc_fe_5x5x5_sigma0.05"]), file=sys.stderr)
    return rows


def _stages(cluster, lattice, io, frames) -> dict:
    """CPU ms per frame of each stage of the box route, with the given modules."""
    balls = [cluster.sphere_cut(a, 250)[0] for a in frames]
    return {"validate": cpu_ms(io.validate, frames, repeat=3),
            "sphere_cut": cpu_ms(lambda a: cluster.sphere_cut(a, 250), frames, repeat=3),
            "orient_finite_ball": cpu_ms(lattice.orient_finite, balls, repeat=3),
            "nn_scale_robust": cpu_ms(cluster.nn_scale, frames, repeat=3),
            "prepare": cpu_ms(cluster.prepare, frames, repeat=3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40, help="MD frames timed with the new code")
    ap.add_argument("--ref-frames", type=int, default=4, help="frames timed with the (slow) reference")
    ap.add_argument("--old-rev", default="4215d4d")
    ap.add_argument("--old-host-rev", default="502240f", help="revision of the host modules to compare with")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.ref_frames = 10, 2

    import ase.io

    import crystaljax.structures.cell as cellmod
    from crystaljax import pipeline
    from crystaljax.structures import cluster

    ref_cell = _old_cell_module(args.old_rev).standard_cell
    new_cell = cellmod.standard_cell

    def prepare_with(fn):
        def run(atoms):
            cellmod.standard_cell = fn
            try:
                return cluster.prepare(atoms)
            finally:
                cellmod.standard_cell = new_cell
        return run

    inputs = {
        "md250": md_frames(5, 10, args.frames),
        "cif": [ase.io.read(p) for p in sorted((ROOT / "crystaljax" / "examples").glob("*.cif"))],
        "big2000": md_frames(10, 40, max(2, args.frames // 10), seed=1),
    }
    out: dict = {"old_rev": args.old_rev, "unit": "CPU ms per structure"}
    for name, items in inputs.items():
        ref_items = items[: max(1, args.ref_frames)]
        row = {"atoms": int(np.mean([len(a) for a in items])),
               "standard_cell_new": cpu_ms(new_cell, items, repeat=3),
               "standard_cell_new_uncached": cpu_ms(
                   lambda a: (cellmod._lattice_setup_cached.cache_clear(), new_cell(a)), items, repeat=2),
               "standard_cell_reference": cpu_ms(ref_cell, ref_items),
               "prepare_new": cpu_ms(prepare_with(new_cell), items, repeat=2),
               "prepare_reference": cpu_ms(prepare_with(ref_cell), ref_items)}
        # the part the new code does not touch: ball + scale on the standard cell
        cells = [new_cell(a) for a in items]
        row["ball_and_scale"] = cpu_ms(lambda s: cluster.build_cluster(s, 250), cells, repeat=2)
        row["ball"] = cpu_ms(lambda s: cluster.sphere_cut(s, 250), cells, repeat=2)
        row["scale"] = cpu_ms(getattr(cluster, "nn_scale", cluster.mean_nn_distance), cells, repeat=2)
        row["standard_cell_speedup"] = row["standard_cell_reference"] / row["standard_cell_new"]
        row["prepare_speedup"] = row["prepare_reference"] / row["prepare_new"]
        out[name] = row
        print(name, json.dumps(row), file=sys.stderr)

    out["host"] = host_rows(args.old_host_rev, args.frames)

    # streaming: host-only throughput (wall clock) of the batched iterator vs one list at a time
    frames = inputs["md250"]
    t0 = time.perf_counter()
    pipeline.prepare_structures(frames)
    t_list = time.perf_counter() - t0
    stream = {"prepare_structures_frames_per_s": len(frames) / t_list}
    for workers in (1, 2):
        t0 = time.perf_counter()
        for _ in pipeline.iter_prepared_batches(frames, batch_size=8, workers=workers):
            pass
        stream[f"iter_prepared_batches_w{workers}_frames_per_s"] = len(frames) / (time.perf_counter() - t0)
    # end to end with device work (fingerprints, jitted once per bucket): prepare then image, one batch
    # after the other, vs the prefetching iterator (host prepares batch i+1 while the device images batch i)
    import jax

    from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig
    from crystaljax.physics.fingerprint import make_fingerprint_fn

    image = jax.jit(jax.vmap(make_fingerprint_fn(DetectorConfig(), BeamConfig(), FingerprintConfig())))
    bs = 8
    frames = (frames * (1 + 2 * bs // len(frames)))[: max(2 * bs, len(frames) // bs * bs)]
    image(pipeline.prepare_structures(frames[:bs])).block_until_ready()  # compile
    t0 = time.perf_counter()
    for i in range(0, len(frames), bs):
        np.asarray(image(pipeline.prepare_structures(frames[i:i + bs])))
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    pending = None
    for pb in pipeline.iter_prepared_batches(frames, batch_size=bs, workers=1):
        result = image(pb.batch)  # asynchronous dispatch: returns before the device is done
        if pending is not None:
            np.asarray(pending)
        pending = result
    np.asarray(pending)
    t_overlap = time.perf_counter() - t0
    stream.update(sequential_with_device_frames_per_s=len(frames) / t_seq,
                  prefetch_with_device_frames_per_s=len(frames) / t_overlap)
    out["stream_md250"] = stream
    print("stream", json.dumps(stream), file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
