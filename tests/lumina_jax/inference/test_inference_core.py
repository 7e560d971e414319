"""Likelihood, NumPyro model, observed-spectrum loader and stage chaining."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

from lumina_jax.errors import DataFileError, UserError
from lumina_jax.inference import density as M, likelihood as L, optimize as OPT
from lumina_jax.workflows import chaining
from lumina_jax import observed as O
from lumina_jax.params import load_space, relaxed_ranges

from inference_toys import ToyEmulator, toy_space

SHARED = Path(os.environ.get("LUMINA_JAX_SHARED_DATA", Path(__file__).resolve().parents[3] / ".." / "shared" / "data")) / "sn2011fe"


# ------------------------------------------------------------------ likelihood and model
def _tiny():
    w = np.array([4000.0, 5000.0, 6000.0, 7000.0])
    y = np.array([1.0, 1.1, 0.0, 0.9])
    s = np.array([0.05, 0.02, 0.0, 0.03])
    mask = np.array([True, True, False, True])
    return L.make_likelihood_data(w, y, s, mask)


def test_likelihood_matches_hand_computation():
    data = _tiny()
    f = jnp.array([0.95, 1.05, 3.0, 1.0])
    sig = jnp.array([0.01, 0.02, 0.5, 0.01])
    ls, fs, c = 0.1, 0.05, jnp.array([0.2])
    got = float(L.log_likelihood(f, sig, data, ls, fs, c))
    # by hand: x = [-1, -1/3, 1/3, 1] over 4000..7000, P1(x) = x; bin 3 masked
    x = np.array([-1.0, -1 / 3, 1 / 3, 1.0])
    wv = np.exp(0.1) * (1 + 0.2 * x)
    m = wv * np.array([0.95, 1.05, 3.0, 1.0])
    var = np.array([0.05, 0.02, 0.0, 0.03]) ** 2 + (wv * np.array([0.01, 0.02, 0.5, 0.01])) ** 2 + (0.05 * m) ** 2
    y = np.array([1.0, 1.1, 0.0, 0.9])
    keep = [0, 1, 3]
    want = -0.5 * sum((y[i] - m[i]) ** 2 / var[i] + np.log(2 * np.pi * var[i]) for i in keep)
    assert got == pytest.approx(want, rel=1e-12)


def test_legendre_basis_matches_numpy():
    x = jnp.linspace(-1, 1, 7)
    got = np.asarray(L.legendre_basis(x, 3))
    for k in range(1, 4):
        coef = np.zeros(k + 1)
        coef[k] = 1
        np.testing.assert_allclose(got[k - 1], np.polynomial.legendre.legval(np.asarray(x), coef), atol=1e-12)


@pytest.mark.parametrize("f_sys_prior", ["half-normal", "log-uniform"])
def test_numpyro_model_and_flat_density_match_hand_computation(toy_emu, space3, f_sys_prior):
    data = L.make_likelihood_data(toy_emu.wavelength, np.asarray(toy_emu.spectrum(jnp.array([1.0, 11000, 0.5]))),
                                  np.full(toy_emu.wavelength.shape, 0.01), np.ones(toy_emu.wavelength.shape, bool))
    setup = M.make_setup(space3, n_poly=1, priors={"v": (11000.0, 500.0)}, f_sys_prior=f_sys_prior)
    u = jnp.array([0.3, 0.6, 0.2])
    lo, hi = np.log(1e-3), np.log(0.3)
    from scipy import stats
    if f_sys_prior == "half-normal":  # site f_sys_signed ~ N(0, 0.2), f_sys = |f_sys_signed|; identity link
        sys_site, sys_prior, sys_jac = {"f_sys_signed": -0.01}, stats.norm(0, 0.2).logpdf(-0.01), 0.0
    else:  # site log_f_sys ~ U(log 1e-3, log 0.3), sampled through a logit map of that interval
        t = (np.log(0.01) - lo) / (hi - lo)
        sys_site, sys_prior, sys_jac = {"log_f_sys": np.log(0.01)}, -np.log(hi - lo), np.log((hi - lo) * t * (1 - t))
    params = {"u": u, "log_scale": 0.02, "poly": jnp.array([0.05]), **sys_site}
    lp = jax.jit(lambda p: log_density(M.spectral_model, (setup, toy_emu.spectrum_and_sigma, data), {}, p)[0])(params)
    theta = np.asarray(space3.lower + np.asarray(u) * (space3.upper - space3.lower))
    f, s = toy_emu.spectrum_and_sigma(jnp.asarray(theta))
    ll = float(L.log_likelihood(f, s, data, 0.02, 0.01, jnp.array([0.05])))
    prior = (0.0  # Uniform(0,1)^3
             + stats.norm(11000, 500).logpdf(theta[1]) + stats.norm(0, 0.5).logpdf(0.02)
             + sys_prior + stats.norm(0, 0.1).logpdf(0.05))
    assert float(lp) == pytest.approx(ll + prior, rel=1e-10)
    # the flat unconstrained density adds the log-Jacobian of the logit maps
    fm = M.flatten_model(setup, toy_emu.spectrum_and_sigma, data)
    z = M.z_from_values(fm, u, 0.02, 0.01, jnp.array([0.05]))
    jac = np.sum(np.log(np.asarray(u) * (1 - np.asarray(u)))) + sys_jac
    if f_sys_prior == "half-normal":  # z_from_values puts f_sys on the positive side; the density is even in it
        prior = prior - stats.norm(0, 0.2).logpdf(-0.01) + stats.norm(0, 0.2).logpdf(0.01)
    assert float(jax.jit(fm.logdensity)(z)) == pytest.approx(ll + prior + jac, rel=1e-10)
    assert float(fm.constrain(z)["f_sys"]) == pytest.approx(0.01, rel=1e-12)
    names, zz = M.z_names(fm), np.asarray(z)  # the flat layout is sorted by site name, not u first
    assert zz[names.index("log_scale")] == pytest.approx(0.02) and zz[names.index("poly_1")] == pytest.approx(0.05)
    assert [zz[names.index(f"u:{n}")] for n in setup.free] == pytest.approx(np.log(np.asarray(u) / (1 - np.asarray(u))))
    np.testing.assert_allclose(np.asarray(fm.theta(z)), theta, rtol=1e-9)


def test_inactive_parameters_are_fixed():
    sp = load_space(2)
    setup = M.make_setup(sp, fixed={"v_core": 12345.0})
    assert "v_core" not in setup.free and setup.n_free == sp.dim - len(sp.inactive)
    th = np.asarray(setup.theta_from_u(jnp.full(setup.n_free, 0.5)))
    assert th[sp.index("v_core")] == 12345.0


# ------------------------------------------------------------------------ observed files
def _write(tmp_path, text, name="s.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _good_rows(n=400, lo=3300.0, hi=9700.0):
    w = np.linspace(lo, hi, n)
    return w, 1e-13 * (1 + 0.3 * np.sin(w / 300.0))


@pytest.mark.parametrize("mutate, match", [
    (lambda w, f: (w[::-1], f[::-1]), "not sorted"),
    (lambda w, f: (np.r_[w[:5], w[4], w[6:]], f), "duplicate"),
    (lambda w, f: (w, np.r_[f[:10], np.nan, f[11:]]), "NaN"),
    (lambda w, f: (w, -np.abs(f)), "zero or negative everywhere"),
])
def test_corrupted_observed_file_rejected(tmp_path, mutate, match):
    w, f = mutate(*_good_rows())
    body = "\n".join(f"{a},{b}" for a, b in zip(w, f))
    p = _write(tmp_path, "wavelength_angstrom,flux_erg_s_cm2_angstrom\n" + body)
    with pytest.raises(DataFileError, match=match):
        O.read_spectrum(p)


def test_unknown_units_and_garbage_rejected(tmp_path):
    w, f = _good_rows()
    body = "\n".join(f"{a},{b}" for a, b in zip(w, f))
    with pytest.raises(DataFileError, match="unknown flux unit"):
        O.read_spectrum(_write(tmp_path, "wavelength_angstrom,flux_furlongs\n" + body))
    with pytest.raises(DataFileError, match="not numeric"):
        O.read_spectrum(_write(tmp_path, "wavelength,flux\n1,2\nabc,3\n" + body, "g.csv"))


def test_truncated_fits_and_directory_rejected_in_one_line(tmp_path):
    fits = pytest.importorskip("astropy.io.fits")
    w, f = _good_rows()
    p = tmp_path / "s.fits"
    fits.BinTableHDU.from_columns([fits.Column(name="WAVELENGTH", format="D", array=w),
                                   fits.Column(name="FLUX", format="D", array=f)]).writeto(p)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(p.read_bytes()[:2880 * 2 + 1000])  # headers whole, the table's data cut short
    with pytest.raises(DataFileError, match="unreadable FITS file, truncated or corrupt"):
        O.read_spectrum(cut)
    (tmp_path / "d.fits").mkdir()
    for d in (tmp_path, tmp_path / "d.fits"):
        with pytest.raises(DataFileError, match="is not a file"):
            O.read_spectrum(d)
    img = tmp_path / "img.fits"
    fits.PrimaryHDU(np.ones((4, 4))).writeto(img)
    with pytest.raises(DataFileError, match=r"img.fits: no 1-D spectrum \(binary"):  # said once, not wrapped
        O.read_spectrum(img)


def test_too_little_overlap_rejected(tmp_path, toy_emu):
    w, f = _good_rows(lo=9500.0, hi=12000.0)
    p = _write(tmp_path, "\n".join(f"{a} {b}" for a, b in zip(w, f)), "s.txt")
    with pytest.raises(DataFileError, match="overlap"):
        O.load_observation(p, toy_emu.wavelength, toy_emu.preprocess)


def test_spectrum_negative_over_most_of_the_window_rejected(tmp_path, toy_emu):
    """More than half of the fitted bins at flux <= 0 (here all but a few pixels, or 60 %) is refused;
    40 % is fitted (noisy spectra dip below zero in places)."""
    w, f = _good_rows()
    for frac, ok in ((0.99, False), (0.6, False), (0.4, True)):
        g = np.where(np.arange(w.size) < frac * w.size, -f, f)
        p = _write(tmp_path, "\n".join(f"{a} {b}" for a, b in zip(w, g)), f"neg{frac}.txt")
        if ok:
            assert O.load_observation(p, toy_emu.wavelength, toy_emu.preprocess).n_used >= O.MIN_USABLE_BINS
        else:
            with pytest.raises(DataFileError, match=r"flux is zero or negative in \d+\.\d % of the fitted"):
                O.load_observation(p, toy_emu.wavelength, toy_emu.preprocess)


def test_resampling_conserves_flux():
    rng = np.random.default_rng(1)
    w = np.sort(rng.uniform(3000, 9000, 3000))
    w = np.unique(w)
    f = 1 + rng.normal(0, 0.1, w.size)
    e = np.full(w.size, 0.1)
    out_w = np.arange(3500.0, 8500.0, 5.0)
    fo, eo = O.resample_flux_conserving(w, f, out_w, e)
    ein, eout = O._edges(w), O._edges(out_w)
    sel = (ein[:-1] >= eout[0]) & (ein[1:] <= eout[-1])
    # integral over the output range equals the input integral over the same range (to partial pixels)
    assert np.sum(fo * np.diff(eout)) == pytest.approx(np.sum(f[sel] * np.diff(ein)[sel]), rel=2e-3)
    assert np.all(eo <= 0.1 + 1e-12) and np.all(np.isfinite(fo))


def test_rest_frame_and_extinction_roundtrip():
    w, f = _good_rows()
    spec = O.ObservedSpectrum(w, f, None, "observed", "x")
    r = O.to_rest_frame(spec, 0.01)
    np.testing.assert_allclose(r.wavelength, w / 1.01)
    pytest.importorskip("dust_extinction")
    import astropy.units as u
    from dust_extinction.parameter_averages import F99
    red = O.ObservedSpectrum(w, f * F99(Rv=3.1).extinguish(w * u.AA, Ebv=0.1), None, "observed", "x")
    np.testing.assert_allclose(O.correct_extinction(red, 0.1).flux, f, rtol=1e-10)


def test_sn2011fe_file_loads():
    p = SHARED / "sn2011fe_observed_Bmax.csv"
    if not p.exists():
        pytest.skip(f"SN 2011fe data not present at {p} (never committed)")
    spec = O.read_spectrum(p)
    assert spec.wavelength.size == 2691 and spec.error is None
    assert spec.wavelength[0] == pytest.approx(3298.68)
    emu = ToyEmulator(toy_space(), wavelength=np.arange(2000.0, 10001.0, 5.0))
    obs = O.prepare_observation(spec, emu.wavelength, emu.preprocess, edge_trim=10.0)
    assert 3300 < obs.meta["fit_range"][0] < 3320 and 9680 < obs.meta["fit_range"][1] < 9700
    assert not obs.has_errors and np.all(obs.sigma == 0)


# ------------------------------------------------------------------------------ chaining
def test_chaining_produces_relaxed_ranges(tmp_path):
    import json
    best = {"log_L": 42.9, "v_inner": 10000.0, "t_exp": 18.0, "X_Ni": 0.1, "v_core": 12000.0}
    (tmp_path / "summary.json").write_text(json.dumps({"stage": 1, "best_fit": best}))
    space, fixed = chaining.stage_box(2, tmp_path)
    i = space.index
    assert space.lows[i("log_L")] == pytest.approx(42.8) and space.highs[i("log_L")] == pytest.approx(43.0)
    assert space.lows[i("v_inner")] == pytest.approx(9000.0) and space.highs[i("v_inner")] == pytest.approx(11000.0)
    assert space.lows[i("t_exp")] == pytest.approx(16.2) and space.highs[i("t_exp")] == pytest.approx(19.8)
    full = load_space(2)
    assert space.lows[i("X_Fe_z0")] == full.lows[i("X_Fe_z0")]  # new in stage 2: full prior
    assert fixed["v_core"] == 12000.0 and "X_Fe_core" in fixed
    assert space == relaxed_ranges(best, full)  # the box `generate --from` trains in


def test_wrong_stage_or_box_emulator_rejected(tmp_path):
    import json
    s1, s2 = load_space(1), load_space(2)
    with pytest.raises(UserError, match="stage 1, not stage 2"):
        chaining.check_emulator_box(s1, s2)
    (tmp_path / "summary.json").write_text(json.dumps({"stage": 1, "best_fit": {"log_L": 42.9}}))
    relaxed, _ = chaining.stage_box(2, tmp_path)
    narrow = relaxed_ranges({"log_L": 43.3}, s2)  # trained around another best fit
    with pytest.raises(UserError, match="log_L"):
        chaining.check_emulator_box(narrow, relaxed)
    chaining.check_emulator_box(s2, relaxed)  # a wider training box is fine


def test_missing_or_bad_summary_rejected(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        chaining.read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("{\"stage\": 1}")
    with pytest.raises(DataFileError, match="best_fit"):
        chaining.read_summary(tmp_path)


def test_fits_and_error_column_and_units(tmp_path, toy_emu):
    fits = pytest.importorskip("astropy.io.fits")
    w, f = _good_rows()
    e = 0.02 * f
    cols = [fits.Column(name="WAVELENGTH", format="D", array=w / 10.0, unit="nm"),
            fits.Column(name="FLUX", format="D", array=f), fits.Column(name="ERROR", format="D", array=e)]
    p = tmp_path / "s.fits"
    fits.BinTableHDU.from_columns(cols).writeto(p)
    spec = O.read_spectrum(p)
    np.testing.assert_allclose(spec.wavelength, w)  # nm -> Angstrom from the column unit
    np.testing.assert_allclose(spec.error, e)
    obs = O.prepare_observation(spec, toy_emu.wavelength, toy_emu.preprocess)
    assert obs.has_errors and np.all(obs.sigma[obs.mask] > 0)
    # 2 % per 16-A input pixel, averaged over 20-A bins and normalised: ~1.8 % of the flux
    rel = obs.sigma[obs.mask] / obs.flux[obs.mask]
    assert 0.01 < np.median(rel) < 0.025
    # F_nu in Jy: converted to F_lambda (shape changes by lambda^-2)
    q = _write(tmp_path, "wavelength_angstrom,flux_jy\n" + "\n".join(f"{a},{b}" for a, b in zip(w, f)), "nu.csv")
    s_nu = O.read_spectrum(q)
    np.testing.assert_allclose(s_nu.flux, f * 1e-23 * 2.99792458e18 / w**2)


def test_lowrank_emulator_error_likelihood_equals_dense_gaussian():
    """Woodbury evaluation vs the dense multivariate normal with Sigma = D + U U^T."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    w = np.arange(4000.0, 4400.0, 5.0)
    mask = np.ones(w.size, bool)
    mask[:7] = False
    y = 1.0 + 0.05 * rng.standard_normal(w.size)
    s_obs = np.full(w.size, 0.02)
    data = L.make_likelihood_data(w, y, s_obs, mask, corr_length=60.0)
    flux = 1.0 + 0.01 * np.sin(w / 50.0)
    sig = 0.03 + 0.01 * np.cos(w / 80.0)
    log_scale, f_sys, coeffs = 0.02, 0.01, jnp.array([0.05, -0.02])
    got = float(L.log_likelihood(jnp.asarray(flux), jnp.asarray(sig), data, log_scale, f_sys, coeffs))
    wp = np.asarray(L.warp(log_scale, coeffs, data.x))
    m = wp * flux
    B = np.zeros((w.size, data.emu_basis.shape[1]))
    B[mask] = np.asarray(data.emu_basis)  # the basis lives on the used rows
    np.testing.assert_allclose(np.sum(B[mask] ** 2, axis=1), 1.0)  # marginal variance preserved
    U = (wp * sig)[:, None] * B
    cov = np.diag(s_obs**2 + (f_sys * m) ** 2) + U @ U.T
    want = multivariate_normal(mean=m[mask], cov=cov[np.ix_(mask, mask)]).logpdf(y[mask])
    assert got == pytest.approx(want, rel=1e-9)
    g = jax.grad(lambda f: L.log_likelihood(f, jnp.asarray(sig), data, log_scale, f_sys, coeffs))(jnp.asarray(flux))
    assert np.all(np.isfinite(np.asarray(g)))


