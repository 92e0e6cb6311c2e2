"""Typed, frozen configuration schemas: the one place every setting is declared.

Group schemas (one per ``conf/<group>/``): :class:`DetectorConfig`, :class:`BeamConfig`,
:class:`FingerprintConfig`, :class:`DefectConfig`, :class:`DataConfig`, :class:`ModelConfig`,
:class:`OptimConfig`, :class:`LoggerConfig`.  Root schemas (one per entry point):
:class:`TrainConfig`, :class:`MakeDatasetConfig`, :class:`Table1Config`, :class:`TransitionsConfig`,
:class:`AttentionConfig`, :class:`SensitivityConfig`.

:func:`register_configs` stores the root schemas in Hydra's ConfigStore as the ``schema`` group
(package ``_global_``); every root YAML starts its defaults list with ``schema: <name>``, so a
misspelled key in a YAML file or an override fails at composition.  :func:`to_typed` converts a
composed config into the frozen dataclasses with ``OmegaConf.to_object`` (which runs the
validation in ``__post_init__``).  An entry point is :func:`experiment_main` on a ``run(cfg, run_dir)``::

    def run(cfg: Table1Config, run_dir: Path):
        from crystaljax.analysis.defect_sweeps import run
        return run(cfg, run_dir)

    main = experiment_main("table1", run)

This module is the lowest layer: it imports nothing from crystaljax, and Hydra/OmegaConf only
inside functions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
MAX_Z = 96


def _tuples(obj, *names: str) -> None:
    """Freeze list-valued fields of a frozen dataclass into tuples (Hydra hands over lists)."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and not isinstance(value, tuple):
            object.__setattr__(obj, name, tuple(value))


# --------------------------------------------------------------------------------------------
# physics


@dataclass(frozen=True)
class DetectorConfig:
    """Flat square detector normal to the beam (+z), centred on it.

    n_pixels: pixels per side.  pixel_size: metres.  distance: sample-detector distance, metres.
    inner_mask_radius / outer_mask_radius: pixels from the image centre; intensity is zeroed for
    r <= inner and (if set) r >= outer.
    """

    name: str = "paper"
    n_pixels: int = 64
    pixel_size: float = 4.0e-4
    distance: float = 0.1
    inner_mask_radius: float = 5.0
    outer_mask_radius: float | None = None


@dataclass(frozen=True)
class BeamConfig:
    """Incident plane wave along +z.  wavelength in metres."""

    wavelength: float = 5.0e-12


@dataclass(frozen=True)
class FingerprintConfig:
    """How the three RGB channels are made.

    angle: rotation angle in degrees; each channel is I(+angle) + I(-angle) about x, y, z.
    z_shift: added to Z before the form factor is looked up (the paper uses +2: H -> Li).
    unroll: atoms per unrolled step of the scan over atoms (a speed knob; results are identical).
    """

    angle: float = 45.0
    z_shift: int = 2
    unroll: int = 16


DETECTOR_PRESETS: dict[str, DetectorConfig] = {
    "paper": DetectorConfig(),
    "ai4materials": DetectorConfig(name="ai4materials", inner_mask_radius=10.0, outer_mask_radius=30.0),
}


def detector_preset(name: str) -> DetectorConfig:
    """The named detector preset ('paper' or 'ai4materials')."""
    try:
        return DETECTOR_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTOR_PRESETS)}") from None


