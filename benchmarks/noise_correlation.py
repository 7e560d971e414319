"""Is the per-bin observational noise of the likelihood enough?  (Coverage diagnostic.)

The likelihood gives each used bin the Monte Carlo variance of the preprocessed noise
(``observed.prepare_observation``) and ignores the correlation that smoothing puts between
bins.  For mocks at the coverage check's injections (the emulator's spectrum as the true
flux, ``--noise`` per pixel) this measures that correlation between the used bins (stride of
``LikelihoodConfig.stride``) and its effect on the parameter errors in the linear (sandwich)
approximation:  Var_true = F^-1 J^T W S_true W J F^-1 with F = J^T W J, W = S_assumed^-1,
S_assumed = diag(noise covariance) + emulator covariance, S_true = full noise covariance +
emulator covariance;  J = d flux / d u for the free parameters plus the flux scale.

    python benchmarks/noise_correlation.py [--checkpoint CKPT] [--noise 0.02] [--n 8] [--draws 1500]

Prints, per injection, the adjacent-bin noise correlation, the noise / emulator variance ratio
and the true / assumed variance ratio of the parameters, then the 68 % coverage this implies.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import norm

from lumina_jax.emulator import load_emulator
from lumina_jax.workflows.checks import injection_draws
from lumina_jax.inference.likelihood import make_likelihood_data
from lumina_jax.inference.density import LikelihoodConfig, make_setup
from lumina_jax.preprocess import within


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="lumina_jax/checkpoints/stage1_synth.h5")
    ap.add_argument("--noise", type=float, default=0.02, help="fractional noise per pixel (check coverage's --noise)")
    ap.add_argument("--n", type=int, default=8, help="injections (those of check coverage --seed 0)")
    ap.add_argument("--draws", type=int, default=1500, help="noise draws per injection")
    args = ap.parse_args()

    emu = load_emulator(args.checkpoint)
    stride = LikelihoodConfig().stride
    setup = make_setup(emu.space, n_poly=0)
    thetas, _ = injection_draws(setup, 50, 0)
    wl = np.asarray(emu.wavelength)
    window = within(wl, [(3300.0, 9700.0)])
    f0 = np.asarray(emu.spectrum(jnp.asarray(thetas[0])), float)
    used = window & np.isfinite(np.asarray(emu.preprocess(wl, f0, window), float))  # the smoothing's edges drop out
    data = make_likelihood_data(wl, np.zeros_like(wl), np.zeros_like(wl), used, emu_basis=np.asarray(emu.error_basis),
                                stride=stride, emu_var_scale=float(emu.error_cov_scale))
    rows, b, dg = np.asarray(data.rows), np.asarray(data.emu_basis), np.asarray(data.emu_diag)
    idx = setup.free_index
    widths = (np.asarray(emu.space.upper) - np.asarray(emu.space.lower))[idx]
    rng = np.random.default_rng(0)
    ratios = []
    for th in thetas[: args.n]:
        f = np.asarray(emu.spectrum(jnp.asarray(th)), float)
        e = args.noise * np.abs(f)
        draws = np.stack([np.asarray(emu.preprocess(wl, f + rng.standard_normal(f.size) * e, window), float)[rows]
                          for _ in range(args.draws)])
        c_obs = np.cov(draws.T)
        fe, se = (np.asarray(a, float) for a in emu.spectrum_and_sigma(jnp.asarray(th)))
        jac = np.asarray(jax.jacfwd(emu.spectrum)(jnp.asarray(th)), float)[:, idx] * widths[None, :]
        j = np.concatenate([jac[rows], fe[rows, None]], axis=1)
        u = se[rows, None] * b
        s_emu = np.diag(se[rows] ** 2 * dg) + u @ u.T
        w = np.linalg.inv(np.diag(np.diag(c_obs)) + s_emu)
        fi = np.linalg.inv(j.T @ w @ j)
        v = fi @ j.T @ w @ (c_obs + s_emu) @ w @ j @ fi
        r = (np.diag(v) / np.diag(fi))[:-1]
        ratios.append(r)
        corr = c_obs / np.sqrt(np.outer(np.diag(c_obs), np.diag(c_obs)))
        print(f"adjacent used-bin noise correlation {np.mean(np.diag(corr, 1)):.2f}; noise / emulator variance "
              f"(median) {np.median(np.diag(c_obs) / np.diag(s_emu)):.2f}; true / assumed parameter variance: "
              f"median {np.median(r):.2f}, max {np.max(r):.2f}", flush=True)
    r = np.asarray(ratios)
    print(f"implied 68 % coverage (linear, Gaussian): {np.mean(2 * norm.cdf(1 / np.sqrt(r)) - 1):.3f}")


if __name__ == "__main__":
    main()
