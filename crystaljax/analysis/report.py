"""Every figure, table and results file of the analysis experiments, in one place.

Plots take plain results (dicts and arrays, as written to JSON) and write PNGs through
:func:`save_figure`; nothing here computes a result.  Tables are Markdown strings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from crystaljax.jsonio import json_default
from crystaljax.learn.evaluate import save_figure
from crystaljax.structure import Structure

KINDS: tuple[str, ...] = ("displacement", "vacancies", "substitution", "sublattice")
CHANNEL_NAMES = ("R (rot. x)", "G (rot. y)", "B (rot. z)")


def write_json(obj, path) -> Path:
    """``obj`` as indented JSON (numpy values converted) into ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=json_default) + "\n")
    return path


def copy_figures(paths: Sequence, docs_dir, prefix: str = "") -> list[Path]:
    """Copy the files ``paths`` into ``docs_dir`` (created if missing) as ``prefix`` + their file name; returns
    the copies' paths in the order given."""
    import shutil

    docs = Path(docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in map(Path, paths):
        dest = docs / f"{prefix}{path.name}"
        shutil.copyfile(path, dest)
        copied.append(dest)
    return copied


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=100)


# --------------------------------------------------------------------------------------------
# Table 1

def _pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100.0 * float(x):.2f}"


def _level_label(kind: str, key: str) -> str:
    if kind == "displacement":
        return f"σ = {float(key):g} Å"
    if kind == "substitution":
        alloy, frac = key.rsplit("_", 1)
        return f"{alloy} {100 * float(frac):g} %"
    return f"{100 * float(key):g} %"


_KIND_TITLES = {"displacement": "Random displacements", "vacancies": "Vacancies",
                "substitution": "Substitutions", "sublattice": "Sublattice removal"}


def table1_markdown(results: Mapping, details: Mapping | None = None) -> str:
    """Markdown in the layout of the paper's Table 1 (accuracy in %).

    Rows: pristine, then every level of each defect kind; columns: spglib at each symprec, ConvNet
    and (when present) ConvNet (augmented).  '—' marks a value that was not computed.
    """
    spg = results.get("spglib", {}) or {}
    symprecs = list(spg)
    models = [m for m in ("convnet", "convnet_augmented") if m in results]
    heads = [f"spglib {float(s):g} Å" for s in symprecs] + [
        "ConvNet" if m == "convnet" else "ConvNet (augmented)" for m in models]
    lines = ["| Defect | Level | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]

    def row(name, level, getter):
        vals = [getter(spg[s]) for s in symprecs] + [getter(results[m]) for m in models]
        lines.append(f"| {name} | {level} | " + " | ".join(_pct(v) for v in vals) + " |")

    row("Pristine", "", lambda b: b.get("pristine"))
    kinds: list[str] = []
    for block in [results[m] for m in models] + [spg[s] for s in symprecs]:
        kinds.extend(k for k, v in block.items() if isinstance(v, Mapping) and k not in kinds)
    for kind in kinds:
        keys: list[str] = []
        for block in [results[m] for m in models] + [spg[s] for s in symprecs]:
            keys.extend(k for k in block.get(kind, {}) if k not in keys)
        for j, key in enumerate(keys):
            row(_KIND_TITLES.get(kind, kind) if j == 0 else "", _level_label(kind, key),
                lambda b, kind=kind, key=key: b.get(kind, {}).get(key))
    n = results.get("n_structures")
    seeds = results.get("seeds", [])
    note = f"\nAccuracy (%) against the parent class; ConvNet: {n} test structures x {len(seeds)} seed(s) per level."
    if details and details.get("n_structures_spglib"):
        note += (f" spglib: {details['n_structures_spglib']} structures x {len(details.get('seeds_spglib', []))}"
                 " seed(s) per level, periodic ~250-atom supercells of the conventional cells with the same"
                 " kind of defect; correct = the parent's space group.")
    return "\n".join(lines) + "\n" + note + "\n"


def plot_table1(results: Mapping, path) -> Path:
    """Accuracy vs defect level (one panel per kind): ConvNet model(s) and spglib per symprec; PNG."""
    plt = _pyplot()

    models = [m for m in ("convnet", "convnet_augmented") if m in results]
    spg = results.get("spglib", {}) or {}
    kinds = [k for k in KINDS if any(k in results[m] for m in models)]
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4.6 * max(len(kinds), 1), 3.8), dpi=120, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        keys = list(results[models[0]].get(kind, {})) if models else []
        if kind == "substitution":
            xs = np.arange(len(keys))
            ax.set_xticks(xs, [k.replace("_", "\n") for k in keys], fontsize=7)
        else:
            xs = np.array([float(k) for k in keys])
            ax.set_xscale("log" if kind == "displacement" else "linear")
        for m in models:
            ys = [results[m].get(kind, {}).get(k, np.nan) for k in keys]
            ax.plot(xs, ys, "o-", lw=2, label="ConvNet" if m == "convnet" else "ConvNet (augmented)")
        for s, block in spg.items():
            ys = [block.get(kind, {}).get(k, np.nan) for k in keys]
            ax.plot(xs, ys, "s--", ms=3, lw=1, label=f"spglib {float(s):g} Å")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(_KIND_TITLES.get(kind, kind))
        ax.set_xlabel({"displacement": "σ (Å)", "vacancies": "vacancy fraction",
                       "substitution": "alloy, substituted fraction"}.get(kind, "level"))
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    if kinds:
        axes[0][0].legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


