"""BlackJAX samplers on a flat log density: NUTS with window adaptation (``blackjax-nuts``),
ChEES-HMC (``blackjax-chees``) and adjusted MCLMC (``blackjax-mclmc``), vmapped over chains."""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.errors import UserError
from lumina_jax.inference.sampling._common import SamplerRun, chain_count, dense


@dataclasses.dataclass(frozen=True)
class ChEESOptions:
    """``blackjax-chees``: at least ``min_chains`` chains (its adaptation pools them); Adam step
    ``learning_rate`` on the log trajectory length."""

    min_chains: int = 16
    learning_rate: float = 0.025

    def __post_init__(self):
        if self.min_chains < 2 or not self.learning_rate > 0:
            raise UserError("need chees min_chains >= 2 and learning_rate > 0")


@dataclasses.dataclass(frozen=True)
class MCLMCOptions:
    """``blackjax-mclmc``: acceptance target of the step-size tuner, proposals per kept draw
    (``thin``) and mean integrator steps per proposal (``steps``: BlackJAX's default 2 left
    135-D runs unconverged; 8 measured best of 2 / 8 / 16 at 135-D)."""

    target_accept: float = 0.9
    thin: int = 4
    steps: float = 8.0

    def __post_init__(self):
        if not 0.0 < self.target_accept < 1.0:
            raise UserError(f"mclmc target_accept must be in (0, 1), got {self.target_accept}")
        if self.thin < 1:
            raise UserError(f"mclmc thin must be >= 1, got {self.thin}")
        if not self.steps >= 1.2:
            raise UserError(f"mclmc steps must be >= 1.2 (BlackJAX's tuner needs > 1.1), got {self.steps}")


def run_nuts(cfg, logdensity, init):
    import blackjax

    def one_chain(key, x0):
        kw, ks = jax.random.split(key)
        warm = blackjax.window_adaptation(blackjax.nuts, logdensity, target_acceptance_rate=cfg.target_accept,
                                          is_mass_matrix_diagonal=not dense(cfg, init.shape[1]),
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


def run_chees(cfg, logdensity, init):
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
        (state, params), winfo = warm.run(key, x0, 0.1, optax.adam(cfg.chees.learning_rate), n_warm_steps,
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


def run_mclmc(cfg, logdensity, init):
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
            rng_key=jax.random.split(key)[0], target=cfg.mclmc.target_accept, diagonal_preconditioning=True,
            target_num_integration_steps=cfg.mclmc.steps)
        return state, params, n_tune

    def sample(key, state, params):
        avg = params.L / params.step_size

        def step(st, k):
            st, info = kernel(k, st, logdensity, step_size=params.step_size,
                              inverse_mass_matrix=params.inverse_mass_matrix, integration_steps_params=(avg,))
            return st, (info.is_divergent, info.num_integration_steps, info.acceptance_rate)

        def draw(st, k):  # mclmc.thin proposals, keep the last state
            st, (dv, ns, ac) = jax.lax.scan(step, st, jax.random.split(k, cfg.mclmc.thin))
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
            "thin": cfg.mclmc.thin, "steps_per_proposal": cfg.mclmc.steps, "grads_per_step": grads_per_step,
            "step_size": np.asarray(params.step_size).tolist(), "L": np.asarray(params.L).tolist()}
    return SamplerRun(cfg.name, np.asarray(pos), np.asarray(ld), np.asarray(div, bool),
                      grads_per_step * int(jnp.sum(n_tune) + jnp.sum(nsteps)), t1 - t0, t2 - t1, info)
