"""Residual model: equivariance, exact conservation, μ/τ symmetry, training; jax.export round trip."""

import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from box3d_jax import box3d as B
from box3d_jax import export as E
from box3d_jax import metrics
from box3d_jax import residual as R
from box3d_jax.errors import DataFileError
from box3d_jax.synthetic import make_synthetic_dataset, random_initial_states

CFG = R.ResidualConfig(hidden=(16, 16))
residual = jax.jit(R.residual, static_argnums=2)


def _random_params(cfg=CFG, seed=1, scale=0.3):
    """Parameters with a non-zero last layer (a fresh model is exactly zero)."""
    p = R.init_params(cfg, jax.random.PRNGKey(seed))
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [lf + scale * jax.random.normal(k, lf.shape, lf.dtype) for lf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, leaves)


@pytest.fixture(scope="module")
def states():
    return random_initial_states(np.random.default_rng(0), 32, max_flux_factor=0.9)


def test_fresh_model_is_box3d_and_conservation_exact(states):
    fresh = R.init_params(CFG, jax.random.PRNGKey(0))
    assert np.all(np.asarray(residual(fresh, states, CFG)) == 0.0)
    dF = np.asarray(residual(_random_params(), states, CFG))
    ntot = states[..., 3].sum(axis=(1, 2))
    assert np.abs(dF).max() / ntot.max() > 1e-3  # the test model does something
    tol = 1e-14 * ntot[:, None]
    assert np.all(np.abs(dF.sum(axis=2)).reshape(32, -1) <= tol)  # Σ_flavor ΔF4 = 0, ν and ν̄
    assert np.all(np.abs(dF[:, 0, :, 3] - dF[:, 1, :, 3]) <= tol)  # lepton numbers
    np.testing.assert_array_equal(dF[:, :, 1], dF[:, :, 2])  # μ' = τ'


def test_equivariance_and_mu_tau_and_scale_symmetry(states):
    p = _random_params()
    dF = np.asarray(residual(p, states, CFG))
    scale = np.abs(dF).max()
    Rm = Rotation.random(random_state=7).as_matrix() @ np.diag([-1.0, 1, 1])
    rot = states.copy()
    rot[..., :3] = states[..., :3] @ Rm.T
    dF_rot = dF.copy()
    dF_rot[..., :3] = dF[..., :3] @ Rm.T
    # exact up to the float32 MLP seeing invariants that differ by float64 round-off
    np.testing.assert_allclose(np.asarray(residual(p, rot, CFG)), dF_rot, atol=1e-5 * scale)
    swap = states[:, :, [0, 2, 1]]
    np.testing.assert_allclose(np.asarray(residual(p, swap, CFG)), dF, atol=1e-12 * scale)
    np.testing.assert_allclose(np.asarray(residual(p, 4.2e32 * states, CFG)), 4.2e32 * dF, rtol=1e-5, atol=1e-6 * 4.2e32 * scale)


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_dataset(700, seed=2, order=29)


def test_training_learns_known_residual_on_held_out_points(synthetic):
    Fi, Ff = synthetic
    cfg = R.ResidualConfig(hidden=(32, 32))
    train, kept = R.prepare_data(Fi[:550], Ff[:550], cfg)
    assert 0.5 < kept.mean() < 1.0  # the flux-factor cut removes some rows (max ff 0.95 drawn)
    params, hist = R.train(train, cfg, epochs=40, batch_size=64, learning_rate=3e-3, seed=0)
    assert hist[-1] < 0.2 * hist[0]
    test, _ = R.prepare_data(Fi[550:], Ff[550:], cfg)
    pred = np.asarray(jax.jit(R.build_predict(cfg))(params, test.F4_initial))
    m = metrics.compare_methods({"box3d": test.F4_box3d, "residual": pred}, test.F4_final, test.F4_initial)
    assert m["residual"]["rms"] < 0.5 * m["box3d"]["rms"]


def test_checkpoint_round_trip_and_errors(tmp_path):
    p = _random_params()
    R.save_checkpoint(tmp_path / "ck", p, CFG, {"note": "x"})
    p2, cfg2, meta = R.load_checkpoint(tmp_path / "ck")
    assert cfg2 == CFG and meta == {"note": "x"}
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(DataFileError, match="not a residual-model checkpoint"):
        R.load_checkpoint(tmp_path / "missing")
    R.save_checkpoint(tmp_path / "other", p, R.ResidualConfig(hidden=(16, 16)))
    (tmp_path / "other" / "config.json").write_text((tmp_path / "other" / "config.json").read_text().replace("16", "8", 1))
    with pytest.raises(DataFileError, match="do not match"):
        R.load_checkpoint(tmp_path / "other")


def test_export_round_trip(tmp_path, states):
    exp = E.export_box3d()  # default: converged smooth method
    f = E.load(E.save(tmp_path / "b.jaxexport", exp))
    out, growth = f.call(states[:7])  # symbolic batch size
    res = B.box3d_info(states[:7])
    ntot = states[..., 3].sum(axis=(1, 2)).max()
    # the same operations compiled for a symbolic and a fixed batch: round-off differences only
    np.testing.assert_allclose(np.asarray(out), np.asarray(res.F4), rtol=0, atol=1e-14 * ntot)
    np.testing.assert_allclose(np.asarray(growth), np.asarray(res.growth_rate), rtol=1e-12)
    assert f.call(states[:3])[0].shape == (3, 2, 3, 4)
    p = _random_params()
    fr = E.load(E.save(tmp_path / "r.jaxexport", E.export_box3d(params=p, config=CFG)))
    ntot = states[..., 3].sum(axis=(1, 2)).max()
    expect = np.asarray(jax.jit(R.build_predict(CFG))(p, states))
    np.testing.assert_allclose(np.asarray(fr.call(states)[0]), expect, rtol=0, atol=1e-7 * ntot)  # float32 MLP
    assert "stablehlo" in E.write_stablehlo(tmp_path / "b.mlir", exp).read_text()[:100000]
    (tmp_path / "bad").write_bytes(b"nope")
    with pytest.raises(DataFileError):
        E.load(tmp_path / "bad")