def is_tracer(x) -> bool:
    """True for a traced JAX value (without importing JAX: no tracer exists before JAX is imported)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.core.Tracer)


def is_static_zero(x) -> bool:
    """True for a concrete (non-traced) level equal to 0."""
    if is_tracer(x):
        return False
    try:
        return float(x) == 0.0
    except (TypeError, ValueError):
        return False


def _is_bool(x) -> bool:
    return type(x).__name__ in ("bool", "bool_")


def _is_int(x) -> bool:
    return not _is_bool(x) and hasattr(x, "__index__")


def check_number(name: str, value, lo: float, hi: float, hi_inclusive: bool):
    """Validate a concrete level in [lo, hi) or [lo, hi]; tracers pass through unchecked."""
    if is_tracer(value):
        return value
    if _is_bool(value) or isinstance(value, str):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = lo <= v <= hi if hi_inclusive else lo <= v < hi
    if not ok:
        bracket = "]" if hi_inclusive else ")"
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}{bracket}, got {value!r}")
    return v


def check_elements(value) -> tuple[int, ...]:
    """Atomic numbers (1..MAX_Z, no repeats) as a tuple of ints."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"substitution_elements must be a list of atomic numbers, got {value!r}")
    out = []
    for e in value:
        if _is_bool(e) or not (_is_int(e) or isinstance(e, float) or type(e).__name__.startswith("float")):
            raise ValueError(f"substitution_elements must hold atomic numbers, got {value!r}")
        if float(e) != int(e) or not 1 <= int(e) <= MAX_Z:
            raise ValueError(f"substitution_elements must hold atomic numbers in 1..{MAX_Z}, got {value!r}")
        out.append(int(e))
    if len(set(out)) != len(out):
        raise ValueError(f"substitution_elements has repeated elements: {value!r}")
    return tuple(out)


@dataclass(frozen=True)
class DefectConfig:
    """Which defects to apply, and how strongly (all levels 0 = pristine).

    displacement_sigma:    std of the Gaussian displacement of each Cartesian component, Å of the
                           PHYSICAL structure (divided by ``structure.nn_distance`` on device); with
                           ``displacement_relative=True`` a fraction of the nearest-neighbour distance.
    vacancy_fraction:      fraction in [0, 1) of the present atoms turned into vacancies.
    substitution_fraction: fraction in [0, 1) of the present atoms given a new species.
    substitution_elements: atomic numbers (1..96) of the substituting species; 1 -> binary,
                           2 -> ternary alloy; each substituted atom picks one of those different
                           from its own species.
    sublattice_fraction:   fraction in [0, 1] of the present atoms with ``tags == sublattice_tag``
                           removed (1.0 on the bcc body centres gives sc).
    random_levels:         every call draws each non-zero level uniformly in [0, level] (augmentation).
    renormalize:           rescale the defective cluster to unit mean nearest-neighbour distance.
    scale_jitter:          half-width j in [0, 0.5) of a random relative error of the length scale: every
                           call multiplies the scaled positions by exp(U(-j, j)), last (after
                           ``renormalize``).  Not a defect: it stands for the scale estimator's error on a
                           defective file, so a model trained on pristine structures tolerates it.

    Levels may also be traced JAX scalars (not validated here; ``apply_defects`` clips fractions).
    """

    name: str = "none"
    displacement_sigma: float = 0.0
    displacement_relative: bool = False
    vacancy_fraction: float = 0.0
    substitution_fraction: float = 0.0
    substitution_elements: tuple[int, ...] = ()
    sublattice_fraction: float = 0.0
    sublattice_tag: int = 1
    random_levels: bool = False
    renormalize: bool = False
    scale_jitter: float = 0.0

    @property
    def is_identity(self) -> bool:
        """True when applying this config changes nothing (every level and the scale jitter are 0)."""
        return (self.displacement_sigma == 0 and self.vacancy_fraction == 0 and self.substitution_fraction == 0
                and self.sublattice_fraction == 0 and self.scale_jitter == 0)

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("displacement_sigma", check_number("displacement_sigma", self.displacement_sigma, 0.0, math.inf, True))
        put("vacancy_fraction", check_number("vacancy_fraction", self.vacancy_fraction, 0.0, 1.0, False))
        put("substitution_fraction",
            check_number("substitution_fraction", self.substitution_fraction, 0.0, 1.0, False))
        put("sublattice_fraction", check_number("sublattice_fraction", self.sublattice_fraction, 0.0, 1.0, True))
        put("scale_jitter", check_number("scale_jitter", self.scale_jitter, 0.0, 0.5, False))
        for flag in ("displacement_relative", "random_levels", "renormalize"):
            if not _is_bool(getattr(self, flag)):
                raise ValueError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
            put(flag, bool(getattr(self, flag)))
        if not _is_int(self.sublattice_tag):
            raise ValueError(f"sublattice_tag must be an integer, got {self.sublattice_tag!r}")
        put("sublattice_tag", int(self.sublattice_tag))
        put("substitution_elements", check_elements(self.substitution_elements))
        if not self.substitution_elements and not is_static_zero(self.substitution_fraction):
            raise ValueError(
                f"substitution_elements is empty but substitution_fraction={self.substitution_fraction!r}; "
                "list the substituting atomic numbers, e.g. [29, 47]"
            )
        put("name", str(self.name))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "DefectConfig":
        """Build from a mapping (e.g. a model card); unknown keys are an error."""
        return from_dict(cls, values, strict=True)


