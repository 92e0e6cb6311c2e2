"""Gradient probing of the whole differentiable pipeline (structure -> fingerprint -> ConvNet).

    python experiments/sensitivity.py                               # shipped model (fresh one if none)
    python experiments/sensitivity.py smoke=true logger=none        # tiny fast run
    python experiments/sensitivity.py save_docs=true model_dir=outputs/<run>/model

(a) Sublattice removal.  A bcc cluster (W, A_cI2_229_a; body-centre atoms carry tag 1) loses a
    growing fraction of its body-centre atoms (0 -> 100 %: bcc -> sc).  For each fraction: p(bcc),
    p(sc), and per atom |d p / d x_j| (which atoms drive the decision) and d p / d w_j (w = the
    atom's weight in the scattering sum: what removing a present atom, or restoring a removed
    one, would do).  ``sublattice.output=logit`` differentiates the logits instead (p saturates at
    ~1 far from the transition, and with it d p / d x ~ p (1 - p)).  Writes
    ``sublattice/bcc_remove_<pct>.extxyz`` (every site, arrays ``saliency_<class>``,
    ``grad_<class>``, ``occupancy_<class>``, ``present``; open in OVITO and filter on ``present``),
    ``sublattice/saliency_<class>_<pct>.png`` (remaining body centres ringed) and ``sublattice.png``.

(b) Displacements.  Pristine representatives (bcc, fcc, sc) with Gaussian displacements of
    sigma = 0 .. 0.1 Å (physical): per-atom fingerprint sensitivity s_j = ||d fingerprint / d x_j||_F
    (explain.fingerprint_sensitivity), the image change ||fp(sigma) - fp(0)||, p(true class) and
    ||d fingerprint / d wavelength||.  Writes ``displacement.png``.

Everything numeric goes to ``sensitivity.json``.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from crystaljax.config import to_container
from crystaljax.learn.evaluate import save_figure

log = logging.getLogger(__name__)


def _container(node) -> dict:
    return to_container(node, default={})


def options(cfg: DictConfig) -> tuple[dict, dict]:
    """(sublattice options, displacement options), with ``smoke_overrides`` laid over them if ``smoke``."""
    a, b = _container(cfg.sublattice), _container(cfg.displacement)
    if bool(cfg.get("smoke", False)):
        over = _container(cfg.get("smoke_overrides"))
        a.update(over.get("sublattice", {}) or {})
        b.update(over.get("displacement", {}) or {})
    return a, b


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"n": 0, "mean": float("nan"), "median": float("nan"), "max": float("nan"), "sum": 0.0}
    return {"n": int(values.size), "mean": float(values.mean()), "median": float(np.median(values)),
            "max": float(values.max()), "sum": float(values.sum())}


def sublattice_part(opts: dict, net, fp_fn, model_classes, key, out: Path, run, tracking) -> tuple[list, list]:
    """Part (a); returns (rows, figure paths)."""
    import jax

    from crystaljax.analysis import explain as ex
    from crystaljax.physics.defects import remove_sublattice, renormalize
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structures.prototypes import build
    from crystaljax.structure import take as index

    classes = [c for c in opts["classes"]]
    output = str(opts.get("output", "probability"))
    q = "p" if output == "probability" else "logit"
    missing = [c for c in classes if c not in model_classes]
    if missing:
        raise ValueError(f"classes {missing} are not outputs of the model {model_classes}")
    atoms = build(str(opts["prototype"]), opts["element"])
    s0 = index(prepare_structures([atoms], target=int(opts["target"])), 0)
    tags = np.asarray(s0.tags)
    real = np.asarray(s0.numbers) > 0
    out.mkdir(parents=True, exist_ok=True)
    # one compilation for every fraction (the same key: nested removals); the emptied cluster is rescaled to
    # unit mean nn distance, as the pipeline scales any input file
    remove = jax.jit(lambda k, st, f: renormalize(remove_sublattice(k, st, f)))
    rows, figures = [], []
    for step, fraction in enumerate(float(f) for f in opts["fractions"]):
        s = jax.tree.map(np.asarray, remove(key, s0, np.float32(fraction)))
        present = np.asarray(s.mask) > 0.5
        corner, body = real & present & (tags != 1), real & present & (tags == 1)
        removed = real & ~present
        sal = ex.saliency(net, fp_fn, s, output=output)
        probs = np.asarray(sal.probabilities)
        pct = int(round(100 * fraction))
        row = {"fraction": fraction, "n_present": int(present.sum()), "n_body_centre": int(body.sum()),
               "n_removed": int(removed.sum()),
               "probabilities": {c: float(p) for c, p in zip(model_classes, probs)},
               "predicted": model_classes[int(np.argmax(probs))], "saliency": {}}
        arrays = {}
        for c in classes:
            ci = model_classes.index(c)
            grad = np.asarray(sal.positions[ci])
            per_atom = np.asarray(ex.atom_saliency(grad, s.mask))
            occ = np.asarray(sal.occupancy[ci])
            total = per_atom[present].sum()
            row["saliency"][c] = {
                "corner": _stats(per_atom[corner]), "body_centre": _stats(per_atom[body]),
                "body_centre_share": float(per_atom[body].sum() / total) if total > 0 else float("nan"),
                "occupancy_present_corner": _stats(occ[corner]), "occupancy_present_body": _stats(occ[body]),
                "occupancy_removed_body": _stats(occ[removed]),
            }
            arrays[f"saliency_{c}"], arrays[f"grad_{c}"], arrays[f"occupancy_{c}"] = per_atom, grad, occ
            png = ex.plot_saliency(s, per_atom, out / f"saliency_{c}_{pct:03d}.png",
                                   title=f"bcc, {pct}% body centres removed: |d {q}({c}) / d x| "
                                         f"(p={probs[ci]:.2f})", label=f"|d{q}({c})/dx| (1/Å, scaled)",
                                   highlight=body, highlight_label="body centres")
            figures.append(png)
        first = classes[0]
        ex.write_saliency_extxyz(s, arrays[f"saliency_{first}"], out / f"bcc_remove_{pct:03d}.extxyz",
                                 arrays=arrays, include_masked=True,
                                 info={"fraction_removed": fraction, "saliency_of": f"{q}({first})",
                                       **{f"p_{c}": float(probs[model_classes.index(c)]) for c in classes}})
        tracking.log(run, {"sublattice/fraction": fraction,
                           **{f"sublattice/p_{c}": float(probs[model_classes.index(c)]) for c in classes},
                           **{f"sublattice/body_share_{c}": row["saliency"][c]["body_centre_share"] for c in classes}},
                     step=step)
        log.info("removed %3d%% body centres: %s, body-centre share of saliency %s", pct,
                 {c: round(float(probs[model_classes.index(c)]), 3) for c in classes},
                 {c: round(row["saliency"][c]["body_centre_share"], 3) for c in classes})
        rows.append(row)
    figures.append(plot_sublattice(rows, classes, out.parent / "sublattice.png", q))
    return rows, figures


def plot_sublattice(rows: list, classes: list, path: Path, q: str = "p") -> Path:
    from matplotlib.figure import Figure

    f = np.array([r["fraction"] for r in rows]) * 100
    fig = Figure(figsize=(12, 3.6), dpi=100)
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


def displacement_part(opts: dict, net, fp_fn, model_classes, key, configs, run, tracking, step0: int) -> dict:
    """Part (b); returns {class: [row per sigma]}."""
    import jax

    from crystaljax.analysis import explain as ex
    from crystaljax.physics.defects import displace
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structure import take as index

    det, beam, fpc = configs
    shake = jax.jit(displace)
    key, k_probes = jax.random.split(key)
    method, n_probes = str(opts["method"]), int(opts["n_probes"])
    sigmas = [float(x) for x in opts["sigmas"]]
    result = {}
    step = step0
    for si, cls in enumerate(opts["structures"]):
        s0 = index(prepare_structures([ex.representative_atoms(cls)], target=int(opts["target"])), 0)
        nn = float(np.asarray(s0.nn_distance))
        fp0 = ex.fingerprint(fp_fn, s0)
        present = np.asarray(s0.mask) > 0.5
        rows = []
        for gi, sigma in enumerate(sigmas):
            samples = []
            for n in range(int(opts["n_samples"])):
                k_disp = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, si), gi), n)
                k_probe = jax.random.fold_in(k_probes, si)  # common random probes across sigmas
                s = jax.tree.map(np.asarray, shake(k_disp, s0, np.float32(sigma)))
                sens = np.asarray(ex.fingerprint_sensitivity(fp_fn, s, method=method, key=k_probe, n_probes=n_probes))
                image = ex.fingerprint(fp_fn, s)
                probs = np.asarray(ex.class_probabilities(net, image[None]))[0]
                _, dlam = ex.wavelength_derivative(s, detector=det, beam=beam, fp=fpc)
                samples.append({
                    "sensitivity_mean": float(sens[present].mean()),
                    "sensitivity_median": float(np.median(sens[present])),
                    "sensitivity_max": float(sens[present].max()),
                    "delta_fingerprint": float(np.linalg.norm(image - fp0)),
                    "p_true": float(probs[model_classes.index(cls)]) if cls in model_classes else float("nan"),
                    "wavelength_derivative_norm": float(np.linalg.norm(np.asarray(dlam))),
                })
            keys = samples[0].keys()
            row = {"sigma": sigma, "n_samples": len(samples),
                   **{k: float(np.mean([x[k] for x in samples])) for k in keys},
                   **{f"{k}_std": float(np.std([x[k] for x in samples])) for k in keys}}
            row["sensitivity_mean_per_physical_A"] = row["sensitivity_mean"] / nn
            rows.append(row)
            tracking.log(run, {f"displacement/{cls}/sigma": sigma,
                               f"displacement/{cls}/sensitivity_mean": row["sensitivity_mean"],
                               f"displacement/{cls}/delta_fingerprint": row["delta_fingerprint"],
                               f"displacement/{cls}/p_true": row["p_true"]}, step=step)
            step += 1
            log.info("%s sigma=%.3f A: sensitivity %.4g (per scaled A), |dfp| %.4g, p(true) %.3f", cls, sigma,
                     row["sensitivity_mean"], row["delta_fingerprint"], row["p_true"])
        result[cls] = {"nn_distance": nn, "method": method, "rows": rows}
    return result


def plot_displacement(result: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), dpi=100)
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


def run(cfg: DictConfig, run_dir: Path) -> dict:
    import jax

    from crystaljax.analysis import explain as ex
    from crystaljax.learn import tracking
    from crystaljax.structures.dataset import CLASSES

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    smoke = bool(cfg.get("smoke", False))
    sub_opts, disp_opts = options(cfg)
    net, card = ex.load_net(cfg.get("model_dir") and to_absolute_path(str(cfg.model_dir)), seed=int(cfg.seed))
    model_classes = tuple(card.get("classes", CLASSES))
    configs = ex.fingerprint_configs(card)
    fp_fn = ex.cached_fingerprint_fn(*configs)
    k_sub, k_disp = jax.random.split(jax.random.key(int(cfg.seed)))

    run = tracking.start(_container(cfg), _container(cfg.logger), run_dir)
    try:
        rows, figures = sublattice_part(sub_opts, net, fp_fn, model_classes, k_sub, run_dir / "sublattice", run,
                                        tracking)
        disp = displacement_part(disp_opts, net, fp_fn, model_classes, k_disp, configs, run, tracking, len(rows))
        figures.append(plot_displacement(disp, run_dir / "displacement.png"))
        for name in ("sublattice.png", "displacement.png"):
            tracking.log_image(run, f"sensitivity/{name[:-4]}", run_dir / name)
        last = rows[-1]
        tracking.set_summary(run, {f"sublattice/p_{c}_at_{int(100 * last['fraction'])}pct": last["probabilities"][c]
                                   for c in sub_opts["classes"]})
    finally:
        info = tracking.finish(run)

    copied = []
    if bool(cfg.get("save_docs", False)):
        docs = Path(to_absolute_path(str(cfg.get("docs_dir", "docs/figures"))))
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("sublattice.png", "displacement.png"):
            dest = docs / f"sensitivity_{name}"
            shutil.copyfile(run_dir / name, dest)
            copied.append(str(dest))

    command = "python experiments/sensitivity.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary = {
        "command": command, "smoke": smoke, "model": card.get("path", "fresh"),
        "fresh_model": bool(card.get("fresh", False)),
        "units": {"saliency": f"|d {sub_opts.get('output', 'probability')} / d x| in 1/Å of the scaled cluster "
                              "(nn distance 1 Å)",
                  "occupancy": f"d {sub_opts.get('output', 'probability')} / d w, w the atom's weight in the "
                               "scattering sum (1 = present)",
                  "sensitivity": "||d fingerprint / d x_j||_F per Å of the scaled cluster",
                  "wavelength_derivative_norm": "||d fingerprint / d lambda|| per pm",
                  "sigma": "physical Å"},
        "sublattice": {"options": sub_opts, "rows": rows},
        "displacement": {"options": disp_opts, "results": disp},
        "figures": [str(p) for p in figures], "docs": copied, "tracking": info,
    }
    (run_dir / "sensitivity.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"run_dir": str(run_dir), "figures": len(figures),
                      "sublattice": {f"{int(100 * r['fraction'])}%": r["predicted"] for r in rows}}))
    return summary


from crystaljax.config import register_configs  # noqa: E402

register_configs()  # the typed schemas conf/sensitivity.yaml names in its defaults


@hydra.main(version_base="1.3", config_path="../conf", config_name="sensitivity")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
