"""Sobolev training of the emulator: derivative targets, the derivative loss, its effect on a
toy fit, and checkpoints that record it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lumina_jax  # noqa: F401
from lumina_jax.emulator import load_emulator, load_train_config, prepare_spectra, save_emulator, train_emulator
from lumina_jax.emulator._data import load_training_set, write_store
from lumina_jax.emulator._sobolev import (
    cache_path,
    preprocess_jvp,
    random_directions,
    store_synth_config,
    synthesizer_jvp_targets,
)
from lumina_jax.emulator._training import jvp_loss
from lumina_jax.errors import UserError
from lumina_jax.params import load_space
from lumina_jax.preprocess import Preprocessor, PreprocessConfig

SHIPPED = Path(__file__).resolve().parents[2] / "lumina_jax" / "checkpoints" / "stage1_synth.h5"


@pytest.fixture(scope="module")
def space():
    return load_space(1)


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    tilt: float = 0.0


class ToySynth:
    """Duck-typed stand-in for :class:`~lumina_jax.synth.Synthesizer`: a JAX-traceable toy
    spectrum (blackbody x a blueshifted Gaussian absorption), ``L_lambda`` in erg/s/Å."""

    def __init__(self, space, wavelength, tilt=0.0):
        self.space, self.wavelength, self.config, self.n_lines = space, np.asarray(wavelength), ToyConfig(tilt), 1
        self.calls = 0

    def l_lambda(self, theta):
        self.calls += 1
        u = self.space.to_unit(jnp.asarray(theta, jnp.float64))
        wl = jnp.asarray(self.wavelength)
        t = 8000.0 + 5000.0 * u[0] - 2000.0 * u[1]
        f = wl**-5 / jnp.expm1(1.4388e8 / (wl * t)) * (1.0 + self.config.tilt * wl / 1e4)
        centre = 6355.0 * (1.0 - (8000.0 + 7000.0 * u[1]) / 3e5)
        f = f * (1.0 - (0.3 + 0.5 * u[3]) * jnp.exp(-0.5 * ((wl - centre) / (60.0 + 60.0 * u[2])) ** 2))
        return f * 10.0 ** theta[0] / 1e3 / jnp.mean(f)


def _toy_set(space, n, tilt=0.0, seed=0):
    wl = np.arange(2000.0, 10000.1, 5.0)  # the emulator grid: no resampling operator to build
    th = np.asarray(space.from_unit(np.random.default_rng(seed).uniform(0.1, 0.9, (n, space.dim))))
    syn = ToySynth(space, wl)
    spectra = np.stack([np.asarray(ToySynth(space, wl, tilt).l_lambda(t)) for t in th])
    return th, wl, spectra, syn


def test_jvp_targets_equal_central_differences_of_the_preprocessed_forward_model(tmp_path, space):
    """The targets are d F(theta + s v (upper - lower)) / ds of the flux after the training
    preprocessing, F: they equal central differences of prepare_spectra along the same v (with
    the unit-norm directions zero on inactive parameters); a second call reads the cache."""
    th, wl, spectra, syn = _toy_set(space, 4)
    ts = load_training_set(write_store(tmp_path / "toy.h5", space, th, wl, spectra))
    prep = Preprocessor(PreprocessConfig())
    cache = cache_path(tmp_path / "toy.h5", syn, 2, 5)
    jv = synthesizer_jvp_targets(ts, syn, prep, n_directions=2, seed=5, cache=cache)
    assert jv.theta.shape == (8, space.dim) and jv.dflux.shape == (8, prep.grid.size)
    assert np.allclose(np.linalg.norm(jv.v, axis=1), 1.0)
    assert np.all(jv.v[:, ~space.active_mask] == 0.0)
    width = space.upper - space.lower
    h = 1e-5

    def flux(t):
        s = np.stack([np.asarray(syn.l_lambda(x)) for x in t])
        return prepare_spectra(ts._replace(theta=t, spectra=s, ids=np.arange(len(t))), prep).flux

    fd = (flux(jv.theta + h * jv.v * width) - flux(jv.theta - h * jv.v * width)) / (2 * h)
    rel = np.linalg.norm(jv.dflux - fd, axis=1) / np.linalg.norm(fd, axis=1)
    assert rel.max() < 1e-5, rel
    assert np.linalg.norm(fd, axis=1).min() > 1e-3  # not a trivially zero derivative
    # cached: no synthesizer call the second time, same targets
    calls = syn.calls
    jv2 = synthesizer_jvp_targets(ts, syn, prep, n_directions=2, seed=5, cache=cache)
    assert syn.calls == calls and np.array_equal(jv2.dflux, jv.dflux)
    # the directions of a model do not depend on the other rows of the set
    one, all_rows = (random_directions(t, 2, space.active_mask, 5) for t in (th[2:3], th))
    assert np.array_equal(one, all_rows[2:3])


def test_preprocess_jvp_is_the_derivative_of_the_normalisation():
    """dF of F = S L / mean_win(S L) against a finite difference along a random tangent."""
    prep = Preprocessor(PreprocessConfig())
    rng = np.random.default_rng(1)
    lam = 1.0 + rng.uniform(0, 1, (1, prep.grid.size))
    dl = rng.normal(size=(1, 1, prep.grid.size))
    f, df = preprocess_jvp(prep, prep.grid, lam, dl)
    h = 1e-6
    f_plus, f_minus = (preprocess_jvp(prep, prep.grid, lam + s * h * dl[:, 0], dl)[0] for s in (1, -1))
    fd = (f_plus - f_minus) / (2 * h)
    assert np.allclose(df[:, 0], fd, rtol=0, atol=1e-7 * np.abs(fd).max())


def test_a_store_made_by_another_forward_model_is_refused(tmp_path, space):
    """The primal of the synthesizer must reproduce the stored spectra, and a store not made
    by the synthesizer backend names none to use."""
    th, wl, spectra, syn = _toy_set(space, 8, tilt=2.0)
    store = write_store(tmp_path / "other.h5", space, th, wl, spectra)
    ts = load_training_set(store)
    with pytest.raises(UserError, match="does not reproduce the stored spectra"):
        synthesizer_jvp_targets(ts, syn, Preprocessor(PreprocessConfig()), n_directions=1)
    with pytest.raises(UserError, match="not the embedded synthesizer"):
        store_synth_config(store)


def test_sobolev_loss_is_zero_only_when_values_and_slopes_match():
    """A toy target g; a model equal to g has zero value and derivative loss; g plus a ripple
    that vanishes at the data points matches the values but not the slopes, and only the
    derivative term sees it."""
    a = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]])  # [dim 2, K 3]

    def g(x):
        return jnp.sin(x @ a)

    def rippled(x):
        return g(x) + 0.05 * jnp.sin(4 * jnp.pi * x[0]) * jnp.ones(3)

    x = jnp.asarray(np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)), -1).reshape(-1, 2))
    v = jnp.asarray(np.random.default_rng(0).normal(size=x.shape))
    v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    dz = jax.vmap(lambda xi, vi: jax.jvp(g, (xi,), (vi,))[1])(x, v)
    w = jnp.array([0.5, 0.3, 0.2])
    assert float(jvp_loss(g, x, v, dz, w)) == 0.0
    assert float(jnp.max(jnp.abs(jax.vmap(rippled)(x) - jax.vmap(g)(x)))) < 1e-6  # same values at the data
    assert float(jvp_loss(rippled, x, v, dz, w)) > 1e-3
    assert float(jvp_loss(g, x, v, dz + 0.01, w)) == pytest.approx(1e-4, rel=1e-4)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.silu(nn.Dense(32)(x))
        return nn.Dense(1)(x)


def test_sobolev_training_gets_the_gradient_of_a_2d_function_closer():
    """Same MLP, data, optimiser and steps: adding the derivative term along two random
    directions per point lowers the gradient error at unseen points (relative RMS, at most
    half of the value-only fit's) and does not hurt the values."""
    def f(x):
        return jnp.sin(2.5 * x[..., 0:1]) * jnp.cos(2.0 * x[..., 1:2]) + 0.3 * x[..., 0:1] * x[..., 1:2]

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (24, 2)))
    v = rng.normal(size=(48, 2))
    v = jnp.asarray(v / np.linalg.norm(v, axis=1, keepdims=True))
    xj = jnp.concatenate([x, x])
    dz = jax.vmap(lambda xi, vi: jax.jvp(f, (xi,), (vi,))[1])(xj, v)
    y = f(x)
    net = _MLP()
    p0 = net.init(jax.random.PRNGKey(0), x[:1])
    tx = optax.adam(3e-3)
    w = jnp.ones(1)

    def fit(sobolev):
        def loss(p):
            lv = jnp.mean((net.apply(p, x) - y) ** 2)
            return lv + (jvp_loss(lambda xi: net.apply(p, xi), xj, v, dz, w) if sobolev else 0.0)

        @jax.jit
        def run(p, o):
            def step(c, _):
                p, o = c
                g = jax.grad(loss)(p)
                u, o = tx.update(g, o, p)
                return (optax.apply_updates(p, u), o), None

            return jax.lax.scan(step, (p, o), None, length=1500)[0]

        return run(p0, tx.init(p0))[0]

    xt = jnp.asarray(np.random.default_rng(1).uniform(-0.9, 0.9, (400, 2)))
    gt = jax.vmap(jax.grad(lambda xi: f(xi)[0]))(xt)

    def errors(p):
        ge = jax.vmap(jax.grad(lambda xi: net.apply(p, xi)[0]))(xt)
        g_err = float(jnp.sqrt(jnp.mean(jnp.sum((ge - gt) ** 2, -1)) / jnp.mean(jnp.sum(gt**2, -1))))
        v_err = float(jnp.sqrt(jnp.mean((net.apply(p, xt) - f(xt)) ** 2)))
        return g_err, v_err

    (g_plain, v_plain), (g_sob, v_sob) = errors(fit(False)), errors(fit(True))
    assert g_sob < 0.5 * g_plain, (g_sob, g_plain)
    assert v_sob < v_plain, (v_sob, v_plain)


