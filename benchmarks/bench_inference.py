"""Sampler efficiency: minimum bulk ESS per second (and per gradient) of NumPyro NUTS and HMC, BlackJAX
NUTS, BlackJAX ChEES-HMC, BlackJAX adjusted MCLMC and emcee, with the same emulator, at stage 1 (15-D) and stage 3
(135-D: 128 active + 7 inactive fixed).

    python benchmarks/bench_inference.py                       # random-weight toy emulator
    python benchmarks/bench_inference.py --checkpoint CKPT1 --checkpoint3 CKPT3
    python benchmarks/bench_inference.py --checkpoint shipped --checkpoint3 shipped   # the shipped emulators
    python benchmarks/bench_inference.py --dims 15 --samplers nuts,emcee --quick
    # both stages as infer runs them, in one invocation (stage 1: the main job's problem)
    python benchmarks/bench_inference.py --checkpoint CKPT1 --checkpoint3 CKPT3 --stage1-mock main \
        --box-link config --samplers nuts,blackjax-nuts,blackjax-chees,emcee --samples 10000 \
        --emcee-moves de --emcee-steps 100000 --emcee-burn 0.2

Each problem (``--stage1-mock main``: stage 1 is instead the main job's, ``lumina-jax infer --stage 1``
without ``--observed``): a mock observation from the emulator at a random interior point of the box
(u in [0.25, 0.75]) with 1 % noise, fitted with the likelihood `lumina-jax infer` uses (the
checkpoint's correlated emulator error with its sigma held at the MAP (``--emulator-sigma``), stride 8,
a free systematic and scale); every sampler
runs exactly as in `infer`: from the same multi-start MAP, in the same Laplace-whitened
coordinates, chains started from Laplace draws.  ESS/s counts the total wall time (warmup +
sampling, JIT compilation and the Laplace Hessian included; the MAP search is left out for all);
the sampling-phase figure divides by the time after warmup (emcee: after burn-in) alone.
Every sampler, emcee included, samples in the coordinates `infer` gives it: the
profile-path shear along t_exp (``--ridge``, its fit counted as warm-up) on top of the whitening.
emcee's evaluations are log-density calls, the others' gradient calls.  Goal: NUTS >= 10x
emcee at 135-D with R-hat <= 1.01 for both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import lumina_jax  # noqa: E402,F401
from lumina_jax.inference import diagnostics as diag  # noqa: E402
from lumina_jax.inference.likelihood import make_likelihood_data  # noqa: E402
from lumina_jax.inference.density import (BOX_LINKS, EMULATOR_SIGMA_MODES, F_SYS_PRIORS, LikelihoodConfig,  # noqa: E402
                                          flatten_model, make_setup, z_names)
from lumina_jax.inference.optimize import find_map, hold_sigma_at_mode  # noqa: E402
from lumina_jax.inference.precondition import run_preconditioned  # noqa: E402
from lumina_jax.inference.ridge import ridge_coordinate  # noqa: E402
from lumina_jax.inference.sampling import EmceeOptions, SamplerConfig  # noqa: E402
from lumina_jax.observed import observation_from_model  # noqa: E402
from lumina_jax.inference.toy import RandomMLPEmulator  # noqa: E402
from lumina_jax.params import load_space  # noqa: E402


def problem(emu, seed=1, noise=0.01, stride=8, box_link="logit", used_bins_only=True, f_sys_prior="half-normal"):
    """(flat model, setup) of the mock; ``used_bins_only=False`` evaluates the emulator on its whole grid
    (as before ``Emulator.on_bins``; for the speed comparison of bench_likelihood)."""
    setup, data = mock_data(emu, seed=seed, noise=noise, stride=stride, box_link=box_link, f_sys_prior=f_sys_prior)
    fm = flatten_model(setup, emu.spectrum_and_sigma, data, on_bins=getattr(emu, "on_bins", None) if used_bins_only else None)
    return fm, setup


def mock_data(emu, seed=1, noise=0.01, stride=8, box_link="logit", f_sys_prior="half-normal"):
    """(setup, likelihood data) of the benchmark mock: the emulator at a random interior point of
    the box (u in [0.25, 0.75]) with ``noise`` per pixel, the ``infer`` likelihood at ``stride``."""
    sp = emu.space
    rng = np.random.default_rng(seed)
    setup = make_setup(sp, n_poly=0, box_link=box_link, f_sys_prior=f_sys_prior)
    truth = setup.base_theta()
    idx = setup.free_index
    truth[idx] = sp.lower[idx] + rng.uniform(0.25, 0.75, idx.size) * (sp.upper[idx] - sp.lower[idx])
    f = np.asarray(emu.spectrum(truth))
    obs = observation_from_model(emu.wavelength, f, emu.wavelength, emu.preprocess, noise_frac=noise, seed=seed)
    basis = getattr(emu, "error_basis", None)
    data = make_likelihood_data(obs.wavelength, obs.flux, obs.sigma, obs.mask, stride=stride,
                                emu_basis=None if basis is None else np.asarray(basis, float))
    return setup, data


def main_job_problem(emu, box_link="logit", emulator_sigma="fixed"):
    """(flat model, setup, likelihood data, MAP starts, emulator-sigma mode) of the main job,
    ``lumina-jax infer --stage 1`` without ``--observed``: the synthesizer mock at the config's SN 2011fe-like parameters, the
    config's likelihood (stride, correlated emulator error, priors), fitted with ``emu``."""
    from lumina_jax.workflows import infer as api
    from lumina_jax.workflows.fit import build_model

    req = api.InferRequest(stage=1, box_link=box_link, emulator_sigma=emulator_sigma)
    p = api.prepare(req, emulator=emu, log=lambda m: print("  " + m, flush=True))
    fm, data = build_model(p.problem)
    return fm, p.setup, data, p.sampler.map_starts, p.problem.likelihood.emulator_sigma


