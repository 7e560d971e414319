"""The profile-path shear (lumina_jax/inference/ridge.py): exact (unit Jacobian, exact inverse;
with widths the log Jacobian it reports), its profile path on an analytic banana, its widths on an
analytic funnel, and samples of both through run_preconditioned."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import lumina_jax  # noqa: F401  (float64)
from lumina_jax.errors import ParameterError
from lumina_jax.inference.likelihood import make_likelihood_data
from lumina_jax.inference.density import flatten_model, make_setup, z_names
from lumina_jax.inference.ridge import RidgeShear, fit_ridge, ridge_coordinate
from lumina_jax.inference.sampling import SamplerConfig
from lumina_jax.inference.precondition import run_preconditioned

from inference_toys import toy_space

# banana: x ~ N(0, 1), y | x ~ N(A x^2 + B x, S^2), w ~ N(0, 0.3^2): the profile path along x is
# y = A x^2 + B x, w = 0, and y - A x^2 - B x is independent of x
A, B, S = 1.5, 0.3, 0.1


def banana(z):
    x, y, w = z[0], z[1], z[2]
    return -0.5 * x ** 2 - 0.5 * ((y - A * x ** 2 - B * x) / S) ** 2 - 0.5 * (w / 0.3) ** 2


@settings(max_examples=25, deadline=None)
@given(path=st.lists(st.floats(-2, 2), min_size=15, max_size=15), v=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
       k=st.integers(0, 2))
def test_shear_has_unit_jacobian_an_exact_inverse_and_the_chain_rule_hessian(path, v, k):
    """Random spline paths through 5 knots on [-1, 1.5] (centre 0.2), points inside and beyond them."""
    assume(min(abs(v[k] - 0.2 + 1.0), abs(v[k] - 0.2 - 1.5)) > 1e-6)  # r'' is one-sided at the ends
    sh = RidgeShear.from_points(k, 0.2, np.linspace(-1.0, 1.5, 5), np.array(path).reshape(5, 3))
    v = jnp.asarray(v)
    np.testing.assert_allclose(np.linalg.det(np.asarray(jax.jacfwd(sh.forward)(v))), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(sh.inverse(sh.forward(v))), np.asarray(v), atol=1e-12)
    np.testing.assert_allclose(sh.forward(np.asarray(v)), np.asarray(sh.forward(v)), atol=1e-12)  # numpy path
    f = lambda z: jnp.sum(jnp.sin(z) ** 3) + z[0] * z[1]  # noqa: E731
    h = sh.pullback_hessian(jax.hessian(f)(sh.forward(v)), jax.grad(f)(sh.forward(v)), v)
    np.testing.assert_allclose(h, np.asarray(jax.hessian(lambda u: f(sh.forward(u)))(v)), atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(path=st.lists(st.floats(-2, 2), min_size=15, max_size=15), logw=st.lists(st.floats(-1.5, 1.5), min_size=15,
       max_size=15), v=st.lists(st.floats(-4, 4), min_size=3, max_size=3), k=st.integers(0, 2))
def test_width_scaled_shear_reports_its_log_jacobian_and_inverts_exactly(path, logw, v, k):
    """Random paths and log widths through 5 knots on [-1, 1.5] (centre 0.2), points inside and
    beyond them (where l bends to a constant): log |det dz/dv| from jax.jacfwd, the inverse, the
    numpy path, and the Hessian of f(forward(v)) + log_det_jacobian(v) by the chain rule."""
    assume(min(abs(v[k] - 0.2 + 1.0), abs(v[k] - 0.2 - 1.5)) > 1e-6)  # one-sided second derivatives at the ends
    offs = np.linspace(-1.0, 1.5, 5)  # no knot at 0: the formulas must not rely on one
    mode = np.array([0.3, -0.4, 0.2])
    sh = RidgeShear.from_points(k, 0.2, offs, np.array(path).reshape(5, 3), mode=mode,
                                log_widths=np.array(logw).reshape(5, 3))
    assert sh.mode[k] == 0.2 and np.all(sh.width_coef[:, :, k] == 0.0)
    v = jnp.asarray(v)
    _, logdet = np.linalg.slogdet(np.asarray(jax.jacfwd(sh.forward)(v)))
    np.testing.assert_allclose(float(sh.log_det_jacobian(v)), logdet, atol=1e-10)
    np.testing.assert_allclose(np.asarray(sh.inverse(sh.forward(v))), np.asarray(v), atol=1e-10)
    np.testing.assert_allclose(sh.forward(np.asarray(v)), np.asarray(sh.forward(v)), atol=1e-12)
    np.testing.assert_allclose(sh.log_det_jacobian(np.asarray(v)), float(sh.log_det_jacobian(v)), atol=1e-12)
    f = lambda z: jnp.sum(jnp.sin(z) ** 3) + z[0] * z[1]  # noqa: E731
    h = sh.pullback_hessian(jax.hessian(f)(sh.forward(v)), jax.grad(f)(sh.forward(v)), v)
    np.testing.assert_allclose(
        h, np.asarray(jax.hessian(lambda u: f(sh.forward(u)) + sh.log_det_jacobian(u))(v)), atol=1e-9)


# funnel with a bent ridge: x ~ N(0, 1), y | x ~ N(FA x^2, (FS exp(FB x + FC x^2))^2), w ~ N(0, 0.3^2).
# The joint's mode is at x = XM = -FB / (1 + 2 FC) (log p = -x^2/2 - FB x - FC x^2 - ...), and the
# conditional width of y along x is FS exp(FB x + FC x^2): l_y(d) = FB d + FC ((XM + d)^2 - XM^2)
# from the mode, a parabola a not-a-knot spline reproduces exactly (curved, so a wrong log
# Jacobian would leave curvature behind)
FA, FB, FC, FS = 0.5, 0.7, 0.05, 0.3
XM = -FB / (1 + 2 * FC)


def funnel(z):
    x, y, w = z[0], z[1], z[2]
    log_sd = FB * x + FC * x ** 2
    return -0.5 * x ** 2 - 0.5 * ((y - FA * x ** 2) * jnp.exp(-log_sd) / FS) ** 2 - log_sd - 0.5 * (w / 0.3) ** 2


FUNNEL_MODE = jnp.array([XM, FA * XM ** 2, 0.0])


def test_widths_of_a_funnel_make_it_exactly_gaussian():
    # 6 steps of 0.5 a side: y's conditional precision stays above the 0.1 floor (x < 2.5)
    sh = fit_ridge(funnel, FUNNEL_MODE, 0, 1.0, max_steps=6)
    assert sh is not None and sh.width_coef is not None and (sh.lo, sh.hi) == (-3.0, 3.0)
    d = np.array([-2.9, -0.4, 0.0, 1.7, 2.95])
    np.testing.assert_allclose(np.asarray(sh._log_width(d, 0))[:, 1], FB * d + FC * ((XM + d) ** 2 - XM ** 2),
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(sh._log_width(d, 0))[:, 2], 0.0, atol=1e-8)  # w does not widen
    rec = sh.record()["width_ratio"]
    l_end = FB * np.array([-3.0, 3.0]) + FC * ((XM + np.array([-3.0, 3.0])) ** 2 - XM ** 2)
    assert rec["most_varying"] == 1
    np.testing.assert_allclose([rec["min"], rec["max"]], np.exp(l_end), rtol=1e-5)  # 0.23, 10.6
    # the density of v (log Jacobian included) is Gaussian inside the fitted range: x, w as they are,
    # v_y with the width at the mode, FS exp(FB XM + FC XM^2)
    lv = lambda v: funnel(sh.forward(v)) + sh.log_det_jacobian(v)  # noqa: E731
    hv = jax.jit(jax.hessian(lv))
    want = -np.diag([1.0, np.exp(-2 * (FB * XM + FC * XM ** 2)) / FS ** 2, 0.3 ** -2])
    for v in ([-0.7, 0.1, 0.0], [1.5, -1.2, 0.4], [-3.2, 0.8, -0.1], [2.2, 0.3, 0.2]):
        np.testing.assert_allclose(np.asarray(hv(jnp.asarray(v))), want, rtol=1e-6, atol=1e-6)
    # without widths the same path leaves the funnel: y's curvature at x = XM -+ 2 differs by the
    # squared width ratio exp(2 (FB 4 + FC 8 XM))
    plain = fit_ridge(funnel, FUNNEL_MODE, 0, 1.0, max_steps=6, widths=False)
    assert plain.width_coef is None and plain.record()["width_ratio"] is None
    hp = jax.hessian(lambda v: funnel(plain.forward(v)))
    ratio = float(hp(FUNNEL_MODE.at[0].add(-2.0))[1, 1] / hp(FUNNEL_MODE.at[0].add(2.0))[1, 1])
    np.testing.assert_allclose(ratio, np.exp(2 * (4 * FB + 8 * FC * XM)), rtol=1e-6)


# bifurcation: x ~ N(0, 1); y is symmetric about 0 with curvature CY (1 - x / 2) at y = 0 and a quartic
# wall: for x < 2 its conditional width is sd(x) = CY^-1/2 (1 - x/2)^-1/2, at x >= 2 it turns bimodal
# (+-y) and the Laplace width at the profile point y = 0 does not exist (curvature <= 0) -- as the
# signed systematic's does where a stage-3 fit worsens along t_exp.  Scales as a systematic's (CY^-1/2 = 0.01).
CY, QY = 1e4, 1e7


def bifurcation(z):
    x, y, w = z[0], z[1], z[2]
    return -0.5 * x ** 2 - 0.5 * CY * (1.0 - 0.5 * x) * y ** 2 - QY * y ** 4 - 0.5 * (w / 0.3) ** 2


def test_widths_are_held_where_the_laplace_width_is_undefined():
    sh = fit_ridge(bifurcation, jnp.zeros(3), 0, 1.0)
    assert sh is not None and sh.width_coef is not None
    knots = sh.knots
    l_y = np.asarray(sh._log_width(knots, 0))[:, 1]
    inside = knots < 2.0
    # where y's conditional curvature is positive its width is the Laplace one, (1 - x/2)^-1/2 ...
    np.testing.assert_allclose(l_y[inside], -0.5 * np.log1p(-0.5 * knots[inside]), atol=1e-6)
    # ... from x = 2 on (curvature 0, then negative) it is held at x = 1.5's: 2x the mode's, where the
    # curvature floor alone made it 1 / sqrt(0.1) / 0.01 = 316x
    np.testing.assert_allclose(l_y[~inside], np.log(2.0), atol=1e-6)
    assert np.ptp(l_y[~inside]) == 0.0 and (~inside).sum() >= 3
    assert sh.record()["width_ratio"]["max"] == pytest.approx(2.0, rel=1e-6)
    np.testing.assert_allclose(np.asarray(sh._log_width(knots, 0))[:, 2], 0.0, atol=1e-8)  # w unchanged


def test_held_widths_hold_outward_from_the_first_undefined_point_on_each_side():
    from lumina_jax.inference.ridge import _held_widths

    offs = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    ref = np.array([0.0, 1.0, 2.0])
    # coordinate 1: undefined at 0.5, defined again at 1.0 (stays held: the pipeline's case) and at -1.0
    # only; coordinate 2: undefined at the mode (no scaling anywhere); coordinate 0: the ridge itself
    ls = {-1.0: ([0, 1.7, 9], [1, 1, 1]), -0.5: ([0, 1.4, 9], [1, 1, 1]), 0.0: (ref, [1, 1, 0]),
          0.5: ([0, 1.2, 9], [1, 0, 1]), 1.0: ([0, 1.1, 9], [1, 1, 1]), 1.5: ([0, 5.0, 9], [1, 1, 1])}
    ls = {k: (np.asarray(a, float), np.asarray(b, bool)) for k, (a, b) in ls.items()}
    ls[-1.0][1][1] = False
    out = _held_widths(offs, ls)
    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_array_equal(out[:, 2], 0.0)
    # mode 0; +0.5 on: held at the mode's 0; -0.5: 0.4; -1.0 undefined: held at -0.5's 0.4
    np.testing.assert_allclose(out[:, 1], [0.4, 0.4, 0.0, 0.0, 0.0, 0.0])


def test_nuts_through_the_width_scaled_shear_samples_the_funnel_exactly():
    """y = FA x^2 + FS exp(FB x + FC x^2) e with x, e standard normal: E[y] = FA, var(y) =
    2 FA^2 + FS^2 E[exp(2 FB x + 2 FC x^2)] = 2 FA^2 + FS^2 exp(2 FB^2 / (1 - 4 FC)) / sqrt(1 - 4 FC).
    The transform is exact, so the draws mapped back to z reproduce these moments and
    e = (y - FA x^2) exp(-FB x - FC x^2) / FS is standard normal and independent of x;
    run.logdensity is the density of z (the log Jacobian taken out)."""
    cfg = SamplerConfig(name="nuts", num_chains=4, num_warmup=300, num_samples=500, seed=1)
    run, info = run_preconditioned(cfg, funnel, FUNNEL_MODE, jax.random.PRNGKey(0), ridge_index=0)
    assert info["ridge"]["width_ratio"] is not None
    z = run.positions.reshape(-1, 3)
    np.testing.assert_allclose(run.logdensity.ravel(), np.asarray(jax.vmap(funnel)(jnp.asarray(z))), atol=1e-9)
    sd_y = np.sqrt(2 * FA ** 2 + FS ** 2 * np.exp(2 * FB ** 2 / (1 - 4 * FC)) / np.sqrt(1 - 4 * FC))
    assert abs(z[:, 1].mean() - FA) < 0.1 * sd_y
    np.testing.assert_allclose(z[:, 1].std(), sd_y, rtol=0.15)
    np.testing.assert_allclose([z[:, 0].mean(), z[:, 0].std(), z[:, 2].std()], [0.0, 1.0, 0.3], atol=0.1)
    e = (z[:, 1] - FA * z[:, 0] ** 2) * np.exp(-FB * z[:, 0] - FC * z[:, 0] ** 2) / FS  # N(0, 1), independent of x
    np.testing.assert_allclose([e.mean(), e.std(), np.corrcoef(e ** 2, z[:, 0])[0, 1]], [0.0, 1.0, 0.0], atol=0.1)
    assert int(run.diverging.sum()) == 0 and run.info["mean_steps"] <= 15


def test_profile_path_of_a_banana_is_its_parabola_and_the_sheared_density_is_gaussian():
    sh = fit_ridge(banana, jnp.zeros(3), 0, 1.0)
    # steps of 0.5 until the drop x^2 / 2 passes 12.5 (at x = 5.5): 11 points a side and the mode
    assert sh is not None and sh.knots.size == 23 and (sh.lo, sh.hi) == (-5.5, 5.5)
    # the profile drop along x is x^2 / 2 exactly, the path the parabola (a not-a-knot spline is exact for it)
    np.testing.assert_allclose(sh.drops, 0.5 * sh.knots ** 2, atol=1e-8)
    d = np.array([-5.2, -1.3, 0.0, 0.77, 4.9])
    np.testing.assert_allclose(sh._path(d, 0), np.stack([0 * d, A * d ** 2 + B * d, 0 * d], -1), atol=1e-8)
    # in v the banana is the Gaussian diag(1, S^2, 0.09) inside the fitted range
    hv = jax.jit(jax.hessian(lambda v: banana(sh.forward(v))))
    for v in ([0.0, 0.0, 0.0], [3.1, -0.2, 0.4], [-3.9, 0.5, -0.1]):
        np.testing.assert_allclose(np.asarray(hv(jnp.asarray(v))), -np.diag([1.0, S ** -2, 0.3 ** -2]), atol=1e-6)


def test_continuation_stops_where_the_density_ends_or_the_corrector_fails():
    # finite only for |x| < 0.7: the mode and x = +-0.5, three points, too few for a spline
    steep = lambda z: jnp.where(jnp.abs(z[0]) < 0.7, banana(z), -jnp.inf)  # noqa: E731
    assert fit_ridge(steep, jnp.zeros(3), 0, 1.0) is None
    # |x| < 1.2: five points (0, +-0.5, +-1), enough
    wider = lambda z: jnp.where(jnp.abs(z[0]) < 1.2, banana(z), -jnp.inf)  # noqa: E731
    sh = fit_ridge(wider, jnp.zeros(3), 0, 1.0)
    assert sh is not None and sh.knots.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    # a wiggle x^4 cos(4 y) / 2 bends the profile beyond |x| ~ 1: one Newton step from the tangent
    # prediction no longer reaches it there, and those points are refused (Newton decrement > 0.05)
    # instead of becoming knots; without the check they would be kept
    wiggly = lambda z: banana(z) + 0.5 * jnp.cos(4.0 * z[1]) * z[0] ** 4  # noqa: E731
    one_step = fit_ridge(wiggly, jnp.zeros(3), 0, 1.0, newton_steps=1)
    unchecked = fit_ridge(wiggly, jnp.zeros(3), 0, 1.0, newton_steps=1, max_decrement=np.inf)
    assert one_step.knots.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0] and unchecked.knots.size > 10


def test_nuts_with_the_ridge_shear_samples_the_banana_exactly():
    """y = A x^2 + B x + S e: E[y] = A, sd(y) = sqrt(2 A^2 + B^2 + S^2) = 2.14, corr(y, x^2) ~ 1.
    The shear is exact, so the draws mapped back to z must reproduce these moments; 4 chains x
    500 draws of an (in v) standard Gaussian have ESS > 1000 (Monte-Carlo error ~ 0.03 sd)."""
    cfg = SamplerConfig(name="nuts", num_chains=4, num_warmup=300, num_samples=500, seed=2)
    run, info = run_preconditioned(cfg, banana, jnp.zeros(3), jax.random.PRNGKey(0), ridge_index=0)
    assert info["ridge"] is not None and info["ridge"]["index"] == 0
    z = run.positions.reshape(-1, 3)
    sd_y = np.sqrt(2 * A ** 2 + B ** 2 + S ** 2)
    assert abs(z[:, 1].mean() - A) < 0.15 * sd_y
    np.testing.assert_allclose(z[:, 1].std(), sd_y, rtol=0.15)
    np.testing.assert_allclose([z[:, 0].mean(), z[:, 0].std(), z[:, 2].std()], [0.0, 1.0, 0.3], atol=0.1)
    resid = z[:, 1] - A * z[:, 0] ** 2 - B * z[:, 0]
    np.testing.assert_allclose(resid.std(), S, rtol=0.1)
    assert int(run.diverging.sum()) == 0 and run.info["mean_steps"] <= 15


def test_ridge_coordinate_names_a_free_box_parameter():
    sp = toy_space()
    setup = make_setup(sp, fixed={"d": 0.5})
    data = make_likelihood_data(np.linspace(4000, 7000, 4), np.ones(4), None, np.ones(4, bool))
    fm = flatten_model(setup, lambda th: (jnp.ones(4) * th[0], jnp.ones(4)), data)
    names = z_names(fm)
    assert ridge_coordinate("v", setup, names) == names.index("u:v")
    assert ridge_coordinate(None, setup, names) is None
    assert ridge_coordinate("d", setup, names) is None  # fixed in this fit
    with pytest.raises(ParameterError, match="unknown parameter 't_epx'"):
        ridge_coordinate("t_epx", setup, names)


def test_infer_records_the_shear_and_an_unknown_ridge_stops_before_the_map(tmp_path, monkeypatch):
    """Toy fit through api.infer with sampler.ridge = v (a free parameter): the summary records
    the profile path; a name the space lacks raises before the MAP search (which is then never
    called)."""
    import dataclasses

    from lumina_jax.workflows import infer as api, fit as F
    from inference_toys import ToyEmulator, ToySynth

    (tmp_path / "inf.yaml").write_text(
        "mock: {stage1: {a: 1.0, v: 11000.0, d: 0.5}, noise_frac: 0.01, seed: 3}\n"
        "likelihood: {n_poly: 1}\nsampler: {map_starts: 2}\n")
    sp = toy_space()
    req = api.InferRequest(stage=1, out=tmp_path / "res", config_path=tmp_path / "inf.yaml", map_starts=2,
                           sampler=SamplerConfig(num_chains=1, num_warmup=50, num_samples=50, ridge="v"))
    msgs = []
    out, _ = api.infer(req, emulator=ToyEmulator(sp), synthesizer=ToySynth(sp), log=msgs.append)
    r = out.summary["preconditioning"]["ridge"]
    assert r is not None and r["index"] == z_names(out.flat_model).index("u:v") and len(r["profile_offsets"]) >= 4
    w = r["width_ratio"]  # plumbing: the record reaches the summary (the widths themselves: the funnel tests)
    assert set(w) == {"min", "max", "most_varying", "most_varying_at_knots"}
    assert len(w["most_varying_at_knots"]) == len(r["profile_offsets"])
    assert any(m.startswith("ridge: profile path along v") and "conditional widths" in m for m in msgs)
    assert out.summary["sampler_config"]["ridge"] == "v"
    called = []
    monkeypatch.setattr(F, "find_map", lambda *a, **k: called.append(1))
    with pytest.raises(ParameterError, match="unknown parameter 't_epx'"):
        api.infer(dataclasses.replace(req, out=tmp_path / "r2", sampler=SamplerConfig(ridge="t_epx")),
                  emulator=ToyEmulator(sp), synthesizer=ToySynth(sp), log=lambda m: None)
    assert not called
