"""Stand-ins for the emulator protocol in fast unit tests: an analytic,
differentiable toy spectral model implementing the emulator protocol."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lumina_jax  # noqa: F401  (x64)
from lumina_jax.errors import UserError
from lumina_jax.params import ParameterSpace, load_space

WAVE = np.arange(3000.0, 9005.0, 20.0)  # coarse grid: fast tests


def toy_space(stage: int = 1, names=("a", "v", "d"), lows=(0.5, 8000.0, 0.1), highs=(1.5, 14000.0, 0.9)):
    return ParameterSpace(stage=stage, names=tuple(names), lows=tuple(lows), highs=tuple(highs),
                          prior_lows=tuple(lows), prior_highs=tuple(highs), kinds=("linear",) * len(names),
                          units=("",) * len(names))


def toy_flux(theta, wave):
    """Slope + one P-Cygni-like absorption: a = continuum tilt, v = line velocity [km/s],
    d = depth.  Normalised to mean 1 over 4000-7000 A.  theta [3] -> [n]."""
    a, v, d = theta[0], theta[1], theta[2]
    x = wave / 6000.0
    cont = x ** (-a)
    centre = 6355.0 * (1.0 - v / 3e5)
    line = 1.0 - d * jnp.exp(-0.5 * ((wave - centre) / 80.0) ** 2)
    line2 = 1.0 - 0.5 * d * jnp.exp(-0.5 * ((wave - 3950.0 * (1.0 - v / 3e5)) / 60.0) ** 2)
    f = cont * line * line2
    sel = (wave >= 4000) & (wave <= 7000)
    return f / jnp.sum(jnp.where(sel, f, 0.0)) * jnp.sum(sel)


@dataclasses.dataclass
class ToyEmulator:
    space: ParameterSpace
    wavelength: np.ndarray = dataclasses.field(default_factory=lambda: WAVE.copy())
    rel_sigma: float = 0.002

    def spectrum(self, theta):
        return toy_flux(theta, jnp.asarray(self.wavelength))

    def spectrum_and_sigma(self, theta):
        f = self.spectrum(theta)
        return f, self.rel_sigma * jnp.abs(f)

    def preprocess(self, wavelength, flux, mask=None):
        w = np.asarray(wavelength, float)
        f = np.asarray(flux, float)
        ok = np.isfinite(f) if mask is None else (np.asarray(mask, bool) & np.isfinite(f))
        out = np.interp(self.wavelength, w[ok], f[ok], left=np.nan, right=np.nan)
        sel = (self.wavelength >= 4000) & (self.wavelength <= 7000) & np.isfinite(out)
        return out / np.mean(out[sel])


class ToySynth:
    """Synthesizer stand-in: the toy model on a finer grid, scaled by 3e42 (an L_lambda)."""

    def __init__(self, space):
        self.space = space
        self.wavelength = np.arange(2500.0, 10000.0, 4.0)

    def spectrum(self, theta):
        return self.wavelength, 3e42 * toy_flux(jnp.asarray(theta), jnp.asarray(self.wavelength))

    def batch(self, thetas):
        return jax.vmap(lambda t: 3e42 * toy_flux(t, jnp.asarray(self.wavelength)))(jnp.asarray(thetas))


@pytest.fixture
def space3():
    return toy_space()


@pytest.fixture
def toy_emu(space3):
    return ToyEmulator(space3)


def make_loader(emu):
    def load(path, *, stage=None):
        if stage is not None and emu.space.stage != stage:
            raise UserError(f"checkpoint is for stage {emu.space.stage}, not {stage}")
        return emu
    return load


def run_cli(args, monkeypatch, capsys):
    """(exit code, stdout, stderr) of ``lumina-jax ARGS`` run in-process through ``main``."""
    import sys

    from lumina_jax.cli import main

    monkeypatch.setattr(sys, "argv", ["lumina-jax"] + list(args))
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


__all__ = ["ToyEmulator", "ToySynth", "toy_space", "toy_flux", "WAVE", "load_space", "make_loader", "run_cli"]