# --------------------------------------------------------------------------------------------
# data, model, optimiser, tracking


@dataclass(frozen=True)
class DataConfig:
    """The ``data`` group: the AFLOW-like data set (``crystaljax.structures.dataset.generate``).

    per_class: structures per class.  splits: (train, val, test) or (train, test) fractions.
    elements: symbols, or None for the default 83.  target: cluster size (atoms).  path: .npz file,
    relative to the launch directory.  workers: processes for the spglib checks and cluster building.
    held_out_elements: 0 = the stratified split stored in the file; a fraction in (0, 1) = re-split at load
    time so that every structure of that fraction of the elements is "test" (generalisation to unseen
    chemistry, ``crystaljax.structures.dataset.element_split``).
    """

    name: str = "aflow_like"
    per_class: int = 1500
    splits: tuple[float, ...] = (0.8, 0.1, 0.1)
    elements: tuple[str, ...] | None = None
    target: int = 250
    path: str = "data/generated/aflow_like_seed0.npz"
    workers: int = 2
    held_out_elements: float = 0.0

    def __post_init__(self):
        _tuples(self, "splits", "elements")
        object.__setattr__(self, "held_out_elements",
                           check_number("held_out_elements", self.held_out_elements, 0.0, 1.0, False))


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the ConvNet.

    filters: output channels of the six 'same' convolutions; a 2x2 max-pool follows the 2nd and 4th.
    kernel: square kernel size.  dense: width of the hidden dense layer.  dropout: rate before flatten.
    image_size / channels: input image shape (H = W = image_size; the YAML ties it to detector.n_pixels).
    bn_momentum / bn_epsilon: batch norm running-average momentum and variance epsilon
    (Keras defaults 0.99 / 1e-3, as in the reference implementation).
    """

    name: str = "convnet"
    n_classes: int = 7
    filters: tuple[int, ...] = (32, 32, 16, 16, 8, 8)
    kernel: int = 7
    dense: int = 128
    dropout: float = 0.25
    image_size: int = 64
    channels: int = 3
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3

    def __post_init__(self):
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "ModelConfig":
        """Build from a mapping (e.g. a model card), ignoring unknown keys."""
        return from_dict(cls, values)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["filters"] = list(self.filters)
        return d


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule.  name: "adam" | "adamw" | "sgd" (momentum 0.9).

    weight_decay > 0 with adam uses decoupled decay (adamw).  epochs: passes over the train split.
    batch_size / eval_batch_size: structures per training step / per val-test prediction call.
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 5
    weight_decay: float = 0.0
    eval_batch_size: int = 64

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "OptimConfig":
        return from_dict(cls, values)


@dataclass(frozen=True)
class LoggerConfig:
    """name: "none" | "wandb".  mode: "offline" | "disabled" | "online" (wandb only).
    project / entity / group / tags / run_name: passed to ``wandb.init``; dir: where wandb writes
    (None: the run directory)."""

    name: str = "none"
    mode: str = "offline"
    project: str = "crystaljax"
    entity: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    run_name: str | None = None
    dir: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "tags", tuple(self.tags or ()))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "LoggerConfig":
        return from_dict(cls, values)


# --------------------------------------------------------------------------------------------
# root schemas, one per entry point


@dataclass(frozen=True)
class ExperimentConfig:
    """Keys every root config has (conf/config.yaml and the groups).

    cluster_target: cluster size in atoms.  progress: progress bars.  smoke: tiny sizes (set by
    ``run=smoke``; experiment-specific sizes live in ``conf/run/<experiment>/smoke.yaml``).
    """

    seed: int = 0
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    fingerprint: FingerprintConfig = field(default_factory=FingerprintConfig)
    defect: DefectConfig = field(default_factory=DefectConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    cluster_target: int = 250
    progress: bool = True
    smoke: bool = False


@dataclass(frozen=True)
class TrainConfig(ExperimentConfig):
    """experiments/train.py.  export_to: directory for the shippable model (None: none).
    checkpoint: Orbax checkpoints each epoch in the run directory (a re-run resumes)."""

    export_to: str | None = None
    checkpoint: bool = True


@dataclass(frozen=True)
class MakeDatasetConfig(ExperimentConfig):
    """experiments/make_dataset.py: writes ``data.path`` (+ summary JSON and resolved config)."""


@dataclass(frozen=True)
class AnalysisConfig(ExperimentConfig):
    """Keys shared by the analysis experiments.

    model_dir: a saved model directory (None: the shipped default).  batch_size: structures per
    device call.  save_docs: also write into ``docs_dir`` (relative to the launch directory).
    out_dir: explicit output directory (overrides save_docs; None: the Hydra run directory).
    """

    model_dir: str | None = None
    batch_size: int = 32
    save_docs: bool = False
    docs_dir: str = "docs/results"
    out_dir: str | None = None


@dataclass(frozen=True)
class Table1Levels:
    """Defect levels of Table 1: sigma (physical Å), vacancy fraction, ``binary_f`` / ``ternary_f``."""

    displacement: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1)
    vacancies: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
    substitution: tuple[str, ...] = ("binary_0.1", "binary_0.25", "binary_0.5",
                                     "ternary_0.1", "ternary_0.25", "ternary_0.5")

    def __post_init__(self):
        _tuples(self, "displacement", "vacancies", "substitution")


@dataclass(frozen=True)
class Table1Spglib:
    """The spglib baseline of Table 1: symprecs in Å; structures per class / in all (None: no cap);
    seeds (None: the ConvNet's); worker processes (0: inline); supercell size in atoms."""

    enabled: bool = True
    symprecs: tuple[float, ...] = (0.1, 0.01, 0.001, 0.00001)
    n_per_class: int | None = 30
    n_structures: int | None = None
    seeds: tuple[int, ...] | None = None
    workers: int = 2
    target: int = 250

    def __post_init__(self):
        _tuples(self, "symprecs", "seeds")


@dataclass(frozen=True)
class Table1Config(AnalysisConfig):
    """experiments/table1.py: accuracy under defects, ConvNet vs spglib.

    augmented_model_dir: a second model -> column "ConvNet (augmented)".  split: structures evaluated.
    n_structures / n_per_class: caps (stratified over classes; None: the whole split).
    seeds: one defect draw per structure and seed.  renormalize: rescale defective clusters to unit
    mean nn distance before imaging.
    """

    augmented_model_dir: str | None = None
    split: str = "test"
    n_structures: int | None = None
    n_per_class: int | None = None
    seeds: tuple[int, ...] = (0, 1)
    renormalize: bool = False
    levels: Table1Levels = field(default_factory=Table1Levels)
    spglib: Table1Spglib = field(default_factory=Table1Spglib)

    def __post_init__(self):
        _tuples(self, "seeds")


@dataclass(frozen=True)
class Table1FilePathConfig(ExperimentConfig):
    """experiments/table1_file_path.py: Table 1 through files and ``crystaljax classify``.

    per_class: pristine prototype crystals per class (drawn with ``seed``), each a periodic supercell of ~``target``
    atoms.  seeds: one defect draw per structure and seed.  models: result column -> shipped model name or model
    directory (relative to the launch directory), classified by the CLI.  binary_elements / ternary_elements:
    atomic numbers the new species of a ``binary_f`` (one) / ``ternary_f`` (two) level are drawn from.
    mc_samples / classify_batch: the CLI's ``--mc-samples`` / ``--batch`` (None: its defaults).  spglib: symprecs,
    structures per class, seeds and worker processes (``target`` unused: spglib reads the written supercells).
    internal_from: table1.json of the internal protocol (relative to the launch directory), kept under
    ``internal_protocol``.  keep_files: directory to keep the written structure files in (None: a temporary one).
    """

    per_class: int = 50
    target: int = 250
    seeds: tuple[int, ...] = (0, 1)
    models: dict[str, str] = field(default_factory=lambda: {"convnet": "pristine", "convnet_augmented": "default"})
    levels: Table1Levels = field(default_factory=Table1Levels)
    binary_elements: tuple[int, ...] = (29, 47)
    ternary_elements: tuple[int, ...] = (29, 47, 79)
    mc_samples: int | None = None
    classify_batch: int | None = None
    spglib: Table1Spglib = field(default_factory=Table1Spglib)
    internal_from: str = "docs/results/table1.json"
    keep_files: str | None = None
    save_docs: bool = False
    docs_dir: str = "docs/results"
    out_dir: str | None = None

    def __post_init__(self):
        _tuples(self, "seeds")
        object.__setattr__(self, "binary_elements", check_elements(self.binary_elements))
        object.__setattr__(self, "ternary_elements", check_elements(self.ternary_elements))
        object.__setattr__(self, "models", dict(self.models))


@dataclass(frozen=True)
class BccScConfig:
    """Fig. 4a, bcc -> sc.  source: test | all | prototypes; caps on bcc structures; prototype
    elements to top up with; steps: fractions 0, 1/steps, ..., 1; removal draws per step (seeds);
    renormalize after removal."""

    source: str = "test"
    n_structures: int | None = None
    min_structures: int = 8
    elements: tuple[str, ...] = ("Li", "Na", "K", "V", "Cr", "Fe", "Nb", "Mo", "Ta", "W")
    steps: int = 10
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    renormalize: bool = True

    def __post_init__(self):
        _tuples(self, "elements", "seeds")


@dataclass(frozen=True)
class RhombohedralConfig:
    """Fig. 4b, A_hR1_166_a along mu = c/a: element, grid points, range (None: sqrt(3/8) and
    5 sqrt(3/8)), cell settings handed to the pipeline (hexagonal | primitive)."""

    element: str = "Po"
    n_points: int = 241
    mu_min: float | None = None
    mu_max: float | None = None
    settings: tuple[str, ...] = ("hexagonal", "primitive")

    def __post_init__(self):
        _tuples(self, "settings")


@dataclass(frozen=True)
class TransitionsConfig(AnalysisConfig):
    """experiments/transitions.py: Fig. 4."""

    bcc_sc: BccScConfig = field(default_factory=BccScConfig)
    rhombohedral: RhombohedralConfig = field(default_factory=RhombohedralConfig)


@dataclass(frozen=True)
class AttentionOptions:
    """Fig. 5.  classes (None: all); 0-based conv layers; top_k filters per layer ranked by
    select (mean | max); backward rule (guided | deconvnet | gradient); keep (map | max);
    structures per class template; cluster size (atoms); peak threshold (fraction of max)."""

    classes: tuple[str, ...] | None = None
    layers: tuple[int, ...] = (0, 2, 5)
    top_k: int = 4
    select: str = "mean"
    rule: str = "guided"
    keep: str = "map"
    n_per_class: int = 4
    target: int = 250
    peak_threshold: float = 0.1

    def __post_init__(self):
        _tuples(self, "classes", "layers")


@dataclass(frozen=True)
class AttentionConfig(AnalysisConfig):
    """experiments/attention.py: attentive response maps and class templates."""

    docs_dir: str = "docs/figures"
    attention: AttentionOptions = field(default_factory=AttentionOptions)


@dataclass(frozen=True)
class SublatticeOptions:
    """Sensitivity (a): ``prototype``/``element`` with growing fractions of tag-1 atoms removed;
    saliency of each class in ``classes`` w.r.t. output (probability | logit); cluster size."""

    prototype: str = "A_cI2_229_a"
    element: str = "W"
    fractions: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
    classes: tuple[str, ...] = ("bcc", "sc")
    output: str = "probability"
    target: int = 250

    def __post_init__(self):
        _tuples(self, "fractions", "classes")


@dataclass(frozen=True)
class DisplacementOptions:
    """Sensitivity (b): per-atom ||d fingerprint / d x_j|| vs Gaussian sigma (physical Å);
    draws per sigma; method exact | hutchinson (n_probes random probes); cluster size."""

    structures: tuple[str, ...] = ("bcc", "fcc", "sc")
    sigmas: tuple[float, ...] = (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1)
    n_samples: int = 2
    method: str = "exact"
    n_probes: int = 32
    target: int = 250

    def __post_init__(self):
        _tuples(self, "structures", "sigmas")


@dataclass(frozen=True)
class SensitivityConfig(AnalysisConfig):
    """experiments/sensitivity.py: gradient probing of structure -> fingerprint -> ConvNet."""

    docs_dir: str = "docs/figures"
    sublattice: SublatticeOptions = field(default_factory=SublatticeOptions)
    displacement: DisplacementOptions = field(default_factory=DisplacementOptions)


@dataclass(frozen=True)
class UnknownOptions:
    """Calibration of the unknown verdict: in-class structures per class and out-of-scope structures per kind in
    each half; MC-dropout passes; cache_dir: where the features of both halves are cached (relative to the launch
    directory); write: store the thresholds as ``<model dir>/unknown.json`` (and the distance gate's reference as
    ``unknown_embedding.npz``); reference_per_class: in-class structures per class (pristine and defective, a third
    seed) whose embeddings define the distance gate's class means and covariance."""

    per_class: int = 12
    per_kind: int = 6
    mc_samples: int = 16
    reference_per_class: int = 100
    cache_dir: str = "runs"
    write: bool = False


@dataclass(frozen=True)
class CalibrateUnknownConfig(AnalysisConfig):
    """experiments/calibrate_unknown.py: fit the unknown verdict's thresholds on data built here, measure them on a
    held-out half."""

    unknown: UnknownOptions = field(default_factory=UnknownOptions)


SCHEMAS: dict[str, type] = {
    "train": TrainConfig,
    "make_dataset": MakeDatasetConfig,
    "table1": Table1Config,
    "table1_file_path": Table1FilePathConfig,
    "transitions": TransitionsConfig,
    "attention": AttentionConfig,
    "sensitivity": SensitivityConfig,
    "calibrate_unknown": CalibrateUnknownConfig,
}

GROUPS: dict[str, type] = {
    "detector": DetectorConfig, "beam": BeamConfig, "defect": DefectConfig, "data": DataConfig,
    "model": ModelConfig, "optim": OptimConfig, "logger": LoggerConfig,
}


# --------------------------------------------------------------------------------------------
# conversion and Hydra glue


def from_dict(cls, values: Mapping[str, Any] | None, strict: bool = False):
    """Build dataclass ``cls`` from a plain mapping (e.g. a model card); unknown keys are ignored,
    or an error with ``strict``."""
    if values is None:
        return cls()
    values = dict(values)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if strict and unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}")
    return cls(**{k: v for k, v in values.items() if k in names})


