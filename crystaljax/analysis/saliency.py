"""Gradients through the physics: per-atom saliency, fingerprint sensitivity, wavelength derivative.

The whole pipeline structure -> fingerprint -> ConvNet -> softmax is differentiable:

* :class:`SaliencyProbe` / :func:`saliency`: the class probabilities (or logits) of one structure and
  their gradients w.r.t. positions, (C, n_max, 3) in 1/Å of the *scaled* cluster (mean
  nearest-neighbour distance 1 Å; divide by ``nn_distance`` for physical Å), and w.r.t. the mask,
  (C, n_max): the mask is the atom's weight in the scattering sum, so d p / d w_j says what
  (partly) removing a present atom or refilling a vacancy would do.  The fingerprint is normalised
  by its brightest pixel, so sum_j w_j d p / d w_j = 0.
* :func:`atom_saliency`: ||d p / d x_j|| per atom, zero on masked rows.
* :func:`fingerprint_sensitivity`: s_j = ||d fingerprint / d x_j||_F per atom, exact (forward mode)
  or a Hutchinson estimate from random image-space probes.
* :func:`wavelength_derivative`: d fingerprint / d wavelength per pm (forward mode).

:func:`run` is the sensitivity experiment (bcc -> sc by sublattice removal; displacements).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from crystaljax.structure import Structure

log = logging.getLogger(__name__)

OUTPUTS = ("probability", "logit")


def _as_structure(structure: Structure) -> Structure:
    s = Structure(*(jnp.asarray(x) for x in structure))
    if s.positions.ndim != 2:
        raise ValueError(f"expected one unbatched Structure, got positions of shape {s.positions.shape}")
    return s


class Saliency(NamedTuple):
    """Gradients of every class output (probability or logit) for one structure.

    probabilities: (C,) class probabilities.  positions: (C, n_max, 3) d output / d positions, 1/Å of
    the scaled cluster.  occupancy: (C, n_max) d output / d mask.
    """

    probabilities: Any
    positions: Any
    occupancy: Any


class SaliencyProbe:
    """``probe(structure) -> Saliency`` for one model; build once, call on many structures (one
    compilation per shape).  output: "probability" or "logit" (logit gradients do not vanish when the
    softmax saturates, where d p / d x ~ p (1 - p)).  fingerprint_fn: default the model's."""

    def __init__(self, clf, output: str = "probability", fingerprint_fn: Callable | None = None):
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of {OUTPUTS}")
        self.clf, self.output = clf, output
        fp = clf.fingerprint_fn if fingerprint_fn is None else fingerprint_fn
        graphdef = clf.checkpoint.graphdef
        from flax import nnx

        def f(params, stats, structure):
            def wrt(positions, mask):
                image = fp(structure._replace(positions=positions, mask=mask))
                logits = nnx.merge(graphdef, params, stats)(image[None], train=False)[0]
                return (jax.nn.softmax(logits) if output == "probability" else logits), logits

            pos, mask = structure.positions, structure.mask.astype(structure.positions.dtype)
            out, vjp, logits = jax.vjp(wrt, pos, mask, has_aux=True)
            d_pos, d_mask = jax.vmap(vjp)(jnp.eye(out.shape[0], dtype=out.dtype))
            return Saliency(jax.nn.softmax(logits), d_pos, d_mask)

        self._fn = jax.jit(f)

    def __call__(self, structure: Structure) -> Saliency:
        ck = self.clf.checkpoint
        return self._fn(ck.params, ck.batch_stats, _as_structure(structure))


def saliency(clf, structure: Structure, output: str = "probability", fingerprint_fn: Callable | None = None) -> Saliency:
    """All-class probabilities and the gradients of every class output w.r.t. positions and mask."""
    return SaliencyProbe(clf, output, fingerprint_fn)(structure)


def probability_saliency(clf, structure: Structure, class_index, fingerprint_fn: Callable | None = None) -> jax.Array:
    """d p(class_index) / d positions, (n_max, 3), 1/Å of the scaled cluster; zero on masked rows."""
    return saliency(clf, structure, "probability", fingerprint_fn).positions[int(class_index)]