def table1_document(results: Mapping, details: Mapping) -> str:
    """The table1.md file: title, the command that made it, the table."""
    return f"# Table 1 (reproduction)\n\n`{details.get('command', '')}`\n\n" + table1_markdown(results, details)


# --------------------------------------------------------------------------------------------
# Fig. 4: transitions


def plot_bcc_sc(res: Mapping, path) -> Path:
    """p(bcc) and p(sc) (mean ± 1 std) vs percentage of body-centre atoms removed; PNG."""
    plt = _pyplot()

    x = 100 * np.asarray(res["fractions_removed"])
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=120)
    for name, colour in (("bcc", "tab:purple"), ("sc", "tab:red")):
        m, s = np.asarray(res[f"p_{name}_mean"]), np.asarray(res[f"p_{name}_std"])
        ax.plot(x, m, "o-", color=colour, label=f"p({name})")
        ax.fill_between(x, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), color=colour, alpha=0.25)
    ax.set_xlabel("body-centre atoms removed (%)")
    ax.set_ylabel("classification probability")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"bcc -> sc ({res['n_structures']} structures x {len(res['seeds'])} seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_rhombohedral(res: Mapping, special: Mapping[str, float], path, classes: Sequence[str]) -> Path:
    """Every class probability vs mu = c/a with vertical markers at the special mu values; PNG.

    ``res``: one :func:`rhombohedral_sweep` result, or a mapping setting -> result (one panel each).
    """
    plt = _pyplot()

    panels = {res.get("setting", ""): res} if "mu" in res else dict(res)
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.0, 3.4 * len(panels)), dpi=120, squeeze=False)
    for ax, (setting, r) in zip(axes[:, 0], panels.items()):
        mu = np.asarray(r["mu"])
        for c in classes:
            ax.plot(mu, r["probabilities"][c], lw=1.5, label=c)
        for name, m in special.items():
            ax.axvline(m, color="k", ls=":", lw=1)
            ax.text(m, 1.04, f"μ_{name}", ha="center", va="bottom", fontsize=8)
        ax.set_xlabel("μ = c/a (hexagonal setting)")
        ax.set_ylabel("classification probability")
        ax.set_ylim(-0.03, 1.14)
        ax.set_title(f"A_hR1_166_a ({r.get('element', '')}), {setting} cell", fontsize=9)
        ax.legend(fontsize=7, ncol=4, loc="center right")
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Fig. 5: guided-backprop response maps and class templates


def _channel_cmap(c: int):
    from matplotlib.colors import LinearSegmentedColormap

    colour = [(1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.2, 0.4, 1.0)][c]
    return LinearSegmentedColormap.from_list(f"ch{c}", [(0, 0, 0), colour])


def _rgb(image) -> np.ndarray:
    """(H, W, 3) >= 0 -> displayable RGB in [0, 1], each channel scaled to its own max."""
    x = np.clip(np.asarray(image, np.float64), 0.0, None)
    peak = x.reshape(-1, x.shape[-1]).max(axis=0)
    return x / np.where(peak > 0, peak, 1.0)


