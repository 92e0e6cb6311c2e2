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

from crystaljax.config import hydra_main, output_dir
from crystaljax.errors import CrystalJaxError


@hydra_main("config")
def main(cfg) -> float | None:
    from crystaljax.learn.experiment import train_and_evaluate

    command = "python experiments/train.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        metrics = train_and_evaluate(cfg, output_dir(), command=command)
    except CrystalJaxError as exc:
        sys.exit(f"error: {exc}")
    accuracy = {s: metrics[s]["accuracy"] for s in ("val", "test") if s in metrics}
    print(json.dumps({"run_dir": str(output_dir()), "accuracy": accuracy, "steps": metrics["steps"]}))
    return accuracy.get("val", accuracy.get("test"))  # what a Hydra sweeper optimises


if __name__ == "__main__":
    main()
