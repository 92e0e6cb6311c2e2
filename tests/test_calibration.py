"""Calibration metrics (reliability bins, expected calibration error) against hand-computed values."""

import numpy as np
import pytest

from crystaljax.learn import evaluate


def test_ece_hand_example():
    # confidences 0.9, 0.8 | 0.6, 0.7, 0.75 (0.75 sits on an edge: bins are (lo, hi], so it joins (0.5, 0.75])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.25, 0.75]])
    labels = np.array([0, 0, 0, 1, 1])  # correct: yes, no, yes, yes, yes
    bins = evaluate.reliability_bins(probs, labels, n_bins=4)
    np.testing.assert_array_equal(bins["count"], [0, 0, 3, 2])
    np.testing.assert_allclose(bins["accuracy"][2:], [1.0, 0.5])
    np.testing.assert_allclose(bins["confidence"][2:], [(0.6 + 0.7 + 0.75) / 3, 0.85])
    assert np.isnan(bins["accuracy"][:2]).all()
    # (3/5) |1 - 0.68333| + (2/5) |0.5 - 0.85| = 0.19 + 0.14
    assert evaluate.expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.33)


def test_ece_limits():
    rng = np.random.default_rng(0)
    # calibrated by construction: a row with confidence c is right with probability c
    conf = rng.uniform(0.5, 1.0, 200_000)
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.where(rng.uniform(size=conf.size) < conf, 0, 1)
    assert evaluate.expected_calibration_error(probs, labels) < 0.01
    # confidently wrong everywhere: ECE = mean confidence
    assert evaluate.expected_calibration_error(probs, 1 - probs.argmax(1)) == pytest.approx(conf.mean())
    # one bin: |accuracy - mean confidence|
    assert evaluate.expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(
        abs(np.mean(labels == 0) - conf.mean()))
    with pytest.raises(ValueError):
        evaluate.reliability_bins(probs, labels[:3])


def test_reliability_plot(tmp_path):
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    bins = evaluate.reliability_bins(probs, [0, 0, 0], n_bins=5)
    path = evaluate.plot_reliability({"model": bins}, tmp_path / "rel.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
