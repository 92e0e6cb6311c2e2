"""Table 1 through the real file path: defective supercells written to files, classified by `crystaljax classify`.

    python experiments/table1_file_path.py                  # full size (hours), shipped pristine + default models
    python experiments/table1_file_path.py run=smoke        # about a minute
    python experiments/table1_file_path.py save_docs=true   # docs/results/table1.json (+ internal_protocol)

Hydra glue around ``crystaljax.analysis.table1_file_path.run`` (config: conf/table1_file_path.yaml, typed by
crystaljax.config.Table1FilePathConfig).
"""

from crystaljax.config import experiment_main


def run(cfg, run_dir):
    """``crystaljax.analysis.table1_file_path.run``, imported when the job starts."""
    from crystaljax.analysis.table1_file_path import run

    return run(cfg, run_dir)


main = experiment_main("table1_file_path", run)

if __name__ == "__main__":
    main()
