"""One interface over several samplers of a flat log density ``logdensity(z)``, z [n_z].

=================  ==========================================================================
name               algorithm
=================  ==========================================================================
``nuts``           NumPyro NUTS, diagonal (or dense) mass, several vectorised chains (one
                   jitted program for all chains, warm-up and sampling: :func:`_numpyro`)
``hmc``            NumPyro HMC with step-size and mass adaptation; the trajectory length is
                   drawn uniformly on (0, 2 ``hmc_trajectory_length``] every iteration (a
                   fixed length resonates with a Gaussian's period and can stall a chain)
``blackjax-nuts``  BlackJAX NUTS with Stan-style window adaptation, vmapped over chains
``blackjax-chees`` BlackJAX ChEES-HMC (Hoffman, Radul & Sountsov 2021): jittered-length HMC
                   whose step size, trajectory length and diagonal mass are adapted across
                   all chains at once (at least ``chees_min_chains``, 16); every chain runs
                   the same number of leapfrog steps per draw, so the vmapped chains never
                   wait for the longest one (NUTS's cost when vectorised)
``blackjax-mclmc`` BlackJAX *adjusted* MCLMC (MAMS, Robnik et al. 2025) with its step-size
                   tuner calibrated at ``mclmc_steps`` (8) jittered steps per proposal and
                   diagonal preconditioning, vmapped over chains (which share the length
                   sequence); ``mclmc_thin`` (4) proposals make one kept draw (64 gradients:
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
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.errors import UserError

SAMPLERS = ("nuts", "hmc", "blackjax-nuts", "blackjax-chees", "blackjax-mclmc", "emcee", "blackjax-nss", "npe")
INITS = ("map", "npe")  # start of the MCMC samplers: the MAP search, or the amortised posterior (npe_fit.py)
DENSE_MAX_DIM = 40
EMCEE_MOVES = ("stretch", "de")


def _dense(cfg, n_z: int) -> bool:
    return bool(cfg.dense_mass) if cfg.dense_mass is not None else n_z <= DENSE_MAX_DIM


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Settings shared by all samplers (``emcee_*`` only for emcee)."""

    name: str = "nuts"
    num_chains: int = 4
    num_warmup: int = 500
    num_samples: int = 500
    seed: int = 0
    target_accept: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool | None = None  # None: dense below DENSE_MAX_DIM unconstrained dimensions
    hmc_trajectory_length: float = float(np.pi)  # mean HMC trajectory length (adapted-metric units), jittered
    chees_min_chains: int = 16  # blackjax-chees runs max(num_chains, this) chains: its adaptation pools them
    chees_learning_rate: float = 0.025  # Adam step on the log trajectory length
    mclmc_target_accept: float = 0.9
    mclmc_thin: int = 4  # MCLMC proposals per kept draw
    mclmc_steps: float = 8.0  # mean integrator steps per MCLMC proposal (BlackJAX's tuner calibrates the step
    # for it; its default 2 left 135-D runs unconverged, 8 measured best of 2 / 8 / 16 at 135-D)
    emcee_walkers: int = 0  # 0: max(32, 2 n_z + 2)
    emcee_steps: int = 0  # 0: 10 x (num_warmup + num_samples)
    emcee_thin: int = 0  # 0: keep <= num_samples draws per walker
    emcee_burn: float = 0.5  # fraction of emcee_steps discarded as burn-in
    emcee_moves: str = "stretch"  # "stretch" (emcee default, the original pipeline's) or "de" (DE 0.8 + snooker 0.2)
    ns_live: int = 300  # nested sampling: live points per run
    ns_delete: int = 0  # particles replaced per NS step (0: ns_live // 10)
    ns_inner_steps: int = 0  # slice steps per new particle (0: 3 n_z)
    ns_dlogz: float = 0.05  # stop when log(Z_dead + Z_live) - log(Z_dead) < ns_dlogz
    ns_max_steps: int = 100_000  # cap on NS steps per run (a run that hits it is reported)
    precondition: bool = True  # sample x with z = z_map + L x, L L^T = (-Hessian at the MAP)^-1
    ridge: str | None = None  # box parameter whose profile path the coordinates straighten (ridge.py); None: off
    init_scale: float = 1.0  # chains start at x ~ N(0, init_scale^2) (Laplace draws when preconditioned)
    progress: bool = False
    npe: str | None = None  # NPE checkpoint of --sampler npe / --init npe (None: the stage's shipped one)
    init: str = "map"  # "map" or "npe": where the MCMC samplers start (INITS)

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise UserError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if self.init not in INITS:
            raise UserError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.num_chains < 1 or self.num_samples < 10 or self.num_warmup < 0:
            raise UserError("need num_chains >= 1, num_samples >= 10, num_warmup >= 0")
        if self.ridge is not None and not (isinstance(self.ridge, str) and self.ridge):
            raise UserError(f"ridge must be a parameter name or None, got {self.ridge!r}")
        if not self.hmc_trajectory_length > 0:
            raise UserError(f"hmc_trajectory_length must be > 0, got {self.hmc_trajectory_length}")
        if not 0.0 < self.target_accept < 1.0:
            raise UserError(f"target-accept must be in (0, 1), got {self.target_accept}")
        if self.chees_min_chains < 2 or not self.chees_learning_rate > 0:
            raise UserError("need chees_min_chains >= 2 and chees_learning_rate > 0")
        if not 0.0 < self.mclmc_target_accept < 1.0:
            raise UserError(f"mclmc_target_accept must be in (0, 1), got {self.mclmc_target_accept}")
        if self.mclmc_thin < 1:
            raise UserError(f"mclmc_thin must be >= 1, got {self.mclmc_thin}")
        if not self.mclmc_steps >= 1.2:
            raise UserError(f"mclmc_steps must be >= 1.2 (BlackJAX's tuner needs > 1.1), got {self.mclmc_steps}")
        if not 0.0 <= self.emcee_burn < 1.0:
            raise UserError(f"emcee_burn must be in [0, 1), got {self.emcee_burn}")
        if self.emcee_moves not in EMCEE_MOVES:
            raise UserError(f"emcee_moves must be one of {', '.join(EMCEE_MOVES)}, got {self.emcee_moves!r}")


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


