"""`lumina-jax ffi` commands end to end on a small synthetic file."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from box3d_jax import box3d as B
from box3d_jax import io
from box3d_jax.synthetic import make_synthetic_dataset
from lumina_jax.cli import app
from lumina_jax.errors import DataFileError, ParameterError, UserError

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    Fi, Ff = make_synthetic_dataset(300, seed=4, order=29)
    return io.write_dataset(tmp_path_factory.mktemp("ffi") / "d.h5", Fi, Ff)


def test_box3d_command_writes_predictions(data_file, tmp_path):
    out = tmp_path / "o.h5"
    r = runner.invoke(app, ["ffi", "box3d", str(data_file), "--out", str(out), "--json", "--chunk", "128"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["n_points"] == 300 and 0 < summary["n_unstable"] <= 300
    pred = io.read_dataset(out, require_final=True)
    ds = io.read_dataset(data_file)
    expect = np.asarray(B.box3d(ds.F4_initial, order=17))
    np.testing.assert_allclose(pred.F4_final, expect, rtol=0, atol=1e-13 * ds.F4_initial[..., 3].sum(axis=(1, 2)).max())
    assert pred.growth_rate.shape == (300,) and np.all(pred.growth_rate >= 0)


def test_train_then_evaluate(data_file, tmp_path):
    ck = tmp_path / "ck"
    r = runner.invoke(
        app, ["ffi", "train", str(data_file), "--out", str(ck), "--epochs", "3", "--hidden", "8",
              "--batch-size", "64", "--json"]
    )
    assert r.exit_code == 0, r.output
    meta = json.loads(r.output)
    assert meta["n_test"] > 0 and meta["test"] == "last 30 rows"
    r = runner.invoke(app, ["ffi", "evaluate", str(ck), str(data_file), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)["metrics"]
    assert set(m) == {"no_mixing", "box3d", "box3d_residual"}
    assert m["box3d"]["rms"] < m["no_mixing"]["rms"]
    assert all(np.isfinite(v) for v in m["box3d_residual"].values())
    # (that training does learn the residual is checked in test_residual_export.py)
    r = runner.invoke(app, ["ffi", "evaluate", str(ck), str(data_file)])  # table output (cached jit)
    assert r.exit_code == 0 and "box3d_residual" in r.output
    r = runner.invoke(app, ["ffi", "export", str(ck), "--out", str(tmp_path / "m.jaxexport")])
    assert r.exit_code == 0 and (tmp_path / "m.jaxexport").stat().st_size > 1000


def test_user_errors(data_file, tmp_path):
    r = runner.invoke(app, ["ffi", "evaluate", str(tmp_path), str(data_file)])
    assert isinstance(r.exception, DataFileError)
    r = runner.invoke(app, ["ffi", "train", str(data_file), "--out", str(tmp_path / "c"), "--hidden", "a,b"])
    assert isinstance(r.exception, ParameterError)
    # through the console entry point: one line, exit code 2, no traceback
    p = subprocess.run(
        [sys.executable, "-m", "lumina_jax", "ffi", "box3d", str(tmp_path / "missing.h5"), "--out", "x.h5"],
        capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 2 and p.stderr.strip().startswith("error:") and "Traceback" not in p.stderr


def _datasets(path):
    import h5py

    with h5py.File(path) as h5:
        return {k: np.asarray(h5[k][()]) for k in h5}


def test_box3d_never_clobbers_its_input_and_needs_force(data_file, tmp_path):
    mine = tmp_path / "my.h5"
    mine.write_bytes(Path(data_file).read_bytes())
    before = _datasets(mine)
    for out in (mine, tmp_path / "." / "my.h5"):
        for extra in ([], ["--force"]):
            r = runner.invoke(app, ["ffi", "box3d", str(mine), "--out", str(out), *extra])
            assert isinstance(r.exception, UserError) and "input file" in str(r.exception)
    after = _datasets(mine)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
    out = tmp_path / "o.h5"
    out.write_text("precious")
    r = runner.invoke(app, ["ffi", "box3d", str(mine), "--out", str(out)])
    assert isinstance(r.exception, UserError) and "--force" in str(r.exception)
    assert out.read_text() == "precious"
    r = runner.invoke(app, ["ffi", "box3d", str(mine), "--out", str(out), "--force", "--chunk", "512"])
    assert r.exit_code == 0, r.output
    assert io.read_dataset(out, require_final=True).n == 300
    for bad, why in ((tmp_path, "is a directory"), (tmp_path / "no" / "o.h5", "does not exist")):
        r = runner.invoke(app, ["ffi", "box3d", str(mine), "--out", str(bad)])
        assert isinstance(r.exception, UserError) and why in str(r.exception)


def test_train_refuses_a_non_empty_checkpoint_directory(data_file, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "notes.txt").write_text("mine")
    args = ["ffi", "train", str(data_file), "--out", str(ck), "--epochs", "1", "--hidden", "4", "--batch-size", "64"]
    r = runner.invoke(app, args)
    assert isinstance(r.exception, UserError) and "--force" in str(r.exception)
    assert sorted(p.name for p in ck.iterdir()) == ["notes.txt"]
    r = runner.invoke(app, ["ffi", "train", str(data_file), "--out", str(data_file), "--epochs", "1"])
    assert isinstance(r.exception, UserError) and "is a file" in str(r.exception)
    r = runner.invoke(app, [*args, "--force"])
    assert r.exit_code == 0, r.output
    assert {"notes.txt", "config.json", "params.msgpack"} <= {p.name for p in ck.iterdir()}


def test_export_checks_platform_and_outputs(tmp_path):
    out = tmp_path / "e.bin"
    r = runner.invoke(app, ["ffi", "export", "--out", str(out), "--platform", "bogus"])
    assert isinstance(r.exception, ParameterError) and "cpu, cuda, rocm, tpu" in str(r.exception)
    assert not out.exists()
    out.write_text("old")
    r = runner.invoke(app, ["ffi", "export", "--out", str(out)])
    assert isinstance(r.exception, UserError) and out.read_text() == "old"
    r = runner.invoke(app, ["ffi", "export", "--out", str(tmp_path / "n.bin"), "--stablehlo", str(out)])
    assert isinstance(r.exception, UserError) and "--stablehlo" in str(r.exception)
    r = runner.invoke(app, ["ffi", "export", "--out", str(out), "--force", "--platform", "CPU", "--platform", "cpu"])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 1000