def occupancy_saliency(clf, structure: Structure, class_index, fingerprint_fn: Callable | None = None) -> jax.Array:
    """d p(class_index) / d mask, (n_max,): removing an atom (present rows) or refilling a vacancy."""
    return saliency(clf, structure, "probability", fingerprint_fn).occupancy[int(class_index)]


def atom_saliency(gradient, mask) -> jax.Array:
    """Per-atom ||gradient_j|| over xyz times the mask: (..., n_max, 3) -> (..., n_max)."""
    return jnp.linalg.norm(jnp.asarray(gradient), axis=-1) * (jnp.asarray(mask) > 0.5)


def fingerprint_sensitivity(fingerprint_fn: Callable, structure: Structure, *, method: str = "exact",
                            key=None, n_probes: int = 16, chunk: int = 24) -> jax.Array:
    """Per-atom sensitivity s_j = ||d fingerprint / d x_j||_F of one Structure, (n_max,).

    Units: L2 change of the normalised image per Å of the scaled cluster (divide by nn_distance for
    physical Å); zero on masked rows.  method="exact": 3 n_max forward-mode products in chunks of
    ``chunk``; "hutchinson": unbiased estimate of s_j^2 from ``n_probes`` random image-space probes
    (needs ``key``; relative error ~ sqrt(2 / n_probes)).
    """
    s = _as_structure(structure)
    if method == "exact":
        def f(structure):
            n = structure.positions.shape[0]

            def sq_norm(tangent):
                _, jv = jax.jvp(lambda p: fingerprint_fn(structure._replace(positions=p)),
                                (structure.positions,), (tangent,))
                return jnp.sum(jv * jv)

            eye = jnp.eye(3 * n, dtype=structure.positions.dtype).reshape(3 * n, n, 3)
            return jnp.sqrt(jnp.sum(jax.lax.map(sq_norm, eye, batch_size=int(chunk)).reshape(n, 3), axis=-1))

        out = jax.jit(f)(s)
    elif method == "hutchinson":
        if key is None:
            raise ValueError("method='hutchinson' needs a jax.random key")

        def g(structure, key):
            image, vjp = jax.vjp(lambda p: fingerprint_fn(structure._replace(positions=p)), structure.positions)
            probes = jax.random.normal(key, (int(n_probes),) + image.shape, image.dtype)
            grads = jax.vmap(lambda v: vjp(v)[0])(probes)
            return jnp.sqrt(jnp.mean(jnp.sum(grads * grads, axis=-1), axis=0))

        out = jax.jit(g)(s, key)
    else:
        raise ValueError(f"unknown method {method!r}; choose 'exact' or 'hutchinson'")
    return out * (s.mask > 0.5)


def make_wavelength_derivative(detector=None, beam=None, fp=None) -> Callable:
    """Jitted ``fn(structure, wavelength_pm) -> (fingerprint (H, W, 3), d fingerprint / d lambda per pm)``."""
    from crystaljax.physics.fingerprint import make_fingerprint_fn

    fn = make_fingerprint_fn(detector, beam, fp, wavelength_arg=True)

    def f(structure, wavelength_pm):
        return jax.jvp(lambda lam: fn(structure, lam * 1e-12), (wavelength_pm,), (jnp.ones_like(wavelength_pm),))

    return jax.jit(f)


def wavelength_derivative(structure: Structure, wavelength: float | None = None, *, detector=None, beam=None, fp=None):
    """d fingerprint / d wavelength of one Structure: (fingerprint (H, W, 3), derivative (H, W, 3) per pm).
    wavelength: metres (default the beam's).  Forward mode, one pass."""
    from crystaljax.config import BeamConfig

    lam = (beam or BeamConfig()).wavelength if wavelength is None else float(wavelength)
    s = _as_structure(structure)
    return make_wavelength_derivative(detector, beam, fp)(s, jnp.asarray(lam * 1e12, s.positions.dtype))