def chain_count(cfg: SamplerConfig) -> int:
    """Chains ``cfg`` runs (emcee aside: see :func:`emcee_walkers`): ``num_chains``, at least
    ``chees_min_chains`` for blackjax-chees."""
    return max(cfg.num_chains, cfg.chees_min_chains) if cfg.name == "blackjax-chees" else cfg.num_chains


def run_sampler(cfg: SamplerConfig, logdensity: Callable, init: jnp.ndarray) -> SamplerRun:
    """Run ``cfg.name`` on ``logdensity`` from ``init`` [chains, n_z] (blackjax-chees: at least
    :func:`chain_count` rows).

    emcee takes ``init`` as its walkers when it has at least :func:`emcee_walkers` rows, and
    otherwise starts them in a ball of radius 1e-3 around ``init[0]``."""
    if cfg.name == "blackjax-nss":
        raise UserError("blackjax-nss needs the prior / likelihood split: use run_nested (run_fit does)")
    if cfg.name == "npe":
        raise UserError("npe draws from an amortised posterior, not a log density: use npe_fit.npe_start (run_fit does)")
    fn = {"nuts": _numpyro, "hmc": _numpyro, "blackjax-nuts": _blackjax_nuts,
          "blackjax-chees": _blackjax_chees, "blackjax-mclmc": _blackjax_mclmc, "emcee": _emcee}[cfg.name]
    return fn(cfg, logdensity, jnp.asarray(init))


# ----------------------------------------------------------------------------- NumPyro
NUMPYRO_CHUNK = 50  # iterations per compiled call of the NumPyro driver (progress is reported per chunk)


