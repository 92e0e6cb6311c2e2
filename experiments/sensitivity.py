"""Gradient probing of structure -> fingerprint -> ConvNet: per-atom saliency and fingerprint sensitivity.

    python experiments/sensitivity.py                       # full size, shipped default model
    python experiments/sensitivity.py run=smoke             # seconds
    python experiments/sensitivity.py save_docs=true model_dir=PATH

Hydra glue around ``crystaljax.analysis.saliency.run`` (config: conf/sensitivity.yaml, typed by crystaljax.config).
"""

from crystaljax.config import experiment_main


def run(cfg, run_dir):
    """``crystaljax.analysis.saliency.run``, imported when the job starts."""
    from crystaljax.analysis.saliency import run

    return run(cfg, run_dir)


main = experiment_main("sensitivity", run)

if __name__ == "__main__":
    main()
