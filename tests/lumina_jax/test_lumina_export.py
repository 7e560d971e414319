"""The LUMINA reference exporter: its files pass the validator and carry our physics."""

import json

import numpy as np
import pytest

import lumina_jax  # noqa: F401  (float64)
import jax.numpy as jnp

from lumina_jax.atomic import macroatom
from lumina_jax.atomic.data import HC_EV_A, Levels, assemble, line_coefficients, save_npz, vacuum_to_air
from lumina_jax.ejecta import build_ejecta
from lumina_jax.lumina_export import reference_tables
from lumina_jax.params import ATOMIC_NUMBERS, load_space
from lumina_jax.synth.state import SN2011FE_LIKE, plasma_for_all_lines
from runners.backends.lumina_ref import check_reference, write_reference


def small_atomic():
    """Every ion: levels 0, 1 (metastable), 2 (odd), 3.5 eV; lines of Si II, Ca II and Fe II among them."""
    lv = Levels(np.array([0.0, 1.0, 2.0, 3.5]), np.array([2.0, 4.0, 6.0, 8.0]), np.array([0, 0, 1, 0]))
    levels = {(e, s): lv for e in range(11) for s in range(5)}
    chi = np.tile([8.0, 16.0, 30.0, 45.0], (11, 1))
    de = np.array([2.0, 1.0, 1.5, 2.0, 3.5, 1.5])
    lines = {"wl": vacuum_to_air(HC_EV_A / de), "gf": np.array([1.0, 0.5, 0.3, 2.0, 0.1, 0.7]),
             "e_low": np.array([0.0, 1.0, 2.0, 0.0, 0.0, 2.0]), "el": np.array([3, 3, 3, 5, 8, 8]),
             "stage": np.array([1, 1, 1, 1, 1, 2])}
    return assemble(lines, levels, chi)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    a = small_atomic()
    space = load_space(1)
    ej = build_ejecta(jnp.asarray(space.from_dict(SN2011FE_LIKE)), space)
    state = plasma_for_all_lines(a, ej, t_inner=10500.0)
    tables = reference_tables(a, state, n_packets=1000, n_iterations=5, seed=7)
    out = tmp_path_factory.mktemp("ref") / "ref"
    write_reference(out, tables)
    return a, state, tables, out


def test_exported_directory_is_valid(exported):
    *_, out = exported
    assert check_reference(out) == []


def test_exported_lines_levels_and_state(exported):
    a, state, t, out = exported
    ll = t["line_list.csv"]
    assert np.all(np.diff(ll["nu"]) <= 0)
    # each line's levels: level numbers within the ion, upper macro level = the levels.csv row
    lev = t["levels.csv"]
    rows = t["line2macro_level_upper.npy"]
    assert np.all(lev["atomic_number"][rows] == ll["atomic_number"])
    assert np.all(lev["level_number"][rows] == ll["level_number_upper"])
    e_up = lev["energy_eV"][rows]
    np.testing.assert_allclose(e_up - a.lev_energy[a.lower][np.argsort(-line_coefficients(a)["nu"], kind="stable")],
                               HC_EV_A / (ll["wavelength_cm"] * 1e8), rtol=1e-6)
    assert set(ll["atomic_number"]) == {ATOMIC_NUMBERS[3], ATOMIC_NUMBERS[5], ATOMIC_NUMBERS[8]}
    # the plasma state and the geometry of our model (cm, cm/s)
    np.testing.assert_allclose(t["plasma_state.csv"]["W"], state["w"])
    np.testing.assert_allclose(t["geometry.csv"]["v_inner"], state["v_inner"] * 1e5)
    np.testing.assert_allclose(t["geometry.csv"]["r_inner"], state["v_inner"] * 1e5 * state["t_exp"], rtol=1e-12)
    np.testing.assert_allclose(t["tau_sobolev.npy"].shape, (a.n_lines, 30))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["T_inner_K"] == 10500.0 and cfg["n_packets"] == 1000 and cfg["seed"] == 7