def _numpyro(cfg, logdensity, init):
    """NumPyro NUTS / jittered HMC driven through the kernel's own ``init`` / ``sample``
    (what ``numpyro.infer.MCMC`` calls), with every iteration -- warm-up and sampling --
    run by one jitted ``lax.scan`` of :data:`NUMPYRO_CHUNK` iterations.

    ``MCMC.warmup`` followed by ``MCMC.run`` traces and compiles the whole NUTS program
    again for each call (and its initialisation a third time): on the 135-D benchmark
    problem that was 15 s of a 46 s run (one core).  Here the kernel is compiled once for
    the initialisation and once for all iterations; the chains are the same as MCMC's
    (same keys, the kernel's own adaptation schedule)."""
    from numpyro.infer import HMC, NUTS

    pot = lambda z: -logdensity(z)  # noqa: E731
    if cfg.name == "nuts":
        kernel = NUTS(potential_fn=pot, target_accept_prob=cfg.target_accept,
                      max_tree_depth=cfg.max_tree_depth, dense_mass=_dense(cfg, init.shape[1]))
    else:
        kernel = _jittered_hmc_class(HMC)(
            potential_fn=pot, target_accept_prob=cfg.target_accept, dense_mass=_dense(cfg, init.shape[1]),
            trajectory_length=cfg.hmc_trajectory_length)
    n_chains = init.shape[0]
    key = jax.random.PRNGKey(cfg.seed)
    # as MCMC: one key per chain (vectorised init), a single chain's state without the chain axis
    keys, x0 = (jax.random.split(key, n_chains), init) if n_chains > 1 else (key, init[0])
    n_warm = max(cfg.num_warmup, 1)
    t0 = time.perf_counter()
    state = jax.jit(lambda k, x: kernel.init(k, n_warm, init_params=x, model_args=(), model_kwargs={}))(keys, x0)
    chunk = NUMPYRO_CHUNK

    @jax.jit
    def advance(state, n_active):
        # n_active (<= chunk) iterations; the rest of the scan leaves the state as it is
        def step(st, i):
            st = jax.lax.cond(i < n_active, lambda s: kernel.sample(s, (), {}), lambda s: s, st)
            return st, (st.z, st.potential_energy, st.num_steps, st.diverging, st.accept_prob)

        return jax.lax.scan(step, state, jnp.arange(chunk))

    def phase(state, n, label):
        outs = []
        bar = _progress_bar(cfg, n, f"{cfg.name} {label}")
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            state, out = advance(state, k)
            outs.append(jax.tree.map(lambda a, k=k: a[:k], out))
            if bar is not None:
                bar.update(k)
        if bar is not None:
            bar.close()
        return state, jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a], 0), *outs)

    state, warm = phase(state, n_warm, "warm-up")
    jax.block_until_ready(state)
    t1 = time.perf_counter()
    state, draws = phase(state, cfg.num_samples, "sampling")
    t2 = time.perf_counter()
    # [draws, chains, ...] -> [chains, draws, ...] (a single chain gets its axis back)
    z, pe, steps, div, acc = (np.swapaxes(a, 0, 1) if n_chains > 1 else a[None] for a in draws)
    info = {"mean_accept": float(np.mean(acc)), "mean_steps": float(np.mean(steps)),
            "step_size": np.asarray(state.adapt_state.step_size).tolist()}
    return SamplerRun(cfg.name, z, -pe, div.astype(bool), int(np.sum(warm[2]) + steps.sum()), t1 - t0, t2 - t1, info)


def _progress_bar(cfg, total: int, desc: str):
    """A tqdm bar on stderr when ``cfg.progress`` (None otherwise)."""
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", leave=False)


