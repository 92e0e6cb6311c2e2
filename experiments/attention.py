"""Fig. 5 of the paper: guided-backprop response maps and class templates, with a randomised-weights control.

    python experiments/attention.py                       # full size, shipped default model
    python experiments/attention.py run=smoke             # seconds
    python experiments/attention.py save_docs=true model_dir=PATH

Hydra glue around ``crystaljax.analysis.attention.run`` (config: conf/attention.yaml, typed by crystaljax.config).
"""

import sys

from crystaljax.config import hydra_main, output_dir
from crystaljax.errors import CrystalJaxError


@hydra_main("attention")
def main(cfg) -> None:
    from crystaljax.analysis.attention import run

    try:
        run(cfg, output_dir())
    except CrystalJaxError as exc:
        sys.exit(f"error: {exc}")
    print(f"results in {output_dir()}")


if __name__ == "__main__":
    main()