def bench(emu, samplers, *, chains, warmup, samples, emcee_steps, emcee_moves="stretch", emcee_burn=0.5, seed=0,
          target_accept=0.8, box_link="logit", f_sys_prior="half-normal", emulator_sigma="fixed", ridge="t_exp",
          mock="random"):
    on_bins = getattr(emu, "on_bins", None)
    if mock == "main":  # as run_fit: its MAP key, the config's f_sys prior and emulator sigma
        fm, setup, data, map_starts, emulator_sigma = main_job_problem(emu, box_link=box_link,
                                                                       emulator_sigma=emulator_sigma)
        map_key, f_sys_prior = jax.random.split(jax.random.PRNGKey(seed))[0], "config"
    else:
        setup, data = mock_data(emu, seed=seed + 1, box_link=box_link, f_sys_prior=f_sys_prior)
        fm = flatten_model(setup, emu.spectrum_and_sigma, data, on_bins=on_bins)
        map_starts, map_key = 32, jax.random.PRNGKey(seed)
    names = z_names(fm)
    ridge_index = ridge_coordinate(ridge, setup, names)  # a bad name stops before the MAP search
    t0 = time.perf_counter()
    z_map, ld, _, _ = find_map(fm, map_key, n_starts=map_starts)
    if emulator_sigma == "fixed":  # as infer: sigma held at the varying model's MAP, mode re-polished
        fm, z_map, _, ld, _, _ = hold_sigma_at_mode(fm, emu.spectrum_and_sigma, data, z_map, on_bins)
    print(f"  MAP log posterior {ld:.1f} ({time.perf_counter() - t0:.0f} s), n_z = {fm.n_z}, emulator sigma "
          f"{emulator_sigma}", flush=True)
    rows = []
    for name in samplers:
        cfg = SamplerConfig(name=name, num_chains=chains, num_warmup=warmup, num_samples=samples, seed=seed,
                            emcee=EmceeOptions(steps=emcee_steps, moves=emcee_moves, burn=emcee_burn),
                            target_accept=target_accept, ridge=ridge)
        run, pre = run_preconditioned(cfg, fm.logdensity, z_map, jax.random.PRNGKey(seed + 1), hessian=fm.hessian,
                                      ridge_index=ridge_index, value_and_grad=fm.value_and_grad)
        # ESS on the unconstrained coordinates (bulk ESS is invariant under the monotone maps to physical
        # units), the half-normal systematic as f_sys = |f_sys_signed| (as infer reports it)
        pos = run.positions.copy()
        if "f_sys_signed" in names:
            pos[..., names.index("f_sys_signed")] = np.abs(pos[..., names.index("f_sys_signed")])
        d = diag.summarize_run(run, names, pos)
        slow = min(d["per_parameter"], key=lambda n: d["per_parameter"][n]["ess_bulk"])
        rows.append({"sampler": name, "n_z": fm.n_z, "max_rhat": d["max_rhat"], "min_ess_bulk": d["min_ess_bulk"],
                     "wall_s": run.wall_s, "wall_warmup_s": run.wall_warmup_s, "wall_sampling_s": run.wall_sampling_s,
                     "n_grad": run.n_grad, "min_ess_bulk_per_s": d["min_ess_bulk_per_s"],
                     "min_ess_bulk_per_sampling_s": d["min_ess_bulk"] / max(run.wall_sampling_s, 1e-9),
                     "min_ess_bulk_per_grad": d["min_ess_bulk_per_grad"], "divergences": d["divergences"],
                     "slowest": slow, "mock": mock, "f_sys_prior": f_sys_prior, "emulator_sigma": emulator_sigma,
                     "ridge": pre.get("ridge"),
                     "info": {k: v for k, v in run.info.items() if k not in ("step_size", "L")}})
        r = rows[-1]
        print(f"  {name:15s} n_z={r['n_z']:3d}  R-hat {r['max_rhat']:.3f}  min ESS {r['min_ess_bulk']:8.1f}  "
              f"wall {r['wall_s']:7.1f} s ({r['wall_warmup_s']:.0f} warmup)  ESS/s {r['min_ess_bulk_per_s']:8.3f} "
              f"(sampling phase {r['min_ess_bulk_per_sampling_s']:.3f})  grads {r['n_grad']:9d}  "
              f"ESS/grad {r['min_ess_bulk_per_grad']:.2e}  div {r['divergences']}  slowest {slow}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="stage-1 emulator checkpoint, or 'shipped' (default: random-weight toy)")
    ap.add_argument("--checkpoint3", help="stage-3 emulator checkpoint for the 135-D run, or 'shipped' (the SN "
                    "2011fe chain's; default: toy)")
    ap.add_argument("--dims", default="15,135", help="which problems: 15, 135 or both")
    ap.add_argument("--samplers", default="nuts,hmc,blackjax-nuts,blackjax-chees,blackjax-mclmc,emcee")
    ap.add_argument("--chains", type=int, default=4, help="chains (blackjax-chees: at least 16; emcee: walkers "
                    "max(32, 2 n_z + 2))")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--emcee-steps", type=int, default=0, help="steps per walker (default 10 x (warmup+samples))")
    ap.add_argument("--emcee-moves", default="stretch", choices=["stretch", "de"],
                    help="emcee proposal: stretch (emcee default, the original pipeline's) or de (DE + snooker)")
    ap.add_argument("--emcee-burn", type=float, default=0.5, help="fraction of emcee's steps discarded as burn-in")
    ap.add_argument("--target-accept", type=float, default=0.8,
                    help="NumPyro and BlackJAX NUTS / HMC target acceptance (infer --target-accept; raise it when NUTS diverges)")
    ap.add_argument("--box-link", default="logit", choices=list(BOX_LINKS) + ["config"],
                    help="sampler coordinates of the box parameters (infer --box-link): logit(u) or w with u = Phi(w); "
                         "config: each stage's link from lumina_jax/configs/inference.yaml, as infer (logit at stage 1, probit "
                         "at 135-D)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the samplers and the MAP search; the mock (its point and noise) uses seed + 1")
    ap.add_argument("--f-sys-prior", default="half-normal", choices=list(F_SYS_PRIORS),
                    help="prior of the fractional systematic (infer: likelihood.f_sys_prior)")
    ap.add_argument("--emulator-sigma", default="fixed", choices=list(EMULATOR_SIGMA_MODES),
                    help="the emulator's sigma held at the MAP (fixed: infer's default) or "
                         "evaluated at every theta (varying)")
    ap.add_argument("--ridge", default="t_exp",
                    help="parameter whose profile path the sampler coordinates straighten (infer's sampler.ridge; "
                         "'none': off)")
    ap.add_argument("--stage1-mock", default="random", choices=["random", "main"],
                    help="the stage-1 problem. random: the emulator at a random interior point of the box (seed + "
                         "1), 1 %% noise (as at 135-D); main: the main job's problem, `lumina-jax infer --stage 1` "
                         "without --observed (the synthesizer mock at the config's SN 2011fe-like parameters, "
                         "infer's likelihood and f_sys prior from lumina_jax/configs/inference.yaml)")
    ap.add_argument("--quick", action="store_true", help="small settings for a smoke run")
    ap.add_argument("--json", help="write the rows to this JSON file")
    a = ap.parse_args(argv)
    if a.quick:
        a.warmup, a.samples = 200, 300
    samplers = a.samplers.split(",")
    print(f"bench_inference: jax {jax.__version__}, {os.cpu_count()} CPUs, device {jax.devices()[0].platform}")
    out = {}
    for dim in (int(x) for x in a.dims.split(",")):
        stage = 1 if dim == 15 else 3
        mock = a.stage1_mock if stage == 1 else "random"
        box_link = LikelihoodConfig().link(stage) if a.box_link == "config" else a.box_link
        ck = a.checkpoint if stage == 1 else a.checkpoint3
        if ck == "shipped":
            from lumina_jax.workflows.config import default_checkpoint

            ck = str(default_checkpoint(stage))
        if ck:
            from lumina_jax.emulator import load_emulator

            emu = load_emulator(ck)
            label = ck
        else:
            emu = RandomMLPEmulator.build(load_space(stage), seed=stage)
            label = "random-weight toy MLP"
        if a.ridge != "none" and a.ridge not in emu.space.names:
            ap.error(f"--ridge {a.ridge!r} is not a parameter of the stage-{stage} space (or 'none'); known: "
                     + ", ".join(emu.space.names[:15]))
        print(f"stage {stage} ({emu.space.dim}-D, {label}, {mock} mock, {box_link} box coordinates, "
              f"{a.f_sys_prior if mock == 'random' else 'config'} systematic prior, emulator sigma "
              f"{a.emulator_sigma}, ridge {a.ridge}):", flush=True)
        t = time.perf_counter()
        out[dim] = bench(emu, samplers, chains=a.chains, warmup=a.warmup, samples=a.samples,
                         emcee_steps=a.emcee_steps, emcee_moves=a.emcee_moves,
                         emcee_burn=a.emcee_burn, target_accept=a.target_accept, box_link=box_link,
                         seed=a.seed, f_sys_prior=a.f_sys_prior, emulator_sigma=a.emulator_sigma,
                         ridge=None if a.ridge == "none" else a.ridge, mock=mock)
        base = [r for r in out[dim] if r["sampler"] == "emcee"]
        if base:
            for r in out[dim]:
                r["speedup_vs_emcee"] = r["min_ess_bulk_per_s"] / max(base[0]["min_ess_bulk_per_s"], 1e-12)
                r["sampling_phase_speedup_vs_emcee"] = (r["min_ess_bulk_per_sampling_s"]
                                                        / max(base[0]["min_ess_bulk_per_sampling_s"], 1e-12))
            print("  speed-up vs emcee (min bulk ESS/s; sampling phase only): " + ", ".join(
                f"{r['sampler']} {r['speedup_vs_emcee']:.1f}x; {r['sampling_phase_speedup_vs_emcee']:.1f}x"
                for r in out[dim] if r["sampler"] != "emcee"))
        print(f"  ({time.perf_counter() - t:.0f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
