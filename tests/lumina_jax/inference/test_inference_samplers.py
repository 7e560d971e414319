"""Every MCMC sampler behind ``--sampler`` against a correlated Gaussian of known moments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lumina_jax  # noqa: F401  (float64)
from lumina_jax.inference import diagnostics as diag
from lumina_jax.inference.sampling import EmceeOptions, MCLMCOptions, SamplerConfig, chain_count, run_sampler

MU = np.array([1.0, -2.0, 0.5, 3.0])
SD = np.array([0.5, 2.0, 1.0, 3.0])
CORR = np.array([[1.0, 0.6, 0.0, 0.0], [0.6, 1.0, -0.3, 0.0], [0.0, -0.3, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
COV = CORR * SD[:, None] * SD[None, :]
PREC = np.linalg.inv(COV)


def logdensity(z):
    d = z - jnp.asarray(MU)
    return -0.5 * d @ jnp.asarray(PREC) @ d


@pytest.mark.parametrize("name", ["nuts", "hmc", "blackjax-nuts", "blackjax-chees", "blackjax-mclmc", "emcee", "emcee-de"])
def test_sampler_recovers_a_correlated_gaussian(name):
    """Not preconditioned (scales 0.5-3, correlations 0.6 / -0.3): the draws' mean within
    0.3 sd and sd within 20 % of the truth, the correlation within 0.2, R-hat < 1.05 on
    unthinned chains of ESS >~ 100 (Monte-Carlo error of the mean ~ 0.1 sd)."""
    moves = "de" if name == "emcee-de" else "stretch"
    cfg = SamplerConfig(name=name.removesuffix("-de"), num_chains=2, num_warmup=300, num_samples=400, seed=4,
                        emcee=EmceeOptions(moves=moves))
    init = jnp.asarray(MU) + 0.5 * jax.random.normal(jax.random.PRNGKey(0), (chain_count(cfg), 4))
    run = run_sampler(cfg, logdensity, init)
    assert run.positions.ndim == 3 and run.positions.shape[2] == 4 and run.n_grad > 0
    x = run.positions.reshape(-1, 4)
    np.testing.assert_array_less(np.abs(x.mean(0) - MU) / SD, 0.3)
    np.testing.assert_allclose(x.std(0), SD, rtol=0.2)
    assert abs(np.corrcoef(x.T)[0, 1] - 0.6) < 0.2
    d = diag.summarize_run(run, [f"z{i}" for i in range(4)], run.positions)
    assert d["max_rhat"] < 1.05, d["max_rhat"]
    if name == "blackjax-chees":  # the adapted step size reaches its target (mean >= the harmonic mean targeted)
        assert run.info["mean_accept"] >= cfg.target_accept - 0.03, run.info


def test_mclmc_trajectory_length_below_the_tuner_floor_is_rejected():
    from lumina_jax.errors import UserError

    with pytest.raises(UserError, match="mclmc steps must be >= 1.2"):
        SamplerConfig(name="blackjax-mclmc", mclmc=MCLMCOptions(steps=1.0))


def test_target_acceptance_outside_0_1_is_rejected():
    from lumina_jax.errors import UserError

    with pytest.raises(UserError, match="target-accept must be in"):
        SamplerConfig(name="nuts", target_accept=1.5)


def test_chees_runs_at_least_16_chains_in_lockstep():
    """ChEES pools its adaptation over chains: ``--chains 4`` still runs 16, every chain takes
    the same (jittered) number of leapfrog steps per draw, and with warm-up + draws a power of
    2 (12 + 20) no draw is a zero-length trajectory (a Halton index with all bits zero)."""
    from lumina_jax.errors import UserError

    assert chain_count(SamplerConfig(name="blackjax-chees", num_chains=4)) == 16
    assert chain_count(SamplerConfig(name="blackjax-chees", num_chains=32)) == 32
    assert chain_count(SamplerConfig(name="nuts", num_chains=4)) == 4
    cfg = SamplerConfig(name="blackjax-chees", num_chains=4, num_warmup=12, num_samples=20, seed=1)
    init = jnp.asarray(MU) + jax.random.normal(jax.random.PRNGKey(2), (16, 4))
    run = run_sampler(cfg, logdensity, init)
    assert run.positions.shape == (16, 20, 4) and run.logdensity.shape == (16, 20) and run.diverging.shape == (16, 20)
    assert run.info["steps_equal_across_chains"] and run.n_grad >= 16 * 32
    moved = np.any(run.positions[:, 1:] != run.positions[:, :-1], axis=(0, 2))  # [draws - 1]: any chain moved
    assert moved.all(), np.flatnonzero(~moved)
    with pytest.raises(UserError, match="needs as many starting points"):
        run_sampler(cfg, logdensity, init[:4])


def test_run_preconditioned_gives_chees_16_distinct_laplace_starts(monkeypatch):
    """``run_preconditioned`` draws one Laplace start per chain that ChEES runs (16 for
    ``num_chains=4``), all distinct."""
    from lumina_jax.inference import precondition, sampling

    seen = {}

    def spy(cfg, ld, init):
        seen["init"] = np.asarray(init)
        return sampling.SamplerRun(cfg.name, np.zeros((init.shape[0], 10, 4)), np.zeros((init.shape[0], 10)),
                                   np.zeros((init.shape[0], 10), bool), 1, 0.0, 0.0, {})

    monkeypatch.setattr(precondition, "run_sampler", spy)
    cfg = SamplerConfig(name="blackjax-chees", num_chains=4)
    precondition.run_preconditioned(cfg, logdensity, jnp.asarray(MU), jax.random.PRNGKey(0))
    x0 = seen["init"]
    assert x0.shape == (16, 4) and len(np.unique(x0, axis=0)) == 16


@pytest.mark.parametrize("name", ["nuts", "hmc"])
def test_one_chain_runs_and_reports_no_rhat(name):
    """NumPyro takes one chain's start unbatched (``--chains 1`` once crashed after the MAP):
    the run keeps its chain axis, R-hat is unavailable (None) and does not count against
    convergence."""
    cfg = SamplerConfig(name=name, num_chains=1, num_warmup=100, num_samples=100, seed=1)
    run = run_sampler(cfg, logdensity, jnp.asarray(MU)[None])
    assert run.positions.shape == (1, 100, 4) and run.logdensity.shape == (1, 100) and run.diverging.shape == (1, 100)
    assert abs(run.positions[..., 0].mean() - MU[0]) < 0.5
    d = diag.summarize_run(run, [f"z{i}" for i in range(4)], run.positions)
    assert d["max_rhat"] is None and d["per_parameter"]["z0"]["rhat"] is None and d["min_ess_bulk"] > 5
    assert not any("R-hat" in p for p in diag.convergence_problems(d))
    assert diag.convergence_problems(dict(d, divergences=0, divergent_fraction=0.0)) == []
    assert diag.format_rhat(None) == "n/a (1 chain)" and diag.format_rhat(1.00234) == "1.0023"


@pytest.mark.parametrize("name,n_chains", [("nuts", 3), ("nuts", 1), ("hmc", 3)])
def test_numpyro_driver_reproduces_numpyro_mcmc(name, n_chains, capsys):
    """The chunked NumPyro driver (one compiled scan for warm-up and sampling) runs the same
    chains as ``numpyro.infer.MCMC`` (``warmup`` then ``run``, vectorised) with the same seed:
    the draws agree to float64 round-off, also when a phase is not a whole number of chunks
    (70 warm-up + 60 draws against chunks of 50); progress bars do not change them."""
    from numpyro.infer import HMC, MCMC, NUTS

    from lumina_jax.inference.sampling.numpyro import NUMPYRO_CHUNK, _jittered_hmc_class

    assert 70 % NUMPYRO_CHUNK and 60 % NUMPYRO_CHUNK
    cfg = SamplerConfig(name=name, num_chains=n_chains, num_warmup=70, num_samples=60, seed=5, progress=True)
    init = jnp.asarray(MU) + 0.5 * jax.random.normal(jax.random.PRNGKey(1), (n_chains, 4))
    run = run_sampler(cfg, logdensity, init)

    pot = lambda z: -logdensity(z)  # noqa: E731
    kernel = (NUTS(potential_fn=pot, dense_mass=True) if name == "nuts" else
              _jittered_hmc_class(HMC)(potential_fn=pot, dense_mass=True, trajectory_length=cfg.hmc.trajectory_length))
    mcmc = MCMC(kernel, num_warmup=70, num_samples=60, num_chains=n_chains, chain_method="vectorized",
                progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(5), init_params=init[0] if n_chains == 1 else init,
                extra_fields=("num_steps",), collect_warmup=True)
    n_warm = int(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"])))
    mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=("num_steps", "diverging", "potential_energy"))
    ref = np.asarray(mcmc.get_samples(group_by_chain=True))
    ex = mcmc.get_extra_fields(group_by_chain=True)
    assert run.positions.shape == ref.shape == (n_chains, 60, 4)
    np.testing.assert_allclose(run.positions, ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(run.logdensity, -np.asarray(ex["potential_energy"]), rtol=0, atol=1e-10)
    assert run.n_grad == n_warm + int(np.sum(np.asarray(ex["num_steps"])))
    assert "sampling" in capsys.readouterr().err  # the progress bar went to stderr