# --------------------------------------------------------------------------------------------
# the sensitivity experiment


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"n": 0, "mean": float("nan"), "median": float("nan"), "max": float("nan"), "sum": 0.0}
    return {"n": int(values.size), "mean": float(values.mean()), "median": float(np.median(values)),
            "max": float(values.max()), "sum": float(values.sum())}


def sublattice_saliency(clf, opts, key, out, on_row: Callable | None = None) -> list:
    """Part (a): a bcc cluster (``opts.prototype``, ``opts.element``) loses a growing fraction of its
    body-centre atoms (the same key: nested removals), rescaled as the pipeline scales a file; per
    fraction the class probabilities and per-atom saliencies of ``opts.classes``.  Writes
    ``out/bcc_remove_<pct>.extxyz`` and ``out/saliency_<class>_<pct>.png``; returns one row per fraction."""
    from crystaljax.analysis import report
    from crystaljax.physics.defects import remove_sublattice, renormalize
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structure import take
    from crystaljax.structures.prototypes import build

    classes = list(opts.classes)
    output = str(opts.output)
    q = "p" if output == "probability" else "logit"
    model_classes = tuple(clf.classes)
    missing = [c for c in classes if c not in model_classes]
    if missing:
        raise ValueError(f"classes {missing} are not outputs of the model {model_classes}")
    s0 = take(prepare_structures([build(str(opts.prototype), opts.element)], target=int(opts.target)), 0)
    tags, real = np.asarray(s0.tags), np.asarray(s0.numbers) > 0
    out.mkdir(parents=True, exist_ok=True)
    remove = jax.jit(lambda k, st, f: renormalize(remove_sublattice(k, st, f)))
    probe = SaliencyProbe(clf, output)
    rows = []
    for fraction in (float(f) for f in opts.fractions):
        s = jax.tree.map(np.asarray, remove(key, s0, np.float32(fraction)))
        present = np.asarray(s.mask) > 0.5
        corner, body, removed = real & present & (tags != 1), real & present & (tags == 1), real & ~present
        sal = probe(s)
        probs = np.asarray(sal.probabilities)
        pct = int(round(100 * fraction))
        row = {"fraction": fraction, "n_present": int(present.sum()), "n_body_centre": int(body.sum()),
               "n_removed": int(removed.sum()), "probabilities": {c: float(p) for c, p in zip(model_classes, probs)},
               "predicted": model_classes[int(np.argmax(probs))], "saliency": {}, "figures": []}
        arrays = {}
        for c in classes:
            ci = model_classes.index(c)
            grad = np.asarray(sal.positions[ci])
            per_atom = np.asarray(atom_saliency(grad, s.mask))
            occ = np.asarray(sal.occupancy[ci])
            total = per_atom[present].sum()
            row["saliency"][c] = {
                "corner": _stats(per_atom[corner]), "body_centre": _stats(per_atom[body]),
                "body_centre_share": float(per_atom[body].sum() / total) if total > 0 else float("nan"),
                "occupancy_present_corner": _stats(occ[corner]), "occupancy_present_body": _stats(occ[body]),
                "occupancy_removed_body": _stats(occ[removed]),
            }
            arrays[f"saliency_{c}"], arrays[f"grad_{c}"], arrays[f"occupancy_{c}"] = per_atom, grad, occ
            row["figures"].append(str(report.plot_saliency(
                s, per_atom, out / f"saliency_{c}_{pct:03d}.png",
                title=f"bcc, {pct}% body centres removed: |d {q}({c}) / d x| (p={probs[ci]:.2f})",
                label=f"|d{q}({c})/dx| (1/Å, scaled)", highlight=body, highlight_label="body centres")))
        first = classes[0]
        report.write_saliency_extxyz(s, arrays[f"saliency_{first}"], out / f"bcc_remove_{pct:03d}.extxyz",
                                     arrays=arrays, include_masked=True,
                                     info={"fraction_removed": fraction, "saliency_of": f"{q}({first})",
                                           **{f"p_{c}": float(probs[model_classes.index(c)]) for c in classes}})
        log.info("removed %3d%% body centres: %s", pct, {c: round(float(probs[model_classes.index(c)]), 3) for c in classes})
        if removed.any():
            row["refill"] = refill_check(clf, s, np.flatnonzero(removed), [model_classes.index(c) for c in classes],
                                         np.asarray(sal.occupancy), classes)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def refill_check(clf, s: Structure, sites, class_indices, occupancy, class_names, max_sites: int = 32) -> dict:
    """Put each removed atom back, one at a time, and compare the change of p with the occupancy gradient.

    s: one cluster with vacancies (mask 0 rows); sites: row indices of removed atoms (the first
    ``max_sites`` are refilled); occupancy: (n_classes, n_max) d p / d mask at ``s``.  The refilled
    clusters are imaged at the same length scale (the derivative is taken at fixed scale).  Returns per
    class the mean and spread of the measured change and of the gradient's first-order prediction, their
    correlation over sites and the fraction of sites where both have the same sign."""
    sites = np.asarray(sites)[:max_sites]
    masks = np.repeat(np.asarray(s.mask)[None], len(sites), axis=0)
    masks[np.arange(len(sites)), sites] = 1.0
    batch = Structure(*(np.repeat(np.asarray(x)[None], len(sites), axis=0) for x in s))._replace(mask=masks)
    base = np.asarray(clf.predict(jax.tree.map(lambda x: np.asarray(x)[None], s)).probabilities)[0]
    refilled = np.asarray(clf.predict(batch).probabilities)
    out = {"n_sites": int(len(sites))}
    for ci, name in zip(class_indices, class_names):
        measured = refilled[:, ci] - base[ci]
        predicted = np.asarray(occupancy)[ci, sites]
        corr = float(np.corrcoef(measured, predicted)[0, 1]) if len(sites) > 2 and measured.std() > 0 else float("nan")
        out[name] = {"measured": _stats(measured), "gradient": _stats(predicted), "correlation": corr,
                     "same_sign": float(np.mean(np.sign(measured) == np.sign(predicted)))}
    return out