def _jittered_hmc_class(hmc_cls):
    """NumPyro ``HMC`` whose trajectory length is drawn uniformly on (0, 2 L] at every iteration
    (``L`` the kernel's ``trajectory_length``; step size and mass adapted as usual, the number
    of steps ``ceil(length / step)``).

    With one fixed length, HMC in a well-adapted metric travels the same fraction of every
    Gaussian direction's period (2 pi) each draw, and near a multiple of it returns almost where
    it started: on a 4-D correlated Gaussian 16 fixed steps gave 2 x 400 draws a bulk ESS of
    20-30 and R-hat 1.07-1.08; jittered, 630-750 with ~4 steps per draw.  A length drawn
    independently of the state keeps every iteration a valid HMC transition (Neal 2011, sec.
    5.4.2.2).  Vectorised chains share the length of each iteration."""

    class JitteredHMC(hmc_cls):
        def sample(self, state, model_args, model_kwargs):
            # vectorised chains: the state (its keys too) carries a leading chain axis, and all
            # chains take the same length (drawn with chain 0's key), so the vmapped leapfrog
            # loop ends for all of them together; momenta and accept draws stay each chain's own
            split = jax.random.split if state.rng_key.ndim == 1 else jax.vmap(jax.random.split)
            keys = split(state.rng_key)
            key, sub = keys[..., 0, :], keys[..., 1, :]
            u = jax.random.uniform(sub.reshape(-1, sub.shape[-1])[0])
            length = jnp.broadcast_to(2.0 * self._trajectory_length * (1.0 - u), state.rng_key.shape[:-1])  # (0, 2L]
            return super().sample(state._replace(trajectory_length=length, rng_key=key), model_args, model_kwargs)

    return JitteredHMC


# ---------------------------------------------------------------------------- BlackJAX
def _blackjax_nuts(cfg, logdensity, init):
    import blackjax

    def one_chain(key, x0):
        kw, ks = jax.random.split(key)
        warm = blackjax.window_adaptation(blackjax.nuts, logdensity, target_acceptance_rate=cfg.target_accept,
                                          is_mass_matrix_diagonal=not _dense(cfg, init.shape[1]),
                                          max_num_doublings=cfg.max_tree_depth)
        (state, params), winfo = warm.run(kw, x0, num_steps=max(cfg.num_warmup, 10))
        n_warm = jnp.sum(winfo.info.num_integration_steps)
        return state, params, n_warm

    def sample(key, state, params):
        params = {k: v for k, v in params.items() if k != "max_num_doublings"}
        kernel = blackjax.nuts(logdensity, max_num_doublings=cfg.max_tree_depth, **params).step

        def step(st, k):
            st, info = kernel(k, st)
            return st, (st.position, st.logdensity, info.is_divergent, info.num_integration_steps,
                        info.acceptance_rate)

        _, out = jax.lax.scan(step, state, jax.random.split(key, cfg.num_samples))
        return out

    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), init.shape[0] * 2).reshape(2, init.shape[0], 2)
    t0 = time.perf_counter()
    state, params, n_warm = jax.block_until_ready(jax.jit(jax.vmap(one_chain))(keys[0], init))
    t1 = time.perf_counter()
    pos, ld, div, nsteps, acc = jax.block_until_ready(jax.jit(jax.vmap(sample))(keys[1], state, params))
    t2 = time.perf_counter()
    info = {"mean_accept": float(jnp.mean(acc)), "mean_steps": float(jnp.mean(nsteps)),
            "step_size": np.asarray(params["step_size"]).tolist()}
    return SamplerRun(cfg.name, np.asarray(pos), np.asarray(ld), np.asarray(div, bool),
                      int(jnp.sum(n_warm) + jnp.sum(nsteps)), t1 - t0, t2 - t1, info)


class _CheesWarmInfo(NamedTuple):
    num_integration_steps: jnp.ndarray  # [num_chains] leapfrog steps of one warm-up iteration


