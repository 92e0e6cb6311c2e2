"""Snapshot generator of the MD benchmark (benchmarks/bench_md_snapshots.py) on a 32-atom EMT Cu box: the
Langevin thermostat reaches the target temperature, thermal displacements grow with T as a harmonic crystal's
(MSD ~ T), and the melted control is liquid (it diffuses); cached snapshots are read back unchanged.  No map,
no OVITO run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_md_snapshots.py"
_spec = importlib.util.spec_from_file_location("bench_md_snapshots", _PATH)
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)

T_M = B.T_MELT_K["Cu"]


@pytest.fixture(scope="module")
def solids():
    return {f: B.run_md("Cu", 2, f * T_M, steps=120, seed=3) for f in (0.25, 0.75)}


def test_emt_lattice_constant_is_the_energy_minimum():
    a0 = B.emt_lattice_constant("Cu")
    assert 3.55 < a0 < 3.65  # EMT Cu ~3.59 Å, experiment 3.615 Å
    box = B.lattice_box("Cu", 2)
    from ase.calculators.emt import EMT

    box.calc = EMT()
    assert np.abs(box.get_stress()[:3]).max() < 1e-3  # eV/Å^3 (0.16 GPa): zero pressure at a0


def test_thermostat_reaches_the_target_temperature(solids):
    for f, a in solids.items():
        # 32 atoms: instantaneous T fluctuates by sqrt(2 / 93) ~ 15 %; the mean over 60 steps is well within 25 %
        assert abs(a.info["T_kinetic_K"] / (f * T_M) - 1) < 0.25, (f, a.info["T_kinetic_K"])


def test_displacements_grow_with_temperature_like_a_harmonic_crystal(solids):
    cold, hot = solids[0.25].info["msd_A2"], solids[0.75].info["msd_A2"]
    assert 0 < cold < hot
    assert 2.0 < hot / cold < 4.5  # harmonic: 3 (2.9-3.3 over seeds 0-4); a 32-atom snapshot is noisy
    assert solids[0.75].info["lindemann"] < 0.15  # still a crystal (Lindemann criterion)


def test_melted_control_is_liquid(solids):
    """Melted at 3 T_m, then held at T_m for 0.5 ps: atoms left their sites and still diffuse (a crystal's
    displacement over the same time is its vibration, ~0.05 Å^2 at 0.75 T_m)."""
    liquid = B.run_md("Cu", 2, T_M, steps=100, seed=4, melt_K=B.MELT_FRACTION * T_M, melt_steps=300)
    assert liquid.info["lindemann"] > 0.25 > 0.15 > solids[0.75].info["lindemann"]
    assert liquid.info["hold_msd_A2"] > 0.3 > 4 * solids[0.75].info["hold_msd_A2"]


def test_snapshots_are_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "FRACTIONS", (1.0,))  # label "1": extxyz reads it back as an int
    first = B.snapshots("Cu", 2, steps=10, melt_steps=10, seed=1, out_dir=tmp_path)
    cached = list(tmp_path.glob("snapshots_Cu_*.extxyz"))
    assert len(cached) == 1 and [a.info["label"] for a in first] == ["1", "liquid"]
    again = B.snapshots("Cu", 2, steps=10, melt_steps=10, seed=1, out_dir=tmp_path)
    assert [a.info["label"] for a in again] == ["1", "liquid"]
    for a, b in zip(first, again):
        assert np.allclose(a.positions, b.positions) and a.info["T_kinetic_K"] == pytest.approx(b.info["T_kinetic_K"])