def displacement_sensitivity(clf, opts, key, on_row: Callable | None = None) -> dict:
    """Part (b): pristine representatives of ``opts.structures`` with Gaussian displacements
    ``opts.sigmas`` (physical Å): per-atom fingerprint sensitivity, the image change, p(true class)
    and ||d fingerprint / d lambda||, averaged over ``opts.n_samples`` draws.  {class: {...rows}}."""
    from crystaljax.analysis.attention import representative_atoms
    from crystaljax.physics.defects import displace
    from crystaljax.pipeline import prepare_structures
    from crystaljax.structure import take

    shake = jax.jit(displace)
    image_fn = jax.jit(clf.fingerprint_fn)
    probs_fn = jax.jit(clf.apply)
    dlam_fn = make_wavelength_derivative(clf.spec.detector, clf.spec.beam, clf.spec.fingerprint)
    lam_pm = float(clf.spec.beam.wavelength) * 1e12
    key, k_probes = jax.random.split(key)
    method, n_probes = str(opts.method), int(opts.n_probes)
    sigmas = [float(x) for x in opts.sigmas]
    model_classes = tuple(clf.classes)
    result = {}
    for si, cls in enumerate(opts.structures):
        s0 = take(prepare_structures([representative_atoms(cls)], target=int(opts.target)), 0)
        nn = float(np.asarray(s0.nn_distance))
        fp0 = np.asarray(image_fn(s0))
        present = np.asarray(s0.mask) > 0.5
        rows = []
        for gi, sigma in enumerate(sigmas):
            samples = []
            for n in range(int(opts.n_samples)):
                k_disp = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, si), gi), n)
                k_probe = jax.random.fold_in(k_probes, si)  # common random probes across sigmas
                s = jax.tree.map(np.asarray, shake(k_disp, s0, np.float32(sigma)))
                sens = np.asarray(fingerprint_sensitivity(clf.fingerprint_fn, s, method=method, key=k_probe,
                                                          n_probes=n_probes))
                image = np.asarray(image_fn(s))
                probs = np.asarray(probs_fn(image[None]))[0]
                _, dlam = dlam_fn(_as_structure(s), jnp.asarray(lam_pm, jnp.float32))
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
            if on_row is not None:
                on_row(cls, row)
        result[cls] = {"nn_distance": nn, "method": method, "rows": rows}
    return result


