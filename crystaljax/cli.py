"""Command line: ``crystaljax fingerprint | classify | explain``.

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
    from crystaljax.structures.io import read_structures
    from crystaljax.pipeline import fingerprints

    detector = detector_preset(args.detector)
    structures = read_structures(args.file)
    images = fingerprints(structures, detector=detector, target=args.target)
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


def _read_all(paths, errors):
    """(source label, frame index, atoms) for every readable frame; problems appended to ``errors``."""
    from crystaljax.errors import CrystalJaxError
    from crystaljax.structures.io import read_structures

    items = []
    for path in paths:
        try:
            frames = read_structures(path)
        except CrystalJaxError as exc:
            errors.append(str(exc).splitlines()[0])
            continue
        items.extend((path, i, atoms) for i, atoms in enumerate(frames))
    return items


def cmd_classify(args) -> int:
    import json

    import numpy as np

    from crystaljax.structures.cluster import prepare
    from crystaljax.errors import CrystalJaxError
    from crystaljax.learn.predict import classify_batch, load_classifier
    from crystaljax.structure import from_ase, pad_to, stack

    clf = load_classifier(args.model)
    errors: list[str] = []
    items = _read_all(args.paths, errors)
    rows = []
    chunks = [items[i:i + args.batch] for i in range(0, len(items), args.batch)]
    bar = None
    if len(items) > args.batch and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="classify", unit="structure", file=sys.stderr)
    for chunk in chunks:
        good, clusters = [], []
        for path, frame, atoms in chunk:  # host pipeline per structure: a bad one is skipped alone
            try:
                atoms.info.setdefault("source", f"{path}" + (f"[{frame}]" if frame else ""))
                clusters.append(from_ase(prepare(atoms, target=clf.target)))
                good.append((path, frame))
            except CrystalJaxError as exc:
                errors.append(str(exc).splitlines()[0])
        if good:
            probs = classify_batch(clf, stack(clusters, n_max=pad_to(max(c.n_max for c in clusters))))
            for (path, frame), p in zip(good, probs):
                rows.append({"file": str(path), "frame": frame, "label": clf.classes[int(np.argmax(p))],
                             "probabilities": {c: float(v) for c, v in zip(clf.classes, p)}})
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    for message in errors:
        print(f"crystaljax: error: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.csv:
        print(",".join(["file", "frame", "label", *clf.classes]))
        for r in rows:
            print(",".join([r["file"], str(r["frame"]), r["label"], *(f"{v:.6f}" for v in r["probabilities"].values())]))
    elif rows:
        width = max([len(r["file"]) + (len(str(r["frame"])) + 2 if r["frame"] else 0) for r in rows] + [4])
        print(f"{'file':<{width}}  {'class':<8} {'prob':>6}   runner-up")
        for r in rows:
            name = r["file"] + (f"[{r['frame']}]" if r["frame"] else "")
            ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
            print(f"{name:<{width}}  {ranked[0][0]:<8} {ranked[0][1]:6.3f}   {ranked[1][0]} {ranked[1][1]:.3f}")
    return EXIT_BAD_INPUT if errors else 0


def cmd_explain(args) -> int:
    from crystaljax.analysis.explain import explain_file

    summary = explain_file(args.file, args.out, model_dir=args.model)
    out = Path(args.out)
    for frame in summary.get("frames", []):
        label = frame.get("label") or frame.get("predicted")
        print(f"{args.file}[{frame.get('frame', 0)}]: {label}")
    print(f"wrote response maps, class template and per-atom saliency to {out}/ (see {out / 'explain.json'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crystaljax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fingerprint", help="compute the 2-D diffraction fingerprint of a structure file")
    p.add_argument("file", help="any ASE-readable structure file (CIF, POSCAR, extxyz, FHI-aims, ...)")
    p.add_argument("--out", help="write the (64, 64, 3) array (or (frames, 64, 64, 3)) as .npy")
    p.add_argument("--png", help="write the fingerprint as an RGB PNG (default: FILE.fingerprint.png)")
    p.add_argument("--detector", default="paper", help="detector preset: paper (default) or ai4materials")
    p.add_argument("--target", type=int, default=250, help="cluster size in atoms (default 250)")
    p.set_defaults(func=cmd_fingerprint)

    p = sub.add_parser("classify", help="crystal class with probabilities for structure files (shipped model)")
    p.add_argument("paths", nargs="+", help="ASE-readable files; multi-frame files give one row per frame")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list of {file, frame, label, probabilities}")
    fmt.add_argument("--csv", action="store_true", help="print CSV: file, frame, label, one column per class")
    p.add_argument("--model", help="model directory (default: the model shipped with crystaljax)")
    p.add_argument("--batch", type=int, default=64, help="structures per device batch (default 64)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("explain", help="attentive response maps, class template and per-atom saliency of a file")
    p.add_argument("file", help="ASE-readable structure file")
    p.add_argument("--out", required=True, help="output directory for PNGs, extxyz and explain.json")
    p.add_argument("--model", help="model directory (default: the shipped model)")
    p.set_defaults(func=cmd_explain)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    from crystaljax.errors import CrystalJaxError

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
