"""A cheap analytic stand-in for the embedded synthesizer (tests and benchmarks only; NOT physics).

``L_lambda = 4 pi R^2 * pi B_lambda(T) * exp(-sum_k tau_k G_k(lambda))`` per Angstrom, with
``R = v_inner t_exp``, ``T = (L / (4 pi sigma R^2))^(1/4)`` and ``n_lines`` Gaussian
absorption lines of fixed rest wavelengths whose depths scale with the composition
columns of theta and whose centres are blue-shifted by ``v_inner``.  It has the
synthesizer's interface (``.wavelength``, ``.batch(thetas [B, dim]) -> [B, n_wave]``,
jitted and vmapped) and a cost ~ ``n_lines * n_wave`` per spectrum, tunable to mimic a
heavier model.  Use: ``--synth-factory runners.analytic:AnalyticSynth``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.params import ParameterSpace

H, C, KB, SIGMA = 6.62607015e-27, 2.99792458e10, 1.380649e-16, 5.670374419e-5


class AnalyticSynth:
    """Planck photosphere with Gaussian absorption lines; ``batch`` is jit(vmap(spectrum))."""

    def __init__(self, space: ParameterSpace, *, n_wave: int = 2000, n_lines: int = 64,
                 lam_min: float = 500.0, lam_max: float = 20000.0):
        self.space = space
        self.wavelength = lam_min + (np.arange(n_wave) + 0.5) * (lam_max - lam_min) / n_wave
        rng = np.random.default_rng(0)
        self._lines = jnp.asarray(rng.uniform(3000.0, 9000.0, n_lines))
        self._col = jnp.asarray(rng.integers(0, space.dim, n_lines))
        idx = {n: i for i, n in enumerate(space.names)}
        self._i = (idx["log_L"], idx["v_inner"], idx["t_exp"])
        lam = jnp.asarray(self.wavelength)

        def one(theta):
            log_l, v_in, t_exp = theta[self._i[0]], theta[self._i[1]], theta[self._i[2]]
            r = v_in * 1e5 * t_exp * 86400.0
            temp = (10.0**log_l / (4 * jnp.pi * SIGMA * r**2)) ** 0.25
            lam_cm = lam * 1e-8
            b_lam = 2 * H * C**2 / lam_cm**5 / jnp.expm1(H * C / (lam_cm * KB * temp))
            lum = 4 * jnp.pi * r**2 * jnp.pi * b_lam * 1e-8  # erg/s/Angstrom
            u = space.to_unit(theta)
            depth = 0.2 + 0.8 * u[self._col]
            centre = self._lines * (1.0 - v_in / 2.99792458e5)
            tau = jnp.sum(depth[:, None] * jnp.exp(-0.5 * ((lam[None, :] - centre[:, None]) / 40.0) ** 2), axis=0)
            return lum * jnp.exp(-tau)

        self.batch = jax.jit(jax.vmap(one))

    @classmethod
    def default(cls, space: ParameterSpace) -> "AnalyticSynth":
        return cls(space)
