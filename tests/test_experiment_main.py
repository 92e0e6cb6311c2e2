"""``crystaljax.config.experiment_main``: the shared Hydra glue of the experiments/ scripts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a stub experiment; the environment variable MODE picks what its run and report do
SCRIPT = '''
import os

from crystaljax.config import experiment_main
from crystaljax.errors import InputFileError

MODE = os.environ["MODE"]


def run(cfg, run_dir):
    if MODE == "fail":
        raise InputFileError("no such file: missing.cif\\nsecond line")
    return cfg.seed


main = experiment_main("table1", run, report=None if MODE == "default" else lambda seed, run_dir: print(seed + 1))

if __name__ == "__main__":
    main()
'''


@pytest.mark.parametrize("mode", ["fail", "default", "report"])
def test_errors_are_one_line_and_results_are_reported(tmp_path, mode):
    script = tmp_path / "my_experiment.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), f"hydra.run.dir={run_dir}", "seed=3"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**os.environ, "MODE": mode})
    if mode == "fail":  # a CrystalJaxError from run: its first line, exit status 1, no traceback
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip() == "error: no such file: missing.cif"
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = f"results in {run_dir}" if mode == "default" else "4"  # report(result = cfg.seed = 3) prints 4
    assert proc.stdout.strip().splitlines()[-1] == expected
    assert (run_dir / "my_experiment.log").exists()  # Hydra names the job after the script, as before
