"""Smoke runs of the Table 1 and Fig. 4 experiments through their library entry points
(``analysis.<name>.run`` with the composed ``run=smoke`` config, a freshly initialised model, tmp dirs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from flax import nnx

    from crystaljax.config import ModelConfig
    from crystaljax.learn import checkpoint
    from crystaljax.learn.model import build_model

    # the shipped architecture's input (64-pixel, 3-channel images) with few, small filters: the runs
    # exercise the wiring, not the network
    cfg = ModelConfig(filters=(4, 4, 4, 4, 4, 4), kernel=3, dense=8)
    _, params, rest = nnx.split(build_model(cfg, 0), nnx.Param, ...)
    return checkpoint.save(tmp_path_factory.mktemp("model"), nnx.to_pure_dict(params), nnx.to_pure_dict(rest), cfg,
                           {"classes": ["untrained"]})


def config(name: str, *overrides: str):
    from crystaljax.config import compose

    return compose(name, ["run=smoke", *overrides])


def test_table1_smoke(tmp_path, model_dir):
    from crystaljax.analysis import defect_sweeps

    run_dir = tmp_path / "t1"
    res = defect_sweeps.run(config("table1", f"model_dir={model_dir}", f"augmented_model_dir={model_dir}"), run_dir)
    for name in ("table1.json", "table1_details.json", "table1.md", "table1.png", "config_resolved.yaml"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "table1.json").read_text()) == json.loads(json.dumps(res))
    assert set(res) == {"convnet", "convnet_augmented", "spglib", "n_structures", "seeds"}
    assert res["n_structures"] == 7 and res["seeds"] == [0]
    assert set(res["convnet"]) >= {"displacement", "vacancies", "substitution"}
    assert list(res["convnet"]["vacancies"]) == ["0.01"]
    assert list(res["convnet"]["substitution"]) == ["ternary_0.25"]
    assert res["convnet"] == res["convnet_augmented"]  # the same weights on the same images
    assert list(res["spglib"]) == ["0.1", "0.01", "0.001", "1e-05"]
    assert all(res["spglib"][s]["pristine"] == 1.0 for s in res["spglib"])
    assert res["spglib"]["1e-05"]["vacancies"]["0.01"] == 0.0
    md = (run_dir / "table1.md").read_text()
    assert "| Pristine |" in md and "ConvNet (augmented)" in md


def test_transitions_smoke(tmp_path, model_dir):
    from crystaljax.analysis import transitions

    run_dir = tmp_path / "tr"
    res = transitions.run(config("transitions", f"model_dir={model_dir}"), run_dir)
    for name in ("transitions.json", "bcc_sc.png", "rhombohedral.png", "config_resolved.yaml"):
        assert (run_dir / name).is_file(), name
    a = res["bcc_sc"]
    assert a["fractions_removed"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert len(a["p_bcc_mean"]) == len(a["p_sc_std"]) == 4
    assert all(0.0 <= p <= 1.0 for p in a["p_bcc_mean"] + a["p_sc_mean"])
    assert set(res["rhombohedral"]) == {"hexagonal", "primitive"}
    for setting, b in res["rhombohedral"].items():
        assert b["setting"] == setting
        assert len(b["mu"]) >= 12 and set(b["probabilities"]) == set(b["total_width"])
        assert set(b["special"]) == {"bcc", "sc", "fcc"}
        for entry in b["special"].values():
            assert entry["predicted"] in b["probabilities"] and entry["width"] >= 0.0
            assert entry["nearest_mu"] == pytest.approx(entry["mu"])


@pytest.mark.slow
@pytest.mark.shipped_model
def test_calibrate_unknown_smoke(tmp_path):
    """The unknown-verdict calibration end to end at smoke sizes with the shipped model: thresholds fitted on the
    calibration half, both halves measured, features cached, nothing written next to the model."""
    from crystaljax.analysis import calibrate_unknown
    from crystaljax.learn.checkpoint import resolve_model_dir

    shipped = resolve_model_dir("default") / "unknown.json"
    before = shipped.read_bytes()
    res = calibrate_unknown.run(config("calibrate_unknown", f"unknown.cache_dir={tmp_path / 'cache'}"), tmp_path)
    assert json.loads((tmp_path / "unknown_calibration.json").read_text()) == json.loads(json.dumps(res))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3  # both halves and the distance gate's reference
    assert (tmp_path / "unknown_scores.png").stat().st_size > 10_000  # the held-out half's scores, plotted
    assert shipped.read_bytes() == before and "written" not in res
    th = res["thresholds"]
    assert 0.0 <= th["confidence"] <= 1.0 and th["mutual_information"] >= 0.0 and th["feature_distance"] > 0.0
    for half in ("calibration", "measurement"):
        n = res[half]["n"]
        assert n["in-class pristine"] > 0 and n["ordered compound"] > 0 and n["non-crystalline"] > 0
