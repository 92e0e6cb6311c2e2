"""Train the ConvNet (Hydra glue around ``crystaljax.learn.experiment.train_and_evaluate``).

    python experiments/train.py                                   # paper settings, data=aflow_like
    python experiments/train.py run=smoke                         # tiny generated data set, one epoch
    python experiments/train.py defect=mixed logger=wandb         # augmentation, offline W&B run
    python experiments/train.py export_to=crystaljax/pretrained/default   # also write the shippable model
    python experiments/train.py -m optim.learning_rate=3e-4,1e-3 defect=none,mixed   # multirun

Artefacts go to the Hydra run directory; re-running with ``hydra.run.dir=<that dir>`` resumes.
Paths in the config are relative to the launch directory.
"""

import json
import shlex
import sys

from crystaljax.config import experiment_main


def run(cfg, run_dir) -> dict:
    """``crystaljax.learn.experiment.train_and_evaluate`` with the command line recorded; the metrics."""
    from crystaljax.learn.experiment import train_and_evaluate

    command = "python experiments/train.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return train_and_evaluate(cfg, run_dir, command=command)


def report(metrics: dict, run_dir) -> float | None:
    """Print one JSON line (run directory, accuracies, steps); return the val accuracy (else the test
    accuracy), what a Hydra sweeper optimises."""
    accuracy = {s: metrics[s]["accuracy"] for s in ("val", "test") if s in metrics}
    print(json.dumps({"run_dir": str(run_dir), "accuracy": accuracy, "steps": metrics["steps"]}))
    return accuracy.get("val", accuracy.get("test"))


main = experiment_main("config", run, report=report)

if __name__ == "__main__":
    main()