def test_empirical_emulator_error_likelihood_equals_dense_gaussian():
    """Empirical basis with |B_i| < 1: the remainder stays on the diagonal, and the Woodbury
    value equals the dense normal with Sigma = diag(s_obs^2 + (f m)^2 + (w s)^2 (1-|B_i|^2)) + U U^T."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(5)
    w = np.arange(4000.0, 4300.0, 5.0)
    n = w.size
    mask = np.ones(n, bool)
    mask[-5:] = False
    b = rng.standard_normal((n, 4))
    b *= (0.3 + 0.6 * rng.random(n))[:, None] / np.linalg.norm(b, axis=1, keepdims=True)  # |B_i| in [0.3, 0.9]
    y = 1.0 + 0.05 * rng.standard_normal(n)
    s_obs = np.full(n, 0.01)
    data = L.make_likelihood_data(w, y, s_obs, mask, emu_basis=b)
    flux = 1.0 + 0.02 * np.cos(w / 40.0)
    sig = 0.02 + 0.005 * np.sin(w / 70.0)
    log_scale, f_sys, coeffs = -0.01, 0.02, jnp.array([0.03])
    got = float(L.log_likelihood(jnp.asarray(flux), jnp.asarray(sig), data, log_scale, f_sys, coeffs))
    wp = np.asarray(L.warp(log_scale, coeffs, data.x))
    m = wp * flux
    ws = wp * sig
    cov = np.diag(s_obs**2 + (f_sys * m) ** 2 + ws**2 * (1 - np.sum(b * b, axis=1))) + (ws[:, None] * b) @ (ws[:, None] * b).T
    np.testing.assert_allclose(np.diag(cov), s_obs**2 + (f_sys * m) ** 2 + ws**2)  # marginal variance unchanged
    want = multivariate_normal(mean=m[mask], cov=cov[np.ix_(mask, mask)]).logpdf(y[mask])
    assert got == pytest.approx(want, rel=1e-9)
    # every 3rd used bin: the likelihood is the marginal of the same Gaussian on those bins
    d3 = L.make_likelihood_data(w, y, s_obs, mask, emu_basis=b, stride=3)
    keep = np.flatnonzero(mask)[::3]
    assert np.flatnonzero(np.asarray(d3.mask)).tolist() == keep.tolist()
    got3 = float(L.log_likelihood(jnp.asarray(flux), jnp.asarray(sig), d3, log_scale, f_sys, coeffs))
    want3 = multivariate_normal(mean=m[keep], cov=cov[np.ix_(keep, keep)]).logpdf(y[keep])
    assert got3 == pytest.approx(want3, rel=1e-9)
    # a truncated re-factorisation keeps the marginal variances (the rest moves to the diagonal)
    d1 = L.make_likelihood_data(w, y, s_obs, mask, emu_basis=b, emu_rank=2)
    assert d1.emu_basis.shape[1] == 2
    np.testing.assert_allclose(np.sum(np.asarray(d1.emu_basis) ** 2, axis=1) + np.asarray(d1.emu_diag), 1.0)
    # the calibrated variance factor multiplies the whole emulator covariance (diagonal remainder and U U^T)
    emu_cov = np.diag(ws**2 * (1 - np.sum(b * b, axis=1))) + (ws[:, None] * b) @ (ws[:, None] * b).T
    cov_s = np.diag(s_obs**2 + (f_sys * m) ** 2) + 2.5 * emu_cov
    ds = L.make_likelihood_data(w, y, s_obs, mask, emu_basis=b, emu_var_scale=2.5)
    got_s = float(L.log_likelihood(jnp.asarray(flux), jnp.asarray(sig), ds, log_scale, f_sys, coeffs))
    assert got_s == pytest.approx(multivariate_normal(mean=m[mask], cov=cov_s[np.ix_(mask, mask)]).logpdf(y[mask]),
                                  rel=1e-9)
    with pytest.raises(ValueError, match="positive"):
        L.make_likelihood_data(w, y, s_obs, mask, emu_basis=b, emu_var_scale=0.0)
    with pytest.raises(ValueError, match="does not match"):
        L.make_likelihood_data(w, y, s_obs, mask, emu_basis=b[:-1])
    with pytest.raises(ValueError, match="not both"):
        L.make_likelihood_data(w, y, s_obs, mask, emu_basis=b, corr_length=50.0)


@pytest.mark.parametrize("error_model", ["empirical", "independent"])
def test_density_on_the_used_bins_equals_the_full_grid_density(error_model):
    """flatten_model(..., on_bins=emu.on_bins) evaluates the emulator and the likelihood on the
    likelihood's bins only: same log density and gradient as the full-grid model (stride 8,
    a window and a mask hole, the calibration warp on)."""
    from lumina_jax.emulator import EmulatorSettings, init_emulator

    sp = load_space(1)
    emu = init_emulator(sp, EmulatorSettings(hidden=(32, 32), n_components=8, n_sigma=4), jax.random.PRNGKey(2))
    rng = np.random.default_rng(4)
    w = emu.wavelength
    y = 1.0 + 0.05 * rng.standard_normal(w.size)
    mask = (w > 3300.0) & (w < 9700.0) & ~((w > 6800.0) & (w < 7000.0))
    basis = None
    if error_model == "empirical":
        basis = rng.standard_normal((w.size, 6))
        basis *= 0.8 / np.linalg.norm(basis, axis=1, keepdims=True)
    data = L.make_likelihood_data(w, y, np.full(w.size, 0.01), mask, emu_basis=basis, stride=8)
    setup = M.make_setup(sp, n_poly=2)
    full = M.flatten_model(setup, emu.spectrum_and_sigma, data)
    sub = M.flatten_model(setup, emu.spectrum_and_sigma, data, on_bins=emu.on_bins)
    z = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (3, full.n_z))
    v_full, g_full = jax.vmap(jax.value_and_grad(full.logdensity))(z)
    v_sub, g_sub = jax.jit(jax.vmap(jax.value_and_grad(sub.logdensity)))(z)
    np.testing.assert_allclose(np.asarray(v_sub), np.asarray(v_full), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_sub), np.asarray(g_full), rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(g_full))))
    rows = L.used_bins(data)
    assert rows.size == int(np.sum(np.asarray(data.mask))) and rows.size < w.size // 7
    with pytest.raises(ValueError, match="bins the likelihood uses"):
        L.restrict_to_bins(data, rows[1:])


def test_fixed_sigma_likelihood_peaks_at_the_truth_on_noise_free_data(toy_emu, space3):
    """Noise-free data made by the model itself: with the emulator sigma fixed (at the truth)
    the log density's slope at the truth is the prior's alone, because the residual is zero;
    with sigma(theta) varying, the log-determinant adds -1/2 d/dtheta sum log var_i(theta),
    computed here by hand (independent bins, var = s_obs^2 + (rel f(theta))^2): the pull that
    freeze_sigma removes."""
    from jax.scipy.special import logit

    setup = M.make_setup(space3, n_poly=0, box_link="logit")
    theta_t = jnp.array([1.1, 11000.0, 0.6])
    w = toy_emu.wavelength
    f_t = np.asarray(toy_emu.spectrum(theta_t))
    s_obs = np.full(w.size, 0.001)
    data = L.make_likelihood_data(w, f_t, s_obs, np.ones(w.size, bool))
    varying = M.flatten_model(setup, toy_emu.spectrum_and_sigma, data)
    sas, _ = M.freeze_sigma(toy_emu.spectrum_and_sigma, theta_t)
    fixed = M.flatten_model(setup, sas, data)
    u_t = (np.asarray(theta_t) - space3.lower) / (space3.upper - space3.lower)
    z_t = M.z_from_values(varying, u_t, log_scale=0.0, f_sys=0.0)
    assert float(varying.logdensity(z_t)) == pytest.approx(float(fixed.logdensity(z_t)), rel=1e-12)
    prior_only = M.flatten_model(setup, lambda th: (toy_emu.spectrum(th) * 0 + f_t, jnp.asarray(0.002 * np.abs(f_t))), data)
    g_prior = np.asarray(jax.grad(prior_only.logdensity)(z_t))
    g_fixed = np.asarray(jax.grad(fixed.logdensity)(z_t))
    np.testing.assert_allclose(g_fixed, g_prior, atol=1e-9)  # zero residual: no likelihood slope

    def half_logdet(u):  # by hand, independent bins, in the box coordinates u
        th = space3.lower + u * (space3.upper - space3.lower)
        f = toy_emu.spectrum(th)
        return -0.5 * jnp.sum(jnp.log(s_obs ** 2 + (toy_emu.rel_sigma * f) ** 2))

    du_dz = u_t * (1 - u_t)  # logit link
    want = np.asarray(jax.grad(half_logdet)(jnp.asarray(u_t))) * du_dz
    idx = [i for i, n in enumerate(M.z_names(varying)) if n.startswith("u:")]
    g_var = np.asarray(jax.grad(varying.logdensity)(z_t))
    np.testing.assert_allclose(g_var[idx] - g_fixed[idx], want, rtol=1e-6)
    assert np.max(np.abs(want)) > 1.0  # a real pull on this toy (the line depth d)
    assert np.allclose(np.asarray(logit(jnp.asarray(u_t))), np.asarray(varying.unravel(z_t)["u"]))
    # the on_bins form holds the same sigma
    emu_rows = lambda rows: (lambda th: (toy_emu.spectrum(th)[rows], toy_emu.spectrum_and_sigma(th)[1][rows]))  # noqa: E731
    _, ob = M.freeze_sigma(toy_emu.spectrum_and_sigma, theta_t, emu_rows)
    rows = np.arange(0, w.size, 3)
    fl, sg = ob(rows)(theta_t + jnp.array([0.1, 500.0, -0.1]))
    np.testing.assert_allclose(np.asarray(sg), np.asarray(toy_emu.spectrum_and_sigma(theta_t)[1])[rows])
    np.testing.assert_allclose(np.asarray(fl), np.asarray(toy_emu.spectrum(theta_t + jnp.array([0.1, 500.0, -0.1])))[rows])


def test_hold_sigma_at_mode_freezes_at_the_given_point_and_climbs_to_the_fixed_models_mode(toy_emu, space3):
    """hold_sigma_at_mode (run_fit's and the benchmark's fixed-sigma step): its model equals
    flatten_model over freeze_sigma at fm.theta(z_start) at any z, its log density at the start
    is that model's, and the Newton re-polish ends at a stationary point that is no lower."""
    setup = M.make_setup(space3, n_poly=0, box_link="logit")
    theta_t = jnp.array([1.1, 11000.0, 0.6])
    w = toy_emu.wavelength
    f_t = np.asarray(toy_emu.spectrum(theta_t))
    rng = np.random.default_rng(4)
    s_obs = np.full(w.size, 0.001)  # below the toy's sigma, so sigma(theta) matters
    data = L.make_likelihood_data(w, f_t + s_obs * rng.normal(size=w.size), s_obs, np.ones(w.size, bool))
    varying = M.flatten_model(setup, toy_emu.spectrum_and_sigma, data)
    u_start = np.array([0.45, 0.55, 0.5])
    z_start = M.z_from_values(varying, u_start, log_scale=0.01, f_sys=0.0)
    fixed, z_mode, ld0, ld_mode, theta_ref, sas = OPT.hold_sigma_at_mode(varying, toy_emu.spectrum_and_sigma, data,
                                                                       z_start)
    np.testing.assert_allclose(np.asarray(theta_ref), np.asarray(varying.theta(z_start)), rtol=1e-12)
    by_hand = M.flatten_model(setup, M.freeze_sigma(toy_emu.spectrum_and_sigma, theta_ref)[0], data)
    z_other = M.z_from_values(varying, np.array([0.6, 0.4, 0.55]), log_scale=-0.01, f_sys=0.0)
    assert float(fixed.logdensity(z_other)) == pytest.approx(float(by_hand.logdensity(z_other)), rel=1e-12)
    assert abs(float(fixed.logdensity(z_other)) - float(varying.logdensity(z_other))) > 0.1
    assert ld0 == pytest.approx(float(by_hand.logdensity(z_start)), rel=1e-12)
    assert ld_mode > ld0 and ld_mode == pytest.approx(float(fixed.logdensity(z_mode)), rel=1e-12)
    g = np.asarray(jax.grad(fixed.logdensity)(z_mode))
    h = -np.asarray(jax.hessian(fixed.logdensity)(z_mode))
    assert np.all(np.linalg.eigvalsh(h) > 0) and g @ np.linalg.solve(h, g) < 1e-5  # a maximum: Newton decrement ~ 0
    np.testing.assert_allclose(np.asarray(sas(theta_t)[1]), np.asarray(toy_emu.spectrum_and_sigma(theta_ref)[1]))


