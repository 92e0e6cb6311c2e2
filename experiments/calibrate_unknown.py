"""Calibrate the "unknown" verdict of a model and measure it on a held-out half built here.

    python experiments/calibrate_unknown.py model_dir=default unknown.per_class=10 unknown.per_kind=5 unknown.write=true
    python experiments/calibrate_unknown.py run=smoke

Hydra glue around ``crystaljax.analysis.calibrate_unknown.run`` (config: conf/calibrate_unknown.yaml, typed by
crystaljax.config.CalibrateUnknownConfig).  The last line printed is the JSON of the measurement.
"""

import json
import sys

from crystaljax.config import hydra_main, output_dir
from crystaljax.errors import CrystalJaxError


@hydra_main("calibrate_unknown")
def main(cfg) -> None:
    from crystaljax.analysis.calibrate_unknown import run

    try:
        result = run(cfg, output_dir())
    except CrystalJaxError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
