"""`ffi generate` (resumable, Rhea/Emu format) and `ffi solve` on tiny grids."""

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from box3d_jax import generate as G
from box3d_jax import io, qke
from box3d_jax.errors import UserError
from lumina_jax.cli import app

TINY = ["--n-z", "16", "--order", "11", "--n-wavelengths", "2", "--lsa-order", "0"]


def _invoke(args):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


def test_sampler_is_physical_and_reproducible():
    for i in range(50):
        F4 = G.sample_point(np.random.default_rng([3, i]))
        assert F4.shape == (2, 3, 4)
        N = F4[..., 3]
        assert (N > 0).all()
        assert (np.linalg.norm(F4[..., :3], axis=-1) < 0.9 * N).all()
        np.testing.assert_array_equal(F4[:, 1], F4[:, 2])  # μ = τ
    np.testing.assert_array_equal(G.sample_point(np.random.default_rng([3, 7])),
                                  G.sample_point(np.random.default_rng([3, 7])))


def test_generate_resume_and_solve(tmp_path):
    out = tmp_path / "gen.h5"
    _invoke(["ffi", "generate", "--n", "1", "--out", str(out), *TINY, "--json"])
    first = io.read_dataset(out, require_final=True)
    assert first.n == 1
    # refusing to overwrite without --resume, then resuming to 2 points
    res = CliRunner().invoke(app, ["ffi", "generate", "--n", "2", "--out", str(out), *TINY])
    assert res.exit_code != 0
    summary = json.loads(_invoke(["ffi", "generate", "--n", "2", "--out", str(out), "--resume", *TINY, "--json"]))
    ds = io.read_dataset(out, require_final=True)
    assert ds.n == 2 and summary["accepted"] >= 2
    np.testing.assert_array_equal(ds.F4_initial[0], first.F4_initial[0])  # resumed, not redone
    assert not (tmp_path / "gen.h5.tmp").exists()
    with h5py.File(out) as h5:
        assert h5["F4_initial(1|ccm)"].shape == (2, 4, 2, 3)
    # ground truth conserves the flavor-summed number and every lepton number
    ntot = ds.F4_initial[..., 3].sum(axis=(1, 2))
    for a, b in ((ds.F4_initial, ds.F4_final),):
        np.testing.assert_allclose(b[..., 3].sum(axis=2), a[..., 3].sum(axis=2), rtol=1e-9)
        np.testing.assert_allclose((b[:, 0] - b[:, 1])[..., 3] / ntot[:, None],
                                   (a[:, 0] - a[:, 1])[..., 3] / ntot[:, None], atol=1e-9)
    assert (ds.growth_rate >= 0).all()
    # ffi solve on the generated initial states reproduces the pipeline
    solved = tmp_path / "solved.h5"
    io.write_dataset(tmp_path / "in.h5", ds.F4_initial[:1])
    summary = json.loads(_invoke(["ffi", "solve", str(tmp_path / "in.h5"), "--out", str(solved), *TINY, "--json"]))
    assert summary["max_conservation_error"] < 1e-9
    sol = io.read_dataset(solved, require_final=True)
    assert sol.F4_final.shape == (1, 2, 3, 4) and sol.F4_final_stddev is not None


def test_solve_rejects_bad_input(tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as h5:
        h5.create_dataset("F4_initial(1|ccm)", data=np.zeros((1, 4, 2, 2)))
    res = CliRunner().invoke(app, ["ffi", "solve", str(bad), "--out", str(tmp_path / "o.h5")])
    assert res.exit_code != 0


def test_solve_json_is_strict_and_the_input_is_safe(tmp_path):
    # runs far too short to saturate: no growth rate can be fitted (NaN), written as null
    Fi = np.stack([G.sample_point(np.random.default_rng([5, i])) for i in range(2)])
    inp = io.write_dataset(tmp_path / "in.h5", Fi)
    args = ["--n-z", "8", "--order", "5", "--lsa-order", "5", "--t-end-growth", "5", "--json"]
    text = _invoke(["ffi", "solve", str(inp), "--out", str(tmp_path / "o.h5"), *args])
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    ratios = summary["growth_rate_fit_over_lsa"]
    assert len(ratios) == 2 and None in ratios
    # never the input file, even with --force; an existing output only with --force
    for out, extra, why in ((inp, ["--force"], "input file"), (tmp_path / "o.h5", [], "--force")):
        res = CliRunner().invoke(app, ["ffi", "solve", str(inp), "--out", str(out), *args, *extra])
        assert isinstance(res.exception, UserError) and why in str(res.exception)
    assert io.read_dataset(inp).F4_final is None


def test_negative_seed_is_a_user_error(tmp_path):
    from box3d_jax.errors import ParameterError

    out = tmp_path / "g.h5"
    res = CliRunner().invoke(app, ["ffi", "generate", "--n", "1", "--out", str(out), "--seed", "-1", *TINY])
    assert isinstance(res.exception, ParameterError) and "seed must be >= 0" in str(res.exception)
    assert not out.exists()
