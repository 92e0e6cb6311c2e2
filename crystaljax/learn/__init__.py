"""The ConvNet, its training step and loop, checkpoints and the classifier."""
