"""Generate the AFLOW-like elemental data set and write it (npz + JSON summary + resolved config).

    python experiments/make_dataset.py data=aflow_like seed=0
    python experiments/make_dataset.py data=tiny seed=1
    python experiments/make_dataset.py data.per_class=2000 'data.splits=[0.9,0.1]' data.path=/tmp/x.npz

The output path (``data.path``) is relative to the directory the command was started from.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from crystaljax.structures import dataset
from crystaljax.config import from_dict


def run(cfg: DictConfig) -> dict:
    """Generate, save and summarise; returns the paths written and the summary."""
    data_cfg = from_dict(dataset.DataConfig, OmegaConf.to_container(cfg.data, resolve=True))
    path = Path(to_absolute_path(str(data_cfg.path)))
    elements = None if data_cfg.elements is None else list(data_cfg.elements)
    t0 = time.perf_counter()
    ds = dataset.generate(
        seed=int(cfg.seed), per_class=int(data_cfg.per_class), elements=elements,
        target=int(data_cfg.target), splits=tuple(data_cfg.splits), progress=True,
        workers=int(data_cfg.workers),
    )
    seconds = time.perf_counter() - t0
    ds.info["command"] = "python experiments/make_dataset.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    ds.info["config"] = OmegaConf.to_container(cfg.data, resolve=True)
    ds.info["seconds"]["wall"] = round(seconds, 2)
    npz = dataset.save(ds, path)
    config_path = npz.with_suffix(".config.yaml")
    config_path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    summary_path = dataset.summary_path(npz)
    summary = json.loads(summary_path.read_text())
    print(json.dumps({k: summary[k] for k in ("n_structures", "per_class", "per_prototype", "n_elements",
                                              "rejected_total", "n_max")}, indent=1))
    print(f"data set: {npz}  ({npz.stat().st_size / 1e6:.1f} MB, {len(ds)} structures, {seconds:.1f} s)")
    print(f"summary:  {summary_path}")
    print(f"config:   {config_path}")
    return {"npz": str(npz), "summary": str(summary_path), "config": str(config_path), "stats": summary}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
