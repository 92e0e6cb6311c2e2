"""Pictures of a :class:`crystaljax.analysis.mapping.MapResult`: a slice through the class map and the
uncertainty map (with a legend), and a 3-D scatter view (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: One fixed colour per class name (Okabe-Ito based, colour-blind safe); other names get grey.
CLASS_COLOURS = {
    "fcc": "#0072B2", "bcc": "#D55E00", "hex/rh": "#009E73", "diam": "#CC79A7", "sc": "#F0E442",
    "bct_139": "#E69F00", "bct_141": "#999933", "unknown": "#7f7f7f",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slice_mask(positions: np.ndarray, axis: int | None = None, width: float | None = None,
               nn: float | None = None) -> tuple[np.ndarray, int, float]:
    """Atoms in a slab through the middle of the structure: (mask (N,), axis, width Å).  ``axis`` defaults to the
    direction of smallest extent for flat structures (extent < half the largest) and to z otherwise;
    ``width`` defaults to 1.5 nearest-neighbour distances (a couple of atomic layers)."""
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=np.float64)
    ext = pos.max(axis=0) - pos.min(axis=0)
    if axis is None:
        axis = int(np.argmin(ext)) if ext.min() < 0.5 * ext.max() else 2
    if nn is None:
        d, _ = cKDTree(pos).query(pos, k=2)
        nn = float(np.median(d[:, 1]))
    width = 1.5 * nn if width is None else float(width)
    mid = 0.5 * (pos[:, axis].min() + pos[:, axis].max())
    return np.abs(pos[:, axis] - mid) <= 0.5 * width, axis, width


def plot_slice(atoms, result, path, *, axis: int | None = None, width: float | None = None,
               title: str = "", credit: str = "") -> Path:
    """Two panels side by side: the class of every atom in a slab through the middle (legend with each class's
    share of the slab) and its uncertainty (entropy, nats; colour bar).  Returns the PNG path."""
    plt = _plt()
    pos = np.asarray(atoms.positions)
    mask, axis, width = slice_mask(pos, axis, width)
    if not mask.any():
        mask = np.ones(len(pos), bool)
    a, b = [i for i in range(3) if i != axis]
    xy = pos[mask][:, [a, b]]
    labels = result.crystal_class[mask]
    span = np.ptp(xy, axis=0)
    size = float(np.clip(9000.0 / max(len(xy), 1), 2.0, 40.0))
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 6.0 * max(0.5, min(1.5, span[1] / max(span[0], 1e-9)))),
                             constrained_layout=True)
    ax = axes[0]
    for name in result.classes + ("unknown",):
        sel = labels == name
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=size, c=CLASS_COLOURS.get(name, "#7f7f7f"), linewidths=0,
                       label=f"{name} ({100 * sel.mean():.0f} %)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, markerscale=max(1.0, 20 / size),
              title="class (share of slice)")
    ax.set_title("crystal class")
    ax2 = axes[1]
    sc = ax2.scatter(xy[:, 0], xy[:, 1], s=size, c=result.uncertainty[mask], cmap="magma", linewidths=0,
                     vmin=0.0, vmax=max(float(np.log(len(result.classes))) * 0.5, 1e-3))
    fig.colorbar(sc, ax=ax2, label="uncertainty: entropy of the atom's probabilities (nats)")
    ax2.set_title("uncertainty")
    axn = "xyz"
    for axx in axes:
        axx.set_aspect("equal")
        axx.set_xlabel(f"{axn[a]} (Å)")
        axx.set_ylabel(f"{axn[b]} (Å)")
    mid = 0.5 * (pos[:, axis].min() + pos[:, axis].max())
    fig.suptitle((title + "\n" if title else "") + f"slice {axn[axis]} = {mid:.1f} ± {0.5 * width:.1f} Å: "
                 f"{int(mask.sum())} of {len(pos)} atoms"
                 + (f"\n{credit}" if credit else ""), fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_3d(atoms, result, path, *, max_points: int = 30000, title: str = "", credit: str = "",
            seed: int = 0, cutaway: bool | None = None) -> Path:
    """3-D scatter of the atoms coloured by class (a random subset of ``max_points`` if larger).  With
    ``cutaway`` (default: compact structures of more than 5,000 atoms) the octant facing the viewer is
    removed so the interior shows.  Returns the PNG path."""
    plt = _plt()
    pos = np.asarray(atoms.positions)
    n = len(pos)
    keep = np.arange(n)
    ext = np.ptp(pos, axis=0)
    if cutaway is None:
        cutaway = n > 5000 and ext.min() > 0.5 * ext.max()
    if cutaway:
        c = pos.mean(axis=0)
        keep = np.flatnonzero(~((pos[:, 0] > c[0]) & (pos[:, 1] < c[1]) & (pos[:, 2] > c[2])))
        n = len(keep)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_points, replace=False))
    labels = result.crystal_class[keep]
    fig = plt.figure(figsize=(8.5, 7.5), constrained_layout=True)
    ax = fig.add_subplot(111, projection="3d")
    size = float(np.clip(60000.0 / max(len(keep), 1), 3.0, 20.0))
    for name in result.classes + ("unknown",):
        sel = labels == name
        if sel.any():
            p = pos[keep[sel]]
            ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=size, c=CLASS_COLOURS.get(name, "#7f7f7f"), linewidths=0,
                       alpha=0.9, label=f"{name} ({100 * np.mean(result.crystal_class == name):.0f} %)")
    ax.legend(loc="upper left", fontsize=9, markerscale=max(1.0, 15 / size), title="class (share of atoms)")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_zlabel("z (Å)")
    ax.set_box_aspect(tuple(np.maximum(ext, 0.05 * ext.max())))
    if title or credit or cutaway:
        ax.set_title((title + "\n" if title else "") + (credit + "\n" if credit else "")
                     + ("front octant cut away" if cutaway else ""), fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_pictures(atoms, result, prefix, *, title: str = "", credit: str = "") -> list[Path]:
    """``PREFIX_slice.png`` (class and uncertainty slices) and ``PREFIX_3d.png``; returns the paths."""
    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    return [plot_slice(atoms, result, prefix + "_slice.png", title=title, credit=credit),
            plot_3d(atoms, result, prefix + "_3d.png", title=title, credit=credit)]
