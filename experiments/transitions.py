"""Fig. 4 of the paper: the ConvNet along the bcc -> sc and rhombohedral transitions.

    python experiments/transitions.py                       # full size, shipped default model
    python experiments/transitions.py run=smoke             # seconds
    python experiments/transitions.py save_docs=true model_dir=PATH

Hydra glue around ``crystaljax.analysis.transitions.run`` (config: conf/transitions.yaml, typed by crystaljax.config).
"""

from crystaljax.config import experiment_main


def run(cfg, run_dir):
    """``crystaljax.analysis.transitions.run``, imported when the job starts."""
    from crystaljax.analysis.transitions import run

    return run(cfg, run_dir)


main = experiment_main("transitions", run)

if __name__ == "__main__":
    main()
