"""Laplace preconditioning of a flat log density at its mode (whitening by the Hessian, and the
profile-path ridge shear of :mod:`lumina_jax.inference.ridge`), then any sampler."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.inference.sampling import SamplerConfig, SamplerRun, chain_count, run_sampler
from lumina_jax.inference.sampling.emcee import walkers as emcee_walkers


def initial_positions(z_map, n_chains: int, rng_key, scale: float = 0.1) -> jnp.ndarray:
    """Chains start at the MAP plus N(0, scale^2) jitter in z space: [n_chains, n_z]."""
    return z_map + scale * jax.random.normal(rng_key, (n_chains,) + jnp.shape(z_map))


def laplace_factor(logdensity: Callable, z_map, *, min_curvature: float = 0.1,
                   hessian: Callable | None = None) -> np.ndarray:
    """Cholesky-like factor ``L [n_z, n_z]`` of the Laplace covariance at the mode.

    ``L L^T = (-H)^-1`` with ``H`` the Hessian of ``logdensity`` at ``z_map`` (``jax.hessian``);
    eigenvalues of ``-H`` are floored at ``min_curvature`` (at most unit-ish widths in the
    unconstrained space for flat or non-concave directions).  Sampling ``x`` with
    ``z = z_map + L x`` turns a Gaussian posterior of any correlation and scale into a
    standard normal, so NUTS starts with a good metric and shallow trees (a constant
    Jacobian, so the density of ``x`` is ``logdensity(z_map + L x)``).  The Hessian is jitted:
    evaluated op by op it took 18-22 s at 17-D and 130-D, compiled 4-5 s.  ``hessian``: an
    already compiled ``z -> Hessian of logdensity`` to use instead (``FlatModel.hessian``, which
    the MAP search's Newton steps compiled; saves that compilation)."""
    hess = hessian if hessian is not None else jax.jit(jax.hessian(logdensity))
    return whitening_factor(np.asarray(hess(jnp.asarray(z_map)), np.float64), min_curvature)


def whitening_factor(hess, min_curvature: float = 0.1) -> np.ndarray:
    """:func:`laplace_factor` from the Hessian ``hess [n_z, n_z]`` itself (identity if not finite)."""
    h = -0.5 * (hess + hess.T)
    if not np.all(np.isfinite(h)):
        return np.eye(h.shape[0])
    ev, vec = np.linalg.eigh(h)
    ev = np.maximum(ev, min_curvature)
    return vec / np.sqrt(ev)[None, :]


def run_preconditioned(cfg: SamplerConfig, logdensity: Callable, z_map, rng_key,
                       n_chains: int | None = None, hessian: Callable | None = None,
                       ridge_index: int | None = None, value_and_grad: Callable | None = None,
                       ) -> tuple["SamplerRun", dict]:
    """Run ``cfg.name`` from the mode ``z_map``; with ``cfg.precondition`` in Laplace-whitened
    coordinates (see :func:`laplace_factor`), positions mapped back to ``z``.

    ``ridge_index``: with preconditioning, first straighten the posterior's ridge along
    ``z[ridge_index]`` (and follow its width) by the profile-path shear of
    :mod:`lumina_jax.inference.ridge` (``z = shear(z_map + L x)``, its log Jacobian added to the
    sampled density, ``L`` then the Laplace factor in the sheared coordinates); the fit's time
    counts as warm-up; ``run.logdensity`` stays the log density of ``z``.  Chains (emcee: every walker)
    start at ``x0 ~ N(0, cfg.init_scale^2)`` (``L = I`` without preconditioning).  Returns
    (run, info) with the Laplace standard deviations (of the sampled coordinates) and the
    shear's record (or None) in ``info``.  ``hessian`` / ``value_and_grad``: compiled
    derivatives of ``logdensity`` to reuse (default: compiled here)."""
    from lumina_jax.inference.ridge import fit_ridge

    z_map = jnp.asarray(z_map)
    if cfg.name == "emcee":
        n_chains = emcee_walkers(cfg, z_map.shape[0])
    n_chains = n_chains or chain_count(cfg)
    t0 = time.perf_counter()
    shear = None
    if cfg.precondition:
        hess = hessian if hessian is not None else jax.jit(jax.hessian(logdensity))
        h = np.asarray(hess(z_map), np.float64)
        lf = whitening_factor(h)
        if ridge_index is not None:
            vg = value_and_grad if value_and_grad is not None else jax.jit(jax.value_and_grad(logdensity))
            shear = fit_ridge(logdensity, z_map, int(ridge_index), float(np.sqrt(np.sum(lf[ridge_index] ** 2))),
                              hessian=hess, value_and_grad=vg)
            if shear is not None:
                lf = whitening_factor(shear.pullback_hessian(h, vg(z_map)[1], z_map))
        lf = jnp.asarray(lf)
    else:
        lf = jnp.eye(z_map.shape[0])
    t_h = time.perf_counter() - t0
    to_z = shear.forward if shear is not None else (lambda v: v)

    def ld_x(x):
        v = z_map + lf @ x
        if shear is None:
            return logdensity(v)
        return logdensity(shear.forward(v)) + shear.log_det_jacobian(v)

    x0 = cfg.init_scale * jax.random.normal(rng_key, (n_chains, z_map.shape[0]))
    run = run_sampler(cfg, ld_x, x0)
    # back to z one chain at a time: the spline's temporaries for all of emcee's 262 walkers x
    # 10,000 draws at once would need ~10x the 2.7 GB of the draws themselves
    lf_np, zm_np = np.asarray(lf), np.asarray(z_map)
    run.positions = np.array(run.positions, dtype=np.float64)  # writable (the samplers may hand back jax views)
    run.logdensity = np.array(run.logdensity, dtype=np.float64)
    for c in range(run.positions.shape[0]):
        v = zm_np[None, :] + run.positions[c] @ lf_np.T
        run.positions[c] = to_z(v)
        if shear is not None:  # the log density of z, not of the sampled coordinates
            run.logdensity[c] = run.logdensity[c] - shear.log_det_jacobian(v)
    run.wall_warmup_s += t_h
    info = {"preconditioned": bool(cfg.precondition), "hessian_s": t_h,
            "laplace_sd": np.sqrt(np.sum(np.asarray(lf) ** 2, axis=1)).tolist(),
            "ridge": None if shear is None else shear.record()}
    return run, info