def to_container(node, default=None):
    """A plain (resolved) dict or list from an OmegaConf node; ``default`` when the node is None."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else default


def _writable(node):
    """The structured node with every read-only flag cleared (frozen dataclasses make read-only
    nodes, which Hydra could not merge the YAML files into); ``to_object`` still builds frozen objects."""
    from omegaconf import DictConfig, ListConfig

    node._set_flag("readonly", None)
    if isinstance(node, (DictConfig, ListConfig)) and not node._is_none() and not node._is_missing():
        for key in (node.keys() if isinstance(node, DictConfig) else range(len(node))):
            _writable(node._get_node(key))
    return node


def register_configs() -> None:
    """Store the root schemas in Hydra's ConfigStore as ``schema/<name>`` (package ``_global_``);
    idempotent.  Call before composing (``hydra_main`` and ``compose`` do)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    for name, cls in SCHEMAS.items():
        cs.store(group="schema", name=name, node=_writable(OmegaConf.structured(cls)), package="_global_")


def to_typed(cfg):
    """A composed config -> its frozen root schema instance (``OmegaConf.to_object``; interpolations
    resolved, ``__post_init__`` validation run).  A plain dataclass is returned as it is."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return cfg
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_object(cfg)
    except dataclasses.FrozenInstanceError as exc:  # a key added with '+' that no schema declares
        raise ValueError(f"unknown config key: {exc}") from None


def compose(config_name: str = "config", overrides: list[str] | tuple[str, ...] = (), typed: bool = True):
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` outside a Hydra app (tests, notebooks);
    the typed root schema, or the DictConfig with ``typed=False``."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = _compose(config_name, overrides=list(overrides))
    return to_typed(cfg) if typed else cfg


def hydra_main(config_name: str) -> Callable:
    """``@hydra_main("table1")``: ``hydra.main`` on conf/ with the schemas registered first; the
    decorated function receives the typed root schema instead of a DictConfig."""
    import hydra

    register_configs()

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(cfg):
            return fn(to_typed(cfg))

        return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(wrapper)

    return decorate


def output_dir() -> Path:
    """The Hydra run directory of the running app."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _is_crystaljax_error(exc: BaseException) -> bool:
    """True for a ``crystaljax.errors.CrystalJaxError`` (looked up, not imported: this layer may not import it, and
    none can have been raised before that module was imported)."""
    errors = sys.modules.get("crystaljax.errors")
    return errors is not None and isinstance(exc, errors.CrystalJaxError)