def _blackjax_chees(cfg, logdensity, init):
    """ChEES-HMC: ``blackjax.chees_adaptation`` (step size by dual averaging of the chains'
    harmonic-mean acceptance towards ``target_accept`` -- 0.8 by default, not ChEES's 0.651;
    trajectory length by Adam on the cross-chain ChEES criterion, floored by BlackJAX at
    pi/2 sqrt(lambda_max) of the pooled covariance; a diagonal inverse mass pooled over all
    chains in the last half of the warm-up), then ``blackjax.dynamic_hmc`` with the adapted
    values.  The jittered number of leapfrog steps comes from a Halton sequence indexed by
    the step count, the same for every chain, so one vmapped step costs one batched gradient
    per leapfrog step with no idle chains.  ``init`` needs :func:`chain_count` rows or more
    (one chain per row)."""
    import blackjax
    import optax

    n_chains = max(init.shape[0], chain_count(cfg))
    if init.shape[0] < n_chains:
        raise UserError(f"blackjax-chees runs at least {n_chains} chains and needs as many starting points, "
                        f"got {init.shape[0]}")
    n_warm_steps = max(cfg.num_warmup, 10)
    warm = blackjax.chees_adaptation(
        logdensity, n_chains, target_acceptance_rate=cfg.target_accept, mass_matrix_estimation="diagonal",
        adaptation_info_fn=lambda state, info, adapt: _CheesWarmInfo(info.num_integration_steps))
    k_warm, k_sample = jax.random.split(jax.random.PRNGKey(cfg.seed))
    fns = {}  # the kernel's step-count functions: Python closures over static settings only

    @jax.jit
    def warmup(key, x0):
        # max_sampling_steps + 1: with num_steps + max_sampling_steps a power of 2 the last
        # Halton index has all its bits zero, i.e. a draw of 0 leapfrog steps
        (state, params), winfo = warm.run(key, x0, 0.1, optax.adam(cfg.chees_learning_rate), n_warm_steps,
                                          max_sampling_steps=cfg.num_samples + 1)
        fns.update({k: params.pop(k) for k in ("next_random_arg_fn", "integration_steps_fn")})
        return state, params, jnp.sum(winfo.num_integration_steps)

    t0 = time.perf_counter()
    state, params, n_warm = jax.block_until_ready(warmup(k_warm, init))
    if set(fns) != {"next_random_arg_fn", "integration_steps_fn"}:  # filled while tracing ``warmup``
        raise RuntimeError(f"blackjax.chees_adaptation returned unexpected parameters {sorted(fns)}")
    n_warm = int(n_warm)
    t1 = time.perf_counter()
    kernel = blackjax.dynamic_hmc(logdensity, **params, **fns)

    def sample(key, state):
        def step(st, k):
            st, info = jax.vmap(kernel.step)(jax.random.split(k, n_chains), st)
            return st, (st.position, st.logdensity, info.is_divergent, info.num_integration_steps,
                        info.acceptance_rate)

        return jax.lax.scan(step, state, jax.random.split(key, cfg.num_samples))[1]

    pos, ld, div, nsteps, acc = jax.block_until_ready(jax.jit(sample)(k_sample, state))
    t2 = time.perf_counter()
    swap = lambda a: np.swapaxes(np.asarray(a), 0, 1)  # noqa: E731  [draws, chains] -> [chains, draws]
    info = {"mean_accept": float(jnp.mean(acc)), "mean_steps": float(jnp.mean(nsteps)),
            "step_size": float(params["step_size"]), "trajectory_steps": float(params["integration_steps_params"][0]),
            "chains": n_chains}
    info["steps_equal_across_chains"] = bool(np.all(np.asarray(nsteps) == np.asarray(nsteps)[:, :1]))
    return SamplerRun(cfg.name, swap(pos), swap(ld), swap(div).astype(bool), n_warm + int(jnp.sum(nsteps)),
                      t1 - t0, t2 - t1, info)