def test_woodbury_custom_gradient_equals_dense_autodiff():
    """The hand-written reverse rule of the Woodbury log-density equals jax.grad of the dense
    multivariate normal with Sigma = diag(d) + (ws B)(ws B)^T, for r, ws and d."""
    from jax.scipy.stats import multivariate_normal as mvn

    rng = np.random.default_rng(11)
    n, k = 40, 5
    basis = jnp.asarray(rng.normal(size=(n, k)) * 0.3)
    r = jnp.asarray(rng.normal(size=n) * 0.05)
    ws = jnp.asarray(0.02 + 0.01 * rng.random(n))
    d = jnp.asarray(1e-4 * (1 + rng.random(n)))

    def dense(r, ws, d):
        u = ws[:, None] * basis
        return mvn.logpdf(r, jnp.zeros(n), jnp.diag(d) + u @ u.T)

    outer = L.woodbury_outer(basis)  # the packed products B_ij B_ik that make C one matrix product
    assert outer.shape == (n, k * (k + 1) // 2)
    for packed in (outer, None):  # None: the direct [k, n] x [n, k] products (large bases)
        wood = lambda r, ws, d: L.woodbury_gaussian_logpdf(r, ws, d, basis, packed)  # noqa: E731
        assert float(wood(r, ws, d)) == pytest.approx(float(dense(r, ws, d)), rel=1e-10)
        for i in range(3):
            ga = jax.grad(wood, argnums=i)(r, ws, d)
            gb = jax.grad(dense, argnums=i)(r, ws, d)
            np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-7,
                                       atol=1e-9 * float(jnp.max(jnp.abs(gb))))
        gv = jax.vmap(jax.grad(wood))(jnp.stack([r, 2 * r]), jnp.stack([ws, ws]), jnp.stack([d, d]))
        np.testing.assert_allclose(np.asarray(gv[1]), np.asarray(jax.grad(dense)(2 * r, ws, d)), rtol=1e-7)
    # float32 inputs keep float32 gradients
    g32 = jax.grad(lambda w: L.woodbury_gaussian_logpdf(r.astype(jnp.float32), w, d.astype(jnp.float32),
                                                        basis.astype(jnp.float32), outer.astype(jnp.float32)))(
        ws.astype(jnp.float32))
    assert g32.dtype == jnp.float32


