"""One interface over several samplers of a flat log density ``logdensity(z)``, z [n_z]; one
module per backend (``numpyro``, ``blackjax``, ``emcee``, ``nested``), each with its options.

=================  ==========================================================================
name               algorithm
=================  ==========================================================================
``nuts``           NumPyro NUTS, diagonal (or dense) mass, several vectorised chains (one
                   jitted program for all chains, warm-up and sampling: :mod:`.numpyro`)
``hmc``            NumPyro HMC with step-size and mass adaptation; the trajectory length is
                   drawn uniformly on (0, 2 ``hmc.trajectory_length``] every iteration (a
                   fixed length resonates with a Gaussian's period and can stall a chain)
``blackjax-nuts``  BlackJAX NUTS with Stan-style window adaptation, vmapped over chains
``blackjax-chees`` BlackJAX ChEES-HMC (Hoffman, Radul & Sountsov 2021): jittered-length HMC
                   whose step size, trajectory length and diagonal mass are adapted across
                   all chains at once (at least ``chees.min_chains``, 16); every chain runs
                   the same number of leapfrog steps per draw, so the vmapped chains never
                   wait for the longest one (NUTS's cost when vectorised)
``blackjax-mclmc`` BlackJAX *adjusted* MCLMC (MAMS, Robnik et al. 2025) with its step-size
                   tuner calibrated at ``mclmc.steps`` (8) jittered steps per proposal and
                   diagonal preconditioning, vmapped over chains (which share the length
                   sequence); ``mclmc.thin`` (4) proposals make one kept draw (64 gradients:
                   the McLachlan integrator takes 2 per step; NUTS here ~55 per draw)
``emcee``          emcee affine-invariant ensemble (stretch move), the original pipeline's
                   sampler, with a vectorised jitted log density; walkers count as chains
``blackjax-nss``   BlackJAX nested slice sampling (Yallup, Kroupa & Handley 2026) for the
                   evidence: ``num_chains`` independent runs from the prior (no MAP, no
                   preconditioning), each resampled to ``num_samples`` equal-weight draws;
                   needs the prior / likelihood split (:func:`run_nested`)
=================  ==========================================================================

Every sampler returns :class:`SamplerRun`: unconstrained draws ``[chains, draws, n_z]``,
log densities, divergence flags, the number of gradient (or density) evaluations and wall
times, so diagnostics and benchmarks treat them alike.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp

from lumina_jax.errors import UserError
from lumina_jax.inference.sampling._common import DENSE_MAX_DIM, SamplerRun, chain_count, dense
from lumina_jax.inference.sampling.blackjax import ChEESOptions, MCLMCOptions
from lumina_jax.inference.sampling.emcee import MOVES as EMCEE_MOVES, EmceeOptions
from lumina_jax.inference.sampling.nested import NestedOptions, run_nested
from lumina_jax.inference.sampling.numpyro import HMCOptions

__all__ = ["SAMPLERS", "INITS", "DENSE_MAX_DIM", "EMCEE_MOVES", "SamplerConfig", "SamplerRun", "HMCOptions",
           "ChEESOptions", "MCLMCOptions", "EmceeOptions", "NestedOptions", "chain_count", "dense", "run_sampler",
           "run_nested"]

SAMPLERS = ("nuts", "hmc", "blackjax-nuts", "blackjax-chees", "blackjax-mclmc", "emcee", "blackjax-nss", "npe")
INITS = ("map", "npe")  # start of the MCMC samplers: the MAP search, or the amortised posterior (npe_fit.py)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How a fit is sampled (the ``sampler`` section of the inference configuration; these
    defaults are the only ones).

    name: one of :data:`SAMPLERS`; num_chains, num_warmup, num_samples: per chain; seed;
    target_accept: step-size adaptation target; max_tree_depth: NUTS trees; dense_mass: None
    for dense up to :data:`DENSE_MAX_DIM` dimensions; map_starts: Adam starts of the MAP search;
    init: ``map`` or ``npe`` (where the MCMC chains start); npe: NPE checkpoint (None: the
    stage's shipped one); precondition: sample x with z = z_map + L x, L L^T the Laplace
    covariance; ridge: box parameter whose profile path the coordinates straighten
    (:mod:`lumina_jax.inference.ridge`; None: off; t_exp carries the homologous
    t_exp / L / rho_0 degeneracy); init_scale: chains start at x ~ N(0, init_scale^2);
    progress: progress bars on stderr.  Per-backend options: ``hmc``, ``chees``, ``mclmc``,
    ``emcee``, ``nested``.
    """

    name: str = "nuts"
    num_chains: int = 4
    num_warmup: int = 500
    num_samples: int = 1000
    seed: int = 0
    target_accept: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool | None = None
    map_starts: int = 32
    init: str = "map"
    npe: str | None = None
    precondition: bool = True
    ridge: str | None = "t_exp"
    init_scale: float = 1.0
    progress: bool = False
    hmc: HMCOptions = HMCOptions()
    chees: ChEESOptions = ChEESOptions()
    mclmc: MCLMCOptions = MCLMCOptions()
    emcee: EmceeOptions = EmceeOptions()
    nested: NestedOptions = NestedOptions()

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise UserError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if self.init not in INITS:
            raise UserError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.num_chains < 1 or self.num_samples < 10 or self.num_warmup < 0:
            raise UserError("need num_chains >= 1, num_samples >= 10, num_warmup >= 0")
        if self.map_starts < 1:
            raise UserError(f"map_starts must be >= 1, got {self.map_starts}")
        if self.ridge is not None and not (isinstance(self.ridge, str) and self.ridge):
            raise UserError(f"ridge must be a parameter name or None, got {self.ridge!r}")
        if not 0.0 < self.target_accept < 1.0:
            raise UserError(f"target-accept must be in (0, 1), got {self.target_accept}")


def run_sampler(cfg: SamplerConfig, logdensity: Callable, init: jnp.ndarray) -> SamplerRun:
    """Run ``cfg.name`` on ``logdensity`` from ``init`` [chains, n_z] (blackjax-chees: at least
    :func:`chain_count` rows).

    emcee takes ``init`` as its walkers when it has at least
    :func:`~lumina_jax.inference.sampling.emcee.walkers` rows, and otherwise starts them in a
    ball of radius 1e-3 around ``init[0]``."""
    from lumina_jax.inference.sampling import blackjax, emcee, numpyro

    if cfg.name == "blackjax-nss":
        raise UserError("blackjax-nss needs the prior / likelihood split: use run_nested (run_fit does)")
    if cfg.name == "npe":
        raise UserError("npe draws from an amortised posterior, not a log density: use npe_fit.npe_start (run_fit does)")
    fn = {"nuts": numpyro.run, "hmc": numpyro.run, "blackjax-nuts": blackjax.run_nuts,
          "blackjax-chees": blackjax.run_chees, "blackjax-mclmc": blackjax.run_mclmc, "emcee": emcee.run}[cfg.name]
    return fn(cfg, logdensity, jnp.asarray(init))
