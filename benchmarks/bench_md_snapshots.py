"""Thermal disorder from molecular dynamics: crystaljax map, OVITO PTM and a-CNA on the same EMT snapshots.

    python benchmarks/bench_md_snapshots.py --json            # Cu, 500 atoms, T/T_m 0.25 .. 1.0 + liquid control
    python benchmarks/bench_md_snapshots.py --quick --json    # 108 atoms, short runs
    python benchmarks/bench_md_snapshots.py --elements Cu Al Ni --json

Snapshots: a periodic fcc box of n^3 cubic cells (``--atoms`` ~ 4 n^3) at the 0 K lattice constant of ASE's
pure-Python EMT calculator, held at constant volume; Maxwell-Boltzmann velocities, then Langevin dynamics
(ase.md.langevin, time step 5 fs, friction 0.02/fs) at T = f T_m for f in 0.25, 0.5, 0.75, 1.0; the snapshot
is the last frame.  Control: the box melted at 3 T_m (``--melt-steps``), then held at T_m (``liquid`` row;
it should be "not fcc"; its ``hold_msd_A2`` shows that it diffuses).  T_m is the experimental melting point
at 1 atm, not EMT's own (not documented in ASE or ASAP); a periodic box without a free surface superheats,
so the 1.0 T_m snapshot is still a crystal (its ``lindemann`` ratio stays ~0.1).  Snapshots are cached in
``--out`` (extxyz, keyed by element, atoms, steps and seed), so reruns only re-score.

Scores per snapshot: the fraction of atoms labelled fcc (crystals) or not fcc (liquid) by crystaljax --
through the user's path, ``crystaljax map SNAPSHOT.extxyz --out MAPPED.extxyz`` (cli.main, default model, MC
dropout and the unknown verdict on; again with ``--no-unknown`` for the model's most probable class) -- by
OVITO PTM with the default RMSD cutoff (0.1) and without cutoff, and by adaptive CNA (bench_map.ovito_types).
Time per atom: crystaljax = wall seconds of the CLI call in a warm process (file read, model load, map, file
write; one call before the timed ones compiles the model), also its map alone (``time_total_s``); OVITO =
``pipeline.compute()``.  Prints one JSON object as its last line (``--json``); also writes md_snapshots.json
and the figure md_snapshots.png into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_map import ovito_types  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "md_snapshots"  # outputs/ is git-ignored

#: Experimental melting points at 1 atm (K), CRC Handbook of Chemistry and Physics.
T_MELT_K = {"Cu": 1357.77, "Al": 933.47, "Ni": 1728.0}
T_MELT_SOURCE = ("experimental melting point at 1 atm (CRC Handbook); EMT's own melting point is not documented "
                 "in ASE or ASAP")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
MELT_FRACTION = 3.0  # at constant volume a 108-atom box stays crystalline for 2 ps at 2 T_m
TIMESTEP_FS = 5.0
FRICTION_PER_FS = 0.02
#: label -> (PTM RMSD cutoff or None for a-CNA); crystaljax is scored separately.
OVITO_METHODS = {"ptm_default": ("ptm", 0.1), "ptm_no_cutoff": ("ptm", 0.0), "acna": ("cna", 0.0)}
#: crystaljax through the CLI: label -> extra arguments of ``crystaljax map`` (--no-unknown: the most probable
#: class of every atom, so an atom the verdict flags still counts when the model's vote is fcc).
CLI_METHODS = {"crystaljax": (), "crystaljax_no_unknown": ("--no-unknown",)}
METHODS = (*CLI_METHODS, *OVITO_METHODS)


def emt_lattice_constant(symbol: str) -> float:
    """Cubic fcc lattice constant (Å) at the minimum of ASE's EMT energy (0 K, zero pressure)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from scipy.optimize import minimize_scalar

    def energy(a):
        atoms = bulk(symbol, "fcc", a=a)
        atoms.calc = EMT()
        return atoms.get_potential_energy()

    a_ref = bulk(symbol, "fcc", cubic=True).cell.lengths()[0]
    return float(minimize_scalar(energy, bounds=(0.9 * a_ref, 1.1 * a_ref), method="bounded",
                                 options={"xatol": 1e-5}).x)


def lattice_box(symbol: str, n_cells: int):
    """Periodic fcc box of n_cells^3 cubic cells (4 n^3 atoms) at the EMT lattice constant."""
    from ase.build import bulk

    return bulk(symbol, "fcc", a=emt_lattice_constant(symbol), cubic=True).repeat((n_cells,) * 3)


