"""box3d_jax stands alone: no lumina_jax import, its own XLA:CPU flag and output rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from box3d_jax import _runtime
from box3d_jax import cli
from box3d_jax.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_package_and_cli_import_nothing_from_lumina_jax():
    code = ("import sys, box3d_jax, box3d_jax.cli, box3d_jax.residual, box3d_jax.qke, box3d_jax.export; "
            "print([m for m in sys.modules if m.startswith('lumina_jax')])")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_sets_the_xla_flag_unless_opted_out(monkeypatch):
    monkeypatch.delenv("LUMINA_JAX_XLA_DEFAULTS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    _runtime.configure_xla_cpu()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_enable_concurrency_optimized_scheduler=false"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=true")
    _runtime.configure_xla_cpu()  # the user's choice wins
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("LUMINA_JAX_XLA_DEFAULTS", "1")
    _runtime.configure_xla_cpu()
    assert os.environ["XLA_FLAGS"] == ""


def test_json_is_strict_and_outputs_are_checked(tmp_path):
    text = cli.dumps_json({"a": np.float64("nan"), "b": np.arange(2), "c": np.bool_(True), "d": np.array(-np.inf)})
    assert json.loads(text) == {"a": None, "b": [0, 1], "c": True, "d": None}
    old = tmp_path / "old.h5"
    old.write_text("x")
    with pytest.raises(UserError, match="--out file .* already exists; pass --force"):
        cli.check_out_file(old, force=False)
    with pytest.raises(UserError, match="is the input file"):
        cli.check_out_file(old, force=True, inputs=(old,))
    with pytest.raises(UserError, match="does not exist"):
        cli.check_out_file(tmp_path / "no" / "x.h5", force=False)
    cli.check_out_file(old, force=True)
    (tmp_path / "empty").mkdir()
    cli.refuse_overwrite(tmp_path / "empty", force=False, what="checkpoint")  # an empty folder is free
