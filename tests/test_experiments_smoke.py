"""Smoke runs of experiments/table1.py and experiments/transitions.py (subprocess, smoke=true, data=tiny,
a freshly initialised model, logger=none, Hydra run directory in tmp)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import optax

    from crystaljax.learn import checkpoint, train
    from crystaljax.learn.model import ModelConfig

    cfg = ModelConfig()
    _, state = train.init_state(cfg, optax.adam(1e-3), seed=0)
    return checkpoint.save(tmp_path_factory.mktemp("model"), state.params, state.batch_stats, cfg,
                           {"classes": ["untrained"]})


def run_entry(script: str, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, str(ROOT / "experiments" / script), "data=tiny", "smoke=true", "logger=none",
           "progress=false", f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_table1_smoke(tmp_path, model_dir):
    run_dir = tmp_path / "t1"
    run_entry("table1.py", run_dir, f"model_dir={model_dir}", f"augmented_model_dir={model_dir}")
    for name in ("table1.json", "table1_details.json", "table1.md", "table1.png", "config_resolved.yaml"):
        assert (run_dir / name).is_file(), name
    res = json.loads((run_dir / "table1.json").read_text())
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
    run_dir = tmp_path / "tr"
    run_entry("transitions.py", run_dir, f"model_dir={model_dir}")
    for name in ("transitions.json", "bcc_sc.png", "rhombohedral.png", "config_resolved.yaml"):
        assert (run_dir / name).is_file(), name
    res = json.loads((run_dir / "transitions.json").read_text())
    a = res["bcc_sc"]
    assert a["fractions_removed"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert len(a["p_bcc_mean"]) == len(a["p_sc_std"]) == 4
    assert all(0.0 <= p <= 1.0 for p in a["p_bcc_mean"] + a["p_sc_mean"])
    assert set(res["rhombohedral"]) == {"hexagonal", "primitive"}
    for setting, b in res["rhombohedral"].items():
        assert b["setting"] == setting
        assert len(b["mu"]) >= 24 and set(b["probabilities"]) == set(b["total_width"])
        assert set(b["special"]) == {"bcc", "sc", "fcc"}
        for entry in b["special"].values():
            assert entry["predicted"] in b["probabilities"] and entry["width"] >= 0.0
            assert entry["nearest_mu"] == pytest.approx(entry["mu"])  # the special points are on the grid
