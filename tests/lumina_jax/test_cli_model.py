import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lumina_jax.cli import app

runner = CliRunner()


def run_cli(*args):
    """Run the real entry point (one-line errors, exit codes) in a subprocess."""
    return subprocess.run([sys.executable, "-m", "lumina_jax", *args], capture_output=True, text=True)


@pytest.mark.parametrize("stage,dim", [(1, 15), (2, 63), (3, 135)])
def test_params_json(stage, dim):
    r = runner.invoke(app, ["params", "--stage", str(stage), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["dim"] == dim and len(d["parameters"]) == dim


def test_ejecta_json(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({
        "log_L": 42.95, "v_inner": 10000, "log_rho_0": -13.1, "density_exp": -7, "T_e_ratio": 0.9,
        "v_core": 11000, "v_wall": 16000, "X_Fe_core": 0.4, "X_Si_wall": 0.35, "v_break": 15000,
        "density_exp_outer": -9, "t_exp": 19, "X_Fe_wall": 0.05, "X_Ni": 0.15, "X_Fe_outer": 0.01}))
    r = runner.invoke(app, ["ejecta", "--stage", "1", "--params", str(p), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert len(d["shells"]) == 30
    assert d["shells"][0]["v_mid_kms"] == pytest.approx(10250.0)
    assert abs(sum(v for k, v in d["shells"][0].items() if k.startswith("X_")) - 1) < 1e-9


@pytest.mark.parametrize("content,message", [
    ('{"log_L": 42.9, "bogus": 1}', "unknown parameter"),
    ('{"log_L": NaN}', "non-finite|missing"),
    ("{not json", "malformed JSON"),
    ('{"log_L": "high"}', "must be a number"),
])
def test_bad_input_one_line_error(tmp_path, content, message):
    import re

    p = tmp_path / "bad.json"
    p.write_text(content)
    r = run_cli("ejecta", "--stage", "1", "--params", str(p))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(message, lines[0]), r.stderr


def test_out_of_range_value_rejected(tmp_path):
    vals = {"log_L": 44.5, "v_inner": 10000, "log_rho_0": -13.1, "density_exp": -7, "T_e_ratio": 0.9,
            "v_core": 11000, "v_wall": 16000, "X_Fe_core": 0.4, "X_Si_wall": 0.35, "v_break": 15000,
            "density_exp_outer": -9, "t_exp": 19, "X_Fe_wall": 0.05, "X_Ni": 0.15, "X_Fe_outer": 0.01}
    p = tmp_path / "p.json"
    p.write_text(json.dumps(vals))
    r = run_cli("ejecta", "--stage", "1", "--params", str(p))
    assert r.returncode == 2 and "log_L = 44.5 is outside its range [42.5, 43.5]" in r.stderr
    assert "Traceback" not in r.stderr


def test_help_everywhere():
    for args in (["--help"], ["params", "--help"], ["ejecta", "--help"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "Usage" in r.output


@pytest.mark.parametrize("n_knots,extra,message", [
    ("0", ["--parametrisation", "knots"], "n_knots must be an integer from 2 to the 15 composition zones"),
    ("-3", ["--parametrisation", "knots"], "n_knots must be an integer from 2 to the 15 composition zones"),
    ("16", ["--parametrisation", "knots"], "n_knots must be an integer from 2 to the 15 composition zones"),
    ("5", [], "--parametrisation knots only"),
])
def test_params_n_knots_out_of_range(n_knots, extra, message):
    from lumina_jax.errors import UserError

    r = runner.invoke(app, ["params", "--stage", "3", *extra, "--n-knots", n_knots, "--json"])
    assert isinstance(r.exception, UserError) and message in str(r.exception), r.output


@pytest.mark.parametrize("n_knots,dim", [("2", 31), ("4", 47), ("15", 135)])
def test_params_n_knots_in_range(n_knots, dim):
    r = runner.invoke(app, ["params", "--stage", "3", "--parametrisation", "knots", "--n-knots", n_knots, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["dim"] == dim and d["n_knots"] == int(n_knots)


def test_ejecta_unreadable_params_file(tmp_path):
    from lumina_jax.errors import UserError

    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    for path, message in ((binary, "not a text"), (tmp_path, "is a directory")):
        r = runner.invoke(app, ["ejecta", "--stage", "1", "--params", str(path)])
        assert isinstance(r.exception, UserError) and message in str(r.exception), r.output
