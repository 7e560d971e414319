"""Why gradient samplers need many leapfrog steps on an emulator posterior: the local curvature
of the benchmark mock's density at posterior draws, which part of the model makes it, and
whether a better global metric helps.

    python benchmarks/diagnose_geometry.py --checkpoint runs/pipeline/stage3/emulator.ckpt
    python benchmarks/diagnose_geometry.py --checkpoint runs/pipeline/stage2/emulator.ckpt --rewhiten

Same mock and likelihood as ``bench_inference.py`` (probit box coordinates by default).  In the
Laplace-whitened coordinates x of the samplers (z = z_MAP + L x) the curvature at the MAP is
the identity; this prints the largest and smallest eigenvalue of -Hessian(log density) in x at
``--draws`` NUTS draws (1 would mean a Gaussian posterior), for the model as it is, with the
emulator's sigma frozen at its MAP value (is the sigma head rough?) and with its flux frozen
(is the mean prediction rough?), the directions of the stiffest eigenvector, and the
eigenvalues of the posterior covariance of x.  ``--rewhiten`` also runs NUTS in coordinates
whitened by the pooled covariance of a 4 x (200 + 200) pilot run (a dense global metric).

It also describes the marginal of the slowest-mixing coordinate (lowest bulk ESS): its width
against the Laplace approximation's, skewness, excess kurtosis and quantiles in the unit box.
With ``--synth-config`` it asks whether that marginal's tail is the emulator's or the
physics': the log-likelihood of the same data with the synthesizer's spectrum (the emulator's
preprocessing and sigma) at the draws furthest out in the tail, against draws at the median.

    python benchmarks/diagnose_geometry.py --checkpoint CKPT --synth-config lumina_jax/configs/synth_campaign.yaml
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench_inference import mock_data  # noqa: E402
from lumina_jax.emulator import load_emulator  # noqa: E402
from lumina_jax.inference import diagnostics as diag  # noqa: E402
from lumina_jax.inference.likelihood import used_bins  # noqa: E402
from lumina_jax.inference.optimize import find_map
from lumina_jax.inference.density import flatten_model, z_names  # noqa: E402
from lumina_jax.inference.sampling import SamplerConfig, run_sampler  # noqa: E402
from lumina_jax.inference.precondition import laplace_factor


def nuts_in(ld, x0, seed, warmup, samples):
    return run_sampler(SamplerConfig(name="nuts", num_chains=x0.shape[0], num_warmup=warmup, num_samples=samples,
                                     seed=seed), ld, x0)


def summary_line(tag, run, zs, names):
    d = diag.summarize_run(run, names, zs)
    return (f"{tag}: R-hat {d['max_rhat']:.4f}, min bulk ESS {d['min_ess_bulk']:.0f}, {run.info['mean_steps']:.1f} "
            f"leapfrog steps per draw at step size {np.mean(run.info['step_size']):.3f}, ESS per gradient "
            f"{d['min_ess_bulk'] / run.n_grad:.2e}")


def slowest_marginal(fm, emu, data, zs, names, lf, synth_config=None, n_tail=12):
    """Print the shape of the slowest coordinate's marginal and (with ``synth_config``) the
    change of the emulator's and the synthesizer's log-likelihood from its median to its tail."""
    from scipy.stats import kurtosis, skew

    zs = zs.copy()  # the half-normal systematic as f_sys = |f_sys_signed|, as bench_inference reports it
    if "f_sys_signed" in names:
        zs[..., names.index("f_sys_signed")] = np.abs(zs[..., names.index("f_sys_signed")])
    ess = diag.chain_stats(zs)["ess_bulk"]
    i = int(np.nanargmin(ess))
    v = zs[..., i].ravel()
    lap = float(np.sqrt(np.sum(lf[i] ** 2)))
    print(f"slowest coordinate {names[i]}: bulk ESS {ess[i]:.0f} (median of all {np.nanmedian(ess):.0f}); "
          f"sd {v.std():.3g} in sampler coordinates against the Laplace sd {lap:.3g}; skewness {skew(v):.2f}, "
          f"excess kurtosis {kurtosis(v):.1f}")
    flat = zs.reshape(-1, zs.shape[-1])
    if not names[i].startswith("u:"):
        return
    j = [n for n in names if n.startswith("u:")].index(names[i])
    u = np.asarray(jax.vmap(lambda z: fm.constrain(z)["u"][j])(jnp.asarray(flat)))
    print(f"  unit-box quantiles 1/10/50/90/99 %: {np.round(np.quantile(u, [0.01, 0.1, 0.5, 0.9, 0.99]), 4).tolist()}")
    if synth_config is None:
        return
    from lumina_jax.workflows.checks import _synth_path
    from lumina_jax.synth import Synthesizer

    # the whole grid (the synthesizer has no on_bins); the two flat models differ only in the mean
    syn = _synth_path(emu, Synthesizer.default(emu.space, str(synth_config)))
    ll_emu = jax.jit(flatten_model(fm.setup, emu.spectrum_and_sigma, data).loglikelihood)
    ll_syn = jax.jit(flatten_model(fm.setup, syn, data).loglikelihood)
    order = np.argsort(v)
    mid = order[len(order) // 2 - n_tail // 2: len(order) // 2 + n_tail // 2]
    tail = order[:n_tail] if skew(v) < 0 else order[-n_tail:]
    both = {k: (float(ll_emu(jnp.asarray(flat[k]))), float(ll_syn(jnp.asarray(flat[k])))) for k in np.r_[mid, tail]}
    e0, s0 = np.median([both[k][0] for k in mid]), np.median([both[k][1] for k in mid])
    de = [both[k][0] - e0 for k in tail]
    ds = [both[k][1] - s0 for k in tail]
    print(f"  the {n_tail} draws furthest out in its tail (u {np.round(np.quantile(u[tail], [0, 1]), 4).tolist()}), "
          f"log-likelihood minus its median over {n_tail} median draws: emulator median {np.median(de):+.1f} "
          f"(range {min(de):+.1f} .. {max(de):+.1f}), synthesizer {np.median(ds):+.1f} "
          f"(range {min(ds):+.1f} .. {max(ds):+.1f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="emulator checkpoint (any stage)")
    ap.add_argument("--box-link", default="probit", choices=["logit", "probit"])
    ap.add_argument("--seed", type=int, default=0, help="as bench_inference --seed (the mock uses seed + 1)")
    ap.add_argument("--draws", type=int, default=8, help="posterior draws at which the Hessian is evaluated")
    ap.add_argument("--rewhiten", action="store_true", help="also run NUTS with the pooled pilot covariance as metric")
    ap.add_argument("--f-sys-prior", default="half-normal", choices=["half-normal", "log-uniform"],
                    help="prior of the fractional systematic (bench_inference --f-sys-prior)")
    ap.add_argument("--synth-config", type=Path, default=None,
                    help="synthesizer YAML: compare the emulator's and the physics' log-likelihood along the "
                         "slowest coordinate's tail (the emulator's training campaigns: lumina_jax/configs/synth_campaign.yaml)")
    a = ap.parse_args(argv)
    emu = load_emulator(a.checkpoint)
    setup, data = mock_data(emu, seed=a.seed + 1, box_link=a.box_link, f_sys_prior=a.f_sys_prior)
    fm = flatten_model(setup, emu.spectrum_and_sigma, data, on_bins=emu.on_bins)
    names = z_names(fm)  # the flat vector's order (nuisances first), not the box parameters' order
    t = time.perf_counter()
    z_map, ld_map, _, _ = find_map(fm, jax.random.PRNGKey(a.seed))
    print(f"{emu.space.dim}-D mock (n_z {fm.n_z}, {a.box_link}): MAP log density {ld_map:.1f} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    lf = np.asarray(laplace_factor(fm.logdensity, z_map))
    z_map = np.asarray(z_map)
    x0 = jax.random.normal(jax.random.PRNGKey(a.seed + 1), (4, fm.n_z))
    run = nuts_in(lambda x: fm.logdensity(z_map + lf @ x), x0, a.seed, 500, 1000)
    zs = z_map[None, None] + np.einsum("ij,cdj->cdi", lf, run.positions)
    print(summary_line("NUTS, Laplace metric", run, zs, names), flush=True)
    xs = run.positions.reshape(-1, fm.n_z)
    ev = np.linalg.eigvalsh(np.cov(xs.T))
    print(f"posterior covariance of the Laplace-whitened x: eigenvalues {ev.min():.2f} .. {ev.max():.1f} "
          f"(median {np.median(ev):.2f}; 1 for a Gaussian posterior)")
    slowest_marginal(fm, emu, data, zs, names, lf, a.synth_config)

    # the same density with the emulator's sigma or its flux frozen at the MAP
    theta_map = fm.theta(jnp.asarray(z_map))
    rows = used_bins(data)
    model = emu.on_bins(rows)
    f_map, s_map = model(theta_map)
    variants = {"as it is": fm,
                "sigma frozen at the MAP": flatten_model(setup, emu.spectrum_and_sigma, data,
                                                         on_bins=lambda r: lambda th: (model(th)[0], s_map)),
                "flux frozen at the MAP": flatten_model(setup, emu.spectrum_and_sigma, data,
                                                        on_bins=lambda r: lambda th: (f_map, model(th)[1]))}
    pick = np.random.default_rng(a.seed).choice(xs.shape[0], a.draws, replace=False)
    print(f"-Hessian of the log density in x at {a.draws} posterior draws (at the MAP: the identity):")
    for tag, f in variants.items():
        hess = jax.jit(jax.hessian(lambda x, f=f: f.logdensity(jnp.asarray(z_map) + jnp.asarray(lf) @ x)))
        top, bottom, dirs = [], [], []
        for k in pick:
            h = -np.asarray(hess(jnp.asarray(xs[k])))
            e, v = np.linalg.eigh(0.5 * (h + h.T))
            top.append(e[-1])
            bottom.append(e[0])
            zdir = lf @ v[:, -1]
            dirs.append(names[int(np.argmax(np.abs(zdir)))])
        print(f"  {tag:24s} largest eigenvalue {np.round(top, 1).tolist()}, smallest {np.round(bottom, 2).tolist()}")
        if tag == "as it is":
            print(f"  {'':24s} stiffest direction's largest component: {dirs}")
    if a.rewhiten:
        pilot = nuts_in(lambda x: fm.logdensity(z_map + lf @ x), x0, a.seed + 7, 200, 200)
        xp = pilot.positions.reshape(-1, fm.n_z)
        n = xp.shape[0]
        cov = (n / (n + 5.0)) * np.cov(xp.T) + (5.0 / (n + 5.0)) * np.eye(fm.n_z)  # shrunk towards Laplace
        ch = np.linalg.cholesky(cov)
        centre = z_map + lf @ xp.mean(0)
        l2 = lf @ ch
        y0 = np.linalg.solve(ch, (pilot.positions[:, -1, :] - xp.mean(0)).T).T
        run2 = nuts_in(lambda y: fm.logdensity(centre + l2 @ y), jnp.asarray(y0), a.seed + 3, 500, 1000)
        zs2 = centre[None, None] + np.einsum("ij,cdj->cdi", l2, run2.positions)
        print(summary_line(f"NUTS, pooled pilot covariance as metric (pilot {pilot.wall_s:.0f} s)", run2, zs2, names))


if __name__ == "__main__":
    main()
