"""Nested sampling (``--sampler blackjax-nss``): evidence and posterior against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.inference import density as M
from lumina_jax.inference.likelihood import make_likelihood_data
from lumina_jax.inference.sampling import NestedOptions, SamplerConfig, run_nested

from inference_toys import ToyEmulator, toy_space


def test_nested_sampling_evidence_and_posterior_of_a_gaussian():
    """Prior N(0, I_4), likelihood N(mu; z, s^2 I): Z = N(mu; 0, (1 + s^2) I) and the posterior
    is N(mu / (1 + s^2), s^2 / (1 + s^2)) -- closed forms the sampler never sees."""
    d, s = 4, 0.2
    mu = jnp.array([0.5, -0.3, 0.1, 0.8])

    def logprior(z):
        return jnp.sum(-0.5 * z**2 - 0.5 * jnp.log(2 * jnp.pi))

    def loglik(z):
        return jnp.sum(-0.5 * ((z - mu) / s) ** 2 - jnp.log(s) - 0.5 * jnp.log(2 * jnp.pi))

    def draws(key, n):
        return jax.random.normal(key, (n, d))

    v = 1 + s**2
    log_z_true = float(jnp.sum(-0.5 * mu**2 / v - 0.5 * jnp.log(2 * jnp.pi * v)))
    cfg = SamplerConfig(name="blackjax-nss", num_chains=2, num_samples=2000, nested=NestedOptions(live=200), seed=1)
    run = run_nested(cfg, logprior, loglik, draws)
    lz, sd = run.info["log_evidence"], run.info["log_evidence_sd"]
    assert 0.02 < sd < 0.5
    assert abs(lz - log_z_true) < 4 * sd, (lz, sd, log_z_true)
    flat = run.positions.reshape(-1, d)
    np.testing.assert_allclose(flat.mean(0), np.asarray(mu) / v, atol=0.03)
    np.testing.assert_allclose(flat.std(0), s / np.sqrt(v), rtol=0.15)
    assert run.positions.shape == (2, 2000, d) and run.n_grad > 200


def test_prior_split_of_the_flat_model_adds_up_and_prior_draws_follow_it():
    sp = toy_space()
    emu = ToyEmulator(sp)
    setup = M.make_setup(sp, n_poly=2, priors={sp.names[0]: (1.0, 0.2)})
    f = np.asarray(emu.spectrum(0.5 * (sp.lower + sp.upper)))
    data = make_likelihood_data(emu.wavelength, f, 0.01 * f, np.ones(f.shape, bool))
    fm = M.flatten_model(setup, emu.spectrum_and_sigma, data)
    z = M.prior_draws(fm, jax.random.PRNGKey(0), 4000)
    split = jax.vmap(fm.logprior)(z) + jax.vmap(fm.loglikelihood)(z)
    np.testing.assert_allclose(split, jax.vmap(fm.logdensity)(z), rtol=1e-6, atol=1e-5)
    c = jax.vmap(fm.constrain)(z)
    u = np.asarray(c["u"])
    assert np.all((u > 0) & (u < 1)) and np.allclose(u.mean(0), 0.5, atol=0.02) and np.allclose(u.std(0), 12**-0.5, atol=0.01)
    assert abs(np.std(np.asarray(jax.vmap(fm.unravel)(z)["f_sys_signed"])) - setup.f_sys_scale) < 0.03 * setup.f_sys_scale
    assert abs(np.mean(c["f_sys"]) - setup.f_sys_scale * np.sqrt(2 / np.pi)) < 0.03 * setup.f_sys_scale  # half-normal mean
    assert abs(np.std(c["log_scale"]) - setup.log_scale_sd) < 0.03
    # the prior density is normalised: E_prior[exp(-logprior)] over draws estimates the z-volume,
    # so check instead the known density of one coordinate: u = sigmoid(z) ~ U(0,1) <=> z ~ Logistic
    zi = np.asarray(fm.unravel(z[0])["u"])
    lp0 = float(fm.logprior(z[0]))
    lp_expected = (np.sum(-np.logaddexp(0, -zi) - np.logaddexp(0, zi))  # logistic densities of u
                   + float(-0.5 * (c["log_scale"][0] / setup.log_scale_sd) ** 2 - np.log(setup.log_scale_sd)
                           - 0.5 * np.log(2 * np.pi))
                   + float(-0.5 * (fm.unravel(z[0])["f_sys_signed"] / setup.f_sys_scale) ** 2
                           - np.log(setup.f_sys_scale) - 0.5 * np.log(2 * np.pi))
                   + float(np.sum(-0.5 * (c["poly"][0] / setup.poly_sd) ** 2 - np.log(setup.poly_sd)
                                  - 0.5 * np.log(2 * np.pi))))
    np.testing.assert_allclose(lp0, lp_expected, rtol=1e-9, atol=1e-9)