def run(cfg, workdir) -> dict:
    """The sensitivity experiment from a ``SensitivityConfig`` (or a DictConfig with its keys): writes
    sublattice/*.extxyz and PNGs, sublattice.png, displacement.png and sensitivity.json into ``workdir``."""
    from pathlib import Path

    from hydra.utils import to_absolute_path

    from crystaljax.analysis import report
    from crystaljax.analysis.defect_sweeps import command_line, config_dict, load_model
    from crystaljax.config import start_experiment
    from crystaljax.learn import tracking

    workdir = Path(workdir)
    start_experiment(cfg, workdir, "sensitivity")
    clf = load_model(cfg.model_dir)
    k_sub, k_disp = jax.random.split(jax.random.key(int(cfg.seed)))
    sub, dis = cfg.sublattice, cfg.displacement
    run_ = tracking.start(config_dict(cfg), config_dict(cfg.logger), workdir)
    step = {"n": 0}

    def log_sub(row):
        tracking.log(run_, {"sublattice/fraction": row["fraction"],
                            **{f"sublattice/p_{c}": row["probabilities"][c] for c in sub.classes},
                            **{f"sublattice/body_share_{c}": row["saliency"][c]["body_centre_share"]
                               for c in sub.classes}}, step=step["n"])
        step["n"] += 1

    def log_disp(cls, row):
        tracking.log(run_, {f"displacement/{cls}/{k}": row[k] for k in
                            ("sigma", "sensitivity_mean", "delta_fingerprint", "p_true")}, step=step["n"])
        step["n"] += 1

    try:
        rows = sublattice_saliency(clf, sub, k_sub, workdir / "sublattice", log_sub)
        disp = displacement_sensitivity(clf, dis, k_disp, log_disp)
        q = "p" if str(sub.output) == "probability" else "logit"
        figures = [f for r in rows for f in r.pop("figures")]
        figures.append(str(report.plot_sublattice(rows, list(sub.classes), workdir / "sublattice.png", q)))
        figures.append(str(report.plot_displacement(disp, workdir / "displacement.png")))
        for name in ("sublattice", "displacement"):
            tracking.log_image(run_, f"sensitivity/{name}", workdir / f"{name}.png")
        last = rows[-1]
        tracking.set_summary(run_, {f"sublattice/p_{c}_at_{int(100 * last['fraction'])}pct": last["probabilities"][c]
                                    for c in sub.classes})
    finally:
        info = tracking.finish(run_)
    copied = []
    if bool(cfg.save_docs):
        copied = [str(p) for p in report.copy_figures([workdir / "sublattice.png", workdir / "displacement.png"],
                                                     to_absolute_path(str(cfg.docs_dir)), "sensitivity_")]
    summary = {
        "command": command_line("sensitivity.py"), "smoke": bool(cfg.smoke), "model": clf.card.get("path"),
        "units": {"saliency": f"|d {sub.output} / d x| in 1/Å of the scaled cluster (nn distance 1 Å)",
                  "occupancy": f"d {sub.output} / d w, w the atom's weight in the scattering sum (1 = present)",
                  "sensitivity": "||d fingerprint / d x_j||_F per Å of the scaled cluster",
                  "wavelength_derivative_norm": "||d fingerprint / d lambda|| per pm", "sigma": "physical Å"},
        "sublattice": {"options": config_dict(sub), "rows": rows},
        "displacement": {"options": config_dict(dis), "results": disp},
        "figures": figures, "docs": copied, "tracking": info,
    }
    report.write_json(summary, workdir / "sensitivity.json")
    return summary


__all__ = [
    "OUTPUTS", "Saliency", "SaliencyProbe", "saliency", "probability_saliency", "occupancy_saliency", "atom_saliency",
    "fingerprint_sensitivity", "make_wavelength_derivative", "wavelength_derivative", "sublattice_saliency",
    "displacement_sensitivity", "run",
]
