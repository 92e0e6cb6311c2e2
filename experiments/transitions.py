"""Fig. 4 of the paper: the ConvNet along the bcc -> sc and rhombohedral transitions.

    python experiments/transitions.py                       # full size, shipped default model
    python experiments/transitions.py run=smoke             # seconds
    python experiments/transitions.py save_docs=true model_dir=PATH

Hydra glue around ``crystaljax.analysis.transitions.run`` (config: conf/transitions.yaml, typed by crystaljax.config).
"""

import sys

from crystaljax.config import hydra_main, output_dir
from crystaljax.errors import CrystalJaxError


@hydra_main("transitions")
def main(cfg) -> None:
    from crystaljax.analysis.transitions import run

    try:
        run(cfg, output_dir())
    except CrystalJaxError as exc:
        sys.exit(f"error: {exc}")
    print(f"results in {output_dir()}")


if __name__ == "__main__":
    main()