def _blackjax_mclmc(cfg, logdensity, init):
    import blackjax
    from blackjax.mcmc.adjusted_mclmc_dynamic import make_random_trajectory_length_fn

    steps_fn = make_random_trajectory_length_fn(True)
    # isokinetic McLachlan (coefficients b1 a1 b2 a1 b1): 2 gradient evaluations per step
    kernel = blackjax.adjusted_mclmc_dynamic.build_kernel(integration_steps_fn=steps_fn,
                                                          integrator=blackjax.mcmc.integrators.isokinetic_mclachlan)
    grads_per_step = 2
    # the tuner runs two step-size passes of frac_tune1 and one variance window of frac_tune2
    # (0.1 each) of num_steps: 1.5 x num_warmup proposals
    n_tune_total = max(int(cfg.num_warmup / 0.2), 50)
    # every chain draws the same sequence of jittered trajectory lengths (the kernel takes it
    # from state.random_generator_arg): vmapped chains then finish each proposal together
    # instead of all waiting for the longest one; momenta and accept draws stay per chain.
    # Each chain stays a valid sampler (the lengths never depend on its state); the chains
    # share only the length schedule
    k_len = jax.random.PRNGKey(cfg.seed + 7)

    def one_chain(key, x0):
        state = blackjax.adjusted_mclmc_dynamic.init(x0, logdensity, k_len)
        state, params, n_tune = blackjax.adjusted_mclmc_find_L_and_step_size(
            mclmc_kernel=kernel, logdensity_fn=logdensity, num_steps=n_tune_total, state=state,
            rng_key=jax.random.split(key)[0], target=cfg.mclmc_target_accept, diagonal_preconditioning=True,
            target_num_integration_steps=cfg.mclmc_steps)
        return state, params, n_tune

    def sample(key, state, params):
        avg = params.L / params.step_size

        def step(st, k):
            st, info = kernel(k, st, logdensity, step_size=params.step_size,
                              inverse_mass_matrix=params.inverse_mass_matrix, integration_steps_params=(avg,))
            return st, (info.is_divergent, info.num_integration_steps, info.acceptance_rate)

        def draw(st, k):  # mclmc_thin proposals, keep the last state
            st, (dv, ns, ac) = jax.lax.scan(step, st, jax.random.split(k, cfg.mclmc_thin))
            return st, (st.position, st.logdensity, jnp.any(dv), jnp.sum(ns), jnp.mean(ac))

        _, out = jax.lax.scan(draw, state, jax.random.split(key, cfg.num_samples))
        return out

    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), init.shape[0] * 2).reshape(2, init.shape[0], 2)
    t0 = time.perf_counter()
    state, params, n_tune = jax.block_until_ready(jax.jit(jax.vmap(one_chain))(keys[0], init))
    t1 = time.perf_counter()
    pos, ld, div, nsteps, acc = jax.block_until_ready(jax.jit(jax.vmap(sample))(keys[1], state, params))
    t2 = time.perf_counter()
    info = {"mean_accept": float(jnp.mean(acc)), "mean_steps_per_draw": float(jnp.mean(nsteps)),
            "thin": cfg.mclmc_thin, "steps_per_proposal": cfg.mclmc_steps, "grads_per_step": grads_per_step,
            "step_size": np.asarray(params.step_size).tolist(), "L": np.asarray(params.L).tolist()}
    return SamplerRun(cfg.name, np.asarray(pos), np.asarray(ld), np.asarray(div, bool),
                      grads_per_step * int(jnp.sum(n_tune) + jnp.sum(nsteps)), t1 - t0, t2 - t1, info)


# ------------------------------------------------------------------------------- emcee
def emcee_walkers(cfg: SamplerConfig, n_z: int) -> int:
    """emcee's walker count: ``cfg.emcee_walkers`` or max(32, 2 n_z + 2), rounded up to even."""
    nw = cfg.emcee_walkers or max(32, 2 * n_z + 2)
    return nw + nw % 2