def test_ordering_constraint_is_a_soft_wall_of_the_stated_width():
    """Stage 1: the prior factor is sum log sigmoid(margin / 200 km/s) over v_break - v_inner,
    v_outer - v_break, v_wall - v_core, v_outer - v_wall (hand computation), ~0 inside and
    falling linearly (1 nat per 200 km/s) past a wall; valid_mask agrees on the sign."""
    sp = load_space(1)
    setup = M.make_setup(sp)
    th = 0.5 * (sp.lower + sp.upper)
    d = dict(zip(sp.names, th))
    margins = np.array([d["v_break"] - d["v_inner"], 25000 - d["v_break"], d["v_wall"] - d["v_core"],
                        25000 - d["v_wall"]])
    np.testing.assert_allclose(np.asarray(sp.ordering_margins(th)), margins)
    expected = np.sum(-np.logaddexp(0.0, -margins / 200.0))
    np.testing.assert_allclose(float(M._constraint_logprior(setup, jnp.asarray(th))), expected, rtol=1e-12)
    bad = th.copy()
    bad[sp.index("v_break")] = d["v_inner"] - 2000.0  # 2000 km/s on the wrong side
    assert not sp.valid_mask(bad[None])[0] and sp.valid_mask(th[None])[0]
    drop = float(M._constraint_logprior(setup, jnp.asarray(th)) - M._constraint_logprior(setup, jnp.asarray(bad)))
    assert 9.9 < drop < 10.2
    off = M.make_setup(sp, ordering_softness=0.0)
    assert float(M._constraint_logprior(off, jnp.asarray(bad))) == 0.0
    # stages 2/3: v_core / v_wall are inactive, only the density break is constrained
    assert np.asarray(load_space(2).ordering_margins(0.5 * (load_space(2).lower + load_space(2).upper))).shape == (2,)


