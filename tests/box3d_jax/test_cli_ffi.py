"""`lumina-jax ffi` commands end to end on a small synthetic file, and Box3D + residual
(``ffi box3d --residual``, ``box3d_jax.predict``) with the shipped QKE-trained checkpoint."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import box3d_jax
from box3d_jax import box3d as B
from box3d_jax import io
from box3d_jax import residual as R
from box3d_jax.errors import DataFileError, ParameterError, UserError
from box3d_jax.synthetic import make_synthetic_dataset, random_isotropic_states
from lumina_jax.cli import app

REPO = Path(__file__).resolve().parents[2]
CKPT = REPO / "box3d_jax" / "checkpoints" / "ffi_residual_qke"
runner = CliRunner()


def _nsm1():
    def sp(N, fx, fy, fz):
        return [fx * N, fy * N, fz * N, N]

    x = sp(19.65e32 / 4, -0.0216, 0.0743, -0.5354)
    return np.array([[sp(14.22e32, 0.0974, 0.0421, -0.1343), x, x], [sp(19.15e32, 0.0723, 0.0313, -0.3446), x, x]])


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
    assert (summary["method"], summary["order"], summary["width"]) == ("smooth", 35, 0.4)
    pred = io.read_dataset(out, require_final=True)
    ds = io.read_dataset(data_file)
    atol = 1e-13 * ds.F4_initial[..., 3].sum(axis=(1, 2)).max()
    np.testing.assert_allclose(pred.F4_final, np.asarray(B.box3d(ds.F4_initial)), rtol=0, atol=atol)
    assert pred.growth_rate.shape == (300,) and np.all(pred.growth_rate >= 0)
    r = runner.invoke(app, ["ffi", "box3d", str(data_file), "--out", str(out), "--force", "--method", "sharp",
                            "--order", "17", "--json"])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(io.read_dataset(out, require_final=True).F4_final,
                               np.asarray(B.box3d(ds.F4_initial, 17, method="sharp")), rtol=0, atol=atol)
    r = runner.invoke(app, ["ffi", "box3d", str(data_file), "--out", str(out), "--force", "--method", "exact"])
    assert isinstance(r.exception, ParameterError) and "smooth, sharp" in str(r.exception)


def test_box3d_huge_scale_is_handled(data_file, tmp_path):
    ds = io.read_dataset(data_file)
    F = ds.F4_initial[:20] / ds.F4_initial[:20, ..., 3].sum(axis=(1, 2))[:, None, None, None]
    big = io.write_dataset(tmp_path / "big.h5", F * 1e162)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NumPy overflow warnings
        r = runner.invoke(app, ["ffi", "box3d", str(big), "--out", str(tmp_path / "o.h5"), "--json"])
    assert r.exit_code == 0, r.output
    out = io.read_dataset(tmp_path / "o.h5", require_final=True)
    np.testing.assert_allclose(out.F4_final / 1e162, np.asarray(B.box3d(F)), rtol=0, atol=1e-13)
    np.testing.assert_allclose(out.growth_rate / 1e162, np.asarray(B.box3d_info(F).growth_rate), rtol=1e-12)


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
    r = runner.invoke(app, ["ffi", "box3d", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "x.h5")])
    assert isinstance(r.exception, DataFileError) and "no such file" in str(r.exception)
    # a file with 0 rows, through the console entry point: one line, exit code 2, no traceback
    empty = tmp_path / "empty.h5"
    import h5py

    with h5py.File(empty, "w") as h5:
        h5.create_dataset(io.INITIAL, data=np.zeros((0, 4, 2, 3)))
    p = subprocess.run(
        [sys.executable, "-m", "lumina_jax", "ffi", "box3d", str(empty), "--out", str(tmp_path / "x.h5")],
        capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "has no rows" in lines[0]
    assert not (tmp_path / "x.h5").exists()


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


# ------------------------------------------------------------------ Box3D + residual model
@pytest.fixture(scope="module")
def nsm1_file(tmp_path_factory):
    return io.write_dataset(tmp_path_factory.mktemp("nsm1") / "nsm1.h5", _nsm1()[None])


def test_box3d_with_residual_on_nsm1_prints_and_writes(nsm1_file, tmp_path):
    out = tmp_path / "o.h5"
    r = runner.invoke(app, ["ffi", "box3d", str(nsm1_file), "--out", str(out), "--residual", str(CKPT), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["n_outside_domain"] == 0 and "warning" not in r.output
    model = R.load_model(CKPT)
    assert (model.config.method, summary["method"], summary["order"]) == ("smooth", "smooth", model.config.order)
    box = np.asarray(B.box3d(_nsm1(), **model.config.box3d_kwargs))
    expect = np.asarray(box3d_jax.predict(_nsm1(), residual=model))
    ntot = _nsm1()[..., 3].sum()
    # printed: the number densities of Box3D and of Box3D + residual
    np.testing.assert_allclose(summary["N_box3d"][0]["nu"], box[0, :, 3], rtol=1e-12)
    np.testing.assert_allclose(summary["N_box3d_residual"][0]["nubar"], expect[1, :, 3], rtol=1e-12)
    assert abs(summary["N_box3d"][0]["nu"][0] - 1.08448e33) < 1e-5 * ntot  # converged Box3D
    # written: F4_final = Box3D + residual; F4_box3d and the domain flags beside it
    ds = io.read_dataset(out, require_final=True)
    np.testing.assert_allclose(ds.F4_final[0], expect, rtol=0, atol=1e-12 * ntot)
    assert 1e-3 * ntot < np.abs(ds.F4_final[0] - box).max() < 0.1 * ntot  # the residual does something
    np.testing.assert_allclose(ds.F4_final.sum(axis=2), _nsm1()[None].sum(axis=2), rtol=0, atol=1e-13 * ntot)
    import h5py

    with h5py.File(out) as h5:
        np.testing.assert_allclose(B.from_file_layout(h5[io.BOX3D][()])[0], box, rtol=0, atol=1e-12 * ntot)
        assert h5[io.IN_DOMAIN][()].tolist() == [True]
    r = runner.invoke(app, ["ffi", "box3d", str(nsm1_file), "--out", str(out), "--force", "--residual", str(CKPT)])
    assert r.exit_code == 0 and "N_box3d_residual" in r.output  # text output prints the densities too
    r = runner.invoke(app, ["ffi", "box3d", str(nsm1_file), "--out", str(out), "--force", "--residual", str(CKPT),
                            "--method", "sharp"])
    assert isinstance(r.exception, ParameterError) and "trained on" in str(r.exception)


def test_residual_out_of_domain_warning(tmp_path):
    # random directions and flux factors up to 0.9 for every species: outside the QKE training
    # campaign (ν_e flux factors < 0.5 there), apart from a few rows
    F = random_isotropic_states(np.random.default_rng(3), 40, max_flux_factor=0.9)
    F[0] = _nsm1()  # one row inside
    path = io.write_dataset(tmp_path / "rand.h5", F)
    r = runner.invoke(app, ["ffi", "box3d", str(path), "--out", str(tmp_path / "o.h5"), "--residual", str(CKPT),
                            "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert 20 < summary["n_outside_domain"] < 40 and summary["outside_domain_features"]["fluxfac_nu_e"] > 0
    assert r.stderr.startswith("warning:") and "outside the residual model's training domain" in r.stderr
    import h5py

    with h5py.File(tmp_path / "o.h5") as h5:
        flags = h5[io.IN_DOMAIN][()]
    assert flags[0] and (~flags).sum() == summary["n_outside_domain"]
    model = R.load_model(CKPT)
    with pytest.warns(R.OutOfDomainWarning, match=f"{summary['n_outside_domain']} of 40 inputs"):
        box3d_jax.predict(F, residual=CKPT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = np.asarray(box3d_jax.predict(F[:1], residual=model))  # inside: no warning
    np.testing.assert_allclose(np.asarray(box3d_jax.predict(F)), np.asarray(B.box3d(F)), rtol=0, atol=0)
    with pytest.raises(ParameterError, match="trained on Box3D with order = 35"):
        box3d_jax.predict(F, residual=model, order=17)
    assert pred.shape == (1, 2, 3, 4)


def test_checkpoint_without_method_or_domain_still_works(tmp_path):
    # checkpoints written before the smooth method: sharp baseline, flux-factor cut only
    old = tmp_path / "old"
    shutil.copytree(CKPT, old)
    doc = json.loads((old / "config.json").read_text())
    for key in ("method", "width"):
        doc["config"].pop(key)
    doc["config"]["order"] = 17
    doc["meta"].pop("domain")
    (old / "config.json").write_text(json.dumps(doc))
    model = R.load_model(old)
    assert (model.config.method, model.config.order, model.domain) == ("sharp", 17, None)
    F = _nsm1()[None].copy()
    F[0, 0, 0, :3] = [0.0, 0.0, 0.95 * F[0, 0, 0, 3]]  # ν_e flux factor above the 0.9 training cut
    with pytest.warns(R.OutOfDomainWarning, match="records no training ranges"):
        out = np.asarray(box3d_jax.predict(F, residual=old))
    ntot = F[..., 3].sum()
    expect = np.asarray(B.box3d(F, 17, method="sharp")) + np.asarray(R.residual(model.params, F, model.config))
    np.testing.assert_allclose(out, expect, rtol=0, atol=1e-12 * ntot)
