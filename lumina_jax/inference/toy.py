"""A random-weight emulator-like model (for benchmarks and demos without a checkpoint).

Same protocol as :mod:`lumina_jax.emulator`: unit-box parameters -> SiLU MLP (random,
seeded weights) -> ``n_comp`` coefficients -> smooth spectrum through a fixed smooth basis
(Gaussian bumps), plus a constant 0.5 % sigma.  The spectrum is a smooth, nonlinear,
full-rank function of all parameters -- a stand-in for the geometry (not the physics) of a
real emulator posterior.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.params import ParameterSpace


@dataclasses.dataclass
class RandomMLPEmulator:
    space: ParameterSpace
    wavelength: np.ndarray
    weights: tuple
    basis: jnp.ndarray
    rel_sigma: float = 0.005

    @classmethod
    def build(cls, space: ParameterSpace, *, hidden=(256, 256), n_comp: int = 64, seed: int = 0,
              wavelength=None):
        wave = np.arange(2000.0, 10001.0, 5.0) if wavelength is None else np.asarray(wavelength, float)
        rng = np.random.default_rng(seed)
        sizes = (space.dim,) + tuple(hidden) + (n_comp,)
        ws = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            ws.append((jnp.asarray(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)), jnp.asarray(0.1 * rng.standard_normal(b))))
        centres = np.linspace(wave[0], wave[-1], n_comp)
        width = (wave[-1] - wave[0]) / n_comp * 1.5
        basis = np.exp(-0.5 * ((wave[None, :] - centres[:, None]) / width) ** 2)
        return cls(space, wave, tuple(ws), jnp.asarray(basis))

    def spectrum(self, theta):
        x = 2.0 * self.space.to_unit(theta) - 1.0
        for i, (w, b) in enumerate(self.weights):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = jax.nn.silu(x)
        return 1.0 + 0.3 * jnp.tanh(0.3 * x) @ self.basis

    def spectrum_and_sigma(self, theta):
        f = self.spectrum(theta)
        return f, self.rel_sigma * jnp.abs(f)

    def preprocess(self, wavelength, flux, mask=None):
        w = np.asarray(wavelength, float)
        f = np.asarray(flux, float)
        ok = np.isfinite(f) if mask is None else (np.asarray(mask, bool) & np.isfinite(f))
        return np.interp(self.wavelength, w[ok], f[ok], left=np.nan, right=np.nan)
