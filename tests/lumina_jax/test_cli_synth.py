"""`lumina-jax simulate`: every bad input is one error line, found before any spectrum is computed."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from lumina_jax.cli import app
from lumina_jax.errors import UserError

GOOD = {"log_L": 42.975, "v_inner": 10000.0, "log_rho_0": -13.097, "density_exp": -7.0, "T_e_ratio": 0.9,
        "v_core": 10000.0, "v_wall": 16000.0, "X_Fe_core": 0.5, "X_Si_wall": 0.4, "v_break": 20000.0,
        "density_exp_outer": -7.0, "t_exp": 19.0, "X_Fe_wall": 0.1, "X_Ni": 0.1, "X_Fe_outer": 0.05}


@pytest.fixture
def no_synth(monkeypatch):
    """Building the synthesizer fails the test: the checks must come first."""
    from lumina_jax import synth

    def boom(*a, **k):
        raise AssertionError("the synthesizer was built before the inputs were checked")

    monkeypatch.setattr(synth.Synthesizer, "default", boom)


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.json"
    p.write_text(json.dumps(GOOD))
    return p


def _simulate(*args):
    return CliRunner().invoke(app, ["simulate", "--stage", "1", *map(str, args)])


@pytest.mark.parametrize("content,message", [
    (json.dumps({"theta": ["a"] * 15}), "'theta' must be a list of 15 numbers"),
    (json.dumps({"theta": [1.0, 2.0]}), "'theta' must be a list of 15 numbers"),
    (json.dumps({"theta": 3}), "'theta' must be a list"),
    (json.dumps({**GOOD, "log_L": True}), "'log_L' must be a number"),
    (b"\xff\xfe\x00garbage", "not a text"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_params_file(no_synth, tmp_path, content, message):
    p = tmp_path / "p.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = _simulate("--params", p, "--out", tmp_path / "s.csv")
    assert isinstance(r.exception, UserError) and message in str(r.exception), r.output


def test_params_directory(no_synth, tmp_path):
    r = _simulate("--params", tmp_path, "--out", tmp_path / "s.csv")
    assert isinstance(r.exception, UserError) and "is a directory" in str(r.exception)


@pytest.mark.parametrize("out,plot,message", [
    ("adir", None, "is a directory"),
    ("afile/s.csv", None, "is not a directory"),
    ("s.csv", "s.xyz", "unknown figure format"),
    ("s.csv", "adir", "is a directory"),
    ("s.csv", "nodir/s.png", "does not exist"),
    ("good.json", None, "input file"),
])
def test_bad_outputs_are_caught_before_the_spectrum(no_synth, good, tmp_path, out, plot, message):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    args = ["--params", good, "--out", tmp_path / out] + (["--plot", tmp_path / plot] if plot else [])
    r = _simulate(*args)
    assert isinstance(r.exception, UserError) and message in str(r.exception), r.output
    assert json.loads(good.read_text()) == GOOD


def test_theta_form_and_missing_output_directory_are_accepted(monkeypatch, good, tmp_path):
    """{"theta": [...]} reads like {name: value}; --out's missing directories are created (before the work)."""
    import numpy as np

    from lumina_jax import synth

    seen = []

    class Fake:
        n_lines, wavelength = 3, np.linspace(5000.0, 7000.0, 201)

        def spectrum_and_state(self, theta):
            seen.append(np.asarray(theta))
            flux = 1e39 * (1.0 + 0.01 * np.abs(self.wavelength - 6100.0))
            return flux, {"t_inner": 1.2e4, "l_emergent": 10 ** theta[0]}

    monkeypatch.setattr(synth.Synthesizer, "default", staticmethod(lambda space, cfg: Fake()))
    p = tmp_path / "theta.json"
    p.write_text(json.dumps({"theta": list(GOOD.values())}))
    out = tmp_path / "new" / "dir" / "s.csv"
    for params, force in ((good, []), (p, ["--force"])):  # the second run replaces the first's file
        r = _simulate("--params", params, "--out", out, "--json", *force)
        assert r.exit_code == 0, r.output
        info = json.loads(r.output, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
        assert info["si_ii_minimum_A"] == pytest.approx(6100.0) and out.is_file()
    np.testing.assert_array_equal(seen[0], seen[1])


def test_one_line_error_through_the_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lumina_jax", "simulate", "--stage", "1", "--params", str(tmp_path),
                        "--out", str(tmp_path / "s.csv")], capture_output=True, text=True)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr


class _FakeSynth:
    n_lines, wavelength = 3, np.linspace(5000.0, 7000.0, 201)

    def spectrum_and_state(self, theta):
        flux = 1e39 * (1.0 + 0.01 * np.abs(self.wavelength - 6100.0))
        return flux, {"t_inner": 1.2e4, "l_emergent": 10 ** theta[0]}


def test_existing_out_and_plot_are_never_overwritten_without_force(monkeypatch, good, tmp_path):
    """`simulate --out old.csv --plot old.png` stops before the synthesizer with one line naming
    --force and leaves both files as they were; with --force both are replaced."""
    from lumina_jax import synth

    built = []
    monkeypatch.setattr(synth.Synthesizer, "default", staticmethod(lambda space, cfg: built.append(1) or _FakeSynth()))
    out, plot = tmp_path / "old.csv", tmp_path / "old.png"
    out.write_text("my old spectrum")
    plot.write_bytes(b"my old plot")
    for args in (["--out", out], ["--out", tmp_path / "new.csv", "--plot", plot], ["--out", out, "--plot", plot]):
        r = _simulate("--params", good, *args)
        assert isinstance(r.exception, UserError) and "already exists" in str(r.exception) \
            and "--force" in str(r.exception), r.output
    assert not built and out.read_text() == "my old spectrum" and plot.read_bytes() == b"my old plot"
    assert not (tmp_path / "new.csv").exists()
    r = _simulate("--params", good, "--out", out, "--plot", out, "--force")
    assert isinstance(r.exception, UserError) and "own file name" in str(r.exception)
    assert not built and out.read_text() == "my old spectrum"
    r = _simulate("--params", good, "--out", out, "--plot", plot, "--force")
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("wavelength_A,L_lambda_erg_s_A") and plot.read_bytes()[:4] == b"\x89PNG"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["good.json", "old.csv", "old.png"]  # no temporary left


@pytest.mark.parametrize("sub", ["", "sub"])
def test_download_kurucz_refuses_a_file_dest_before_downloading(monkeypatch, tmp_path, sub):
    from lumina_jax.atomic import kurucz

    def boom(*a, **k):
        raise AssertionError("downloading started before --dest was checked")

    monkeypatch.setattr(kurucz, "download_kurucz", boom)
    f = tmp_path / "afile"
    f.write_text("keep")
    r = CliRunner().invoke(app, ["atomic", "download-kurucz", "--dest", str(f / sub if sub else f)])
    assert isinstance(r.exception, UserError) and "is a file" in str(r.exception)  # main(): one line, exit 2
    assert f.read_text() == "keep"
