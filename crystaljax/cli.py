"""Command line: ``crystaljax fingerprint | classify | explain | map``.

Bad input never produces a traceback: each problem is one line on stderr and the exit status
is non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _fail(message: str) -> int:
    print(f"crystaljax: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _save_png(image, path: Path) -> None:
    """Write an (n, n, 3) fingerprint as an RGB PNG, 4x enlarged, square-root scaled so weak peaks show."""
    import numpy as np
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = np.sqrt(np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0))
    rgb = np.repeat(np.repeat(rgb, 4, axis=0), 4, axis=1)
    plt.imsave(path, rgb, origin="lower")


def cmd_fingerprint(args) -> int:
    import numpy as np

    from crystaljax.config import detector_preset
    from crystaljax.errors import StructureError
    from crystaljax.structures.io import read_structures
    from crystaljax.pipeline import DEVICE_BATCH, balanced_batch, iter_fingerprints

    detector = detector_preset(args.detector)
    structures = read_structures(args.file)
    parts = []
    for pb, part in iter_fingerprints(structures, balanced_batch(len(structures), DEVICE_BATCH), detector=detector,
                                      target=args.target, scale=args.scale):
        if pb.errors:  # as before: a structure that cannot be imaged stops the command with its message
            raise StructureError(pb.errors[0][1])
        parts.append(part)
    images = np.concatenate(parts)
    single = len(images) == 1
    out = Path(args.out) if args.out else None
    png = Path(args.png) if args.png else None
    if out is None and png is None:
        png = Path(Path(args.file).name + ".fingerprint.png")
    if out is not None:
        np.save(out, images[0] if single else images)
        print(f"wrote {out} {tuple((images[0] if single else images).shape)}")
    if png is not None:
        paths = [png] if single else [png.with_name(f"{png.stem}_{i:04d}{png.suffix or '.png'}") for i in range(len(images))]
        for image, path in zip(images, paths):
            _save_png(image, path)
        print(f"wrote {paths[0]}" + (f" ... {paths[-1]} ({len(paths)} frames)" if len(paths) > 1 else ""))
    return 0


def _frame_name(path, frame: int, n_frames: int) -> str:
    """``file`` for a single-frame file, ``file[i]`` (from 0) for every frame of a multi-frame one."""
    return f"{path}[{frame}]" if n_frames > 1 else str(path)


def _read_all(paths, errors):
    """(path, frame index, number of frames, atoms) for every readable frame; problems appended to ``errors``."""
    from crystaljax.errors import CrystalJaxError
    from crystaljax.structures.io import read_structures

    items = []
    for path in paths:
        try:
            frames = read_structures(path)
        except CrystalJaxError as exc:
            errors.append(str(exc).splitlines()[0])
            continue
        items.extend((path, i, len(frames), atoms) for i, atoms in enumerate(frames))
    return items


#: Runner-up shown in the table only from this probability on.
RUNNER_UP_MIN = 0.1


def _table(rows, classes) -> list[str]:
    """Human-readable lines: class with its space group, probability, entropy and mutual information (nats),
    the runner-up when its probability is at least RUNNER_UP_MIN, and ``UNKNOWN (reason)`` on rows the unknown
    verdict flags (crystaljax.learn.novelty)."""
    from crystaljax.learn.classes import CLASS_MEANINGS

    names = [r["name"] for r in rows]
    width = max([len(n) for n in names] + [4])
    group = {c: CLASS_MEANINGS.get(c, ("", ""))[0] for c in classes}
    gw = max([len(g) for g in group.values()] + [11])
    lines = [f"{'structure':<{width}}  {'class':<8} {'space group':<{gw}} {'prob':>6} {'entropy':>8} {'MI':>6}  runner-up"]
    unknown_w = max([len(r.get("unknown_reason", "")) for r in rows] + [0])
    for name, r in zip(names, rows):
        (first, p1), (second, p2) = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:2]
        u = r["uncertainty"]
        runner = f"{second} {p2:.3f}" if p2 >= RUNNER_UP_MIN else ""
        mark = f"UNKNOWN ({r['unknown_reason']})" if r.get("unknown") else ""
        runner = f"{runner:<16} {mark}" if unknown_w else runner
        lines.append(f"{name:<{width}}  {first:<8} {group[first]:<{gw}} {p1:6.3f} {u['entropy']:8.3f} "
                     f"{u['mutual_information']:6.3f}  {runner}".rstrip())
    return lines


#: Without --quiet a progress bar (stderr) is drawn for more than one structure when stderr is a terminal, and
#: for runs of more than this many structures whatever stderr is.
PROGRESS_MIN_STRUCTURES = 50


def _progress(n: int, quiet: bool):
    """A tqdm bar over ``n`` structures on stderr, or None (see :data:`PROGRESS_MIN_STRUCTURES`)."""
    if quiet or n <= 1 or not (sys.stderr.isatty() or n > PROGRESS_MIN_STRUCTURES):
        return None
    from tqdm import tqdm

    return tqdm(total=n, desc="classify", unit="structure", file=sys.stderr)


def _rows(clf, named, pred, verdict) -> list[dict]:
    """Output rows of the structures ``named`` ((path, frame, name, item index) each) from their Prediction and
    Verdict; the ``item`` key is removed again by :func:`_merge_draws`."""
    return [{"file": str(path), "frame": frame, "name": name, "item": int(item),
             "label": clf.classes[int(p.argmax())],
             "probabilities": {c: float(v) for c, v in zip(clf.classes, p)},
             "uncertainty": {"entropy": float(h), "mutual_information": float(mi)},
             "unknown": bool(unk), "unknown_reason": why}
            for (path, frame, name, item), p, h, mi, unk, why in zip(named, pred.probabilities, pred.entropy,
                                                                     pred.mutual_information, verdict.unknown,
                                                                     verdict.reason)]


def _occupancy_draws(items, n_draws: int, seed: int):
    """``items`` with every structure that has partial or mixed occupancies (a CIF's ``_atom_site_occupancy``)
    replaced by ``n_draws`` random configurations (crystaljax.structures.occupancy.draws, seeded by (seed, item
    index)), and for every new item the index of the structure it was drawn from (None: not a draw).  One note
    per such structure on stderr."""
    from crystaljax.structures.occupancy import draws, partial_sites

    expanded, origin = [], []
    for i, (path, frame, n_frames, atoms) in enumerate(items):
        n_sites = partial_sites(atoms)
        configs = draws(atoms, n_draws, (seed, i)) if n_sites else [atoms]
        if n_sites:
            print(f"note: {_frame_name(path, frame, n_frames)} has partial occupancies ({n_sites} "
                  f"site{'s' if n_sites > 1 else ''}); averaged over {n_draws} random draws", file=sys.stderr)
        expanded += [(path, frame, n_frames, c) for c in configs]
        origin += [i if n_sites else None] * len(configs)
    return expanded, origin


def _averaged(group: list[dict], classes) -> dict:
    """One row from the rows of the random draws of one structure: mean probabilities, their entropy, the mutual
    information over draws and MC samples together (entropy of the mean minus the mean entropy of the samples,
    so the spread between draws counts as uncertainty), unknown when most draws are, ``occupancy_draws``."""
    from collections import Counter

    import numpy as np

    from crystaljax.learn.classifier import entropy as entropy_of

    mean = np.mean([[r["probabilities"][c] for c in classes] for r in group], axis=0)
    entropy = float(entropy_of(mean))
    sample_entropy = np.mean([r["uncertainty"]["entropy"] - r["uncertainty"]["mutual_information"] for r in group])
    flagged = [r["unknown_reason"] for r in group if r["unknown"]]
    unknown = 2 * len(flagged) > len(group)
    return {**group[0], "label": classes[int(np.argmax(mean))],
            "probabilities": {c: float(v) for c, v in zip(classes, mean)},
            "uncertainty": {"entropy": entropy, "mutual_information": max(entropy - float(sample_entropy), 0.0)},
            "unknown": unknown, "unknown_reason": Counter(flagged).most_common(1)[0][0] if unknown else "",
            "occupancy_draws": len(group)}


def _merge_draws(rows, origin, classes) -> list[dict]:
    """Rows per input structure: the rows of the draws of one structure (same ``origin`` of their ``item``)
    averaged by :func:`_averaged`, the others as they are; the ``item`` key dropped."""
    out, groups = [], {}
    for r in rows:
        source = origin[r.pop("item")]
        if source is None:
            out.append(r)
        elif source in groups:
            groups[source].append(r)
        else:
            groups[source] = [r]
            out.append(groups[source])
    return [_averaged(r, classes) if isinstance(r, list) else r for r in out]


def _classify_streamed(clf, items, args, key, errors, bar, times) -> list[dict]:
    """Rows of ``items`` ((path, frame, n_frames, atoms) each) through ``pipeline.iter_prepared_batches``: fixed
    batches of ``balanced_batch(len(items), --batch)`` rows padded to a bucket size (one compilation per bucket met),
    the next batch prepared in a worker thread while this one is on the device.  Structure i of the good ones gets
    the MC key ``fold_in(key, i)``; a structure that cannot be prepared adds its one-line message to ``errors``."""
    import time

    from crystaljax.learn.classifier import Prediction
    from crystaljax.learn.novelty import assess, structure_features
    from crystaljax.pipeline import balanced_batch, iter_prepared_batches

    def atoms_of_items():
        for path, frame, n_frames, atoms in items:
            atoms.info.setdefault("source", _frame_name(path, frame, n_frames))  # names the frame in errors
            yield atoms

    size = balanced_batch(len(items), args.batch)
    verdict_numbers = structure_features if clf.unknown_thresholds is not None else None  # none without a verdict
    batches = iter_prepared_batches(atoms_of_items(), size, target=clf.spec.cluster_target, scale=args.scale,
                                    cluster_features=verdict_numbers, workers=args.workers)
    rows: list[dict] = []
    while True:
        t0 = time.perf_counter()
        pb = next(batches, None)
        t1 = time.perf_counter()
        times["prepare"] += t1 - t0
        if pb is None:
            return rows
        errors.extend(message for _, message in pb.errors)
        n = pb.n_valid
        if n:
            images = clf.images(pb.batch, size)
            full = clf.predict_images(images, size, mc_samples=args.mc_samples, key=key, start=len(rows),
                                      embeddings=True)
            pred = Prediction(full.classes, full.probabilities[:n], None if full.samples is None else full.samples[:n],
                              full.embeddings[:n])
            t2 = time.perf_counter()
            verdict = assess(clf.unknown_thresholds, pred, pb.features, images[:n], clf.feature_distance(pred))
            named = [(items[i][0], items[i][1], _frame_name(*items[i][:3]), i) for i in pb.indices]
            rows += _rows(clf, named, pred, verdict)
            times["device"] += t2 - t1
            times["assess"] += time.perf_counter() - t2
        if bar is not None:
            bar.update(n + len(pb.errors))


def _classify_per_chunk(clf, items, args, key, errors, bar, times) -> list[dict]:
    """The former path, kept for comparison (hidden ``--legacy-batching``): chunks of --batch prepared in this
    thread, padded to a multiple of 16 of their largest cluster (a compilation per new size)."""
    import time

    from crystaljax.errors import CrystalJaxError
    from crystaljax.learn.novelty import assess, structure_features
    from crystaljax.structure import from_ase, pad_to, stack
    from crystaljax.structures.cluster import prepare

    rows: list[dict] = []
    for start in range(0, len(items), args.batch):
        chunk = items[start:start + args.batch]
        t0 = time.perf_counter()
        good, clusters, host = [], [], []
        for item, (path, frame, n_frames, atoms) in enumerate(chunk, start):  # a bad structure is skipped alone
            name = _frame_name(path, frame, n_frames)
            try:
                atoms.info.setdefault("source", name)
                cluster = prepare(atoms, target=clf.spec.cluster_target, scale=args.scale)
                clusters.append(from_ase(cluster))
                if clf.unknown_thresholds is not None:
                    host.append(structure_features(atoms, cluster))
                good.append((path, frame, name, item))
            except CrystalJaxError as exc:
                errors.append(str(exc).splitlines()[0])
        t1 = time.perf_counter()
        times["prepare"] += t1 - t0
        if good:
            batch = stack(clusters, n_max=pad_to(max(c.n_max for c in clusters)))
            images = clf.images(batch, args.batch)
            pred = clf.predict_images(images, args.batch, mc_samples=args.mc_samples, key=key, start=len(rows),
                                      embeddings=True)
            t2 = time.perf_counter()
            verdict = assess(clf.unknown_thresholds, pred, host, images, clf.feature_distance(pred))
            rows += _rows(clf, good, pred, verdict)
            times["device"] += t2 - t1
            times["assess"] += time.perf_counter() - t2
        if bar is not None:
            bar.update(len(chunk))
    return rows


def cmd_classify(args) -> int:
    import json
    import time

    import jax

    from crystaljax.learn.classifier import Classifier

    if args.workers is None:
        args.workers = default_workers()
    if args.mc_samples < 0 or args.batch < 1 or args.occupancy_draws < 1 or args.workers < 1:
        return _fail("--mc-samples must be >= 0, --batch, --occupancy-draws and --workers >= 1")
    from crystaljax.learn.sharding import local_mesh

    t0 = time.perf_counter()
    clf = Classifier.load(args.model, mesh=local_mesh(args.devices))
    key = jax.random.key(args.seed)
    read_errors: list[str] = []
    items, origin = _occupancy_draws(_read_all(args.paths, read_errors), args.occupancy_draws, args.seed)
    times = {"load_and_read": time.perf_counter() - t0, "prepare": 0.0, "device": 0.0, "assess": 0.0}
    errors: list[str] = []
    bar = _progress(len(items), args.quiet)
    run = _classify_per_chunk if args.legacy_batching else _classify_streamed
    rows = _merge_draws(run(clf, items, args, key, errors, bar, times), origin, clf.classes)
    errors = list(dict.fromkeys(errors))  # a draw that cannot be imaged is reported once per structure
    if bar is not None:
        bar.close()
    errors = read_errors + errors
    if args.stage_times:
        print(json.dumps({"stage_seconds": {k: round(v, 4) for k, v in times.items()},
                          "structures": len(rows)}), file=sys.stderr)
    for message in errors:
        print(f"crystaljax: error: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "name"} for r in rows], indent=1))
    elif args.csv:
        import csv

        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["file", "frame", "label", *clf.classes, "entropy", "mutual_information", "unknown",
                      "unknown_reason"])
        for r in rows:
            u = r["uncertainty"]
            out.writerow([r["file"], r["frame"], r["label"], *(f"{v:.6f}" for v in r["probabilities"].values()),
                          f"{u['entropy']:.6f}", f"{u['mutual_information']:.6f}", str(r["unknown"]).lower(),
                          r["unknown_reason"] or ""])
    elif rows:
        print("\n".join(_table(rows, clf.classes)))
    return EXIT_BAD_INPUT if errors else 0


def cmd_explain(args) -> int:
    from crystaljax.analysis.explain import explain_file

    from crystaljax.learn.checkpoint import resolve_model_dir

    summary = explain_file(args.file, args.out, model_dir=resolve_model_dir(args.model), scale=args.scale)
    out = Path(args.out)
    for frame in summary.get("frames", []):
        label = frame.get("label") or frame.get("predicted")
        print(f"{args.file}[{frame.get('frame', 0)}]: {label}")
    print(f"wrote response maps, class template and per-atom saliency to {out}/ (see {out / 'explain.json'})")
    return 0


def cmd_map(args) -> int:
    import json

    from crystaljax.analysis.mapping import map_file, parse_window

    summary = map_file(args.file, args.out, model=args.model, frame=args.frame, stride=args.stride,
                       window=None if args.window is None else parse_window(args.window), png_prefix=args.png,
                       progress=not args.quiet, mc_samples=args.mc_samples, seed=args.seed, unknown=not args.no_unknown,
                       devices=args.devices)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        shares = ", ".join(f"{c} {100 * f:.1f} %" for c, f in summary["fractions"].items() if f > 0)
        print(f"{args.file}: {summary['n_atoms']} atoms, {summary['n_windows']} windows: {shares}")
        for path in [summary.get("out"), *summary.get("pictures", [])]:
            if path:
                print(f"wrote {path}")
    return 0


def _classes_help() -> str:
    from crystaljax.learn.classes import CLASS_MEANINGS

    lines = ["classes of the shipped models (elemental solids):"]
    lines += [f"  {name:<8} {group:<14} {text}" for name, (group, text) in CLASS_MEANINGS.items()]
    return "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crystaljax")
    except PackageNotFoundError:
        from crystaljax import __version__

        return __version__


#: Help of ``--scale`` (values: crystaljax.structures.cluster.SCALES, checked in :func:`main`).
SCALE_HELP = "length-scale estimator: robust first-shell distance (default) or the mean nearest-neighbour distance"


def _add_scale(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", default="robust", metavar="{robust,mean}", help=SCALE_HELP)


def _bad_scale(args) -> str | None:
    """The one-line complaint about ``--scale`` if its value is not an estimator, else None."""
    scale = getattr(args, "scale", None)
    if scale is None:
        return None
    from crystaljax.structures.cluster import SCALES

    return None if scale in SCALES else f"--scale: unknown estimator {scale!r}; choose one of {', '.join(SCALES)}"


def default_workers() -> int:
    """Host preparation threads of ``classify``: 1 when the device is this CPU (its cores run the fingerprints and
    the network; a second thread gained nothing on 2 cores, docs/PERFORMANCE.md), else the CPU count, at most 4."""
    import jax

    return 1 if jax.default_backend() == "cpu" else max(1, min(4, os.cpu_count() or 1))


def _add_devices(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, metavar="N", help="split each device batch over the first N local "
                   "devices (GPUs/TPU cores; default: all of them; a CPU is one device); several hosts: "
                   "docs/SCALING.md")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crystaljax", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"crystaljax {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fingerprint", help="compute the 2-D diffraction fingerprint of a structure file")
    p.add_argument("file", help="any ASE-readable structure file (CIF, POSCAR, extxyz, FHI-aims, ...)")
    p.add_argument("--out", help="write the (64, 64, 3) array (or (frames, 64, 64, 3)) as .npy")
    p.add_argument("--png", help="write the fingerprint as an RGB PNG (default: FILE.fingerprint.png)")
    p.add_argument("--detector", default="paper", help="detector preset: paper (default) or ai4materials")
    p.add_argument("--target", type=int, default=250, help="cluster size in atoms (default 250)")
    _add_scale(p)
    p.set_defaults(func=cmd_fingerprint)

    p = sub.add_parser(
        "classify", help="crystal class with probabilities and uncertainty for structure files",
        description="Crystal class of every structure (every frame of a multi-frame file, named file[i]), with "
        "its probability, the predictive entropy and the mutual information (nats) of MC dropout samples.",
        epilog=_classes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="ASE-readable files; multi-frame files give one row per frame")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="print a JSON list of {file, frame, label, probabilities, uncertainty, unknown, unknown_reason"
                     "[, occupancy_draws]}")
    fmt.add_argument("--csv", action="store_true",
                     help="print CSV: file, frame, label, one column per class, entropy, mutual_information")
    p.add_argument("--model", default="default", help="default | pristine | model directory (default: default)")
    p.add_argument("--mc-samples", type=int, default=16, metavar="K",
                   help="MC dropout passes per structure for the uncertainty (default 16; 0: one deterministic pass)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MC dropout masks and the occupancy draws (default 0)")
    p.add_argument("--batch", type=int, default=64, help="structures per device batch (default 64)")
    p.add_argument("--occupancy-draws", type=int, default=8, metavar="K",
                   help="random vacancy/substitution draws classified and averaged for a structure with partial or "
                   "mixed site occupancies (CIF _atom_site_occupancy; default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_scale(p)
    _add_devices(p)
    p.add_argument("--workers", type=int, metavar="N",
                   help="threads preparing the next structures while the device works (default: 1 on a CPU-only "
                   "machine, else the CPU count, at most 4)")
    p.add_argument("--legacy-batching", action="store_true", help=argparse.SUPPRESS)  # benchmarks: former path
    p.add_argument("--stage-times", action="store_true", help=argparse.SUPPRESS)  # benchmarks: JSON line on stderr
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("explain", help="attentive response maps, class template and per-atom saliency of a file",
                       epilog=_classes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="ASE-readable structure file")
    p.add_argument("--out", required=True, help="output directory for PNGs, extxyz and explain.json")
    p.add_argument("--model", default="default", help="default | pristine | model directory (default: default)")
    _add_scale(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "map", help="per-atom crystal class map of a large structure (polycrystal, nanoparticle, MD box)",
        description="Slides windows of ~250 atoms over the structure on a grid of --stride Å, classifies each "
        "(rotated into its lattice's standard orientation) and gives every atom the Gaussian-weighted vote of "
        "the windows that contain it. Defaults measured in docs/MAPS.md: stride 8 Å and 250-atom windows "
        "agree with PTM's labels of the pristine four-grain slab on >= 99 % of the atoms, pristine or distorted.")
    p.add_argument("file", help="ASE-readable structure file, periodic or finite")
    p.add_argument("--out", help="write the atoms with per-atom arrays crystal_class, class_probability, "
                   "uncertainty, epistemic, unknown and unknown_reason (extxyz, readable by ASE and OVITO)")
    p.add_argument("--stride", type=float, default=8.0, help="grid spacing of the window centres in Å "
                   "(default 8: within 0.5 %% of stride 6 on the test slabs with 2.6x fewer windows)")
    p.add_argument("--window", help="atoms per window (e.g. 250, the default = the model's cluster size) or a "
                   "radius in Å (e.g. 9A)")
    p.add_argument("--model", help="default | pristine | model directory (default: default)")
    p.add_argument("--frame", type=int, default=0, help="frame of a multi-frame file (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON summary: fraction of atoms per class, timings")
    p.add_argument("--png", metavar="PREFIX", help="write PREFIX_slice.png (class and uncertainty slices) "
                   "and PREFIX_3d.png")
    p.add_argument("--mc-samples", type=int, default=8, help="MC-dropout passes per window (default 8; 0 = one "
                   "deterministic pass, no unknown verdict); K > 0 adds the per-atom array 'epistemic' (mutual "
                   "information, nats) and the unknown verdict")
    p.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout keys (default 0)")
    p.add_argument("--no-unknown", action="store_true", help="no unknown verdict (by default an atom is 'unknown' "
                   "when windows flagged by the model's unknown.json gates carry over half its vote; per-atom "
                   "arrays 'unknown' and 'unknown_reason'; docs/MAPS.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_devices(p)
    p.set_defaults(func=cmd_map)
    return parser


def _quiet_backends() -> None:
    """No libtpu / 'Unable to initialize backend' INFO lines on machines without an accelerator."""
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("jax._src.xla_bridge", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if sys.stdout.encoding and "utf" not in sys.stdout.encoding.lower():  # space groups print as I4₁/amd
        sys.stdout.reconfigure(errors="replace")


#: Where compiled XLA programs are kept between runs unless ``CRYSTALJAX_CACHE`` says otherwise ("off": nowhere).
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crystaljax" / "xla"


def _compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache, so a second run of a command reuses the compiled
    fingerprint and network instead of compiling them again (seconds of start-up on a CPU).  Directory:
    ``$CRYSTALJAX_CACHE`` or :data:`DEFAULT_CACHE`; ``CRYSTALJAX_CACHE=off`` disables it; a
    ``JAX_COMPILATION_CACHE_DIR`` already set is left to JAX.  Returns the directory in use, or None."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    where = os.environ.get("CRYSTALJAX_CACHE", str(DEFAULT_CACHE))
    if where.strip().lower() in ("", "off", "0", "no", "none"):
        return None
    try:
        Path(where).mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: run without the cache
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return where


def main(argv=None) -> int:
    _quiet_backends()
    parser = build_parser()
    args = parser.parse_args(argv)
    _compilation_cache()
    from crystaljax.errors import CrystalJaxError

    problem = _bad_scale(args)
    if problem:
        return _fail(problem)
    try:
        return args.func(args)
    except CrystalJaxError as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except ValueError as exc:  # bad option values (e.g. unknown detector)
        return _fail(str(exc).splitlines()[0])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
