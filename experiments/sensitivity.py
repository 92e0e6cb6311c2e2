"""Gradient probing of structure -> fingerprint -> ConvNet: per-atom saliency and fingerprint sensitivity.

    python experiments/sensitivity.py                       # full size, shipped default model
    python experiments/sensitivity.py run=smoke             # seconds
    python experiments/sensitivity.py save_docs=true model_dir=PATH

Hydra glue around ``crystaljax.analysis.saliency.run`` (config: conf/sensitivity.yaml, typed by crystaljax.config).
"""

import sys

from crystaljax.config import hydra_main, output_dir
from crystaljax.errors import CrystalJaxError


@hydra_main("sensitivity")
def main(cfg) -> None:
    from crystaljax.analysis.saliency import run

    try:
        run(cfg, output_dir())
    except CrystalJaxError as exc:
        sys.exit(f"error: {exc}")
    print(f"results in {output_dir()}")


if __name__ == "__main__":
    main()
