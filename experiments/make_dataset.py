"""Generate the AFLOW-like elemental data set and write it (npz + JSON summary + resolved config).

    python experiments/make_dataset.py data=aflow_like seed=0
    python experiments/make_dataset.py data=tiny seed=1
    python experiments/make_dataset.py data.per_class=2000 'data.splits=[0.9,0.1]' data.path=/tmp/x.npz

The output path (``data.path``) is relative to the directory the command was started from.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from crystaljax.config import MakeDatasetConfig, experiment_main, resolved_yaml


def run(cfg: MakeDatasetConfig, command: str = "") -> dict:
    """Generate, save and summarise; returns the paths written and the summary."""
    from hydra.utils import to_absolute_path

    from crystaljax.structures import dataset

    data = cfg.data
    t0 = time.perf_counter()
    ds = dataset.generate(seed=cfg.seed, per_class=data.per_class, elements=data.elements, target=data.target,
                          splits=data.splits, progress=cfg.progress, workers=data.workers)
    seconds = time.perf_counter() - t0
    ds.info["command"] = command
    ds.info["config"] = dataclasses.asdict(data)
    ds.info["seconds"]["wall"] = round(seconds, 2)
    npz = dataset.save(ds, Path(to_absolute_path(data.path)))
    config_path = npz.with_suffix(".config.yaml")
    config_path.write_text(resolved_yaml(cfg))
    summary_path = dataset.summary_path(npz)
    summary = json.loads(summary_path.read_text())
    print(json.dumps({k: summary[k] for k in ("n_structures", "per_class", "per_prototype", "n_elements",
                                              "rejected_total", "n_max")}, indent=1))
    print(f"data set: {npz}  ({npz.stat().st_size / 1e6:.1f} MB, {len(ds)} structures, {seconds:.1f} s)")
    print(f"summary:  {summary_path}")
    print(f"config:   {config_path}")
    return {"npz": str(npz), "summary": str(summary_path), "config": str(config_path), "stats": summary}


def _run(cfg: MakeDatasetConfig, run_dir) -> dict:
    return run(cfg, "python experiments/make_dataset.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]))


main = experiment_main("make_dataset", _run, report=lambda result, run_dir: None)  # run() prints what it wrote


if __name__ == "__main__":
    main()
