"""Table 1 of the paper: accuracy of the ConvNet and of spglib on defective structures.

    python experiments/table1.py                                      # shipped model, generated data set
    python experiments/table1.py save_docs=true                       # -> docs/results/table1.{json,md,png}
    python experiments/table1.py augmented_model_dir=outputs/.../model   # adds "ConvNet (augmented)"
    python experiments/table1.py data=tiny smoke=true model_dir=/tmp/model logger=none   # smoke run

The test split's pristine clusters get displacements (sigma, physical Å), vacancies and
substitutions (binary / ternary alloys) on device, one key per structure, level and seed
(``crystaljax.analysis.sweeps``); accuracy is measured against the parent class.  spglib sees the same kind
of defect, with the same keys, on periodic ~250-atom supercells of the conventional cells and is
correct when it returns the parent's space group.

Writes ``table1.json`` (accuracies, schema in ``crystaljax.analysis.sweeps``), ``table1_details.json``
(per-class accuracy, confusion matrices, per-seed accuracies, spglib space groups, timings),
``table1.md`` (layout of the paper's Table 1), ``table1.png`` and ``config_resolved.yaml`` into the
output directory, and logs every accuracy to W&B (``logger=wandb``; offline by default).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from crystaljax.config import experiment_output_dir, start_experiment, to_container

log = logging.getLogger(__name__)

SMOKE = {
    "n_per_class": 1,
    "seeds": [0],
    "levels": {"displacement": [0.01], "vacancies": [0.01], "substitution": ["ternary_0.25"]},
    "spglib_n_per_class": 1,
    "spglib_n_structures": 3,
    "spglib_workers": 0,
}


def _container(node):
    return to_container(node)


def _data(cfg: DictConfig) -> dict:
    data = dict(_container(cfg.data))
    if data.get("name") != "tiny" and data.get("path"):
        data["path"] = to_absolute_path(str(data["path"]))
    return data


def _fingerprint_defaults(cfg: DictConfig):
    from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, from_dict

    return (from_dict(DetectorConfig, _container(cfg.detector)), from_dict(BeamConfig, _container(cfg.beam)),
            from_dict(FingerprintConfig, _container(cfg.get("fingerprint"))))


def output_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """``out_dir`` if set, else docs/results with ``save_docs=true``, else the Hydra run directory."""
    return experiment_output_dir(cfg, run_dir)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Compute Table 1 and write every artefact; returns the results dict (table1.json)."""
    from crystaljax.analysis import sweeps
    from crystaljax.learn import tracking

    t0 = time.perf_counter()
    out = start_experiment(cfg, run_dir, "table1")

    smoke = bool(cfg.get("smoke", False))
    levels = {k: [str(x) if k == "substitution" else float(x) for x in v] for k, v in _container(cfg.levels).items()}
    seeds = [int(s) for s in cfg.seeds]
    spg = _container(cfg.spglib) or {}
    n_per_class = None
    sp_per_class = spg.get("n_per_class")
    sp_cap = spg.get("n_structures")
    workers = int(spg.get("workers", 0))
    if smoke:
        levels = {k: v for k, v in SMOKE["levels"].items()}
        seeds = SMOKE["seeds"]
        n_per_class = SMOKE["n_per_class"]
        sp_per_class = SMOKE["spglib_n_per_class"]
        sp_cap = SMOKE["spglib_n_structures"]
        workers = SMOKE["spglib_workers"]
    symprecs = [float(s) for s in spg.get("symprecs", sweeps.SYMPRECS)]
    sp_seeds = seeds if spg.get("seeds") is None else [int(s) for s in spg["seeds"]]

    ds = sweeps.load_dataset(_data(cfg), seed=int(cfg.seed))
    idx = sweeps.select_indices(ds, cfg.get("split", "test"), cfg.get("n_structures"), n_per_class)
    if len(idx) == 0:
        raise ValueError(f"split {cfg.get('split')!r} of the data set is empty")
    sp_idx = sweeps.select_indices(ds, None, sp_cap, sp_per_class, within=idx)
    log.info("data: %d structures; ConvNet on %d, spglib on %d (%d seed(s))", len(ds), len(idx), len(sp_idx),
             len(sp_seeds))

    fp_default = _fingerprint_defaults(cfg)
    model_dir = Path(to_absolute_path(str(cfg.model_dir))) if cfg.get("model_dir") else sweeps.default_model_dir()
    if not (model_dir / "model_card.json").is_file():
        raise FileNotFoundError(f"no model at {model_dir}; train one (experiments/train.py) or pass model_dir=...")
    models = {}
    predictor, ffn, card = sweeps.load_predictor(model_dir, fp_default)
    models["convnet"] = (predictor, ffn)
    model_info = {"convnet": {"dir": str(model_dir), "sha256": card.get("sha256")}}
    if cfg.get("augmented_model_dir"):
        aug_dir = Path(to_absolute_path(str(cfg.augmented_model_dir)))
        p2, f2, c2 = sweeps.load_predictor(aug_dir, fp_default)
        models["convnet_augmented"] = (p2, f2)
        model_info["convnet_augmented"] = {"dir": str(aug_dir), "sha256": c2.get("sha256"),
                                           "training_defect": (c2.get("training") or {}).get("defect")}

    cfg_dict = _container(cfg)
    run = tracking.start(cfg_dict, _container(cfg.logger), run_dir)
    step = {"n": 0}

    def on_level(name, kind, key, rep):
        tracking.log(run, {f"{name}/{kind}/{key}": rep["accuracy"]}, step=step["n"])
        step["n"] += 1

    try:
        results, details = sweeps.table1(
            models, ds, levels, seeds, symprecs, indices=idx, spglib_indices=sp_idx, spglib_seeds=sp_seeds,
            spglib=bool(spg.get("enabled", True)), workers=workers, target=int(spg.get("target", 250)),
            batch_size=int(cfg.get("batch_size", 32)), renormalize=bool(cfg.get("renormalize", False)),
            progress=bool(cfg.get("progress", True)), on_level=on_level,
        )
        details["models"] = model_info
        details["command"] = "python experiments/table1.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        details["data"] = {"name": cfg.data.get("name"), "path": cfg.data.get("path"), "n": len(ds)}
        (out / "table1.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "table1_details.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
        md = sweeps.table1_markdown(results, details)
        (out / "table1.md").write_text(f"# Table 1 (reproduction)\n\n`{details['command']}`\n\n" + md)
        png = sweeps.plot_table1(results, out / "table1.png")
        tracking.log_image(run, "table1", png, step=step["n"])
        summary = {}
        for name in models:
            summary[f"{name}/pristine"] = results[name].get("pristine")
        for sp, block in results.get("spglib", {}).items():
            summary[f"spglib/{sp}/pristine"] = block.get("pristine")
        tracking.set_summary(run, {k: v for k, v in summary.items() if v is not None})
    finally:
        info = tracking.finish(run)
    details["tracking"] = info
    details["seconds"]["wall"] = round(time.perf_counter() - t0, 2)
    (out / "table1_details.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
    log.info("Table 1 written to %s (%.1f s)\n%s", out, time.perf_counter() - t0, md)
    print(json.dumps({"out_dir": str(out), "n_structures": results["n_structures"],
                      "pristine": {m: results[m].get("pristine") for m in models}, "tracking": info}))
    return results


from crystaljax.config import register_configs  # noqa: E402

register_configs()  # the typed schemas conf/table1.yaml names in its defaults


@hydra.main(version_base="1.3", config_path="../conf", config_name="table1")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
