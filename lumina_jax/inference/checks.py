"""Posterior checks against the physics.

1. :func:`coverage` -- injection-recovery: draw theta from the prior (the sampling box),
   simulate with the *synthesizer*, add noise, infer with the *emulator* (BlackJAX NUTS,
   vmapped over injections so one compiled program runs them all), and count how often the
   central 68 % / 95 % intervals contain the truth.
2. :func:`gradient_agreement` -- at the posterior mode, d logL / d u (unit box) through the
   emulator vs through the synthesizer (jax.grad through the physics; central finite
   differences when the preprocessing is not traceable); cosine similarity and per-parameter ratios.
3. :func:`ppc_physics` -- posterior draws re-simulated by the synthesizer: residual RMS of
   the synthesizer spectra against the data beside that of the emulator spectra.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.inference.likelihood import LikelihoodData, describe_emulator_error, log_likelihood, make_likelihood_data, predicted_flux
from lumina_jax.inference.model import FitSetup, flatten_model, spectral_model, z_from_values
from lumina_jax.inference.observed import observation_from_model


def _simulate_observations(thetas, simulate, emulator, noise_frac, seed, window, emu_basis=None, corr_length=None,
                           stride=1, emu_rank=None):
    datas = []
    for i, th in enumerate(thetas):
        w, f = simulate(th)
        obs = observation_from_model(np.asarray(w), np.asarray(f), emulator.wavelength, emulator.preprocess,
                                     noise_frac=noise_frac, seed=seed + 7919 * i, window=window)
        datas.append(make_likelihood_data(obs.wavelength, obs.flux, obs.sigma, obs.mask, corr_length=corr_length,
                                          emu_basis=emu_basis, stride=stride, emu_rank=emu_rank))
    return jax.tree.map(lambda *a: jnp.stack(a), *datas)


def coverage(setup: FitSetup, emulator, simulate: Callable, *, n_injections: int = 50, noise_frac: float = 0.02,
             num_warmup: int = 300, num_samples: int = 300, seed: int = 0, window=None,
             map_starts: int = 4, levels=(0.68, 0.95), emu_basis=None, corr_length=None, stride: int = 1,
             emu_rank: int | None = None) -> dict:
    """Injection-recovery coverage (see module docstring).  ``simulate(theta) -> (wave, L_lambda)``.

    ``emu_basis`` / ``corr_length``: the emulator-error model of the likelihood, as in
    :func:`lumina_jax.inference.fit.run_fit`."""
    import blackjax
    from numpyro.infer.util import potential_energy
    import optax

    rng = np.random.default_rng(seed)
    base = setup.base_theta()
    idx = setup.free_index
    u_true = rng.uniform(0.02, 0.98, size=(n_injections, setup.n_free))
    thetas = np.repeat(base[None], n_injections, 0)
    thetas[:, idx] = setup.space.lower[idx] + u_true * (setup.space.upper[idx] - setup.space.lower[idx])
    datas = _simulate_observations(thetas, simulate, emulator, noise_frac, seed, window, emu_basis, corr_length,
                                   stride, emu_rank)
    d0 = jax.tree.map(lambda a: a[0], datas)
    fm = flatten_model(setup, emulator.spectrum_and_sigma, d0)

    def logdensity(z, data):
        return -potential_energy(spectral_model, (setup, emulator.spectrum_and_sigma, data), {}, fm.unravel(z))

    opt = optax.adam(optax.cosine_decay_schedule(0.05, 400, alpha=0.02))

    def one(key, data):
        ld = lambda z: logdensity(z, data)  # noqa: E731
        k0, kw, ks = jax.random.split(key, 3)
        us = jax.random.uniform(k0, (map_starts, setup.n_free), minval=0.05, maxval=0.95)
        z0 = jax.vmap(lambda u: z_from_values(fm, u, 0.0, float(np.sqrt(np.prod(setup.f_sys_range)))))(us)

        def adam(z):
            def step(c, _):
                z, st = c
                g = jax.grad(lambda q: -ld(q))(z)
                g = jnp.where(jnp.isfinite(g), g, 0.0)
                upd, st = opt.update(g, st, z)
                return (optax.apply_updates(z, upd), st), None
            (z, _), _ = jax.lax.scan(step, (z, opt.init(z)), None, length=400)
            return z, ld(z)

        zs, lds = jax.vmap(adam)(z0)
        z_start = zs[jnp.argmax(jnp.where(jnp.isfinite(lds), lds, -jnp.inf))]
        warm = blackjax.window_adaptation(blackjax.nuts, ld, target_acceptance_rate=0.8)
        (state, params), _ = warm.run(kw, z_start, num_steps=num_warmup)
        kernel = blackjax.nuts(ld, **params).step

        def step(st, k):
            st, info = kernel(k, st)
            return st, (st.position, info.is_divergent)

        _, (pos, div) = jax.lax.scan(step, state, jax.random.split(ks, num_samples))
        u = jax.vmap(lambda z: fm.constrain(z)["u"])(pos)
        return u, jnp.mean(div)

    emu_error = describe_emulator_error(d0, corr_length)
    keys = jax.random.split(jax.random.PRNGKey(seed), n_injections)
    u_draws, div = jax.jit(jax.vmap(one))(keys, datas)
    u_draws = np.asarray(u_draws)  # [n_inj, draws, n_free]
    out = {"n_injections": n_injections, "noise_frac": noise_frac, "emulator_error": emu_error, "per_parameter": {},
           "divergent_fraction": float(np.mean(div))}
    for lev in levels:
        lo_q, hi_q = 50 * (1 - lev), 50 * (1 + lev)
        lo = np.percentile(u_draws, lo_q, axis=1)
        hi = np.percentile(u_draws, hi_q, axis=1)
        inside = (lo <= u_true) & (u_true <= hi)  # [n_inj, n_free]
        for j, n in enumerate(setup.free):
            out["per_parameter"].setdefault(n, {})[f"in{int(lev * 100)}"] = float(inside[:, j].mean())
        out[f"mean_in{int(lev * 100)}"] = float(inside.mean())
    return out


def _loglik_fn(data, nuis, flux_fn):
    coeffs = jnp.asarray(nuis.get("poly", []), dtype=float)

    def f(theta):
        flux, sigma = flux_fn(theta)
        return log_likelihood(flux, sigma, data, nuis["log_scale"], nuis["f_sys"], coeffs)

    return f


def gradient_agreement(setup: FitSetup, emulator, synthesizer, data: LikelihoodData, theta_mode, nuisance: dict,
                       fd_step: float = 1e-3) -> dict:
    """Compare d logL / d u at the mode through the emulator and through the synthesizer.

    The synthesizer path uses the emulator's sigma (so only the mean differs) and the
    emulator's preprocessing; u is the unit-box coordinate of the free parameters."""
    idx = setup.free_index
    width = setup.space.upper[idx] - setup.space.lower[idx]
    theta_mode = jnp.asarray(theta_mode, dtype=float)

    def emu_path(theta):
        return emulator.spectrum_and_sigma(theta)

    def syn_path(theta):
        w, lum = synthesizer.spectrum(theta)
        flux = emulator.preprocess(w, lum, None)
        return jnp.nan_to_num(jnp.asarray(flux)), emulator.spectrum_and_sigma(theta)[1]

    def grad_u(fn, method):
        ll = _loglik_fn(data, nuisance, fn)
        if method == "autodiff":
            g = jax.grad(ll)(theta_mode)[idx]
        else:
            g = []
            for j, i in enumerate(idx):
                h = fd_step * width[j]
                e = jnp.zeros_like(theta_mode).at[i].set(h)
                g.append((ll(theta_mode + e) - ll(theta_mode - e)) / (2 * h))
            g = jnp.asarray(g)
        return np.asarray(g) * width

    g_emu = grad_u(emu_path, "autodiff")
    try:
        g_syn, method = grad_u(syn_path, "autodiff"), "autodiff"
    except Exception:  # preprocessing not traceable by JAX: finite differences
        g_syn, method = grad_u(syn_path, "finite-difference"), "finite-difference"
    cos = float(g_emu @ g_syn / max(np.linalg.norm(g_emu) * np.linalg.norm(g_syn), 1e-300))
    per = {n: {"emulator": float(a), "synthesizer": float(b), "ratio": float(a / b) if b != 0 else None}
           for n, a, b in zip(setup.free, g_emu, g_syn)}
    return {"cosine_similarity": cos, "synthesizer_gradient_method": method,
            "norm_ratio": float(np.linalg.norm(g_emu) / max(np.linalg.norm(g_syn), 1e-300)), "per_parameter": per}