def test_checkpoint_with_sobolev_settings_round_trips_and_old_checkpoints_load(tmp_path, space):
    """A checkpoint trained with derivative targets records the settings (config and the
    metadata's ``sobolev`` entry) and loads to the same model; the shipped checkpoint, written
    before Sobolev training existed, still loads and has no ``sobolev`` entry."""
    th, wl, spectra, syn = _toy_set(space, 40)
    store = write_store(tmp_path / "toy.h5", space, th, wl, spectra)
    ts = load_training_set(store)
    cfg = load_train_config(None, hidden=(16,), max_epochs=3, patience=3, batch_size=16, sigma_refit_steps=0,
                            error_rank=0, jvp_directions=1, jvp_weight=0.5)
    jv = synthesizer_jvp_targets(ts, syn, Preprocessor(cfg.preprocess), n_directions=1, seed=cfg.seed)
    emu, _, seen = train_emulator(ts, cfg, jvp=jv, jvp_info={"directions_per_model": 1, "synth_config": ["toy"]})
    save_emulator(emu, tmp_path / "sob.h5", seen_hashes=seen)
    back = load_emulator(tmp_path / "sob.h5")
    meta = back.metadata
    assert meta["config"]["jvp_directions"] == 1 and meta["config"]["jvp_weight"] == 0.5
    assert meta["sobolev"]["weight"] == 0.5 and meta["sobolev"]["synth_config"] == ["toy"]
    assert 0 < meta["sobolev"]["n_rows"] <= 40 and meta["n_derivative_rows"] == meta["sobolev"]["n_rows"]
    t = jnp.asarray(th[:3])
    assert np.allclose(np.asarray(jax.vmap(back.spectrum)(t)), np.asarray(jax.vmap(emu.spectrum)(t)), rtol=1e-6)
    old = load_emulator(SHIPPED, stage=1)
    assert old.metadata.get("sobolev") is None and old.settings.n_components > 0
    assert np.all(np.isfinite(np.asarray(old.spectrum(jnp.asarray(old.space.from_unit(np.full(space.dim, 0.5)))))))
    assert json.loads(old.metadata_json)["config"].get("jvp_directions", 0) == 0
