"""Fig. 4 of the paper: the ConvNet on two structural transitions.

    python experiments/transitions.py                                  # shipped model, generated data set
    python experiments/transitions.py save_docs=true                   # -> docs/results/
    python experiments/transitions.py data=tiny smoke=true model_dir=/tmp/model logger=none   # smoke run

(a) bcc -> sc: 0, 10, ..., 100 % of the body-centre atoms (tag 1) of bcc clusters are removed
    (``defects.remove_sublattice``, several draws per structure); p(bcc) and p(sc) are reported as
    mean ± 1 std over structures and draws.  The structures are the data set's bcc test structures
    whose clusters carry the body-centre tags (``sweeps.tagged_bcc``; clusters built from a primitive
    cell have none), topped up with bcc prototypes of several elements when there are few.
(b) rhombohedral path: A_hR1_166_a (beta-Po) for mu = c/a from sqrt(3/8) to 5 sqrt(3/8); every class
    probability vs mu, the prediction at mu_bcc = sqrt(3/8), mu_sc = sqrt(3/2), mu_fcc = sqrt(6), and
    the width in mu of the windows predicted bcc, sc and fcc around them.  The path cell is handed to
    the pipeline in the 3-atom hexagonal setting and/or as the 1-atom primitive rhombohedral cell
    (``rhombohedral.settings``): the symmetry-free standard cell keeps the lattice it is given, so
    the two give differently oriented clusters (see ``crystaljax.analysis.sweeps.RH_SETTINGS``).
    ``transitions.json`` holds ``rhombohedral.<setting>`` for each.

Writes ``transitions.json``, ``bcc_sc.png``, ``rhombohedral.png`` and ``config_resolved.yaml`` into
the output directory; logs to W&B with ``logger=wandb`` (offline by default).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from crystaljax.config import experiment_output_dir, start_experiment, to_container

log = logging.getLogger(__name__)

SMOKE = {"steps": 3, "seeds": [0], "n_structures": 2, "n_points": 24, "elements": ["Fe"]}


def _container(node):
    return to_container(node)


def output_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """``out_dir`` if set, else docs/results with ``save_docs=true``, else the Hydra run directory."""
    return experiment_output_dir(cfg, run_dir)


def bcc_structures(cfg: DictConfig, bcfg: dict, smoke: bool):
    """(batched bcc clusters with tags, key indices, description) per ``cfg.bcc_sc``."""
    from crystaljax import structure
    from crystaljax.analysis import sweeps
    from crystaljax.structures.dataset import CLASSES

    source = str(bcfg.get("source", "test"))
    cap = SMOKE["n_structures"] if smoke else bcfg.get("n_structures")
    parts, ids, desc = [], [], {"source": source}
    if source in ("test", "train", "val", "all"):
        data = dict(_container(cfg.data))
        if data.get("name") != "tiny" and data.get("path"):
            data["path"] = to_absolute_path(str(data["path"]))
        ds = sweeps.load_dataset(data, seed=int(cfg.seed))
        split = np.asarray(ds.split).astype(str)
        keep = np.asarray(ds.labels) == CLASSES.index("bcc")
        if source != "all":
            keep &= split == source
        desc["dataset_bcc"] = int(keep.sum())
        keep &= sweeps.tagged_bcc(ds.structures)  # clusters built from cells that carry the body-centre tags
        idx = np.flatnonzero(keep)
        if cap is not None:
            idx = idx[: int(cap)]
        if len(idx):
            batch = sweeps._take(ds.structures, idx)
            parts.extend(structure.take(batch, k) for k in range(len(idx)))
            ids.extend(int(i) for i in idx)
        desc["dataset_indices"] = [int(i) for i in idx]
    elif source != "prototypes":
        raise ValueError(f"bcc_sc.source must be test, train, val, all or prototypes, got {source!r}")
    elements = list(SMOKE["elements"] if smoke else bcfg.get("elements") or [])
    if source != "prototypes":
        # top up a split with few bcc structures (never in smoke runs unless it has none)
        need = 1 if smoke else max(int(bcfg.get("min_structures", 0)), 1)
        elements = elements[: max(need - len(parts), 0)]
    elif cap is not None:
        elements = elements[: int(cap)]
    if elements:
        protos = sweeps.bcc_clusters(elements, target=int(cfg.cluster_target))
        parts.extend(structure.take(protos, k) for k in range(len(elements)))
        ids.extend(10_000_000 + k for k in range(len(elements)))
        desc["prototype_elements"] = [str(e) for e in elements]
    if not parts:
        raise ValueError("no bcc structures: the split has none and bcc_sc.elements is empty")
    n_max = max(int(np.shape(p.positions)[0]) for p in parts)
    return structure.stack(parts, n_max=n_max), np.asarray(ids, np.int64), desc


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Both transitions; writes transitions.json and the two PNGs; returns the JSON dict."""
    from crystaljax.analysis import sweeps
    from crystaljax.learn import tracking
    from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, from_dict
    from crystaljax.structures.prototypes import MU_BCC, MU_FCC, MU_SC

    t0 = time.perf_counter()
    out = start_experiment(cfg, run_dir, "transitions")
    smoke = bool(cfg.get("smoke", False))
    progress = bool(cfg.get("progress", True))
    bs = int(cfg.get("batch_size", 32))

    fp_default = (from_dict(DetectorConfig, _container(cfg.detector)), from_dict(BeamConfig, _container(cfg.beam)),
                  from_dict(FingerprintConfig, _container(cfg.get("fingerprint"))))
    model_dir = Path(to_absolute_path(str(cfg.model_dir))) if cfg.get("model_dir") else sweeps.default_model_dir()
    if not (model_dir / "model_card.json").is_file():
        raise FileNotFoundError(f"no model at {model_dir}; train one (experiments/train.py) or pass model_dir=...")
    predictor, ffn, card = sweeps.load_predictor(model_dir, fp_default)

    run = tracking.start(_container(cfg), _container(cfg.logger), run_dir)
    try:
        # (a) bcc -> sc
        bcfg = _container(cfg.bcc_sc) or {}
        steps = SMOKE["steps"] if smoke else int(bcfg.get("steps", 10))
        seeds = SMOKE["seeds"] if smoke else [int(s) for s in bcfg.get("seeds", [0])]
        fractions = [k / steps for k in range(steps + 1)]
        structures, ids, desc = bcc_structures(cfg, bcfg, smoke)
        log.info("bcc -> sc: %d structures x %d seeds x %d steps", len(ids), len(seeds), len(fractions))
        bcc_sc = sweeps.bcc_sc_sweep(predictor, structures, fractions, seeds, fingerprint_fn=ffn, indices=ids,
                                     renormalize=bool(bcfg.get("renormalize", True)), batch_size=bs,
                                     progress=progress)
        bcc_sc["structures"] = desc
        for k, f in enumerate(fractions):
            tracking.log(run, {"bcc_sc/p_bcc": bcc_sc["p_bcc_mean"][k], "bcc_sc/p_sc": bcc_sc["p_sc_mean"][k],
                               "bcc_sc/percent_removed": 100 * f}, step=k)
        png_a = sweeps.plot_bcc_sc(bcc_sc, out / "bcc_sc.png")

        # (b) rhombohedral path
        rcfg = _container(cfg.rhombohedral) or {}
        n_points = SMOKE["n_points"] if smoke else int(rcfg.get("n_points", 241))
        lo = float(rcfg["mu_min"]) if rcfg.get("mu_min") is not None else MU_BCC
        hi = float(rcfg["mu_max"]) if rcfg.get("mu_max") is not None else 5 * MU_BCC
        special = {"bcc": MU_BCC, "sc": MU_SC, "fcc": MU_FCC}
        mus = np.linspace(lo, hi, n_points)
        mus = np.unique(np.concatenate([mus, [m for m in special.values() if lo <= m <= hi]]))
        settings = [str(x) for x in (rcfg.get("settings") or ["hexagonal"])]
        log.info("rhombohedral path: %d values of mu in [%.4f, %.4f], settings %s", len(mus), lo, hi, settings)
        rh = {}
        for setting in settings:
            r = sweeps.rhombohedral_sweep(predictor, mus, element=rcfg.get("element", "Po"), setting=setting,
                                          fingerprint_fn=ffn, target=int(cfg.cluster_target), batch_size=bs,
                                          progress=progress)
            r.update(sweeps.class_windows(r["mu"], r["predicted"], special))
            r["special_mu"] = {"bcc": "sqrt(3/8)", "sc": "sqrt(3/2)", "fcc": "sqrt(6)"}
            rh[setting] = r
            for name, entry in r["special"].items():
                tracking.set_summary(run, {f"rhombohedral/{setting}/{name}/width": entry["width"],
                                           f"rhombohedral/{setting}/{name}/correct": float(entry["predicted"] == name)})
        png_b = sweeps.plot_rhombohedral(rh, special, out / "rhombohedral.png")
        tracking.log_image(run, "bcc_sc", png_a, step=len(fractions))
        tracking.log_image(run, "rhombohedral", png_b, step=len(fractions))
    finally:
        info = tracking.finish(run)

    result = {
        "bcc_sc": bcc_sc,
        "rhombohedral": rh,
        "model": {"dir": str(model_dir), "sha256": card.get("sha256")},
        "command": "python experiments/transitions.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "seconds": round(time.perf_counter() - t0, 2),
        "tracking": info,
    }
    (out / "transitions.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    summary = {f"{setting}/{name}": {"predicted": e["predicted"], "width": round(e["width"], 4)}
               for setting, r in rh.items() for name, e in r["special"].items()}
    log.info("transitions written to %s (%.1f s): %s", out, result["seconds"], summary)
    print(json.dumps({"out_dir": str(out), "special": summary,
                      "p_sc_at_100": bcc_sc["p_sc_mean"][-1], "p_bcc_at_0": bcc_sc["p_bcc_mean"][0]}))
    return result


from crystaljax.config import register_configs  # noqa: E402

register_configs()  # the typed schemas conf/transitions.yaml names in its defaults


@hydra.main(version_base="1.3", config_path="../conf", config_name="transitions")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