def test_exported_transition_probabilities_are_lucys(exported):
    a, state, t, _ = exported
    p = t["transition_probabilities.npy"]
    refs = np.append(t["macro_atom_references.csv"]["block_references"], len(p))
    cum = np.vstack([np.zeros((1, p.shape[1])), np.cumsum(p, axis=0)])
    sums = (cum[refs[1:]] - cum[refs[:-1]])[np.diff(refs) > 0]
    assert np.all((np.abs(sums - 1) < 1e-12) | (sums == 0))
    # by hand for the Si II 3.5 eV level (lines 2 -> 3.5 and 0 -> 3.5 eV absent: only 2 -> 3.5 ends there)
    md = t["macro_atom_data.csv"]
    ll = t["line_list.csv"]
    k = int(np.flatnonzero((ll["atomic_number"] == 14) & (ll["level_number_upper"] == 3))[0])
    rows = np.flatnonzero(md["lines_idx"] == k)
    kinds = md["transition_type"][rows]
    em, down = rows[kinds == -1][0], rows[kinds == 0][0]
    # the upper level has one downward line: emission weight (3.5 - 2), internal down weight 2
    s = 5
    np.testing.assert_allclose(p[em, s] / (p[em, s] + p[down, s]), 1.5 / 3.5, rtol=1e-12)
    assert macroatom.EMISSION == -1


def test_cli_export_and_check(tmp_path):
    from lumina_jax.cli import app
    from typer.testing import CliRunner

    a = small_atomic()
    save_npz(tmp_path / "small.npz", a, {"name": "small"})
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(f"atomic: {tmp_path / 'small.npz'}\nradiation: {{t_inner_iterations: 1}}\n"
                   "line_selection: {n_samples: 4}\n")
    params = tmp_path / "p.json"
    params.write_text(json.dumps(SN2011FE_LIKE))
    r = CliRunner().invoke(app, ["lumina", "export-ref", "--out", str(tmp_path / "ref"), "--stage", "1",
                                 "--params", str(params), "--synth-config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["n_lines"] == a.n_lines and summary["n_shells"] == 30
    r = CliRunner().invoke(app, ["lumina", "check-ref", str(tmp_path / "ref")])
    assert r.exit_code == 0 and "valid" in r.stdout
    # a second export without --force is refused; a broken directory fails the check
    r = CliRunner().invoke(app, ["lumina", "export-ref", "--out", str(tmp_path / "ref"), "--stage", "1",
                                 "--params", str(params), "--synth-config", str(cfg)])
    assert r.exit_code != 0
    (tmp_path / "ref" / "levels.csv").unlink()
    r = CliRunner().invoke(app, ["lumina", "check-ref", str(tmp_path / "ref")])
    assert r.exit_code == 1 and "levels.csv" in r.stdout


def test_campaign_reference_is_the_box_centre(tmp_path):
    from lumina_jax.lumina_export import campaign_reference

    save_npz(tmp_path / "small.npz", small_atomic(), {"name": "small"})
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(f"atomic: {tmp_path / 'small.npz'}\nradiation: {{t_inner_iterations: 1}}\n")
    space = load_space(1)
    out = campaign_reference(space, tmp_path / "c.ref", config=cfg)
    assert check_reference(out) == []
    meta = json.loads((out / "lumina_jax_export.json").read_text())
    centre = space.from_unit(np.full(space.dim, 0.5))
    assert meta["model"]["box_centre"]["v_inner"] == pytest.approx(float(centre[space.index("v_inner")]))
    geo = np.loadtxt(out / "geometry.csv", delimiter=",", skiprows=1)
    assert geo[0, 3] == pytest.approx(float(centre[space.index("v_inner")]) * 1e5)


def test_real_lumina_binary_runs_on_an_exported_reference(exported, tmp_path):
    """Opt-in: a LUMINA-SN binary built from its public source (LUMINA_BIN=/path/to/lumina)."""
    import os
    import subprocess

    binary = os.environ.get("LUMINA_BIN")
    if not binary:
        pytest.skip("LUMINA_BIN not set: no LUMINA-SN binary to run")
    *_, ref = exported
    env = dict(os.environ, OMP_NUM_THREADS="1", LUMINA_SPEC_RANGE="3000,10000,100")
    r = subprocess.run([binary, str(ref), "2000", "5", "real"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "WARNING" not in r.stdout + r.stderr and "MACRO BUG" not in r.stderr
    from runners.backends.lumina import parse_stdout

    fig = parse_stdout(r.stdout)
    assert fig.iteration == 5 and fig.l_emitted and fig.l_requested
    spec = np.loadtxt(tmp_path / "lumina_spectrum.csv", delimiter=",", skiprows=1)
    assert spec.shape == (100, 2) and np.all(np.isfinite(spec)) and spec[:, 1].sum() > 0
