"""The one typed config path: every YAML composes into the frozen schemas of crystaljax.config, and a
misspelled key, a wrong type or an out-of-range level fails at composition or conversion."""

import dataclasses
import shutil
import typing
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from crystaljax import config as C

CONF = Path(__file__).resolve().parents[1] / "conf"
OPTIONS = [(g, p.stem) for g in C.GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
ROOTS = {"config": C.TrainConfig, "make_dataset": C.MakeDatasetConfig, "table1": C.Table1Config,
         "transitions": C.TransitionsConfig, "attention": C.AttentionConfig, "sensitivity": C.SensitivityConfig,
         "calibrate_unknown": C.CalibrateUnknownConfig, "table1_file_path": C.Table1FilePathConfig}
RUNS = sorted(p.stem for p in (CONF / "run").glob("*.yaml"))


def _as_python(value):
    return tuple(value) if isinstance(value, list) else value


def test_the_conf_directory_is_the_one_the_library_uses():
    assert C.CONF_DIR == CONF
    assert set(ROOTS) == {p.stem for p in CONF.glob("*.yaml")} - {"sweep_wandb"}
    assert set(ROOTS.values()) == set(C.SCHEMAS.values())
    assert RUNS == ["full", "smoke"]


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_group_option_composes_into_its_schema(group, option):
    cfg = C.compose("config", [f"{group}={option}"])
    assert isinstance(cfg, C.TrainConfig)
    node = getattr(cfg, group)
    assert type(node) is C.GROUPS[group]
    hash(node)  # frozen, hashable: usable as a static argument
    # the option really was loaded: every literal value of its file reached the dataclass, every
    # field it leaves out keeps the schema default
    raw = OmegaConf.load(CONF / group / f"{option}.yaml")
    literal = {k: _as_python(OmegaConf.to_container(raw)[k]) for k in raw if not OmegaConf.is_interpolation(raw, k)}
    assert literal, "an option file sets something"
    for key, value in literal.items():
        assert getattr(node, key) == value, (key, getattr(node, key), value)
    default = C.GROUPS[group]()
    for f in dataclasses.fields(node):
        if f.name not in raw:
            assert getattr(node, f.name) == getattr(default, f.name), f.name
    if group == "detector":
        assert node == C.detector_preset(option)  # the YAML presets and the Python presets agree


@pytest.mark.parametrize("name", sorted(ROOTS))
@pytest.mark.parametrize("run", RUNS)
def test_every_root_config_and_run_option_converts(name, run):
    cfg = C.compose(name, [f"run={run}"])
    assert type(cfg) is ROOTS[name]
    assert cfg.smoke == (run == "smoke")
    assert cfg.model.image_size == cfg.detector.n_pixels
    nested = {k: t for k, t in typing.get_type_hints(ROOTS[name]).items() if dataclasses.is_dataclass(t)}
    assert {"detector", "beam", "fingerprint", "defect", "data", "model", "optim", "logger"} <= set(nested)
    for key, schema in nested.items():
        assert type(getattr(cfg, key)) is schema, key
    if run == "smoke":
        assert cfg.data.name == "tiny" and cfg.logger.name == "none" and not cfg.progress


def test_smoke_sizes_are_smaller_and_overrides_win():
    full, smoke = C.compose("table1"), C.compose("table1", ["run=smoke"])
    assert len(smoke.seeds) < len(full.seeds) and smoke.spglib.workers == 0
    for kind in ("displacement", "vacancies", "substitution"):
        assert len(getattr(smoke.levels, kind)) < len(getattr(full.levels, kind))
    assert C.compose("table1", ["run=smoke", "seeds=[3,4]", "progress=true"]).seeds == (3, 4)
    assert C.compose("table1", ["run=smoke", "progress=true"]).progress
    tr = C.compose("transitions", ["run=smoke"])
    assert tr.bcc_sc.steps < C.compose("transitions").bcc_sc.steps
    assert C.compose("attention", ["run=smoke"]).attention.target < C.compose("attention").attention.target
    assert C.compose("sensitivity", ["run=smoke"]).displacement.structures == ("bcc",)
    train = C.compose("config", ["run=smoke"])
    assert train.optim.epochs == 1 and train.data.per_class < C.compose("config").data.per_class


def test_interpolations_follow_their_source():
    cfg = C.compose("config", ["detector.n_pixels=32", "cluster_target=120", "seed=3"])
    assert cfg.model.image_size == 32 and cfg.detector.n_pixels == 32
    assert cfg.data.target == 120 and cfg.data.path.endswith("seed3.npz")
    assert C.compose("attention", ["cluster_target=90"]).attention.target == 90


def test_overrides_reach_the_dataclasses():
    cfg = C.compose("config", ["defect=vacancies", "defect.vacancy_fraction=0.4", "beam.wavelength=1e-11",
                               "optim.learning_rate=3e-4", "detector=ai4materials", "defect.substitution_elements=[13]"])
    assert cfg.defect.vacancy_fraction == 0.4 and cfg.beam.wavelength == 1e-11
    assert cfg.optim.learning_rate == 3e-4 and cfg.detector.outer_mask_radius == 30.0
    assert cfg.defect.substitution_elements == (13,)


@pytest.mark.parametrize("overrides", [
    ["detector.n_pixel=32"],        # misspelled key
    ["defect.vacancy_frac=0.1"],
    ["typo=1"],
    ["optim.epochs=abc"],           # wrong type
    ["seed=zero"],
    ["detector=paperr"],            # unknown group option
    ["run=smok"],
])
def test_a_misspelled_key_or_wrong_type_fails_at_composition(overrides):
    with pytest.raises(ConfigCompositionException):
        C.compose("config", overrides)


@pytest.mark.parametrize("name", ["table1", "transitions", "attention", "sensitivity"])
def test_an_experiment_key_is_checked_by_its_own_schema(name):
    assert C.compose(name, ["model_dir=x"]).model_dir == "x"
    with pytest.raises(ConfigCompositionException):
        C.compose(name, ["model_dirr=x"])
    with pytest.raises(ConfigCompositionException):
        C.compose("config", ["model_dir=x"])  # an analysis key is not a training key


def test_an_added_key_fails_at_conversion():
    cfg = C.compose("config", ["+detector.typo=1"], typed=False)  # '+' opens the struct flag in Hydra
    with pytest.raises(ValueError, match="typo"):
        C.to_typed(cfg)


def test_out_of_range_levels_fail_at_conversion():
    cfg = C.compose("config", ["defect=vacancies", "defect.vacancy_fraction=1.5"], typed=False)
    with pytest.raises(ValueError, match="vacancy_fraction"):
        C.to_typed(cfg)
    with pytest.raises(ValueError, match="substitution_elements"):
        C.compose("config", ["defect=substitution", "defect.substitution_elements=[]"])


def test_a_typo_in_a_yaml_file_fails(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "defect" / "typo.yaml").write_text("name: typo\nvacancy_fractoin: 0.2\n")
    C.register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="vacancy_fractoin"):
            hydra_compose("config", overrides=["defect=typo"])


def test_moved_schemas_are_the_same_classes_under_their_old_names():
    from crystaljax.learn import model, tracking, train
    from crystaljax.physics import defects
    from crystaljax.structures import dataset

    assert defects.DefectConfig is C.DefectConfig and model.ModelConfig is C.ModelConfig
    assert train.OptimConfig is C.OptimConfig and tracking.LoggerConfig is C.LoggerConfig
    assert dataset.DataConfig is C.DataConfig


def test_from_dict_is_lenient_for_cards_and_strict_for_defects():
    assert C.ModelConfig.from_dict({"filters": [32, 32, 16, 16, 8, 8], "unknown": 1}) == C.ModelConfig()
    assert C.ModelConfig.from_dict(C.ModelConfig(dense=64).to_dict()).dense == 64
    with pytest.raises(ValueError, match="unknown"):
        C.DefectConfig.from_dict({"vacancy_frac": 0.1})