def _print_run_dir(result, run_dir: Path) -> None:
    print(f"results in {run_dir}")


def experiment_main(config_name: str, run: Callable, *, report: Callable | None = None) -> Callable:
    """The Hydra main of an experiment script: ``main = experiment_main("table1", run)``.

    Calls ``run(cfg, run_dir)`` with the typed root schema of ``conf/<config_name>.yaml`` and the Hydra run
    directory.  A CrystalJaxError ends the program with the one line ``error: <message>`` on stderr and exit status 1
    (no traceback).  Then ``report(result, run_dir)`` prints the outcome (default: ``results in <run_dir>``); what it
    returns is what the main returns (the objective of a Hydra sweeper).  Define ``run`` in the script: Hydra names
    the job (and its log file) after the module of ``run``.
    """
    report = _print_run_dir if report is None else report

    @hydra_main(config_name)
    @functools.wraps(run)
    def main(cfg):
        run_dir = output_dir()
        try:
            result = run(cfg, run_dir)
        except Exception as exc:
            if not _is_crystaljax_error(exc):
                raise
            sys.exit(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return report(result, run_dir)

    return main


def _get(cfg, name: str, default=None):
    value = cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)
    return default if value is None else value


def experiment_output_dir(cfg, run_dir, docs_dir: str = "docs/results"):
    """Where an experiment writes its results: ``cfg.out_dir`` if set, else ``docs_dir`` (relative to the
    launch directory) with ``save_docs=true``, else the Hydra run directory."""
    from hydra.utils import to_absolute_path

    if _get(cfg, "out_dir"):
        return Path(to_absolute_path(str(cfg.out_dir)))
    if _get(cfg, "save_docs"):
        return Path(to_absolute_path(docs_dir))
    return Path(run_dir)