def kinetic_temperature(atoms) -> float:
    """Kinetic temperature (K) with 3N - 3 degrees of freedom (ase.constraints.FixCom holds the centre of mass)."""
    from ase import units

    return float(2 * atoms.get_kinetic_energy() / ((3 * len(atoms) - 3) * units.kB))


def msd(positions, reference, cell) -> float:
    """Mean-square displacement (Å^2) between (N, 3) positions and reference positions (same order), minimum
    image in the (3, 3) cell."""
    d = np.asarray(positions) - np.asarray(reference)
    frac = np.linalg.solve(np.asarray(cell).T, d.T).T
    d = (frac - np.round(frac)) @ np.asarray(cell)
    return float(np.mean(np.sum(d ** 2, axis=1)))


def run_md(symbol: str, n_cells: int, temperature_K: float, steps: int, seed: int, *,
           melt_K: float | None = None, melt_steps: int = 0):
    """Snapshot of the EMT box after ``steps`` Langevin steps at ``temperature_K`` (constant volume), preceded
    by ``melt_steps`` at ``melt_K`` when given.  info: target and kinetic temperature (K; mean over the second
    half of the last run); ``msd_A2``, the mean-square displacement from the lattice sites (Å^2), and its root
    over the nearest-neighbour distance (``lindemann``); ``hold_msd_A2``, the mean-square displacement over the
    last run (diffusion: ~1 Å^2 and more in a liquid, ~2 msd_A2 at most in a crystal)."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    lattice = lattice_box(symbol, n_cells)
    atoms = lattice.copy()
    atoms.calc = EMT()
    atoms.set_constraint(FixCom())
    rng = np.random.default_rng(seed)
    stages = ([(melt_K, melt_steps)] if melt_K is not None and melt_steps > 0 else []) + [(temperature_K, steps)]
    thermalize_momenta(atoms, stages[0][0], rng=rng)
    Stationary(atoms)
    temps: list[float] = []
    for k, (temp, n) in enumerate(stages):
        dyn = Langevin(atoms, TIMESTEP_FS * units.fs, temperature_K=temp, friction=FRICTION_PER_FS / units.fs,
                       fixcm=False, rng=rng)
        if k == len(stages) - 1:
            start = atoms.positions.copy()
            dyn.attach(lambda: temps.append(kinetic_temperature(atoms)) if dyn.nsteps >= n // 2 else None)
        dyn.run(n)
    cell = lattice.cell.array
    msd_lattice = msd(atoms.positions, lattice.positions, cell)
    nn = float(lattice.cell.lengths()[0] / n_cells / np.sqrt(2))
    out = atoms.copy()
    out.calc = None
    out.set_constraint()
    out.info.update({"element": symbol, "T_target_K": float(temperature_K), "T_kinetic_K": float(np.mean(temps)),
                     "steps": int(steps), "melt_K": float(melt_K or 0.0), "melt_steps": int(melt_steps),
                     "seed": int(seed), "msd_A2": msd_lattice, "lindemann": float(np.sqrt(msd_lattice) / nn),
                     "hold_msd_A2": msd(atoms.positions, start, cell), "d_nn_A": nn})
    return out


def snapshots(symbol: str, n_cells: int, steps: int, melt_steps: int, seed: int, out_dir: Path) -> list:
    """The crystal at f T_m for f in FRACTIONS and the liquid (MELT_FRACTION T_m, then T_m), each with
    info["label"] and info["T_over_Tm"]; read from / written to a cache file in ``out_dir``."""
    from ase.io import read, write

    cache = Path(out_dir) / f"snapshots_{symbol}_{4 * n_cells ** 3}at_{steps}st_{melt_steps}melt_seed{seed}.extxyz"
    if cache.exists():
        frames = read(str(cache), ":")
        for a in frames:  # extxyz reads label=0.5 back as a number
            a.info["label"] = a.info["label"] if isinstance(a.info["label"], str) else f"{float(a.info['label']):g}"
        return frames
    t_m = T_MELT_K[symbol]
    frames = []
    for i, f in enumerate(FRACTIONS):
        a = run_md(symbol, n_cells, f * t_m, steps, seed=seed + i)
        a.info.update({"label": f"{f:g}", "T_over_Tm": float(f)})
        frames.append(a)
        print(json.dumps({"snapshot": a.info["label"], **{k: a.info[k] for k in ("T_kinetic_K", "lindemann")}}),
              file=sys.stderr, flush=True)
    liquid = run_md(symbol, n_cells, t_m, steps, seed=seed + len(FRACTIONS), melt_K=MELT_FRACTION * t_m,
                    melt_steps=melt_steps)
    liquid.info.update({"label": "liquid", "T_over_Tm": 1.0})
    frames.append(liquid)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write(str(cache), frames, format="extxyz")
    return frames


def map_through_cli(path: Path, out: Path, extra=()) -> tuple[np.ndarray, dict, float]:
    """``crystaljax map PATH --out OUT --json --quiet [EXTRA]`` in this process: per-atom crystal_class (N,) str
    as written to OUT, the printed JSON summary, and the wall seconds of the call."""
    from ase.io import read

    from crystaljax import cli

    buf = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["map", str(path), "--out", str(out), "--json", "--quiet", *extra])
    dt = time.perf_counter() - t
    if rc != 0:
        raise RuntimeError(f"crystaljax map {path} exited with {rc}")
    return np.asarray(read(str(out)).arrays["crystal_class"]).astype(str), json.loads(buf.getvalue()), dt


def score_snapshot(atoms, work: Path) -> dict:
    """Fractions fcc / not fcc / unknown per method and time per atom (µs) of one snapshot."""
    from ase.io import write

    label = atoms.info["label"]
    src = work / f"snapshot_{atoms.info['element']}_{label}.extxyz"
    write(str(src), atoms, format="extxyz")
    labels, times, summaries = {}, {}, {}
    for name, extra in CLI_METHODS.items():
        labels[name], summaries[name], times[name] = map_through_cli(src, src.with_name(f"{src.stem}_{name}.extxyz"),
                                                                     extra)
    summary = summaries["crystaljax"]
    for name, (method, cutoff) in OVITO_METHODS.items():
        labels[name], times[name] = ovito_types(atoms, method, cutoff)
    n = len(atoms)
    fcc = {m: float(np.mean(labels[m] == "fcc")) for m in METHODS}
    liquid = label == "liquid"
    row = {"element": atoms.info["element"], "label": label, "T_over_Tm": float(atoms.info["T_over_Tm"]),
           **{k: float(atoms.info[k]) for k in ("T_target_K", "T_kinetic_K", "msd_A2", "lindemann", "hold_msd_A2")},
           "n": n,
           "fcc": fcc, "accuracy": {m: (1.0 - v) if liquid else v for m, v in fcc.items()},
           "crystaljax_unknown": float(np.mean(labels["crystaljax"] == "unknown")),
           "crystaljax_fractions": {c: v for c, v in summary["fractions"].items() if v > 0},
           "crystaljax_no_unknown_fractions": {c: v for c, v in summaries["crystaljax_no_unknown"]["fractions"].items()
                                               if v > 0},
           "crystaljax_unknown_reasons": {r: v for r, v in summary.get("unknown_reasons", {}).items() if v > 0},
           "crystaljax_windows": summary["n_windows"],
           "us_per_atom": {m: 1e6 * t / n for m, t in times.items()},
           "crystaljax_map_only_us_per_atom": 1e6 * summary["time_total_s"] / n}
    return row


def figure(rows: list[dict], path: Path, title: str) -> None:
    """Accuracy (fcc fraction; not-fcc fraction for the liquid) vs T/T_m, one line per method and element."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"crystaljax": ("crystaljax map", "k", "o"), "crystaljax_no_unknown": ("crystaljax map --no-unknown",
                                                                                  "0.55", "o"),
             "ptm_default": ("PTM (cutoff 0.1)", "C0", "s"),
             "ptm_no_cutoff": ("PTM (no cutoff)", "C1", "^"), "acna": ("a-CNA", "C3", "d")}
    elements = sorted({r["element"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for j, el in enumerate(elements):
        crystal = [r for r in rows if r["element"] == el and r["label"] != "liquid"]
        liquid = [r for r in rows if r["element"] == el and r["label"] == "liquid"]
        for m, (name, col, mk) in style.items():
            us = np.mean([r["us_per_atom"][m] for r in rows if r["element"] == el])
            ls = ("-", "--", ":")[j % 3]
            ax.plot([r["T_over_Tm"] for r in crystal], [100 * r["accuracy"][m] for r in crystal], ls, marker=mk,
                    color=col, label=f"{name}{f' {el}' if len(elements) > 1 else ''}: {us:,.0f} µs/atom")
            for r in liquid:
                x = 1.05 + 0.012 * list(style).index(m) + 0.06 * j
                ax.plot([x], [100 * r["accuracy"][m]], marker=mk, color=col, mfc="none", ms=8)
    ax.axvline(1.03, color="0.7", lw=0.8)
    ax.text(1.075, 50, "liquid at T_m (not fcc)", fontsize=8, rotation=90, va="center", ha="center")
    ax.set_xlabel("T / T_m")
    ax.set_ylabel("atoms labelled fcc (%)  |  liquid: not fcc (%)")
    ax.set_ylim(-2, 102)
    ax.set_xlim(0.2, 1.05 + 0.06 * len(elements) + 0.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title + "; T_m: experiment", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(md: dict) -> str:
    return (f"EMT {'/'.join(md['T_m_K'])}, {md['n_atoms']} atoms, periodic, constant volume, Langevin "
            f"{md['steps']} x {md['timestep_fs']:g} fs per snapshot")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--quick", action="store_true", help="108 atoms, 150 steps, 400 melting steps")
    ap.add_argument("--atoms", type=int, default=500, help="atoms in the box, rounded to 4 n^3 (default 500)")
    ap.add_argument("--steps", type=int, default=None, help="Langevin steps of 5 fs per snapshot (default 400)")
    ap.add_argument("--melt-steps", type=int, default=None, help="steps at 3 T_m before the liquid's hold at T_m "
                    "(default 1000)")
    ap.add_argument("--elements", nargs="+", default=["Cu"], choices=sorted(T_MELT_K), help="fcc EMT metals")
    ap.add_argument("--seed", type=int, default=0, help="seed of the velocities and Langevin noise (default 0)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"snapshots, maps, JSON and figure (default {OUT})")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--replot", action="store_true", help="only redraw the figure from OUT/md_snapshots.json")
    args = ap.parse_args(argv)
    if args.replot:
        report = json.loads((args.out / "md_snapshots.json").read_text())
        figure(report["rows"], args.out / "md_snapshots.png", _title(report["md"]))
        return report
    atoms_wanted = 108 if args.quick else args.atoms
    n_cells = max(2, int(round((atoms_wanted / 4) ** (1 / 3))))
    steps = args.steps if args.steps is not None else (150 if args.quick else 400)
    melt_steps = args.melt_steps if args.melt_steps is not None else (400 if args.quick else 1000)
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    frames = {el: snapshots(el, n_cells, steps, melt_steps, args.seed, args.out) for el in args.elements}
    t_md = time.perf_counter() - t0
    first = next(iter(frames.values()))[0]
    warm = args.out / "warmup.extxyz"
    from ase.io import write

    write(str(warm), first, format="extxyz")
    t = time.perf_counter()
    map_through_cli(warm, args.out / "warmup_map.extxyz")  # model load + compilation, not timed below
    t_warm = time.perf_counter() - t
    rows = []
    for el, snaps in frames.items():
        for a in snaps:
            rows.append(score_snapshot(a, args.out))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {"md": {"calculator": "ase.calculators.emt.EMT (pure Python)", "ensemble": "NVT Langevin, constant "
                     "volume at the EMT 0 K lattice constant", "timestep_fs": TIMESTEP_FS,
                     "friction_per_fs": FRICTION_PER_FS, "steps": steps, "melt_steps": melt_steps,
                     "melt_T_over_Tm": MELT_FRACTION, "n_atoms": 4 * n_cells ** 3, "seed": args.seed,
                     "T_m_K": {el: T_MELT_K[el] for el in args.elements}, "T_m_source": T_MELT_SOURCE,
                     "md_s": t_md},
              "timing": {"crystaljax": "wall of crystaljax.cli.main(['map', ...]) in a warm process (read, model "
                         "load, map, write)", "ovito": "pipeline.compute()", "crystaljax_warmup_s": t_warm},
              "rows": rows,
              "mean_us_per_atom": {m: float(np.mean([r["us_per_atom"][m] for r in rows])) for m in METHODS},
              "total_s": time.perf_counter() - t0, "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    (args.out / "md_snapshots.json").write_text(json.dumps(report, indent=1))
    if not args.no_figures:
        figure(rows, args.out / "md_snapshots.png", _title(report["md"]))
    return report


if __name__ == "__main__":
    rep = main()
    if "--json" in sys.argv[1:]:
        print(json.dumps(rep))
    else:
        for r in rep["rows"]:
            acc = "  ".join(f"{m} {100 * r['accuracy'][m]:5.1f} %" for m in METHODS)
            print(f"{r['element']} {r['label']:>6}: {acc}  (crystaljax unknown {100 * r['crystaljax_unknown']:.1f} %)")