def ppc_physics(emulator, synthesizer, thetas, nuisances: dict, data: LikelihoodData, wavelength,
                band=(3300.0, 9700.0)) -> dict:
    """Residual RMS over ``band`` of posterior draws ``thetas`` [n, dim] simulated by the synthesizer
    and predicted by the emulator (same nuisance warp per draw)."""
    polys = sorted(k for k in nuisances if k.startswith("poly_"))
    sel = np.asarray(data.mask > 0) & (wavelength >= band[0]) & (wavelength <= band[1])
    y = np.asarray(data.y)
    rms_s, rms_e, frac = [], [], []
    for i, th in enumerate(thetas):
        w, lum = synthesizer.spectrum(th)
        f_syn = np.asarray(emulator.preprocess(np.asarray(w), np.asarray(lum), None))
        f_emu = np.asarray(emulator.spectrum_and_sigma(jnp.asarray(th))[0])
        c = jnp.asarray([nuisances[k][i] for k in polys], dtype=float)
        ls = nuisances["log_scale"][i]
        m_s = np.asarray(predicted_flux(jnp.asarray(np.nan_to_num(f_syn)), ls, c, data.x))
        m_e = np.asarray(predicted_flux(jnp.asarray(f_emu), ls, c, data.x))
        ok = sel & np.isfinite(f_syn)
        rms_s.append(float(np.sqrt(np.mean((y[ok] - m_s[ok]) ** 2))))
        rms_e.append(float(np.sqrt(np.mean((y[ok] - m_e[ok]) ** 2))))
        frac.append(float(np.mean(np.abs(f_emu[ok] - f_syn[ok]) / np.maximum(np.abs(f_syn[ok]), 1e-3))))
    return {"n_draws": len(thetas), "band_angstrom": list(band),
            "rms_synthesizer_median": float(np.median(rms_s)), "rms_emulator_median": float(np.median(rms_e)),
            "mean_frac_error_emulator_vs_synth": float(np.mean(frac)),
            "rms_synthesizer": rms_s, "rms_emulator": rms_e}
