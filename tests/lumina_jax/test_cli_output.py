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


def test_check_out_dir_finds_every_unwritable_output_before_the_work(tmp_path, monkeypatch):
    import os

    from lumina_jax.cli._output import check_out_dir

    (tmp_path / "f").write_text("x")
    check_out_dir(tmp_path / "new" / "deeper", force=False)  # created later, below a writable folder
    with pytest.raises(UserError, match="is a file; results need a directory"):
        check_out_dir(tmp_path / "f", force=True)
    with pytest.raises(UserError, match="is a file, so the directory cannot be created there"):
        check_out_dir(tmp_path / "f" / "sub", force=True)
    full = tmp_path / "full"
    full.mkdir()
    (full / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="already exists.*--force"):
        check_out_dir(full, force=False)
    check_out_dir(full, force=True)
    monkeypatch.setattr(os, "access", lambda p, m, **k: False)  # (root ignores permission bits)
    with pytest.raises(UserError, match="parent directory .* is not writable"):
        check_out_dir(tmp_path / "new", force=False)
    with pytest.raises(UserError, match=f"directory {full} is not writable"):
        check_out_dir(full, force=True)


def test_write_atomic_leaves_the_old_file_or_the_new_one(tmp_path):
    from lumina_jax.cli._output import write_atomic

    out = tmp_path / "s.csv"
    out.write_text("old")

    def half(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(out, half)
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]
    write_atomic(out, lambda tmp: tmp.write_text("new"))
    assert out.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


@pytest.mark.parametrize("args,words", [
    (["ejecta", "--stage", "abc", "--params", "p.json"], "Invalid value for '--stage'"),
    (["dataset", "info", "--bogus", "x.h5"], "No such option: --bogus"),
    (["ejecta"], "Missing option '--stage'"),
    (["no-such-command"], "No such command"),
])
def test_malformed_command_lines_are_one_error_line(monkeypatch, capsys, args, words):
    """typer's usage errors (a box of several lines) become the promised one `error:` line, exit 2."""
    import sys

    from lumina_jax.cli import main

    monkeypatch.setattr(sys, "argv", ["lumina-jax", *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert "--help" in lines[0]
