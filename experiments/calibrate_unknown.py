"""Calibrate the "unknown" verdict of a model and measure it on a held-out half built here.

    python experiments/calibrate_unknown.py model_dir=default unknown.per_class=10 unknown.per_kind=5 unknown.write=true
    python experiments/calibrate_unknown.py run=smoke

Hydra glue around ``crystaljax.analysis.calibrate_unknown.run`` (config: conf/calibrate_unknown.yaml, typed by
crystaljax.config.CalibrateUnknownConfig).  The last line printed is the JSON of the measurement.
"""

import json

from crystaljax.config import experiment_main


def run(cfg, run_dir) -> dict:
    """``crystaljax.analysis.calibrate_unknown.run``, imported when the job starts."""
    from crystaljax.analysis.calibrate_unknown import run

    return run(cfg, run_dir)


main = experiment_main("calibrate_unknown", run, report=lambda result, run_dir: print(json.dumps(result)))

if __name__ == "__main__":
    main()
