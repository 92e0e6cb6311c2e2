"""Table 1 of the paper: accuracy of the ConvNet and of spglib on defective structures.

    python experiments/table1.py                       # full size, shipped default model
    python experiments/table1.py run=smoke             # seconds
    python experiments/table1.py save_docs=true model_dir=PATH

Hydra glue around ``crystaljax.analysis.defect_sweeps.run`` (config: conf/table1.yaml, typed by crystaljax.config).
"""

from crystaljax.config import experiment_main


def run(cfg, run_dir):
    """``crystaljax.analysis.defect_sweeps.run``, imported when the job starts."""
    from crystaljax.analysis.defect_sweeps import run

    return run(cfg, run_dir)


main = experiment_main("table1", run)

if __name__ == "__main__":
    main()
