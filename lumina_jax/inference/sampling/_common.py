"""What every sampler backend shares: the run record, the mass-matrix rule, progress bars."""

from __future__ import annotations

import dataclasses

import numpy as np

DENSE_MAX_DIM = 40


def dense(cfg, n_z: int) -> bool:
    """Dense mass matrix: ``cfg.dense_mass``, or (None) up to :data:`DENSE_MAX_DIM` dimensions."""
    return bool(cfg.dense_mass) if cfg.dense_mass is not None else n_z <= DENSE_MAX_DIM


def chain_count(cfg) -> int:
    """Chains ``cfg`` runs (emcee aside: :func:`lumina_jax.inference.sampling.emcee.walkers`):
    ``num_chains``, at least ``cfg.chees.min_chains`` for blackjax-chees."""
    return max(cfg.num_chains, cfg.chees.min_chains) if cfg.name == "blackjax-chees" else cfg.num_chains


def progress_bar(cfg, total: int, desc: str):
    """A tqdm bar on stderr when ``cfg.progress`` (None otherwise)."""
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", leave=False)


@dataclasses.dataclass
class SamplerRun:
    """positions [chains, draws, n_z] (unconstrained), logdensity [chains, draws],
    diverging [chains, draws] bool; n_grad: gradient evaluations (warmup + sampling; for emcee,
    log-density evaluations); wall_warmup_s / wall_sampling_s include JIT compilation."""

    sampler: str
    positions: np.ndarray
    logdensity: np.ndarray
    diverging: np.ndarray
    n_grad: int
    wall_warmup_s: float
    wall_sampling_s: float
    info: dict

    @property
    def wall_s(self) -> float:
        return self.wall_warmup_s + self.wall_sampling_s
