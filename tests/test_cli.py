"""End-to-end command line: the shipped model, output formats and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crystaljax.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "crystaljax" / "examples"
PROTOTYPES = ROOT / "tests" / "data" / "prototypes"  # copies of the ai4materials prototype files (tests/data/README.md)
CLASSES = ["bct_139", "bct_141", "hex/rh", "sc", "fcc", "diam", "bcc"]

# real structures of the seven classes (AFLOW library parameters; never used for training)
EXPECTED = {
    "fcc_Cu_A_cF4_225_a": "fcc",
    "bcc_W_A_cI2_229_a": "bcc",
    "diam_C_A_cF8_227_a": "diam",
    "sc_alphaPo_A_cP1_221_a": "sc",
    "hcp_Mg_A_hP2_194_c": "hex/rh",
    "dhcp_alphaLa_A_hP4_194_ac": "hex/rh",
    "bctIn_In_A_tI2_139_a": "bct_139",
    "bctAlphaPa_Pa_A_tI2_139_a": "bct_139",
    "bctBetaSn_Sn_A_tI4_141_a": "bct_141",
    # the rhombohedral (166) prototypes of the paper's elemental solids
    "rhombAlphaAs_As_A_hR2_166_c": "hex/rh",
    "rhombAlphaHg_Hg_A_hR1_166_a": "hex/rh",
    "rhombAlphaSm_Sm_A_hR3_166_ac": "hex/rh",
    "rhombBetaPo_Po_A_hR1_166_a": "hex/rh",
}
# Not asserted: rhombohedral graphite (rhombGraph, layered, x = 1/6, c/a ~ 4) and beta-O (molecular) lie outside
# the free-parameter ranges of the training set (docs/DATASET.md); the shipped model is unsure about them.


def _prototype_file(name):
    folder = PROTOTYPES / name
    files = sorted(folder.glob("*")) if folder.is_dir() else []
    return files[0] if files else None


def test_classify_real_prototypes_json(capsys):
    files = {name: _prototype_file(name) for name in EXPECTED}
    assert all(files.values()), "tests/data/prototypes is incomplete"
    paths = [str(p) for p in files.values()]
    assert main(["classify", "--json", "--quiet", *paths]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(paths)
    for row in rows:
        assert {"file", "frame", "label", "probabilities", "uncertainty"} <= set(row)
        assert set(row["uncertainty"]) == {"entropy", "mutual_information"}
        assert list(row["probabilities"]) == CLASSES
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
        u = row["uncertainty"]
        p = np.array(list(row["probabilities"].values()))
        entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))  # of the mean probabilities printed (6 digits kept)
        assert u["entropy"] == pytest.approx(entropy, abs=1e-4)
        assert 0.0 <= u["mutual_information"] <= u["entropy"] + 1e-9
    got = {Path(r["file"]).parent.name: r["label"] for r in rows}
    for name, label in EXPECTED.items():
        assert got[name] == label, (name, got[name])


def test_classify_multiframe_examples_and_csv(capsys):
    traj = EXAMPLES / "Fe_bcc_noisy_trajectory.extxyz"
    assert main(["classify", "--csv", "--quiet", str(traj), str(EXAMPLES / "Cu_fcc.cif")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split(",") == ["file", "frame", "label", *CLASSES, "entropy", "mutual_information", "unknown",
                                   "unknown_reason"]
    body = [line.split(",") for line in lines[1:]]
    assert all(len(b) == len(CLASSES) + 7 for b in body)
    assert [b[-2] for b in body] == ["false"] * 5 and all(b[-1] == "" for b in body)  # in-class crystals
    assert [b[1] for b in body] == ["0", "1", "2", "3", "0"]
    assert [b[2] for b in body] == ["bcc"] * 4 + ["fcc"]


def test_table_names_frames_and_shows_uncertainty(capsys):
    """Every frame of a multi-frame file is file[i] (from 0); a single-frame file is its name; deterministic
    (--mc-samples 0) rows have zero mutual information; the runner-up only when it has p >= 0.1."""
    traj = EXAMPLES / "Fe_bcc_noisy_trajectory.extxyz"
    cif = EXAMPLES / "Cu_fcc.cif"
    assert main(["classify", "--quiet", "--mc-samples", "0", str(traj), str(cif)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:7] == ["structure", "class", "space", "group", "prob", "entropy", "MI"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == [f"{traj}[{i}]" for i in range(4)] + [str(cif)]
    for line in lines[1:5]:
        assert line.split()[1:3] == ["bcc", "Im-3m"]
    fcc = lines[-1].split()
    assert fcc[1:3] == ["fcc", "Fm-3m"] and float(fcc[-1]) == 0.0  # MI of one deterministic pass
    assert len(fcc) == 6  # no runner-up next to p ~ 1


def test_mc_samples_reproducible_and_pristine_model(capsys):
    """The same seed gives the same numbers; --model pristine (a shipped name) loads without a path."""
    args = ["classify", "--json", "--quiet", "--mc-samples", "4", str(EXAMPLES / "Sn_beta.cif")]
    assert main([*args, "--seed", "3"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main([*args, "--seed", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == a
    assert main([*args, "--model", "pristine"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["label"] == "bct_141" and rows[0]["uncertainty"]["mutual_information"] >= 0


def test_version_and_class_help(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"crystaljax {version('crystaljax')}"
    with pytest.raises(SystemExit):
        main(["classify", "--help"])
    out = capsys.readouterr().out
    for text in ("bct_139", "I4/mmm", "bct_141", "I4₁/amd", "β-Sn", "hex/rh", "P6₃/mmc, R-3m", "α-Sm", "--mc-samples"):
        assert text in out, text


def test_bad_model_is_one_line(capsys):
    assert main(["classify", "--model", "no_such_model", str(EXAMPLES / "Cu_fcc.cif")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no_such_model" in err and "pristine" in err


def test_bad_files_are_reported_and_skipped(tmp_path, capsys):
    bad = tmp_path / "bad.xyz"
    bad.write_text("garbage\n")
    nan = tmp_path / "nan.xyz"
    nan.write_text("2\n\nCu 0 0 0\nCu nan 0 0\n")
    single = tmp_path / "one.xyz"
    single.write_text("1\n\nCu 0 0 0\n")
    code = main(["classify", "--json", "--quiet", str(bad), str(tmp_path / "missing.cif"), str(nan), str(single),
                 str(EXAMPLES / "Si_diamond.vasp")])
    out, err = capsys.readouterr()
    assert code != 0
    rows = json.loads(out)
    assert [r["label"] for r in rows] == ["diam"]
    messages = [line for line in err.splitlines() if line.startswith("crystaljax: error:")]
    assert len(messages) == 4 and "Traceback" not in err
    assert any("missing.cif" in m and "no such file" in m for m in messages)


def test_fingerprint_subcommand_writes_npy_and_png(tmp_path):
    out, png = tmp_path / "fp.npy", tmp_path / "fp.png"
    assert main(["fingerprint", str(EXAMPLES / "Cu_fcc.cif"), "--out", str(out), "--png", str(png)]) == 0
    image = np.load(out)
    assert image.shape == (64, 64, 3) and image.max() == pytest.approx(1.0) and png.stat().st_size > 0


def test_console_script_bad_input_one_line(tmp_path):
    """The installed entry point: one line on stderr, non-zero exit, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "crystaljax.cli", "fingerprint", str(tmp_path / "nope.cif")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_compilation_cache_is_kept_between_runs_and_changes_nothing(tmp_path):
    """A second run of the installed command reuses the compiled programs (files under CRYSTALJAX_CACHE) and
    prints the same rows; CRYSTALJAX_CACHE=off writes nothing."""
    import os

    files = [str(ROOT / "crystaljax" / "examples" / name) for name in ("Cu_fcc.cif", "Fe_bcc_noisy_trajectory.extxyz")]

    def run(cache):
        env = dict(os.environ, CRYSTALJAX_CACHE=str(cache))
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        proc = subprocess.run([sys.executable, "-m", "crystaljax.cli", "classify", "--json", "--quiet", *files],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    cache = tmp_path / "xla"
    first = run(cache)
    written = sorted(p.name for p in cache.iterdir())
    assert len(written) >= 2  # at least the fingerprint and the network
    assert run(cache) == first
    assert sorted(p.name for p in cache.iterdir()) == written  # nothing compiled anew
    assert run("off") == first


def _noisy_supercell(path, sigma=0.12, seed=0):
    """A 4x4x4 fcc Cu supercell with Gaussian displacements (sigma Å per component) written as extxyz."""
    from ase.build import bulk
    from ase.io import write

    atoms = bulk("Cu", "fcc", a=3.615, cubic=True).repeat((4, 4, 4))
    atoms.positions += np.random.default_rng(seed).normal(0.0, sigma, atoms.positions.shape)
    write(path, atoms, format="extxyz")
    return atoms


def test_scale_option_changes_the_cluster_scale_of_a_defective_structure(tmp_path, capsys):
    from crystaljax.structures.cluster import prepare

    noisy = tmp_path / "noisy.extxyz"
    atoms = _noisy_supercell(noisy)
    images = {}
    for name, path in (("pristine", EXAMPLES / "Cu_fcc.cif"), ("noisy", noisy)):
        for scale in ("robust", "mean"):
            out = tmp_path / f"{name}_{scale}.npy"
            assert main(["fingerprint", str(path), "--out", str(out), "--scale", scale]) == 0
            images[name, scale] = np.load(out)
    default = tmp_path / "noisy_default.npy"
    assert main(["fingerprint", str(noisy), "--out", str(default)]) == 0
    np.testing.assert_array_equal(np.load(default), images["noisy", "robust"])  # robust is the default
    # both estimators give the nearest-neighbour distance of a pristine crystal, so the same fingerprint ...
    np.testing.assert_allclose(images["pristine", "robust"], images["pristine", "mean"], atol=1e-5)
    # ... but displacements shorten the mean nearest-neighbour distance, and only the mean
    assert np.abs(images["noisy", "robust"] - images["noisy", "mean"]).max() > 0.05
    d = {s: prepare(atoms.copy(), scale=s).info["nn_distance"] for s in ("robust", "mean")}
    assert d["robust"] == pytest.approx(3.615 / np.sqrt(2), rel=0.02) and d["mean"] < 0.95 * d["robust"]


@pytest.mark.parametrize("command", ["fingerprint", "classify"])
def test_bad_scale_is_one_line(command, capsys):
    assert main([command, str(EXAMPLES / "Cu_fcc.cif"), "--scale", "median"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--scale" in err and "'median'" in err and "robust" in err and "mean" in err


def test_broken_files_are_one_line_each_and_say_what_is_wrong(tmp_path):
    """Through the installed entry point, so parser warnings on stderr would count too."""
    cif = (EXAMPLES / "Cu_fcc.cif").read_text()
    files = {
        "truncated.cif": cif[:cif.index("_cell_length_c")],
        "no_atoms.cif": "\n".join(line for line in cif.splitlines() if "_atom_site" not in line and "Cu " not in line),
        "empty.cif": "",
        "garbage.cif": np.random.default_rng(0).bytes(3000),
        "count.xyz": "5\n\nCu 0 0 0\nCu 1.8 0 0\n",
        "loop.cif": "data_x\n_cell_length_a 3\n_cell_length_b 3\n_cell_length_c 3\nloop_\n_atom_site_label\n"
                    "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nCu1 0.0 0.5\n",
    }
    paths = []
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        paths.append(path)
    proc = subprocess.run([sys.executable, "-m", "crystaljax.cli", "classify", "--quiet", *map(str, paths)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and proc.stdout.strip() == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(files), proc.stderr
    assert "Traceback" not in proc.stderr and "AssertionError" not in proc.stderr and "Error:" not in proc.stderr
    for path, line in zip(paths, lines):
        assert line.startswith(f"crystaljax: error: {path}: "), line
    said = dict(zip(files, lines))
    assert "empty file" in said["empty.cif"]
    assert "not a readable CIF file (binary data)" in said["garbage.cif"]
    assert "not a readable CIF file (no _atom_site loop" in said["truncated.cif"]
    assert "not a readable CIF file (no _atom_site loop" in said["no_atoms.cif"]
    assert "not a readable CIF file" in said["loop.cif"] and "expected 4" in said["loop.cif"]
    assert "not a readable XYZ file" in said["count.xyz"] and "2 atoms, expected 5" in said["count.xyz"]
