"""The amortised posterior inside ``infer``: ``--sampler npe`` and ``--sampler nuts --init npe``.

:func:`npe_start` loads the NPE checkpoint, checks it against the fit (stage, box, free
parameters, warp order), draws from q(theta, c | x) for the observation and maps every draw
into the fit's flat coordinates ``z``.  The NPE infers the box parameters and the warp
coefficients; the flux scale and the systematic f_sys, which it does not model (the
observation is normalised, and the synthesizer has no misspecification), are set per draw
to their conditional estimates given the emulator's prediction at the draw::

    m = (1 + sum_k c_k P_k(x)) F_emu(theta)
    log_scale = log( sum y m / sum m^2 )
    f_sys^2 = max(0, sum[(y - s m)^2 - sigma_obs^2 - (s w sigma_emu)^2] / sum (s m)^2),  s = exp(log_scale)

(floored at 1e-3), so that the draws carry the fit's full nuisance vector and their log
density under the likelihood (``SamplerRun.logdensity``).  For ``--init npe`` the
:data:`MAP_STARTS` draws of highest log density replace the MAP search's screened and uniform
starts: the climbs and polish then end at the emulator posterior's mode, which can lie tens of
nats above the best draw (the flow is centred on the synthesizer's answer, not the emulator's).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.inference.likelihood import legendre_basis

F_SYS_FLOOR = 1e-3
INIT_DRAWS = 1000  # NPE draws scored for --init npe
MAP_STARTS = 8  # --init npe: the MAP search climbs from this many of the best of them


@dataclasses.dataclass
class NPEStart:
    """z_best [n_z] / ld_best: the draw of highest log density; run: the draws as a SamplerRun."""

    z_best: np.ndarray
    ld_best: float
    run: object
    info: dict

    def top_draws(self, k: int) -> np.ndarray:
        """The ``k`` draws of highest log density, ``[k, n_z]`` (the MAP search's starts for ``--init npe``)."""
        zs = np.asarray(self.run.positions).reshape(-1, self.z_best.shape[0])
        ld = np.asarray(self.run.logdensity).reshape(-1)
        ld = np.where(np.isfinite(ld), ld, -np.inf)
        return zs[np.argsort(-ld)[:k]]


def nuisance_estimates(flux, sigma_emu, coeffs, y, sigma_obs, mask, x):
    """Conditional (log_scale, f_sys) per draw: ``flux, sigma_emu [n, n_wave]``, ``coeffs [n, K]``;
    ``y, sigma_obs, mask, x [n_wave]`` the likelihood's data -> ``([n], [n])``."""
    k = coeffs.shape[-1]
    w = 1.0 + (coeffs @ legendre_basis(x, k) if k else 0.0)
    m = w * flux * mask
    s = jnp.sum(y * m, axis=-1) / jnp.maximum(jnp.sum(m * m, axis=-1), 1e-30)
    s = jnp.maximum(s, 1e-6)
    r = mask * (y - s[:, None] * m)
    excess = jnp.sum(r * r - mask * (sigma_obs**2 + (s[:, None] * w * sigma_emu) ** 2), axis=-1)
    f2 = jnp.maximum(excess, 0.0) / jnp.maximum(jnp.sum((s[:, None] * m) ** 2, axis=-1), 1e-30)
    return jnp.log(s), jnp.maximum(jnp.sqrt(f2), F_SYS_FLOOR)


def npe_start(cfg, setup, obs, fm, data, spectrum_and_sigma: Callable, *, n_draws: int | None = None,
              log: Callable[[str], None] = print) -> NPEStart:
    """NPE draws for ``obs`` under the fit ``setup`` / flat model ``fm`` (see the module docstring).

    ``n_draws``: default ``num_chains x num_samples`` for ``--sampler npe``, :data:`INIT_DRAWS` for
    ``--init npe``; the draws are split into ``num_chains`` "chains" of independent draws."""
    from lumina_jax.workflows import npe as npe_io
    from lumina_jax.inference.density import z_from_values
    from lumina_jax.inference.sampling import SamplerRun

    t0 = time.perf_counter()
    path = cfg.npe or npe_io.default_npe(int(setup.space.stage))
    obj = npe_io.load_npe(path)
    npe_io.check_compatible(obj, setup, path=str(path))
    feats, nf = npe_io.observation_features(obj, obs.flux, obs.sigma, obs.mask, log=log)
    t1 = time.perf_counter()
    sampling = cfg.name == "npe"
    if sampling and setup.priors:
        log(f"note: --sampler npe draws from the flow, whose prior is the uniform box it was trained on; "
            f"the informative prior on {', '.join(n for n, _, _ in setup.priors)} is not applied to them "
            f"(--init npe with an MCMC sampler applies it)")
    n_ch = cfg.num_chains if sampling else 1
    n = n_draws or (cfg.num_chains * cfg.num_samples if sampling else INIT_DRAWS)
    n = int(np.ceil(n / n_ch) * n_ch)
    t = npe_io.posterior_draws(obj, jax.random.PRNGKey(cfg.seed + 1), feats, n)
    d = obj.settings.n_box
    theta_free, coeffs = t[:, :d], t[:, d:]
    sp = setup.space
    idx = setup.free_index
    lo, hi = np.asarray(sp.lower, float)[idx], np.asarray(sp.upper, float)[idx]
    u = (theta_free - lo) / (hi - lo)
    thetas = setup.theta_from_u(jnp.asarray(u))
    flux, sig = jax.jit(jax.vmap(spectrum_and_sigma))(thetas)
    ls, fsys = jax.jit(nuisance_estimates)(flux, sig, jnp.asarray(coeffs), data.y, data.sigma_obs, data.mask, data.x)
    zs = jax.jit(jax.vmap(lambda uu, l, f, c: z_from_values(fm, uu, l, f, c if setup.n_poly else None)))(
        jnp.asarray(u), ls, fsys, jnp.asarray(coeffs))
    lds = np.concatenate([np.asarray(jax.jit(jax.vmap(fm.logdensity))(zs[i:i + 1000]))
                          for i in range(0, n, 1000)])
    t2 = time.perf_counter()
    lds_ok = np.where(np.isfinite(lds), lds, -np.inf)
    ib = int(np.argmax(lds_ok))
    zs = np.asarray(zs)
    info = {"checkpoint": str(path), "noise_frac_estimate": nf, "draws": n, "load_s": t1 - t0,
            "draw_and_score_s": t2 - t1, "trained_on": obj.metadata.get("stores"),
            "nuisances": "log_scale and f_sys per draw: conditional estimates (npe_fit module docstring)"}
    log(f"NPE {path}: {n} draws in {t2 - t1:.1f} s (noise {nf:.3g} of the flux per pixel); best draw log density "
        f"{lds_ok[ib]:.2f}")
    run = SamplerRun("npe", zs.reshape(n_ch, n // n_ch, -1), lds.reshape(n_ch, n // n_ch),
                     np.zeros((n_ch, n // n_ch), bool), 0, t1 - t0, t2 - t1, info)
    return NPEStart(zs[ib], float(lds_ok[ib]), run, info)
