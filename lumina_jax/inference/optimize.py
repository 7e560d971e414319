"""Modes of a fit's log density: the multi-start MAP search, damped Newton steps, and the
re-polished mode of the model with the emulator's sigma held fixed."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.inference.density import FlatModel, box_log_jacobian, flatten_model, freeze_sigma, z_from_values
from lumina_jax.inference.likelihood import LikelihoodData


def find_map(fm: FlatModel, rng_key, *, n_starts: int = 32, n_steps: int = 2000, lr: float = 0.05,
             n_polish: int = 8, polish_steps: int = 100, n_screen: int = 8192, z_polish_steps: int = 1000,
             newton_steps: int = 6, starts=None):
    """Multi-start Adam climbs in the box coordinates u, L-BFGS polish, then the z-space mode.

    Starts: the log posterior is first screened at ``n_screen`` points drawn uniformly in the
    box (nuisances at their prior centre, the systematic at the geometric centre of its range,
    so the screen sees a broad likelihood); the best ``3/4 n_starts`` of them and ``n_starts/4``
    further uniform points start the climbs (``n_screen = 0``: all uniform); ``starts [k, n_z]``
    replaces them (no screen; ``n_starts`` = k), e.g. an amortised posterior's best draws.  On
    stage-1 injections uniform starts alone ended in a wrong local mode (X_Si,wall 0.07 instead of
    0.50; truth 6 nats higher) in about 1 case of 10.  The climb maximises the posterior
    density of the *box coordinates* u (``logdensity`` minus the log-Jacobian of the logit
    map u -> z): in z that Jacobian costs ~2.5 nats per parameter near a box edge and hid
    modes with parameters at u ~ 0.97 behind worse interior ones.  Then ``n_steps`` Adam steps
    (cosine-decayed ``lr``), vectorised over starts; the best ``n_polish`` end points are
    refined by ``polish_steps`` of L-BFGS (one after the other: a vmapped line search hung
    XLA:CPU).  On stage-1 mocks 16 x 600 Adam steps stopped 50-150 nats below the mode found
    by 32 x 2000 (+ L-BFGS), and the Laplace preconditioner built at such a point slowed NUTS.
    Finally ``z_polish_steps`` of L-BFGS and up to ``newton_steps`` damped Newton steps (the
    Hessian's curvatures floored at 0.1, backtracking) move the best point to the mode of
    ``logdensity`` in z itself, which the samplers and the Laplace preconditioner see: the
    u-space optimum leaves prior-dominated directions where the z density still has slope
    (at 135-D it sat ~190 nats below the z mode; 1000 L-BFGS steps alone left a gradient norm
    of 13).
    Returns (z_best [n_z], logdensity(z_best) (in z, as the samplers see it), z_all
    [n_starts, n_z], log posterior in u of every end point [n_starts]).
    """
    import optax

    def log_jac(z):  # log-Jacobian of the link from z to the box coordinates u
        return box_log_jacobian(fm, z)

    def target(z):  # log posterior density in u (the Jacobian of the link to the box coordinates removed)
        return fm.logdensity(z) - log_jac(z)

    k1, k2 = jax.random.split(rng_key)
    s = fm.setup
    # the screen's systematic: the log-uniform range's geometric centre (0.017 by default), 0.1 x the
    # half-normal scale (0.02)
    f_mid = np.sqrt(s.f_sys_range[0] * s.f_sys_range[1]) if s.f_sys_prior == "log-uniform" else 0.1 * s.f_sys_scale
    to_z = jax.vmap(lambda u: z_from_values(fm, u, 0.0, f_mid))
    us = jax.random.uniform(k1, (n_starts, s.n_free), minval=0.02, maxval=0.98)
    if starts is not None:
        z0 = jnp.asarray(starts, float)
        n_starts = int(z0.shape[0])
    elif n_screen > 0:
        n_top = n_starts - n_starts // 4
        cand = to_z(jax.random.uniform(k2, (int(n_screen), s.n_free), minval=0.02, maxval=0.98))
        chunk = 512
        pad = (-cand.shape[0]) % chunk
        cz = jnp.concatenate([cand, jnp.repeat(cand[:1], pad, 0)]).reshape(-1, chunk, cand.shape[1])
        ld_c = jax.jit(lambda a: jax.lax.map(jax.vmap(target), a))(cz).reshape(-1)[:cand.shape[0]]
        ld_c = jnp.where(jnp.isfinite(ld_c), ld_c, -jnp.inf)
        z0 = jnp.concatenate([cand[jnp.argsort(-ld_c)[:n_top]], to_z(us[:n_starts - n_top])])
    else:
        z0 = to_z(us)
    opt = optax.adam(optax.cosine_decay_schedule(lr, n_steps, alpha=0.02))
    neg = lambda z: -target(z)  # noqa: E731
    vg = jax.value_and_grad(neg)

    def run_one(z):
        def step(carry, _):
            z, st = carry
            v, g = vg(z)
            g = jnp.where(jnp.isfinite(g), g, 0.0)
            upd, st = opt.update(g, st, z)
            return (optax.apply_updates(z, upd), st), v

        (z, _), _ = jax.lax.scan(step, (z, opt.init(z)), None, length=n_steps)
        return z, target(z)

    lbfgs = optax.lbfgs()

    @jax.jit
    def polish(z, jac_weight, n):
        """``n`` L-BFGS steps (a traced count) maximising ``logdensity - jac_weight x log-Jacobian``
        (1: the u-space target, 0: the z density); returns (z, that function at z).  One
        compilation serves every polish below (each separate one cost ~5 s at stage 1)."""
        def fn(z):
            return fm.logdensity(z) - jac_weight * log_jac(z)

        neg_fn = lambda z: -fn(z)  # noqa: E731
        vg_state = optax.value_and_grad_from_state(neg_fn)

        def step(_, carry):
            z, st = carry
            v, g = vg_state(z, state=st)
            upd, st = lbfgs.update(g, st, z, value=v, grad=g, value_fn=neg_fn)
            z_new = optax.apply_updates(z, upd)
            return jnp.where(jnp.all(jnp.isfinite(z_new)), z_new, z), st

        z, _ = jax.lax.fori_loop(0, n, step, (z, lbfgs.init(z)))
        return z, fn(z)

    zs, lds = jax.jit(jax.vmap(run_one))(z0)
    lds = jnp.where(jnp.isfinite(lds), lds, -jnp.inf)
    if n_polish > 0 and polish_steps > 0:
        # one start after the other (a vmapped line search hung XLA:CPU)
        for i in np.asarray(jnp.argsort(-lds)[:min(n_polish, n_starts)]):
            zp, ldp = polish(zs[i], 1.0, polish_steps)
            if bool(jnp.isfinite(ldp)) and ldp > lds[i]:
                zs, lds = zs.at[i].set(zp), lds.at[i].set(ldp)
    best = int(jnp.argmax(lds))
    z_best, ld_best = polish(zs[best], 0.0, 0)  # the z density at the best point (no steps)
    if z_polish_steps > 0:
        z_p, ld_p = polish(z_best, 0.0, z_polish_steps)
        if bool(jnp.isfinite(ld_p)) and ld_p > ld_best:
            z_best, ld_best = z_p, ld_p
    if newton_steps > 0:
        z_best, ld_best = newton_ascent(fm.logdensity, z_best, ld_best, newton_steps, hessian=fm.hessian,
                                         value_and_grad=fm.value_and_grad)
    return z_best, float(ld_best), zs, lds


def newton_ascent(fn, z, f0, n_steps: int, min_curvature: float = 0.1, gtol: float = 1e-6,
                  hessian: Callable | None = None, value_and_grad: Callable | None = None, free=None):
    """Up to ``n_steps`` Newton steps on ``fn`` from ``z`` (value ``f0``): the step solves
    ``(-H) dz = g`` with the eigenvalues of ``-H`` floored at ``min_curvature`` (always an
    ascent direction), halved up to 20 times until ``fn`` increases; stops when the Newton
    decrement ``g . dz`` falls below ``gtol`` or no halving helps.  ``hessian``,
    ``value_and_grad``: compiled ``fn`` derivatives (default: compiled here).  ``free``: indices
    of the coordinates that move (default all; the others stay put -- a conditional maximum).
    Returns (z, fn(z))."""
    vg = value_and_grad if value_and_grad is not None else jax.jit(jax.value_and_grad(fn))
    hess = hessian if hessian is not None else jax.jit(jax.hessian(fn))
    f0 = float(f0)
    z = jnp.asarray(z)
    idx = np.arange(z.shape[0]) if free is None else np.asarray(free, int)
    for _ in range(n_steps):
        _, g = vg(z)
        h = -np.asarray(hess(z), np.float64)[np.ix_(idx, idx)]
        g = np.asarray(g, np.float64)[idx]
        if not (np.all(np.isfinite(h)) and np.all(np.isfinite(g))):
            break
        ev, vec = np.linalg.eigh(0.5 * (h + h.T))
        dz = np.zeros(z.shape[0])
        dz[idx] = vec @ ((vec.T @ g) / np.maximum(ev, min_curvature))
        if g @ dz[idx] < gtol:
            break
        for _ in range(20):
            f1, _ = vg(z + dz)
            if np.isfinite(float(f1)) and float(f1) > f0:
                z, f0 = z + dz, float(f1)
                break
            dz = 0.5 * dz
        else:
            break
    return z, f0


def hold_sigma_at_mode(fm: FlatModel, spectrum_and_sigma: Callable, data: LikelihoodData, z_map,
                       on_bins: Callable | None = None, newton_steps: int = 20):
    """The fixed-sigma model of ``infer`` (``likelihood.emulator_sigma: fixed``): ``fm``'s model
    with the emulator's sigma held at ``theta_ref = fm.theta(z_map)`` (:func:`freeze_sigma`; ``z_map``
    the mode of the varying-sigma model ``fm``), and its mode re-polished by up to
    ``newton_steps`` Newton steps from ``z_map``.

    Returns ``(fm_fixed, z_mode, ld_start, ld_mode, theta_ref, spectrum_and_sigma_fixed)``:
    ``ld_start`` the fixed model's log density at ``z_map``, ``ld_mode`` at the re-polished mode."""
    theta_ref = fm.theta(jnp.asarray(z_map))
    fixed, on_bins_fixed = freeze_sigma(spectrum_and_sigma, theta_ref, on_bins)
    fm_fixed = flatten_model(fm.setup, fixed, data, on_bins=on_bins_fixed)
    ld0 = float(jax.jit(fm_fixed.logdensity)(jnp.asarray(z_map)))
    z_mode, ld_mode = newton_ascent(fm_fixed.logdensity, jnp.asarray(z_map), ld0, newton_steps,
                                     hessian=fm_fixed.hessian, value_and_grad=fm_fixed.value_and_grad)
    return fm_fixed, z_mode, ld0, ld_mode, theta_ref, fixed
