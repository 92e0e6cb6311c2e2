"""Experiments and reports built on a trained classifier: defect sweeps, transitions, explanations."""
