"""Table 1 of the paper: accuracy of the ConvNet and of spglib on defective structures.

    python experiments/table1.py                       # full size, shipped default model
    python experiments/table1.py run=smoke             # seconds
    python experiments/table1.py save_docs=true model_dir=PATH

Hydra glue around ``crystaljax.analysis.defect_sweeps.run`` (config: conf/table1.yaml, typed by crystaljax.config).
"""

import sys

from crystaljax.config import hydra_main, output_dir
from crystaljax.errors import CrystalJaxError


@hydra_main("table1")
def main(cfg) -> None:
    from crystaljax.analysis.defect_sweeps import run

    try:
        run(cfg, output_dir())
    except CrystalJaxError as exc:
        sys.exit(f"error: {exc}")
    print(f"results in {output_dir()}")


if __name__ == "__main__":
    main()
