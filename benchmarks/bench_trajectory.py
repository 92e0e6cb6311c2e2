"""``crystaljax classify --json traj.extxyz`` on an MD-like trajectory, end to end, side by side with a reference.

Writes one extxyz file of ``--frames`` frames of a periodic supercell (bcc Fe 5x5x5 = 250 sites or fcc Cu
4x4x4 = 256 sites) with ``--vacancies`` sites left empty (the same ones in every frame) and fresh Gaussian
thermal displacements (``--sigma`` Å per component) every frame, and a 1-frame file of the same cell.  Each
is classified by the command in a subprocess (start-up, model load and compilation included):

* ``cold``: this working tree's command with an empty compilation cache (``CRYSTALJAX_CACHE`` = a fresh
  directory): what a user sees the first time;
* ``warm``: the same command again, the cache filled by the cold run: what a user sees from then on;
* ``reference`` (with ``--reference REV``): the command of git revision REV, checked out into a temporary
  worktree and run from it (``PYTHONPATH``), in the same environment;
* ``former`` (with ``--former``): this tree's command with the hidden ``--legacy-batching``.

Reports frames/s of the N-frame run (start-up included), the start-up-free throughput (N - 1) / (t_N - t_1),
the per-stage split the command reports with ``--stage-times``, the ratios to the reference and whether the
labels are the same.

    python benchmarks/bench_trajectory.py --frames 1000 --reference 6a1edf2     # JSON on the last line
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_trajectory(path: Path, n_frames: int, lattice: str = "bcc", sigma: float = 0.05, seed: int = 0,
                     vacancies: int = 0) -> int:
    """``n_frames`` frames of a periodic ~250-site supercell with ``vacancies`` empty sites (the same in every
    frame) and N(0, sigma^2) Å displacements; returns atoms per frame."""
    from ase.build import bulk
    from ase.io import write

    base = (bulk("Cu", "fcc", a=3.615, cubic=True).repeat((4, 4, 4)) if lattice == "fcc"
            else bulk("Fe", "bcc", a=2.87, cubic=True).repeat((5, 5, 5)))
    rng = np.random.default_rng(seed)
    if vacancies:
        del base[np.sort(rng.choice(len(base), int(vacancies), replace=False))[::-1].tolist()]
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return len(base)


def _command() -> list[str]:
    return [sys.executable, "-m", "crystaljax.cli"]


def run(path: Path, extra: list[str], batch: int, env: dict) -> dict:
    """One subprocess run (in the file's directory, so ``PYTHONPATH`` decides which crystaljax is imported): wall
    seconds, rows and the stage split of --stage-times (last stderr line)."""
    cmd = [*_command(), "classify", "--json", "--quiet", "--stage-times", "--batch", str(batch), *extra, str(path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200, env=env, cwd=path.parent)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    stages = json.loads(proc.stderr.strip().splitlines()[-1])["stage_seconds"]
    return {"seconds": seconds, "rows": json.loads(proc.stdout), "stages": stages}


def measure(name: str, traj: Path, one: Path, n: int, batch: int, env: dict, extra=(), cold: bool = False) -> dict:
    """The n-frame and the 1-frame run of one variant, summarised (rows kept for the comparison).  The two runs
    keep their compiled programs in two directories (``CRYSTALJAX_CACHE`` of ``env`` + ``-n`` / ``-1``), emptied
    first when ``cold``."""
    caches = [Path(env["CRYSTALJAX_CACHE"] + suffix) for suffix in ("-n", "-1")] if "CRYSTALJAX_CACHE" in env else []
    for cache in caches if cold else ():
        shutil.rmtree(cache, ignore_errors=True)
    envs = [dict(env, CRYSTALJAX_CACHE=str(c)) for c in caches] or [env, env]
    full = run(traj, list(extra), batch, envs[0])
    single = run(one, list(extra), batch, envs[1])
    assert len(full["rows"]) == n
    steady = (n - 1) / max(full["seconds"] - single["seconds"], 1e-9)
    out = {"seconds": round(full["seconds"], 2), "frames_per_s": round(n / full["seconds"], 2),
           "seconds_1_frame": round(single["seconds"], 2), "startup_free_frames_per_s": round(steady, 2),
           "stages": full["stages"], "rows": full["rows"]}
    print(f"{name:>9}: {n} frames {full['seconds']:.1f} s ({out['frames_per_s']} frames/s), 1 frame "
          f"{single['seconds']:.1f} s, start-up-free {steady:.2f} frames/s, stages {full['stages']}", file=sys.stderr)
    return out


def _worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True, text=True)
    return where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--lattice", choices=("fcc", "bcc"), default="bcc")
    ap.add_argument("--sigma", type=float, default=0.05, help="thermal displacement per component, Å")
    ap.add_argument("--vacancies", type=int, default=10, help="empty sites per frame (default 10)")
    ap.add_argument("--batch", type=int, default=64, help="--batch of the command (its default 64)")
    ap.add_argument("--reference", metavar="REV", help="also run the command of this git revision")
    ap.add_argument("--former", action="store_true", help="also run this tree with --legacy-batching")
    args = ap.parse_args()

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        traj, one = tmp / "traj.extxyz", tmp / "one.extxyz"
        n_atoms = write_trajectory(traj, args.frames, args.lattice, args.sigma, vacancies=args.vacancies)
        write_trajectory(one, 1, args.lattice, args.sigma, vacancies=args.vacancies)
        env = dict(os.environ, CRYSTALJAX_CACHE=str(tmp / "xla"), PYTHONPATH=str(ROOT))
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        out["cold"] = measure("cold", traj, one, args.frames, args.batch, env, cold=True)
        out["warm"] = measure("warm", traj, one, args.frames, args.batch, env)
        if args.former:
            out["former"] = measure("former", traj, one, args.frames, args.batch, env, ["--legacy-batching"])
        if args.reference:
            tree = _worktree(args.reference, tmp / "reference")
            try:
                ref_env = {k: v for k, v in env.items() if k != "CRYSTALJAX_CACHE"} | {"PYTHONPATH": str(tree)}
                out["reference"] = measure("reference", traj, one, args.frames, args.batch, ref_env)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    rows = {k: v.pop("rows") for k, v in out.items()}
    base = "reference" if "reference" in out else ("former" if "former" in out else None)
    result = {"frames": args.frames, "atoms_per_frame": n_atoms, "lattice": args.lattice, "sigma": args.sigma,
              "vacancies": args.vacancies, "batch": args.batch, "reference": args.reference, **out,
              "labels": {lab: sum(r["label"] == lab for r in rows["warm"]) for lab in {r["label"] for r in rows["warm"]}},
              "unknown": sum(bool(r["unknown"]) for r in rows["warm"])}
    if base:
        for name in ("cold", "warm"):
            result[f"ratio_{name}_vs_{base}"] = round(out[name]["frames_per_s"] / out[base]["frames_per_s"], 3)
        result["same_labels"] = [r["label"] for r in rows["warm"]] == [r["label"] for r in rows[base]]
        result["max_probability_difference"] = max(
            abs(a["probabilities"][c] - b["probabilities"][c]) for a, b in zip(rows["warm"], rows[base])
            for c in a["probabilities"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
