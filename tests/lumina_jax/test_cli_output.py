"""The CLI's output helpers: strict JSON and the --force rule."""

import json
import math

import numpy as np
import pytest

from lumina_jax.cli._output import dumps_json, refuse_overwrite, same_file
from lumina_jax.errors import UserError


def test_dumps_json_is_strict_json_with_nulls_for_non_finite():
    obj = {"a": float("nan"), "b": [1.0, np.inf, -np.inf], "c": np.float32(2.5), "d": np.arange(3),
           "e": np.bool_(True), "f": (np.int64(7), "x")}
    text = dumps_json(obj)
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert back == {"a": None, "b": [1.0, None, None], "c": 2.5, "d": [0, 1, 2], "e": True, "f": [7, "x"]}
    assert "NaN" not in text and "Infinity" not in text
    assert math.isclose(json.loads(dumps_json({"x": 0.1}))["x"], 0.1)


def test_refuse_overwrite(tmp_path):
    refuse_overwrite(tmp_path / "new.h5", force=False)  # absent: fine
    empty = tmp_path / "empty"
    empty.mkdir()
    refuse_overwrite(empty, force=False)  # empty directory: fine
    f = tmp_path / "old.h5"
    f.write_text("precious")
    with pytest.raises(UserError, match="already exists.*--force"):
        refuse_overwrite(f, force=False, what="checkpoint")
    refuse_overwrite(f, force=True)
    (empty / "x").write_text("1")
    with pytest.raises(UserError, match="directory"):
        refuse_overwrite(empty, force=False)
    assert f.read_text() == "precious"


def test_same_file(tmp_path):
    a = tmp_path / "a.h5"
    a.write_text("1")
    assert same_file(a, tmp_path / "." / "a.h5")
    assert not same_file(a, tmp_path / "b.h5")
