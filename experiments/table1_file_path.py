"""Table 1 through the real file path: defective supercells written to files, classified by `crystaljax classify`.

    python experiments/table1_file_path.py                  # full size (hours), shipped pristine + default models
    python experiments/table1_file_path.py run=smoke        # about a minute
    python experiments/table1_file_path.py save_docs=true   # docs/results/table1.json (+ internal_protocol)

Hydra glue around ``crystaljax.analysis.table1_file_path.run`` (config: conf/table1_file_path.yaml, typed by
crystaljax.config.Table1FilePathConfig).
"""

import sys

from crystaljax.config import hydra_main, output_dir
from crystaljax.errors import CrystalJaxError


@hydra_main("table1_file_path")
def main(cfg) -> None:
    from crystaljax.analysis.table1_file_path import run

    try:
        run(cfg, output_dir())
    except CrystalJaxError as exc:
        sys.exit(f"error: {exc}")
    print(f"results in {output_dir()}")


if __name__ == "__main__":
    main()
