"""BlackJAX nested slice sampling (``blackjax-nss``): independent runs from the prior, the
evidence, and equal-weight draws that act as chains."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.errors import UserError
from lumina_jax.inference.sampling._common import SamplerRun


@dataclasses.dataclass(frozen=True)
class NestedOptions:
    """live points per run; delete: particles replaced per step (0: live // 10); inner_steps:
    slice steps per new particle (0: 3 n_z); stop when log(Z_dead + Z_live) - log(Z_dead) <
    dlogz; max_steps: cap on steps per run (a run that hits it is reported)."""

    live: int = 300
    delete: int = 0
    inner_steps: int = 0
    dlogz: float = 0.05
    max_steps: int = 100_000

    def __post_init__(self):
        if self.live < 10 or self.delete < 0 or self.inner_steps < 0 or not self.dlogz > 0 or self.max_steps < 1:
            raise UserError("need nested live >= 10, delete >= 0, inner_steps >= 0, dlogz > 0, max_steps >= 1")


def run_nested(cfg, logprior: Callable, loglikelihood: Callable, prior_draws: Callable,
               log: Callable[[str], None] = lambda s: None) -> SamplerRun:
    """BlackJAX nested slice sampling: ``cfg.num_chains`` independent runs.

    ``logprior(z)`` must be the normalised density that ``prior_draws(key, n) -> [n, n_z]``
    samples exactly; ``loglikelihood(z)`` the rest of the log posterior.  Each run starts
    from ``cfg.nested.live`` prior draws, replaces ``nested.delete`` particles per step with
    ``nested.inner_steps`` hit-and-run slice moves shaped by the live-point covariance, and
    stops when the live points could add less than ``nested.dlogz`` to log Z.  Its dead + live
    points are importance-weighted (``blackjax.ns.utils``: log Z with its Monte-Carlo
    spread over simulated prior volumes) and resampled to ``cfg.num_samples`` equal-weight
    draws, so the runs act as chains for R-hat.  ``info``: per-run log Z and its sd, the
    Kish ESS of the weights, NS steps; ``n_grad`` counts likelihood evaluations."""
    from blackjax.ns.utils import finalise, log_weights

    import blackjax

    key = jax.random.PRNGKey(cfg.seed)
    z0 = prior_draws(jax.random.PRNGKey(cfg.seed + 1), 1)
    n_z = int(z0.shape[-1])
    n_delete = cfg.nested.delete or max(1, cfg.nested.live // 10)
    inner = cfg.nested.inner_steps or 3 * n_z
    algo = blackjax.nss(logprior, loglikelihood, num_inner_steps=inner, num_delete=n_delete)
    step = jax.jit(algo.step)
    init = jax.jit(algo.init)
    draws, lds, runs = [], [], []
    n_evals = 0
    t0 = time.perf_counter()
    for c in range(cfg.num_chains):
        key, k_init, k_w, k_s = jax.random.split(key, 4)
        state = init(prior_draws(k_init, cfg.nested.live))
        dead, n_steps, capped = [], 0, False
        while True:
            key, k = jax.random.split(key)
            state, info = step(k, state)
            dead.append(info)
            n_steps += 1
            integ = state.integrator
            lz, lz_live = float(integ.logZ), float(integ.logZ_live)
            if np.logaddexp(lz, lz_live) - lz < cfg.nested.dlogz:
                break
            if n_steps >= cfg.nested.max_steps:
                capped = True
                break
            if n_steps % 200 == 0:
                log(f"nested sampling run {c + 1}/{cfg.num_chains}: {n_steps} steps, log Z ~ "
                    f"{np.logaddexp(lz, lz_live):.2f} (live part {lz_live - np.logaddexp(lz, lz_live):.2f})")
        fin = finalise(state, dead)
        lw = log_weights(k_w, fin, shape=100)  # [n_points, 100 simulated volume sequences]
        log_z = jax.scipy.special.logsumexp(lw, axis=0)
        w = jnp.exp(lw.mean(axis=-1) - jax.scipy.special.logsumexp(lw.mean(axis=-1)))
        ess_kish = float(1.0 / jnp.sum(w**2))
        idx = jax.random.choice(k_s, w.shape[0], (cfg.num_samples,), p=w, replace=True)
        pos = fin.particles.position[idx]
        draws.append(np.asarray(pos))
        lds.append(np.asarray(fin.particles.logdensity[idx] + fin.particles.loglikelihood[idx]))
        ui = jax.tree.map(np.asarray, fin.update_info)
        n_evals += cfg.nested.live + int(np.sum(ui.num_expansions) + np.sum(ui.num_shrink) + ui.num_shrink.size)
        runs.append({"log_evidence": float(log_z.mean()), "log_evidence_sd": float(log_z.std()),
                     "ess_kish": ess_kish, "ns_steps": n_steps, "dead_points": int(w.shape[0]), "capped": capped})
        log(f"nested sampling run {c + 1}/{cfg.num_chains}: log Z = {runs[-1]['log_evidence']:.3f} "
            f"+- {runs[-1]['log_evidence_sd']:.3f}, Kish ESS {ess_kish:.0f}, {n_steps} steps")
    t1 = time.perf_counter()
    lzs = np.array([r["log_evidence"] for r in runs])
    info = {"runs": runs, "log_evidence": float(np.log(np.mean(np.exp(lzs - lzs.max()))) + lzs.max()),
            "log_evidence_sd": float(np.sqrt(np.mean([r["log_evidence_sd"] ** 2 for r in runs]) / len(runs)
                                             + (np.var(lzs, ddof=1) / len(runs) if len(runs) > 1 else 0.0))),
            "live_points": cfg.nested.live, "num_delete": n_delete, "inner_steps": inner}
    pos = np.stack(draws)
    return SamplerRun(cfg.name, pos, np.stack(lds), np.zeros(pos.shape[:2], bool), n_evals, 0.0, t1 - t0, info)