def test_injection_draws_respect_the_orderings_and_fill_the_box():
    from lumina_jax.workflows.checks import injection_draws

    sp = load_space(1)
    setup = M.make_setup(sp)
    th, u = injection_draws(setup, 400, seed=1)
    assert th.shape == (400, 15) and np.all(sp.valid_mask(th))
    assert np.all((u >= 0.02) & (u <= 0.98))
    # parameters outside the orderings stay uniform; v_inner is pushed down by v_inner < v_break
    i_l, i_v = setup.free.index("log_L"), setup.free.index("v_inner")
    assert abs(u[:, i_l].mean() - 0.5) < 0.05 and u[:, i_v].mean() < 0.47


def test_probit_box_link_is_the_same_posterior_with_a_normal_jacobian(toy_emu, space3):
    """``box_link="probit"``: the site's value is w with u = Phi(w); the flat density is the
    same posterior in u times the Jacobian du/dw = phi(w) (logit: u (1 - u)), so the two
    links differ at the same u by exactly the difference of their log-Jacobians; the prior
    draws are standard normal in w (uniform in u); constrain / z_from_values invert."""
    from scipy import stats

    data = L.make_likelihood_data(toy_emu.wavelength, np.asarray(toy_emu.spectrum(jnp.array([1.0, 11000, 0.5]))),
                                  np.full(toy_emu.wavelength.shape, 0.01), np.ones(toy_emu.wavelength.shape, bool))
    fms = {k: M.flatten_model(M.make_setup(space3, n_poly=0, box_link=k), toy_emu.spectrum_and_sigma, data)
           for k in ("logit", "probit")}
    u = np.array([0.03, 0.6, 0.97])
    zl = M.z_from_values(fms["logit"], u, 0.02, 0.01)
    zp = M.z_from_values(fms["probit"], u, 0.02, 0.01)
    w = stats.norm.ppf(u)
    np.testing.assert_allclose(np.asarray(fms["probit"].unravel(zp)["u"]), w, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(fms["probit"].constrain(zp)["u"]), u, rtol=1e-9)
    jac_logit = np.sum(np.log(u * (1 - u)))
    jac_probit = np.sum(stats.norm.logpdf(w))
    d = float(fms["probit"].logdensity(zp)) - float(fms["logit"].logdensity(zl))
    assert d == pytest.approx(jac_probit - jac_logit, abs=1e-9)
    draws = np.asarray(jax.vmap(lambda z: fms["probit"].unravel(z)["u"])(
        M.prior_draws(fms["probit"], jax.random.PRNGKey(0), 4000)))
    assert abs(draws.mean()) < 0.05 and abs(draws.std() - 1.0) < 0.03
    assert float(fms["probit"].logprior(zp)) == pytest.approx(
        jac_probit + stats.norm(0, 0.5).logpdf(0.02) + float(fms["logit"].logprior(zl)) - jac_logit
        - stats.norm(0, 0.5).logpdf(0.02), abs=1e-9)
    with pytest.raises(UserError, match="box_link must be one of"):
        M.make_setup(space3, box_link="tanh")


