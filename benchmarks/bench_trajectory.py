"""``crystaljax classify --json traj.extxyz`` on an MD-like trajectory, end to end: streamed vs former batching.

Writes one extxyz file of ``--frames`` frames of a periodic supercell (fcc Cu 4x4x4 = 256 atoms or bcc Fe 5x5x5
= 250 atoms) with fresh Gaussian thermal displacements (``--sigma`` Å per component) every frame, and a 1-frame
file of the same cell.  Each is classified by the installed command in a subprocess (start-up, model load and
compilation included), side by side in one run:

* ``streamed``: the command as shipped (``pipeline.iter_prepared_batches``: bucketed padded sizes, balanced
  fixed batches, the next batch prepared in a worker thread while this one is on the device);
* ``former``: the same command with the hidden ``--legacy-batching`` (chunks of --batch prepared in the main
  thread, padded to a multiple of 16 of their largest cluster: a compilation per new size, no overlap).

Reports frames/s of the N-frame run, the start-up-free throughput (N - 1) / (t_N - t_1), the per-stage split the
command reports with ``--stage-times`` (load+read, prepare = time waiting for host preparation, device =
fingerprints + network, assess = unknown-verdict host features), the streamed/former ratios and the largest
probability difference between the two outputs.

    python benchmarks/bench_trajectory.py --frames 200      # JSON on the last line
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_trajectory(path: Path, n_frames: int, lattice: str = "fcc", sigma: float = 0.08, seed: int = 0) -> int:
    """``n_frames`` frames of a periodic ~250-atom supercell with N(0, sigma^2) Å displacements; returns atoms."""
    from ase.build import bulk
    from ase.io import write

    base = (bulk("Cu", "fcc", a=3.615, cubic=True).repeat((4, 4, 4)) if lattice == "fcc"
            else bulk("Fe", "bcc", a=2.87, cubic=True).repeat((5, 5, 5)))
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return len(base)


def _command() -> list[str]:
    exe = shutil.which("crystaljax")
    return [exe] if exe else [sys.executable, "-m", "crystaljax.cli"]


def run(path: Path, extra: list[str], batch: int) -> dict:
    """One subprocess run: wall seconds, rows and the stage split of --stage-times (last stderr line)."""
    cmd = [*_command(), "classify", "--json", "--stage-times", "--batch", str(batch), *extra, str(path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    stages = json.loads(proc.stderr.strip().splitlines()[-1])["stage_seconds"]
    return {"seconds": seconds, "rows": json.loads(proc.stdout), "stages": stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--lattice", choices=("fcc", "bcc"), default="fcc")
    ap.add_argument("--sigma", type=float, default=0.08, help="thermal displacement per component, Å")
    ap.add_argument("--batch", type=int, default=64, help="--batch of the command (its default 64)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        traj, one = Path(tmp) / "traj.extxyz", Path(tmp) / "one.extxyz"
        n_atoms = write_trajectory(traj, args.frames, args.lattice, args.sigma)
        write_trajectory(one, 1, args.lattice, args.sigma)
        out = {}
        for name, extra in (("streamed", []), ("former", ["--legacy-batching"])):
            single, full = run(one, extra, args.batch), run(traj, extra, args.batch)
            assert len(full["rows"]) == args.frames
            steady = (args.frames - 1) / max(full["seconds"] - single["seconds"], 1e-9)
            out[name] = {"seconds": round(full["seconds"], 2), "frames_per_s": round(args.frames / full["seconds"], 2),
                         "seconds_1_frame": round(single["seconds"], 2),
                         "startup_free_frames_per_s": round(steady, 2), "stages": full["stages"],
                         "rows": full["rows"]}
            print(f"{name:>8}: {args.frames} frames {full['seconds']:.1f} s ({out[name]['frames_per_s']} frames/s), "
                  f"1 frame {single['seconds']:.1f} s, start-up-free {steady:.2f} frames/s, stages {full['stages']}",
                  file=sys.stderr)
    new, old = out["streamed"].pop("rows"), out["former"].pop("rows")
    diff = max(abs(a["probabilities"][c] - b["probabilities"][c]) for a, b in zip(new, old) for c in a["probabilities"])
    labels = {r["label"]: sum(x["label"] == r["label"] for x in new) for r in new}
    result = {"frames": args.frames, "atoms_per_frame": n_atoms, "lattice": args.lattice, "sigma": args.sigma,
              "batch": args.batch, **out,
              "ratio_frames_per_s": round(out["streamed"]["frames_per_s"] / out["former"]["frames_per_s"], 3),
              "ratio_startup_free": round(out["streamed"]["startup_free_frames_per_s"]
                                          / out["former"]["startup_free_frames_per_s"], 3),
              "same_labels": [r["label"] for r in new] == [r["label"] for r in old],
              "max_probability_difference": diff, "labels": labels}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
