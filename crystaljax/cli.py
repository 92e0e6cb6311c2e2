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

    from .config import detector_preset
    from .io import read_structures
    from .pipeline import fingerprints

    detector = detector_preset(args.detector)
    structures = read_structures(args.file)
    images = fingerprints(structures, detector=detector, target=args.target, progress=len(structures) > 8)
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
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import CrystalJaxError

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
