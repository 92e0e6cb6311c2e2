"""Small helpers of crystaljax.analysis.report and the shared JSON default."""

import dataclasses
import json
from pathlib import Path

import numpy as np

from crystaljax.analysis.report import copy_figures, write_json
from crystaljax.jsonio import json_default


def test_copy_figures_prefixes_names_keeps_order_and_bytes(tmp_path):
    work = tmp_path / "run"
    (work / "sub").mkdir(parents=True)
    sources = [work / "b.png", work / "sub" / "a.png"]
    for i, src in enumerate(sources):
        src.write_bytes(bytes([i]) * (10 + i))
    docs = tmp_path / "docs" / "figures"  # created on demand
    copied = copy_figures([str(sources[0]), sources[1]], docs, "attention_")
    assert copied == [docs / "attention_b.png", docs / "attention_a.png"]
    assert [p.read_bytes() for p in copied] == [s.read_bytes() for s in sources]
    assert copy_figures([sources[0]], docs) == [docs / "b.png"]
    assert sorted(p.name for p in docs.iterdir()) == ["attention_a.png", "attention_b.png", "b.png"]


def test_json_default_round_trips_numpy_jax_and_dataclasses(tmp_path):
    import jax.numpy as jnp

    @dataclasses.dataclass
    class Spec:
        n: int
        sizes: tuple

    obj = {"a": np.arange(3, dtype=np.int32), "x": np.float32(0.5), "j": jnp.ones((2,)), "spec": Spec(2, (1, 2)),
           "path": Path("runs/x")}
    back = json.loads(write_json(obj, tmp_path / "o.json").read_text())
    assert back == {"a": [0, 1, 2], "x": 0.5, "j": [1.0, 1.0], "spec": {"n": 2, "sizes": [1, 2]}, "path": "runs/x"}
    assert json.loads(json.dumps(np.int64(7), default=json_default)) == 7
