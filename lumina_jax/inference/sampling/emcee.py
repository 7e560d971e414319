"""emcee's affine-invariant ensemble (``emcee``, the original pipeline's sampler) on a flat log
density, vectorised over walkers; walkers count as chains."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.errors import UserError
from lumina_jax.inference.sampling._common import SamplerRun

MOVES = ("stretch", "de")


@dataclasses.dataclass(frozen=True)
class EmceeOptions:
    """walkers (0: max(32, 2 n_z + 2)); steps (0: 10 x (num_warmup + num_samples)); thin (0: keep
    <= num_samples draws per walker); burn: fraction of the steps discarded; moves: ``stretch``
    (emcee's default, the original pipeline's) or ``de`` (differential evolution 0.8 + snooker 0.2)."""

    walkers: int = 0
    steps: int = 0
    thin: int = 0
    burn: float = 0.5
    moves: str = "stretch"

    def __post_init__(self):
        if not 0.0 <= self.burn < 1.0:
            raise UserError(f"emcee burn must be in [0, 1), got {self.burn}")
        if self.moves not in MOVES:
            raise UserError(f"emcee moves must be one of {', '.join(MOVES)}, got {self.moves!r}")


def walkers(cfg, n_z: int) -> int:
    """emcee's walker count: ``cfg.emcee.walkers`` or max(32, 2 n_z + 2), rounded up to even."""
    nw = cfg.emcee.walkers or max(32, 2 * n_z + 2)
    return nw + nw % 2


def run(cfg, logdensity, init):
    import emcee as emcee_lib

    n_z = init.shape[1]
    nw = walkers(cfg, n_z)
    n_steps = cfg.emcee.steps or 10 * (cfg.num_warmup + cfg.num_samples)
    n_burn = int(cfg.emcee.burn * n_steps)
    thin = cfg.emcee.thin or max(1, (n_steps - n_burn) // cfg.num_samples)
    vld = jax.jit(jax.vmap(logdensity))

    def log_prob(zs):
        v = np.asarray(vld(jnp.asarray(zs)))
        return np.where(np.isfinite(v), v, -np.inf)

    if init.shape[0] >= nw:
        p0 = np.asarray(init[:nw])
    else:
        p0 = np.asarray(init[0]) + 1e-3 * np.random.default_rng(cfg.seed).standard_normal((nw, n_z))
    moves = None if cfg.emcee.moves == "stretch" else [(emcee_lib.moves.DEMove(), 0.8),
                                                         (emcee_lib.moves.DESnookerMove(), 0.2)]
    sampler = emcee_lib.EnsembleSampler(nw, n_z, log_prob, vectorize=True, moves=moves)
    sampler._random = np.random.RandomState(cfg.seed)  # emcee's own generator (no seed argument)
    t0 = time.perf_counter()
    # burn-in not stored: 10^5 steps x 262 walkers x 130 dimensions would be 27 GiB
    state = sampler.run_mcmc(p0, n_burn, progress=cfg.progress, store=False) if n_burn > 0 else p0
    t1 = time.perf_counter()
    sampler.reset()
    n_keep = max((n_steps - n_burn) // thin, 1)
    sampler.run_mcmc(state, n_keep, thin_by=thin, progress=cfg.progress)
    n_steps = n_burn + n_keep * thin
    t2 = time.perf_counter()
    chain = np.swapaxes(sampler.get_chain(), 0, 1)  # [walkers, draws, n_z]
    lp = np.swapaxes(sampler.get_log_prob(), 0, 1)
    info = {"walkers": nw, "steps": n_steps, "burn": n_burn, "thin": thin, "moves": cfg.emcee.moves,
            "acceptance": float(np.mean(sampler.acceptance_fraction))}
    return SamplerRun(cfg.name, chain, lp, np.zeros(lp.shape, bool), nw * n_steps, t1 - t0, t2 - t1, info)