def test_box_link_config_is_per_stage_and_reaches_the_fit(tmp_path, monkeypatch):
    """``likelihood.box_link``: one link for all stages or a {stageN: link} mapping; the shipped
    config samples stage 1 in logit and stages 2-3 in probit coordinates, and ``infer`` builds
    its setup with the link of the request's stage."""
    from lumina_jax.workflows import infer as api
    from lumina_jax.workflows.config import load_inference_config

    shipped = load_inference_config().likelihood
    assert [shipped.link(s) for s in (1, 2, 3)] == ["logit", "probit", "probit"]
    p = tmp_path / "c.yaml"
    p.write_text("likelihood: {box_link: probit}\n")
    assert {load_inference_config(p).likelihood.link(s) for s in (1, 2, 3)} == {"probit"}
    p.write_text("likelihood: {box_link: {stage1: probit}}\n")
    lk = load_inference_config(p).likelihood
    assert [lk.link(s) for s in (1, 2, 3)] == ["probit", "logit", "logit"]
    for bad, msg in [("{stage4: probit}", "unknown stage key"), ("{stage2: tanh}", "must be one of"),
                     ("tanh", "must be one of")]:
        p.write_text(f"likelihood: {{box_link: {bad}}}\n")
        with pytest.raises(UserError, match=msg):
            load_inference_config(p)

    seen = []

    class _Stop(Exception):
        pass

    def spy(*args, **kw):
        seen.append(kw["box_link"])
        raise _Stop

    monkeypatch.setattr(api, "make_setup", spy)
    p.write_text("likelihood: {box_link: {stage1: probit}}\n")
    emu = ToyEmulator(toy_space(stage=1))
    for req in (api.InferRequest(stage=1, config_path=p), api.InferRequest(stage=1),
                api.InferRequest(stage=1, config_path=p, box_link="logit")):
        with pytest.raises(_Stop):
            api.infer(req, emulator=emu, log=lambda m: None)
    assert seen == ["probit", "logit", "logit"]


