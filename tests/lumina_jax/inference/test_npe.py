"""Amortised posterior (NPE): flow density, box bijection, a Gaussian toy, the simulator's noise
model against the real preprocessing, checkpoints and the SBC statistics."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from lumina_jax.errors import DataFileError, UserError
from lumina_jax.inference import npe
from lumina_jax.workflows import npe as npe_io, sbc
from lumina_jax.inference.density import make_setup
from lumina_jax.params import load_space
from lumina_jax.preprocess import PreprocessConfig


def _perturbed(model, key, scale=0.3):
    """``model`` with every float leaf moved by N(0, scale^2): a generic, non-identity flow."""
    leaves, tree = jax.tree.flatten(model)
    keys = jax.random.split(key, len(leaves))
    out = [l + scale * jax.random.normal(k, l.shape, l.dtype) if eqx.is_inexact_array(l) else l
           for l, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, out)


def test_box_bijection_is_exact_at_the_edges():
    box = npe.Box(jnp.array([0.0, -3.0]), jnp.array([1.0, 7.0]), 0.1)
    s = jnp.array([[-jnp.inf, jnp.inf, 0.5], [-800.0, 800.0, -2.0], [-40.0, 40.0, 0.0]])
    t = np.asarray(npe.to_box(s, box, 2))
    assert t[0, 0] == 0.0 and t[0, 1] == 7.0  # the walls themselves, exactly
    assert t[1, 0] == 0.0 and t[1, 1] == 7.0
    assert np.all(t[:, :2] >= [0.0, -3.0]) and np.all(t[:, :2] <= [1.0, 7.0])
    assert t[0, 2] == pytest.approx(0.05)  # the unbounded part: poly_sd * s
    back = np.asarray(npe.from_box(jnp.array([[0.0, 7.0, 0.0]]), box, 2))
    assert back[0, 0] == -np.inf and back[0, 1] == np.inf
    # round trip just inside the walls and inside
    for u in (1e-12, 1e-6, 0.5, 1 - 1e-6):
        tt = jnp.array([[u, -3.0 + 10.0 * u, 0.3]])
        rt = np.asarray(npe.to_box(npe.from_box(tt, box, 2), box, 2))
        np.testing.assert_allclose(rt, np.asarray(tt), rtol=1e-9, atol=1e-15)
    # the log-Jacobian against autodiff
    s0 = jnp.array([0.3, -1.7, 2.0])
    jac = jax.jacfwd(lambda v: npe.to_box(v[None], box, 2)[0])(s0)
    assert float(npe.box_log_det(s0[None], box, 2)[0]) == pytest.approx(float(np.log(abs(np.linalg.det(jac)))),
                                                                         rel=1e-10)


def test_flow_density_integrates_to_one_on_a_2d_box():
    st = npe.NPESettings(n_box=2, n_poly=0, n_feat=3, n_embed=4, embed_width=8, flow_layers=2, nn_width=16)
    # scale 0.2: at 0.3 the affine layer makes density peaks (~250) that this grid does not resolve
    model = _perturbed(npe.init_model(jax.random.PRNGKey(0), st), jax.random.PRNGKey(1), scale=0.2)
    box = npe.Box(jnp.array([0.0, 2.0]), jnp.array([1.0, 5.0]), 1.0)
    n = 500
    u = (np.arange(n) + 0.5) / n
    g1, g2 = np.meshgrid(u, 2.0 + 3.0 * u, indexing="ij")
    t = jnp.asarray(np.stack([g1.ravel(), g2.ravel()], -1))
    for feats in (jnp.array([0.3, -1.0, 2.0]), jnp.array([-2.0, 0.5, 0.0])):
        f = jnp.broadcast_to(feats, (t.shape[0], 3))
        lp = eqx.filter_jit(lambda m, t, f: npe.log_prob(m, t, f, box, 2))(model, t, f)
        integral = float(jnp.sum(jnp.exp(lp)) * (1.0 / n) * (3.0 / n))
        assert integral == pytest.approx(1.0, abs=0.01)
    # the draws stay in the box and follow that density (20 x 20 cells, chi-square)
    d = np.asarray(npe.sample(model, jax.random.PRNGKey(2), feats, 40000, box, 2))
    assert np.all((d >= [0.0, 2.0]) & (d <= [1.0, 5.0]))
    counts, _, _ = np.histogram2d(d[:, 0], d[:, 1], bins=20, range=[[0.0, 1.0], [2.0, 5.0]])
    p_cell = np.exp(np.asarray(lp)).reshape(n, n).reshape(20, n // 20, 20, n // 20).sum((1, 3)) * (1.0 / n) * (3.0 / n)
    expected = d.shape[0] * p_cell / p_cell.sum()
    ok = expected > 5
    chi2 = np.sum((counts[ok] - expected[ok]) ** 2 / expected[ok])
    assert chi2 / ok.sum() < 1.5


def _gaussian_toy_fit(affine_layers: int, steps: int):
    """theta ~ U(0, 1), c ~ N(0, 1); x = (theta + 0.1 e1, c + 0.5 e2)."""
    st = npe.NPESettings(n_box=1, n_poly=1, n_feat=2, n_embed=8, embed_width=32, flow_layers=3, nn_width=32,
                         affine_layers=affine_layers)
    box = npe.Box(jnp.array([0.0]), jnp.array([1.0]), 1.0)

    def draw(k):
        k1, k2, k3 = jax.random.split(k, 3)
        th = jax.random.uniform(k1, (512, 1))
        c = jax.random.normal(k2, (512, 1))
        x = jnp.concatenate([th, c], -1) + jnp.array([0.1, 0.5]) * jax.random.normal(k3, (512, 2))
        return npe.from_box(jnp.concatenate([th, c], -1), box, 1), x

    model = npe.init_model(jax.random.PRNGKey(0), st)
    model, _ = npe.fit_flow(jax.random.PRNGKey(1), model, jax.jit(draw), steps=steps, learning_rate=5e-3,
                            eval_every=steps)
    return model, box


def _truncated_normal_moments(mu, sd):
    """Mean and sd of N(mu, sd) truncated to [0, 1] (numerical, fine grid)."""
    g = np.linspace(0.0, 1.0, 20001)
    w = norm.pdf(g, mu, sd)
    m = np.sum(g * w) / np.sum(w)
    return m, np.sqrt(np.sum((g - m) ** 2 * w) / np.sum(w))


def test_gaussian_toy_posterior_is_recovered():
    """The exact posterior is N(x1, 0.1) truncated to the box for theta (also beside a wall,
    where it is skewed in the flow's logit coordinate) and N(0.8 x2, 0.2) for c."""
    model, box = _gaussian_toy_fit(affine_layers=1, steps=1500)
    for x in ([0.5, 1.0], [0.15, -0.6], [0.97, 0.0]):
        d = np.asarray(npe.sample(model, jax.random.PRNGKey(3), jnp.array(x), 20000, box, 1))
        m_th, sd_th = _truncated_normal_moments(x[0], 0.1)
        assert np.mean(d[:, 0]) == pytest.approx(m_th, abs=0.01)
        assert np.std(d[:, 0]) == pytest.approx(sd_th, rel=0.05)
        assert np.mean(d[:, 1]) == pytest.approx(0.8 * x[1], abs=0.04)
        assert np.std(d[:, 1]) == pytest.approx(np.sqrt(0.2), rel=0.05)


@pytest.mark.slow
def test_splines_alone_come_out_broad_on_the_gaussian_toy():
    """Why the flow ends in affine layers: the same toy with splines only (identity outside
    +-interval) converges to a theta posterior 18-54 % too broad (3,000 steps)."""
    model, box = _gaussian_toy_fit(affine_layers=0, steps=3000)
    d = np.asarray(npe.sample(model, jax.random.PRNGKey(3), jnp.array([0.5, 1.0]), 20000, box, 1))
    assert np.std(d[:, 0]) > 1.1 * _truncated_normal_moments(0.5, 0.1)[1]


def test_settings_of_checkpoints_without_affine_layers_read_as_splines_only():
    d = npe.NPESettings(n_box=2, n_poly=1, n_feat=3).to_dict()
    assert d["affine_layers"] == 1  # the default flow ends in an affine layer
    del d["affine_layers"]
    old = npe.NPESettings.from_dict(d)
    assert old.affine_layers == 0
    # and its skeleton is the splines-only flow those checkpoints hold
    n_old = len(jax.tree.leaves(eqx.filter(npe.init_model(jax.random.PRNGKey(0), old), eqx.is_inexact_array)))
    n_new = len(jax.tree.leaves(eqx.filter(npe.init_model(jax.random.PRNGKey(0), dataclasses.replace(old, affine_layers=1)),
                                            eqx.is_inexact_array)))
    assert n_new > n_old


def _spectrum(grid):
    """A smooth positive toy spectrum with absorption troughs (erg/s/A-like shape)."""
    w = np.asarray(grid, float)
    cont = (w / 5000.0) ** -3 * np.exp(-4000.0 / w)
    lines = 1.0 - 0.6 * np.exp(-0.5 * ((w - 6100.0) / 80.0) ** 2) - 0.4 * np.exp(-0.5 * ((w - 3850.0) / 60.0) ** 2)
    return 1e40 * cont * lines


def test_noise_model_matches_the_observation_preprocessing():
    """The simulator's clean flux equals the mock observation's; its noise has the sd the
    mock's Monte Carlo sigma gives; the noise fraction read back from that sigma is the mock's."""
    from lumina_jax.observed import observation_from_model
    from lumina_jax.preprocess import Preprocessor

    cfg = PreprocessConfig()
    prep = Preprocessor(cfg)
    band = (3300.0, 9700.0)
    nm, rows, mat, in_rows = npe_io.noise_model(cfg, band, 0, 0.1, (np.log(0.02), np.log(0.02)))
    f = _spectrum(cfg.grid)
    clean = observation_from_model(cfg.grid, f, cfg.grid, prep.normalised, window=band)
    np.testing.assert_array_equal(np.flatnonzero(clean.mask), rows)
    s = mat @ f
    norm_ = np.mean(s[(cfg.grid[rows] >= cfg.norm_window[0]) & (cfg.grid[rows] <= cfg.norm_window[1])])
    np.testing.assert_allclose(s / norm_, clean.flux[rows], rtol=1e-10)
    noisy = observation_from_model(cfg.grid, f, cfg.grid, prep.normalised, noise_frac=0.02, window=band)
    y0, g = jnp.asarray(s / norm_)[None], jnp.asarray(f[in_rows] / norm_)[None]
    sims = np.stack([np.asarray(npe.simulate(jax.random.PRNGKey(i), y0, g, nm, 0)[0][0]) for i in range(200)])
    ok = noisy.sigma[rows] > 0
    ratio = np.median(sims.std(0)[ok] / noisy.sigma[rows][ok])
    assert ratio == pytest.approx(1.0, abs=0.1)
    nf = float(npe.noise_fraction(jnp.asarray(noisy.sigma[rows]), jnp.asarray(noisy.flux[rows]),
                                  npe_io.rownorm_of(nm)))
    assert nf == pytest.approx(0.02, rel=0.1)


def _tiny_npe(space, cfg):
    free = tuple(n for n in space.names if n not in space.inactive)
    idx = np.array([space.index(n) for n in free])
    band = (3300.0, 9700.0)
    grid = np.asarray(cfg.grid)
    rows = np.flatnonzero((grid >= band[0] + 5) & (grid <= band[1] - 5))
    st = npe.NPESettings(n_box=len(free), n_poly=2, n_feat=5, n_embed=4, embed_width=8, flow_layers=1, nn_width=8)
    lnf = (float(np.log(0.005)), float(np.log(0.1)))
    noise = npe_io.light_noise_model(cfg, rows, np.full(rows.size, 0.3), 0.1, lnf)
    enc = npe.Encoder(jnp.zeros(rows.size), jnp.zeros((4, rows.size)), jnp.ones(4), cfg.softening, lnf)
    box = npe.Box(jnp.asarray(space.lower[idx]), jnp.asarray(space.upper[idx]), 0.1)
    return npe_io.NPE(npe.init_model(jax.random.PRNGKey(0), st), st, enc, noise, box, space, free, cfg, band, rows,
                      rows, {"stores": ["toy.h5"]})


def test_checkpoint_round_trip_and_refusals(tmp_path):
    cfg = PreprocessConfig()
    s1 = load_space(1)
    obj = _tiny_npe(s1, cfg)
    path = npe_io.save_npe(obj, tmp_path / "npe.h5")
    back = npe_io.load_npe(path)
    feats = jnp.linspace(-1, 1, 5)
    t = npe.sample(obj.model, jax.random.PRNGKey(0), feats, 5, obj.box, obj.settings.n_box)
    lp0 = npe.log_prob(obj.model, t, jnp.broadcast_to(feats, (5, 5)), obj.box, obj.settings.n_box)
    lp1 = npe.log_prob(back.model, t, jnp.broadcast_to(feats, (5, 5)), back.box, back.settings.n_box)
    np.testing.assert_allclose(np.asarray(lp1), np.asarray(lp0), rtol=1e-4)  # float32 weights
    assert back.free == obj.free and np.array_equal(back.rows, obj.rows)

    npe_io.check_compatible(back, make_setup(s1, n_poly=2))  # the stage it was trained for: accepted
    with pytest.raises(UserError, match="trained for stage 1, this fit is stage 2"):
        npe_io.check_compatible(back, make_setup(load_space(2), n_poly=2))
    narrow = s1.with_bounds(s1.lower + 0.1 * (s1.upper - s1.lower), s1.upper)
    with pytest.raises(UserError, match="another parameter box"):
        npe_io.check_compatible(back, make_setup(narrow, n_poly=2))
    with pytest.raises(UserError, match="2-coefficient warp"):
        npe_io.check_compatible(back, make_setup(s1, n_poly=3))
    with pytest.raises(UserError, match="preprocessing"):
        npe_io.check_compatible(back, make_setup(s1, n_poly=2), dataclasses.replace(cfg, softening=0.1))

    raw = bytearray(path.read_bytes())  # a flipped bit after the seal
    raw[len(raw) // 2] ^= 0x01
    bad = tmp_path / "bad.h5"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match="checksum"):
        npe_io.load_npe(bad)
    other = tmp_path / "other.h5"
    other.write_bytes(b"\0" * 1024)
    with pytest.raises(DataFileError, match="not an NPE checkpoint"):
        npe_io.load_npe(other)


def test_observation_outside_the_band_is_refused():
    cfg = PreprocessConfig()
    obj = _tiny_npe(load_space(1), cfg)
    grid = np.asarray(cfg.grid)
    mask = (grid >= 4000) & (grid <= 9700)
    with pytest.raises(UserError, match="leaves 11 % of it unused"):
        npe_io.observation_features(obj, np.ones(grid.size), np.full(grid.size, 0.01), mask)


def test_sbc_statistics():
    rng = np.random.default_rng(0)
    L = 99
    uniform = rng.integers(0, L + 1, 2000)
    assert sbc.rank_statistics(uniform, L)["p"] > 0.01
    skewed = np.minimum(rng.integers(0, L + 1, 2000), rng.integers(0, L + 1, 2000))  # truth too often low
    assert sbc.rank_statistics(skewed, L)["p"] < 1e-6
    # a calibrated posterior: truth and draws from one distribution -> HPD coverage = level
    hpd = rng.integers(0, L + 1, 4000)
    cov = sbc.expected_coverage(hpd, L)
    for a, c in cov.items():
        assert c == pytest.approx(float(a), abs=0.03)
    # an overconfident one (truth outside the bulk) covers too little
    assert sbc.expected_coverage(np.full(100, 90), L)["0.68"] == 0.0
    r = rng.integers(0, L + 1, (3000, 3))
    assert sbc.central_coverage(r, L)["0.68"] == pytest.approx(0.68, abs=0.02)


def test_sbc_mock_warp_is_the_training_warp():
    """The warp SBC puts on its mocks gives the features of the training simulator's warp
    (``warp_and_normalise`` of the unwarped flux), at the unwarped noise level."""
    cfg = PreprocessConfig()
    obj = _tiny_npe(load_space(1), cfg)
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    r = obj.rows.size
    enc = npe.Encoder(jax.random.normal(k1, (r,)), jax.random.normal(k2, (4, r)) / np.sqrt(r), jnp.ones(4),
                      cfg.softening, obj.noise.log_nf_range)
    obj = dataclasses.replace(obj, encoder=enc)
    grid = np.asarray(cfg.grid)
    flux = 1.0 + 0.5 * np.sin(grid / 700.0)
    sigma = 0.03 * flux
    mask = np.ones(grid.size, bool)
    c = np.array([0.05, -0.08])
    wf, ws = sbc.warped(obj, flux, sigma, c)
    outside = np.setdiff1d(np.arange(grid.size), obj.rows)
    np.testing.assert_array_equal(wf[outside], flux[outside])
    feats, nf = npe_io.observation_features(obj, wf, ws, mask)
    _, nf0 = npe_io.observation_features(obj, flux, sigma, mask)
    expected = npe.features(enc, npe.warp_and_normalise(jnp.asarray(flux[obj.rows]), jnp.asarray(c), obj.noise),
                            jnp.asarray(np.log(nf0)))
    assert nf == pytest.approx(nf0, rel=1e-12)
    np.testing.assert_allclose(np.asarray(feats), np.asarray(expected), rtol=1e-10, atol=1e-12)
    # a zero warp leaves the mock as it was
    np.testing.assert_array_equal(sbc.warped(obj, flux, sigma, np.zeros(2))[0], flux)


def test_train_npe_then_infer_with_it_from_the_command_line(tmp_path, monkeypatch, capsys):
    """``train-npe`` on a small stage-1 store, then ``infer --sampler npe`` on one of its spectra
    written as an observation: the results hold draws inside the box and record the sampler; a
    checkpoint of another stage is refused before any work."""
    import json

    from lumina_jax.emulator._data import write_store
    from inference_toys import run_cli

    space = load_space(1)
    rng = np.random.default_rng(0)
    theta = np.asarray(space.from_unit(rng.uniform(0.05, 0.95, size=(48, space.dim))))
    grid = np.asarray(PreprocessConfig().grid)  # the campaign grid, 2000-10000 A
    u = np.asarray(space.to_unit(theta))
    depth = 0.2 + 0.6 * u[:, :1]  # a trough whose depth follows the first parameter
    flux = 1e39 * _spectrum(grid)[None] / _spectrum(grid).max() * (
        1.0 - depth * np.exp(-0.5 * ((grid - 5000.0 - 800.0 * u[:, 1:2]) / 150.0) ** 2))
    store = write_store(tmp_path / "store.h5", space, theta, grid, flux)
    ckpt = tmp_path / "npe.h5"
    code, out, err = run_cli(["train-npe", "--stage", "1", "--data", str(store), "--out", str(ckpt), "--steps", "30",
                              "--components", "4", "--reps", "2", "--flow-layers", "1", "--nn-width", "8",
                              "--quiet"], monkeypatch, capsys)
    assert code == 0, err
    assert npe_io.load_npe(ckpt).settings.affine_layers == 1

    obs = tmp_path / "obs.csv"
    obs.write_text("wavelength_angstrom,flux_erg_s_cm2_angstrom,flux_error\n" + "\n".join(
        f"{w},{f},{0.02 * f}" for w, f in zip(grid, flux[0] / 1e39)))
    res = tmp_path / "res"
    code, out, err = run_cli(["infer", "--stage", "1", "--sampler", "npe", "--npe", str(ckpt), "--observed", str(obs),
                              "--out", str(res), "--chains", "2", "--samples", "1000", "--no-plots", "--json"], monkeypatch, capsys)
    assert code == 0, err
    s = json.loads((res / "summary.json").read_text())
    assert s["sampler_config"]["name"] == "npe" and len(s["free"]) == 15
    for name in s["free"]:
        lo, hi = space.lower[space.index(name)], space.upper[space.index(name)]
        assert lo <= s["intervals"][name]["q0.15"] <= s["intervals"][name]["q99.85"] <= hi

    code, _, err = run_cli(["infer", "--stage", "2", "--sampler", "npe", "--npe", str(ckpt), "--observed", str(obs),
                            "--out", str(tmp_path / "r2"), "--no-plots"], monkeypatch, capsys)
    assert code == 2 and "trained for stage 1" in err and not (tmp_path / "r2").exists()


def test_train_npe_option_defaults_are_the_training_defaults():
    """The command's defaults are ``TrainOptions``' (one place states them)."""
    import inspect

    from lumina_jax.cli.npe import train_npe

    d = npe_io.TrainOptions()
    p = {k: v.default.default for k, v in inspect.signature(train_npe).parameters.items()}
    pairs = {"n_poly": d.n_poly, "poly_sd": d.poly_sd, "steps": d.steps, "batch_size": d.batch_size, "reps": d.reps,
             "components": d.n_components, "flow_layers": d.flow_layers, "nn_width": d.nn_width,
             "affine_layers": d.affine_layers, "learning_rate": d.learning_rate, "seed": d.seed}
    for opt, val in pairs.items():
        assert p[opt] == val, opt
    assert tuple(float(v) for v in p["band"].split(",")) == d.band
    assert tuple(float(v) for v in p["noise"].split(",")) == d.noise_range