def _off(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def plot_response_maps(maps: Mapping[int, Any], path, *, image=None, title: str | None = None) -> Path:
    """Grid PNG of guided-backprop response maps: one row per (layer, colour channel), one column per
    top filter; an optional first column shows the input fingerprint channel.  Each tile is scaled to
    its own max.

    maps: {layer: ResponseMaps or (k, H, W, C) array}.
    """
    layers = sorted(maps)
    arrs = {l: np.asarray(getattr(m, "maps", m)) for l, m in maps.items()}
    filt = {l: (np.asarray(m.filters) if hasattr(m, "filters") else None) for l, m in maps.items()}
    k = max(a.shape[0] for a in arrs.values())
    n_ch = next(iter(arrs.values())).shape[-1]
    extra = 1 if image is not None else 0
    rows, cols = len(layers) * n_ch, k + extra
    fig = _figure((1.45 * cols + 0.6, 1.45 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for li, layer in enumerate(layers):
        for c in range(n_ch):
            r = li * n_ch + c
            cmap = _channel_cmap(c) if n_ch == 3 else "hot"
            if image is not None:
                ax = axes[r, 0]
                ax.imshow(np.sqrt(np.clip(np.asarray(image)[..., c], 0, None)), cmap=cmap, origin="lower")
                _off(ax)
                if r == 0:
                    ax.set_title("input (sqrt)", fontsize=8)
                ax.set_ylabel(f"conv {layer + 1}\n{CHANNEL_NAMES[c] if n_ch == 3 else c}", fontsize=7)
            for j in range(cols - extra):
                ax = axes[r, j + extra]
                _off(ax)
                if j >= arrs[layer].shape[0]:
                    ax.set_visible(False)
                    continue
                tile = arrs[layer][j, ..., c]
                vmax = float(tile.max())
                ax.imshow(tile, cmap=cmap, vmin=0.0, vmax=vmax if vmax > 0 else 1.0, origin="lower")
                if c == 0:
                    name = f"filter {int(filt[layer][j])}" if filt[layer] is not None else f"map {j}"
                    ax.set_title(f"conv {layer + 1}: {name}", fontsize=7)
                if extra == 0 and j == 0:
                    ax.set_ylabel(f"conv {layer + 1}\n{CHANNEL_NAMES[c] if n_ch == 3 else c}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_class_templates(templates, class_names: Sequence[str], path, *, counts=None, title: str | None = None) -> Path:
    """Class-template PNG: columns = classes; rows = RGB composite, then the R, G, B channels.

    templates: (n_classes, H, W, 3) >= 0.  Each tile scaled to its own max.
    """
    templates = np.asarray(templates)
    n, n_ch = templates.shape[0], templates.shape[-1]
    rows = 1 + n_ch
    fig = _figure((max(1.6 * n + 0.6, 6.0), 1.6 * rows + 0.8))
    axes = fig.subplots(rows, n, squeeze=False)
    for i in range(n):
        t = templates[i]
        label = class_names[i] if i < len(class_names) else str(i)
        if counts is not None:
            label += f" (n={int(np.asarray(counts)[i])})"
        ax = axes[0, i]
        ax.imshow(_rgb(t) if n_ch == 3 else t[..., 0], origin="lower")
        ax.set_title(label, fontsize=8)
        _off(ax)
        for c in range(n_ch):
            ax = axes[1 + c, i]
            vmax = float(t[..., c].max())
            ax.imshow(t[..., c], cmap=_channel_cmap(c) if n_ch == 3 else "hot", vmin=0.0,
                      vmax=vmax if vmax > 0 else 1.0, origin="lower")
            _off(ax)
            if i == 0:
                ax.set_ylabel(CHANNEL_NAMES[c] if n_ch == 3 else str(c), fontsize=7)
    axes[0, 0].set_ylabel("RGB", fontsize=7)
    fig.suptitle(title or "class templates: sum of last-conv-layer response maps", fontsize=10)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# saliency and sensitivity


def plot_saliency(structure: Structure, saliency, path, *, title: str | None = None, label: str = "saliency",
                  show_masked: bool = True, highlight=None, highlight_label: str = "highlighted") -> Path:
    """3-D scatter PNG of the atoms coloured by a per-atom value (n_max,); removed atoms (mask 0,
    numbers > 0) as small grey crosses if ``show_masked``; present atoms where the boolean (n_max,)
    ``highlight`` is true get a red ring.  Positions in Å of the scaled cluster."""
    pos = np.asarray(structure.positions, np.float64)
    mask = np.asarray(structure.mask) > 0.5
    real = np.asarray(structure.numbers) > 0
    vals = np.asarray(saliency, np.float64)
    fig = _figure((6.0, 5.0))
    ax = fig.add_subplot(projection="3d")
    p = pos[mask]
    sc = ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=vals[mask], cmap="viridis", s=18, depthshade=False,
                    edgecolors="none")
    gone = real & ~mask
    legend = False
    if show_masked and gone.any():
        q = pos[gone]
        ax.scatter(q[:, 0], q[:, 1], q[:, 2], c="0.6", marker="x", s=8, depthshade=False, label="removed")
        legend = True
    if highlight is not None and (np.asarray(highlight, bool) & mask).any():
        q = pos[np.asarray(highlight, bool) & mask]
        ax.scatter(q[:, 0], q[:, 1], q[:, 2], facecolors="none", edgecolors="red", s=60, linewidths=0.8,
                   depthshade=False, label=highlight_label)
        legend = True
    if legend:
        ax.legend(loc="upper left", fontsize=7)
    fig.colorbar(sc, ax=ax, shrink=0.7, pad=0.12, label=label)
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_zlabel("z (Å)")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_fingerprint(image, path, *, title: str | None = None) -> Path:
    """PNG of one (H, W, 3) fingerprint (square-root scaled so weak peaks show)."""
    fig = _figure((3.2, 3.4))
    ax = fig.add_subplot()
    ax.imshow(np.sqrt(np.clip(np.asarray(image, np.float64), 0.0, 1.0)), origin="lower")
    _off(ax)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def write_saliency_extxyz(structure: Structure, saliency, path, *, gradient=None,
                          arrays: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
                          include_masked: bool = False, physical: bool = False) -> Path:
    """Write one Structure as extended XYZ with a per-atom float array ``saliency`` (ASE/OVITO readable).

    saliency: (n_max,) per-atom values; gradient: optional (n_max, 3) written as ``saliency_grad``;
    arrays: further per-atom (n_max,) or (n_max, 3) arrays.  Rows written: atoms with mask 1, or
    with ``include_masked`` every non-padding row (numbers > 0) plus an int array ``present``.
    Positions in Å of the scaled cluster, or physical Å (times ``nn_distance``) if ``physical``.
    ``info`` entries go to the comment line (with nn_distance).
    """
    import ase.io
    from ase import Atoms

    numbers = np.asarray(structure.numbers)
    mask = np.asarray(structure.mask) > 0.5
    keep = (numbers > 0) if include_masked else mask
    scale = float(np.asarray(structure.nn_distance)) if physical else 1.0
    atoms = Atoms(numbers=numbers[keep], positions=np.asarray(structure.positions, np.float64)[keep] * scale,
                  tags=np.asarray(structure.tags)[keep], pbc=False)
    per_atom = {"saliency": saliency}
    if gradient is not None:
        per_atom["saliency_grad"] = gradient
    per_atom.update(arrays or {})
    for name, values in per_atom.items():
        values = np.asarray(values, np.float64)
        if values.shape[0] != len(numbers):
            raise ValueError(f"array {name!r} has {values.shape[0]} rows, the structure {len(numbers)}")
        atoms.set_array(name, values[keep])
    if include_masked:
        atoms.set_array("present", mask[keep].astype(np.int64))
    atoms.info["nn_distance"] = float(np.asarray(structure.nn_distance))
    atoms.info["units"] = "physical_A" if physical else "scaled_A"
    for k, v in (info or {}).items():
        atoms.info[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, default=float)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, atoms, format="extxyz")
    return path


def plot_sublattice(rows: list, classes: list, path: Path, q: str = "p") -> Path:
    f = np.array([r["fraction"] for r in rows]) * 100
    fig = _figure((12, 3.6))
    ax = fig.subplots(1, 3)
    for c in classes:
        ax[0].plot(f, [r["probabilities"][c] for r in rows], "o-", label=f"p({c})")
        ax[1].plot(f, [r["saliency"][c]["corner"]["mean"] for r in rows], "o-", label=f"{c}: corner atoms")
        ax[1].plot(f, [r["saliency"][c]["body_centre"]["mean"] for r in rows], "s--", label=f"{c}: body centres")
        ax[2].plot(f, [r["saliency"][c]["occupancy_present_body"]["mean"] for r in rows], "s--",
                   label=f"{c}: present body centres")
        ax[2].plot(f, [r["saliency"][c]["occupancy_removed_body"]["mean"] for r in rows], "x:",
                   label=f"{c}: removed body centres")
    ax[0].set_ylabel("probability")
    ax[1].set_ylabel(f"mean |d {q} / d x_j| (1/Å, scaled)")
    ax[2].set_ylabel(f"mean d {q} / d w_j")
    ax[2].axhline(0.0, color="0.7", lw=0.8)
    for a in ax:
        a.set_xlabel("body-centre atoms removed (%)")
        a.legend(fontsize=7)
    fig.suptitle("bcc -> sc by sublattice removal: which atoms drive the decision", fontsize=10)
    return save_figure(fig, path)


def plot_displacement(result: dict, path: Path) -> Path:
    fig = _figure((12, 3.6))
    ax = fig.subplots(1, 3)
    for cls, r in result.items():
        sig = [x["sigma"] for x in r["rows"]]
        ax[0].errorbar(sig, [x["sensitivity_mean"] for x in r["rows"]],
                       yerr=[x["sensitivity_mean_std"] for x in r["rows"]], marker="o", capsize=2, label=cls)
        ax[1].errorbar(sig, [x["delta_fingerprint"] for x in r["rows"]],
                       yerr=[x["delta_fingerprint_std"] for x in r["rows"]], marker="o", capsize=2, label=cls)
        ax[2].plot(sig, [max(1.0 - x["p_true"], 1e-9) for x in r["rows"]], marker="o", label=cls)
    ax[0].set_ylabel("mean per-atom ||d fp / d x_j|| (per scaled Å)")
    ax[1].set_ylabel("||fp(sigma) - fp(0)||")
    ax[2].set_ylabel("1 - p(true class)")
    ax[2].set_yscale("log")
    for a in ax:
        a.set_xlabel("displacement sigma (Å)")
        a.legend(fontsize=7)
    fig.suptitle("fingerprint sensitivity versus random displacements", fontsize=10)
    return save_figure(fig, path)


def plot_unknown_scores(scores: Mapping[str, np.ndarray], flagged: Mapping[str, np.ndarray], path,
                        title: str = "") -> Path:
    """The unknown verdict on one half: each category's combined scores (``novelty.score``: > 1 where a gate
    fires; the out-of-scope-symmetry rule scores 2) as a jittered strip on a log axis, with the flag line at 1 and
    the category's flag rate (``flagged``: (n,) bool per category)."""
    fig = _figure((9, 0.55 * len(scores) + 1.4))
    ax = fig.subplots()
    rng = np.random.default_rng(0)  # jitter only
    for row, (name, s) in enumerate(scores.items()):
        s = np.clip(np.asarray(s, float), 1e-2, 1e2)
        f = np.asarray(flagged[name], bool)
        y = row + rng.uniform(-0.25, 0.25, len(s))
        ax.scatter(s[~f], y[~f], s=9, color="tab:blue", alpha=0.6, lw=0)
        ax.scatter(s[f], y[f], s=9, color="tab:red", alpha=0.6, lw=0)
    ax.axvline(1.0, color="0.3", lw=1.0, ls="--")
    ax.set_xscale("log")
    ax.set_xlim(1e-2, 1e2)
    ax.set_yticks(range(len(scores)))
    ax.set_yticklabels([f"{name} (n={len(s)}): {100 * np.mean(flagged[name]):.1f} % unknown"
                        for name, s in scores.items()], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("combined score (largest gate margin ratio; > 1: a gate fires, red = unknown)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
