"""Fig. 5 of the paper: guided-backprop response maps and class templates, with a randomised-weights control.

    python experiments/attention.py                       # full size, shipped default model
    python experiments/attention.py run=smoke             # seconds
    python experiments/attention.py save_docs=true model_dir=PATH

Hydra glue around ``crystaljax.analysis.attention.run`` (config: conf/attention.yaml, typed by crystaljax.config).
"""

from crystaljax.config import experiment_main


def run(cfg, run_dir):
    """``crystaljax.analysis.attention.run``, imported when the job starts."""
    from crystaljax.analysis.attention import run

    return run(cfg, run_dir)


main = experiment_main("attention", run)

if __name__ == "__main__":
    main()