def test_f_sys_prior_config_is_validated_and_reaches_the_setup(tmp_path, monkeypatch):
    """``likelihood.f_sys_prior`` (half-normal by default, scale 0.2) or log-uniform; bad values
    stop at load time with the key's name; ``infer`` builds its setup with them."""
    from lumina_jax.workflows import infer as api
    from lumina_jax.workflows.config import load_inference_config

    shipped = load_inference_config().likelihood
    assert shipped.f_sys_prior == "half-normal" and shipped.f_sys_scale == 0.2
    p = tmp_path / "c.yaml"
    for bad, msg in [("{f_sys_prior: uniform}", "f_sys_prior must be"), ("{f_sys_scale: -1}", "f_sys_scale must be"),
                     ("{f_sys_scale: wide}", "f_sys_scale must be")]:
        p.write_text(f"likelihood: {bad}\n")
        with pytest.raises(UserError, match=msg):
            load_inference_config(p)
    with pytest.raises(UserError, match="f_sys prior must be one of"):
        M.make_setup(toy_space(), f_sys_prior="flat")
    with pytest.raises(UserError, match="f_sys scale must be positive"):
        M.make_setup(toy_space(), f_sys_scale=0.0)

    seen = []

    class _Stop(Exception):
        pass

    def spy(*args, **kw):
        seen.append((kw["f_sys_prior"], kw["f_sys_scale"]))
        raise _Stop

    monkeypatch.setattr(api, "make_setup", spy)
    p.write_text("likelihood: {f_sys_prior: log-uniform, f_sys_scale: 0.05}\n")
    with pytest.raises(_Stop):
        api.infer(api.InferRequest(stage=1, config_path=p), emulator=ToyEmulator(toy_space(stage=1)), log=lambda m: None)
    assert seen == [("log-uniform", 0.05)]