def _emcee(cfg, logdensity, init):
    import emcee

    n_z = init.shape[1]
    nw = emcee_walkers(cfg, n_z)
    n_steps = cfg.emcee_steps or 10 * (cfg.num_warmup + cfg.num_samples)
    n_burn = int(cfg.emcee_burn * n_steps)
    thin = cfg.emcee_thin or max(1, (n_steps - n_burn) // cfg.num_samples)
    vld = jax.jit(jax.vmap(logdensity))

    def log_prob(zs):
        v = np.asarray(vld(jnp.asarray(zs)))
        return np.where(np.isfinite(v), v, -np.inf)

    if init.shape[0] >= nw:
        p0 = np.asarray(init[:nw])
    else:
        p0 = np.asarray(init[0]) + 1e-3 * np.random.default_rng(cfg.seed).standard_normal((nw, n_z))
    moves = None if cfg.emcee_moves == "stretch" else [(emcee.moves.DEMove(), 0.8),
                                                         (emcee.moves.DESnookerMove(), 0.2)]
    sampler = emcee.EnsembleSampler(nw, n_z, log_prob, vectorize=True, moves=moves)
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
    info = {"walkers": nw, "steps": n_steps, "burn": n_burn, "thin": thin, "moves": cfg.emcee_moves,
            "acceptance": float(np.mean(sampler.acceptance_fraction))}
    return SamplerRun(cfg.name, chain, lp, np.zeros(lp.shape, bool), nw * n_steps, t1 - t0, t2 - t1, info)


# ------------------------------------------------------------------- nested sampling
def run_nested(cfg: SamplerConfig, logprior: Callable, loglikelihood: Callable, prior_draws: Callable,
               log: Callable[[str], None] = lambda s: None) -> SamplerRun:
    """BlackJAX nested slice sampling: ``cfg.num_chains`` independent runs.

    ``logprior(z)`` must be the normalised density that ``prior_draws(key, n) -> [n, n_z]``
    samples exactly; ``loglikelihood(z)`` the rest of the log posterior.  Each run starts
    from ``cfg.ns_live`` prior draws, replaces ``ns_delete`` particles per step with
    ``ns_inner_steps`` hit-and-run slice moves shaped by the live-point covariance, and
    stops when the live points could add less than ``ns_dlogz`` to log Z.  Its dead + live
    points are importance-weighted (``blackjax.ns.utils``: log Z with its Monte-Carlo
    spread over simulated prior volumes) and resampled to ``cfg.num_samples`` equal-weight
    draws, so the runs act as chains for R-hat.  ``info``: per-run log Z and its sd, the
    Kish ESS of the weights, NS steps; ``n_grad`` counts likelihood evaluations."""
    from blackjax.ns.utils import finalise, log_weights

    import blackjax

    key = jax.random.PRNGKey(cfg.seed)
    z0 = prior_draws(jax.random.PRNGKey(cfg.seed + 1), 1)
    n_z = int(z0.shape[-1])
    n_delete = cfg.ns_delete or max(1, cfg.ns_live // 10)
    inner = cfg.ns_inner_steps or 3 * n_z
    algo = blackjax.nss(logprior, loglikelihood, num_inner_steps=inner, num_delete=n_delete)
    step = jax.jit(algo.step)
    init = jax.jit(algo.init)
    draws, lds, runs = [], [], []
    n_evals = 0
    t0 = time.perf_counter()
    for c in range(cfg.num_chains):
        key, k_init, k_w, k_s = jax.random.split(key, 4)
        state = init(prior_draws(k_init, cfg.ns_live))
        dead, n_steps, capped = [], 0, False
        while True:
            key, k = jax.random.split(key)
            state, info = step(k, state)
            dead.append(info)
            n_steps += 1
            integ = state.integrator
            lz, lz_live = float(integ.logZ), float(integ.logZ_live)
            if np.logaddexp(lz, lz_live) - lz < cfg.ns_dlogz:
                break
            if n_steps >= cfg.ns_max_steps:
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
        n_evals += cfg.ns_live + int(np.sum(ui.num_expansions) + np.sum(ui.num_shrink) + ui.num_shrink.size)
        runs.append({"log_evidence": float(log_z.mean()), "log_evidence_sd": float(log_z.std()),
                     "ess_kish": ess_kish, "ns_steps": n_steps, "dead_points": int(w.shape[0]), "capped": capped})
        log(f"nested sampling run {c + 1}/{cfg.num_chains}: log Z = {runs[-1]['log_evidence']:.3f} "
            f"+- {runs[-1]['log_evidence_sd']:.3f}, Kish ESS {ess_kish:.0f}, {n_steps} steps")
    t1 = time.perf_counter()
    lzs = np.array([r["log_evidence"] for r in runs])
    info = {"runs": runs, "log_evidence": float(np.log(np.mean(np.exp(lzs - lzs.max()))) + lzs.max()),
            "log_evidence_sd": float(np.sqrt(np.mean([r["log_evidence_sd"] ** 2 for r in runs]) / len(runs)
                                             + (np.var(lzs, ddof=1) / len(runs) if len(runs) > 1 else 0.0))),
            "live_points": cfg.ns_live, "num_delete": n_delete, "inner_steps": inner}
    pos = np.stack(draws)
    return SamplerRun(cfg.name, pos, np.stack(lds), np.zeros(pos.shape[:2], bool), n_evals, 0.0, t1 - t0, info)
