"""Every Hydra config composes and converts into the typed schemas the library takes."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from crystaljax.config import BeamConfig, DetectorConfig, FingerprintConfig, detector_preset, from_dict, to_container
from crystaljax.structures.dataset import DataConfig
from crystaljax.physics.defects import DefectConfig
from crystaljax.learn.model import ModelConfig
from crystaljax.learn.tracking import LoggerConfig
from crystaljax.learn.train import OptimConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["detector", "beam", "defect", "data", "model", "optim", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def _typed(cfg):
    return {
        "detector": from_dict(DetectorConfig, to_container(cfg.detector)),
        "beam": from_dict(BeamConfig, to_container(cfg.beam)),
        "fingerprint": from_dict(FingerprintConfig, to_container(cfg.fingerprint)),
        "defect": DefectConfig.from_dict(to_container(cfg.defect)),
        "data": from_dict(DataConfig, to_container(cfg.data)),
        "model": ModelConfig.from_dict(to_container(cfg.model)),
        "optim": OptimConfig.from_dict(to_container(cfg.optim)),
        "logger": from_dict(LoggerConfig, to_container(cfg.logger)),
    }


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_group_option_composes_and_converts(group, option):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"{group}={option}"])
    typed = _typed(cfg)
    assert cfg[group].get("name", option) == option or group in ("beam",)
    if group == "detector":
        assert typed["detector"] == detector_preset(option)


def test_option_overrides_reach_the_dataclasses():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["defect=vacancies", "defect.vacancy_fraction=0.4", "beam.wavelength=1e-11",
                                           "optim.learning_rate=3e-4", "detector=ai4materials"])
    typed = _typed(cfg)
    assert typed["defect"].vacancy_fraction == 0.4 and typed["beam"].wavelength == 1e-11
    assert typed["optim"].learning_rate == 3e-4 and typed["detector"].outer_mask_radius == 30.0
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        bad = compose("config", overrides=["defect=vacancies", "defect.vacancy_fraction=1.5"])
    with pytest.raises(ValueError, match="vacancy_fraction"):
        _typed(bad)


@pytest.mark.parametrize("name", ["table1", "transitions", "attention", "sensitivity"])
def test_experiment_root_configs_compose(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name)
    assert "detector" in cfg and "seed" in cfg and _typed(cfg)