@pytest.mark.parametrize("box_link", ["logit", "probit"])
def test_find_map_ends_at_the_mode_of_the_sampled_density(toy_emu, space3, box_link):
    """The u-space multi-start climb, then the z polish: the returned point is a stationary
    point of ``fm.logdensity`` (gradient ~ 0, Hessian negative definite) near the truth of a
    noiseless mock, and its reported value is that density there."""
    truth = jnp.array([1.2, 9500.0, 0.35])
    wave = toy_emu.wavelength
    data = L.make_likelihood_data(wave, np.asarray(toy_emu.spectrum(truth)), np.full(wave.shape, 0.01),
                                  np.ones(wave.shape, bool))
    setup = M.make_setup(space3, n_poly=0, box_link=box_link)
    fm = M.flatten_model(setup, toy_emu.spectrum_and_sigma, data)
    z, ld, _, _ = OPT.find_map(fm, jax.random.PRNGKey(3), n_starts=8, n_steps=300, n_screen=256)
    assert ld == pytest.approx(float(fm.logdensity(z)), rel=1e-12)
    g = np.asarray(jax.grad(fm.logdensity)(z))
    h = np.asarray(jax.hessian(fm.logdensity)(z))
    assert np.max(np.abs(g) / np.sqrt(np.abs(np.diag(h)))) < 1e-3, g  # gradient << 1 posterior sd
    assert np.all(np.linalg.eigvalsh(h) < 0)
    np.testing.assert_allclose(np.asarray(fm.theta(z)), np.asarray(truth), rtol=0.02)


def test_find_map_climbs_from_given_starts(toy_emu, space3):
    """``starts`` (an NPE's best draws under ``--init npe``) replace the screened starts: the
    climbs from two points away from the truth end at the same mode as the default search."""
    from lumina_jax.inference.density import z_from_values

    truth = jnp.array([1.2, 9500.0, 0.35])
    wave = toy_emu.wavelength
    data = L.make_likelihood_data(wave, np.asarray(toy_emu.spectrum(truth)), np.full(wave.shape, 0.01),
                                  np.ones(wave.shape, bool))
    fm = M.flatten_model(M.make_setup(space3, n_poly=0), toy_emu.spectrum_and_sigma, data)
    starts = jnp.stack([z_from_values(fm, jnp.array(u), 0.0, 0.02) for u in ([0.2, 0.7, 0.6], [0.8, 0.4, 0.2])])
    z, ld, zs, _ = OPT.find_map(fm, jax.random.PRNGKey(0), starts=starts, n_steps=300)
    assert zs.shape[0] == 2
    z_ref, ld_ref, _, _ = OPT.find_map(fm, jax.random.PRNGKey(3), n_starts=8, n_steps=300, n_screen=256)
    assert ld == pytest.approx(ld_ref, abs=1e-6)
    np.testing.assert_allclose(np.asarray(fm.theta(z)), np.asarray(fm.theta(z_ref)), rtol=1e-5)


def test_unconverged_run_is_told_the_matching_remedy():
    """Divergences > 1 % -> raise --target-accept; R-hat > 1.01 -> longer chains; both -> both."""
    from lumina_jax.inference import diagnostics as D

    base = {"max_rhat": 1.003, "per_parameter": {"a": {"rhat": 1.003}}, "divergences": 0, "divergent_fraction": 0.0}
    assert D.convergence_problems(base) == []
    div = dict(base, divergences=40, divergent_fraction=0.02)
    rh = dict(base, max_rhat=1.05, per_parameter={"a": {"rhat": 1.05}})
    tip_div, tip_rh = D.remedy(D.convergence_problems(div)), D.remedy(D.convergence_problems(rh))
    assert "--target-accept" in tip_div and "--warmup" not in tip_div
    assert "--warmup" in tip_rh and "--target-accept" not in tip_rh
    both = D.remedy(D.convergence_problems(dict(div, max_rhat=1.05, per_parameter={"a": {"rhat": 1.05}})))
    assert "--target-accept" in both and "--warmup" in both and "--allow-unconverged" in both
    # MCLMC and emcee do not read --target-accept: their divergences call for longer runs
    tip_mclmc = D.remedy(D.convergence_problems(div), "blackjax-mclmc")
    assert "--target-accept" not in tip_mclmc and "--warmup" in tip_mclmc


def test_large_emulator_error_basis_skips_the_packed_products(monkeypatch):
    """Above OUTER_MAX_ELEMENTS the data carry no packed products and the likelihood (direct
    products) is unchanged."""
    rng = np.random.default_rng(2)
    w = np.arange(4000.0, 4300.0, 5.0)
    b = 0.5 * rng.standard_normal((w.size, 6)) / np.sqrt(6)
    y, s_obs, mask = 1.0 + 0.02 * rng.standard_normal(w.size), np.full(w.size, 0.01), np.ones(w.size, bool)
    flux, sig = jnp.asarray(1.0 + 0.01 * np.cos(w / 30.0)), jnp.full(w.size, 0.02)
    packed = L.make_likelihood_data(w, y, s_obs, mask, emu_basis=b)
    monkeypatch.setattr(L, "OUTER_MAX_ELEMENTS", 10)
    direct = L.make_likelihood_data(w, y, s_obs, mask, emu_basis=b)
    assert packed.emu_outer is not None and direct.emu_outer is None
    a = float(L.log_likelihood(flux, sig, packed, 0.0, 0.01))
    assert a == pytest.approx(float(L.log_likelihood(flux, sig, direct, 0.0, 0.01)), rel=1e-12)