def resolved_yaml(cfg) -> str:
    """The config (DictConfig or schema instance) as resolved YAML."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return OmegaConf.to_yaml(node, resolve=True)


def start_experiment(cfg, run_dir, name: str, docs_dir: str = "docs/results"):
    """Create the run and output directories and write the resolved config into both; returns the output
    directory (see :func:`experiment_output_dir`)."""
    run_dir = Path(run_dir)
    out = experiment_output_dir(cfg, run_dir, docs_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolved_yaml(cfg)
    (run_dir / "config_resolved.yaml").write_text(resolved)
    if out != run_dir:
        (out / f"{name}_config.yaml").write_text(resolved)
    return out


__all__ = [
    "CONF_DIR", "MAX_Z", "SCHEMAS", "GROUPS",
    "DetectorConfig", "BeamConfig", "FingerprintConfig", "DefectConfig", "DataConfig", "ModelConfig",
    "OptimConfig", "LoggerConfig",
    "ExperimentConfig", "TrainConfig", "MakeDatasetConfig", "AnalysisConfig", "Table1Config", "Table1Levels",
    "Table1Spglib", "Table1FilePathConfig", "TransitionsConfig", "BccScConfig", "RhombohedralConfig", "AttentionConfig",
    "AttentionOptions", "SensitivityConfig", "SublatticeOptions", "DisplacementOptions",
    "DETECTOR_PRESETS", "detector_preset", "is_tracer", "is_static_zero", "check_number", "check_elements",
    "from_dict", "to_container", "register_configs", "to_typed", "compose", "hydra_main", "output_dir",
    "experiment_main", "experiment_output_dir", "resolved_yaml", "start_experiment", "field",
]
