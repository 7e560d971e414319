"""``lumina-jax infer | plot | check | pipeline``: Bayesian inference through the emulator."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

from lumina_jax.cli import _interrupt
from lumina_jax.cli._output import check_out_dir, check_out_file, check_plot_path, dumps_json
from lumina_jax.errors import UserError
from lumina_jax.workflows.chaining import DEFAULT_RELAX


def _echo(json_out: bool):
    def log(msg: str) -> None:
        typer.echo(msg, err=json_out)
    return log


def _sampler_cfg(config, sampler, chains, warmup, samples, seed, target_accept, dense, progress, ns_live=None,
                 emcee_moves=None, ridge=None):
    """The run's :class:`SamplerConfig`: the inference config's ``sampler`` section (``config``: a
    YAML path or None for the shipped one), with the flags that are not None on top (``ridge``:
    a parameter name, or ``none`` to switch the config's ridge off)."""
    import dataclasses

    from lumina_jax.workflows.config import load_inference_config, ridge_name, sampler_config

    base = load_inference_config(config).sampler
    cfg = sampler_config(base, name=sampler, num_chains=chains, num_warmup=warmup, num_samples=samples, seed=seed,
                         target_accept=target_accept, dense_mass=dense, progress=progress,
                         nested=None if ns_live is None else dataclasses.replace(base.nested, live=ns_live),
                         emcee=None if emcee_moves is None else dataclasses.replace(base.emcee, moves=emcee_moves))
    if ridge is None:  # flag absent: the config's choice
        return cfg
    try:
        return dataclasses.replace(cfg, ridge=ridge_name(ridge))
    except ValueError:
        raise UserError(f"--ridge must be a parameter name (e.g. t_exp) or none, got {ridge!r}") from None


def infer(
    stage: int = typer.Option(1, "--stage", help="Stage to fit (1: 15-D, 2: 63-D, 3: 135-D)."),
    observed: Optional[Path] = typer.Option(None, "--observed", help="Observed spectrum (CSV/ASCII/FITS). "
                                            "Without it: a synthesizer mock at SN 2011fe-like parameters."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Emulator checkpoint (default: the "
                                              "shipped stage-1 one)."),
    from_dir: Optional[Path] = typer.Option(None, "--from", help="Previous stage's results dir: sample its "
                                            "box (--relax), fix inactive parameters at its best fit."),
    relax: str = typer.Option(DEFAULT_RELAX, "--relax", help="Box around the previous fit: 'margin' (+-10 % of "
                              "the best fit) or 'union' (its hull with the fit's central 99.7 % interval); "
                              "the emulator must have been trained in that box."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results directory (default results/stage{N}); one "
                                       "that exists and is not empty needs --force."),
    force: bool = typer.Option(False, "--force", help="Overwrite the results in an existing --out directory."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="nuts | hmc | blackjax-nuts | blackjax-chees | "
                                          "blackjax-mclmc | emcee | blackjax-nss (nested sampling: also the evidence). "
                                          "Default: config sampler.name (nuts)."),
    chains: Optional[int] = typer.Option(None, "--chains", help="Chains (default: config sampler.num_chains, 4; 1: no "
                                         "R-hat; emcee: ignored, walkers = max(32, 2 dim + 2); blackjax-chees: raised "
                                         "to 16 when fewer; blackjax-nss: independent nested-sampling runs)."),
    ns_live: Optional[int] = typer.Option(None, "--ns-live", help="Live points per nested-sampling run "
                                          "(blackjax-nss; default: config sampler.nested.live, 300)."),
    emcee_moves: Optional[str] = typer.Option(None, "--emcee-moves", help="emcee proposal: stretch (emcee's default, "
                                              "the original pipeline's) or de (differential evolution 0.8 + snooker "
                                              "0.2).  Default: config sampler.emcee.moves (stretch)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Warmup / adaptation steps per chain (default: "
                                         "config sampler.num_warmup, 500)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Draws per chain (default: config "
                                          "sampler.num_samples, 1000)."),
    seed: int = typer.Option(0, "--seed"),
    target_accept: Optional[float] = typer.Option(None, "--target-accept", help="Target acceptance of the step-size "
                                                  "adaptation (nuts, hmc, blackjax-nuts, blackjax-chees); raise it "
                                                  "when a fit diverges.  Default: config sampler.target_accept (0.8)."),
    dense: Optional[bool] = typer.Option(None, "--dense/--diag", help="Dense or diagonal mass matrix "
                                         "(default: config sampler.dense_mass; null: dense up to 40 dimensions)."),
    box_link: Optional[str] = typer.Option(None, "--box-link", help="Unconstrained coordinates of the box "
                                           "parameters: logit or probit (u = Phi(w), w ~ N(0, 1)); same prior and "
                                           "posterior, different geometry for the sampler.  Default: config "
                                           "likelihood.box_link, logit at stage 1 and probit at stages 2-3."),
    ridge: Optional[str] = typer.Option(None, "--ridge", help="Straighten the posterior's curved ridge along this "
                                        "parameter before sampling (exact unit-Jacobian shear along its profile "
                                        "path; docs/inference.md), or none.  Default: config sampler.ridge (t_exp: "
                                        "the homologous t_exp / L / rho_0 degeneracy)."),
    npe: Optional[Path] = typer.Option(None, "--npe", help="NPE checkpoint of --sampler npe / --init npe (default: "
                                       "the stage's shipped one, lumina_jax/checkpoints/stage1_npe.h5; docs/npe.md)."),
    init: str = typer.Option("map", "--init", help="Start of the MCMC samplers: map (multi-start MAP search) or npe "
                             "(the MAP search climbs from the amortised posterior's 8 best draws)."),
    emulator_sigma: Optional[str] = typer.Option(None, "--emulator-sigma", help="varying (the emulator's sigma at "
                                                 "every theta) or fixed (its value at the MAP, held while sampling). "
                                                 "Default: config likelihood.emulator_sigma."),
    prior: List[str] = typer.Option([], "--prior", help="Informative prior NAME=MEAN,SD (repeatable), "
                                    "e.g. --prior t_exp=18,1"),
    n_poly: Optional[int] = typer.Option(None, "--n-poly", help="Order of the multiplicative Legendre warp."),
    redshift: Optional[float] = typer.Option(None, "--redshift", help="Heliocentric redshift of the data."),
    ebv_mw: Optional[float] = typer.Option(None, "--ebv-mw", help="Milky-Way E(B-V) to correct (F99, R_V=3.1)."),
    ebv_host: Optional[float] = typer.Option(None, "--ebv-host", help="Host E(B-V) to correct (rest frame)."),
    window: Optional[str] = typer.Option(None, "--window", help="Fitted rest-frame range LO,HI in Angstrom."),
    telluric: Optional[bool] = typer.Option(None, "--telluric/--no-telluric", help="Mask O2 A and B bands."),
    wave_unit: Optional[str] = typer.Option(None, "--wave-unit", help="Override the wavelength unit."),
    flux_unit: Optional[str] = typer.Option(None, "--flux-unit", help="Override the flux unit."),
    mock_noise: Optional[float] = typer.Option(None, "--mock-noise", help="Noise of the mock (fraction of flux, > 0; "
                                               "default: config mock.noise_frac)."),
    allow_unconverged: bool = typer.Option(False, "--allow-unconverged", help="Exit 0 even if R-hat > 1.01 or "
                                           "divergences > 1 %."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the plots into the results dir."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json to stdout."),
    config: Optional[Path] = typer.Option(None, "--config", help="Inference YAML overriding the defaults (`lumina-jax config show` prints them all)."),
) -> None:
    """Fit a spectrum (or the SN 2011fe-like synthesizer mock) through the emulator; write RESULTS_DIR."""
    from lumina_jax.inference import diagnostics
    from lumina_jax.workflows import infer as api
    from lumina_jax.workflows.config import parse_prior, parse_window

    log = _echo(json_out)
    if mock_noise is not None and not (math.isfinite(mock_noise) and mock_noise > 0):
        raise UserError(f"--mock-noise must be a finite fraction of the flux > 0, got {mock_noise}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    out_dir = api.results_dir(api.InferRequest(stage=stage, out=out))
    _check_results_dir(out_dir, force)
    _interrupt.kept(f"no results written ({out_dir} {'unchanged' if out_dir.exists() else 'not created'})")
    req = api.InferRequest(
        stage=stage, observed=observed, checkpoint=checkpoint, previous=from_dir, relax=relax, out=out,
        sampler=_with_npe(_sampler_cfg(config, sampler, chains, warmup, samples, seed, target_accept, dense,
                                       not json_out, ns_live, emcee_moves, ridge), npe, init),
        priors=dict(parse_prior(p) for p in prior), n_poly=n_poly, redshift=redshift, ebv_mw=ebv_mw,
        ebv_host=ebv_host, window=parse_window(window), telluric=telluric, mock_noise=mock_noise,
        config_path=config, wave_unit=wave_unit, flux_unit=flux_unit, box_link=box_link,
        emulator_sigma=_emulator_sigma_option(emulator_sigma))
    res, out_dir = api.infer(req, log=log,
                             write_guard=_interrupt.critical)
    s = res.summary
    if plots:
        _interrupt.kept(f"results written to {out_dir}; plots not made (make them with `lumina-jax plot {out_dir}`)")
        _plots(out_dir, s, log)
    _interrupt.kept(f"results{' and plots' if plots else ''} written to {out_dir}")
    d = s["diagnostics"]
    log(f"{d['sampler']}: max R-hat {diagnostics.format_rhat(d['max_rhat'])}, min bulk ESS {d['min_ess_bulk']:.0f}, "
        f"min tail ESS {d['min_ess_tail']:.0f}, divergences {d['divergences']}, {d['wall_warmup_s'] + d['wall_sampling_s']:.1f} s "
        f"({d['min_ess_bulk_per_s']:.2f} ESS/s); residual RMS {s['residual_rms']['value']:.4f}")
    if s.get("evidence"):
        ev = s["evidence"]
        log(f"log evidence {ev['log_evidence']:.3f} +- {ev['log_evidence_sd']:.3f} "
            f"({len(ev['runs'])} nested-sampling runs: " + ", ".join(f"{r['log_evidence']:.2f}" for r in ev['runs']) + ")")
    if "truth_recovery" in s:
        tr = s["truth_recovery"]
        log(f"mock truth inside the 95 % intervals: {sum(c['in95'] for c in tr['per_parameter'].values())}"
            f"/{len(tr['per_parameter'])}")
    log(f"results: {out_dir}")
    if json_out:
        typer.echo(dumps_json(s, indent=1))
    if s["problems"]:
        msg = "not converged: " + "; ".join(s["problems"])
        if allow_unconverged:
            log("warning: " + msg)
        else:
            typer.secho(f"error: {msg} ({diagnostics.remedy(s['problems'], req.sampler.name)})", err=True,
                        fg=typer.colors.RED)
            raise typer.Exit(3)


def _with_npe(cfg, npe: Optional[Path], init: str):
    """``cfg`` with the amortised posterior's options (``--npe``, ``--init``), checked."""
    import dataclasses

    if init not in ("map", "npe"):
        raise UserError(f"--init must be map or npe, got {init!r}")
    if npe is not None and not npe.is_file():
        raise UserError(f"--npe: NPE checkpoint not found: {npe}")
    if npe is not None and cfg.name != "npe" and init != "npe":
        raise UserError("--npe is read by --sampler npe or --init npe only")
    if init == "npe" and cfg.name in ("npe", "blackjax-nss"):
        raise UserError(f"--init npe starts an MCMC sampler; --sampler {cfg.name} has no start to set")
    return dataclasses.replace(cfg, npe=None if npe is None else str(npe), init=init)


def _check_results_dir(path: Path, force: bool) -> None:
    """A results directory ``infer`` may write: new, empty, or ``--force``d (never a file), and
    writable -- checked before any work, so that a fit is never lost to an unwritable --out."""
    check_out_dir(path, force=force, option="--out", what="results",
                  hint="pass --force to overwrite its results or choose another --out")


def _plots(out_dir, summary, log, checkpoint=None):
    from lumina_jax.workflows.plots import plot_results

    files = plot_results(out_dir, summary, checkpoint=checkpoint, log=log)
    log("plots: " + ", ".join(f.name for f in files))


def plot(
    results_dir: Path = typer.Argument(..., help="A results directory written by `lumina-jax infer`."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Emulator (default: the one recorded)."),
) -> None:
    """Corner, spectrum fit with posterior-predictive bands, trace/rank, synthesizer vs emulator."""
    from lumina_jax.workflows.results import load_results

    summary, _ = load_results(results_dir)
    check_out_dir(results_dir, force=True, option="RESULTS", what="plots")
    _interrupt.kept(f"the results in {results_dir} are unchanged; some plots may be missing")
    _plots(results_dir, summary, typer.echo, checkpoint)


def chain_report_cmd(
    results: List[Path] = typer.Argument(..., help="Results directories of the stages, in order (e.g. the "
                                         "pipeline's WORKDIR/stage{1,2,3}/results)."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Write the fits and residuals of every stage "
                                          "into this PNG."),
    abundance: Optional[Path] = typer.Option(None, "--abundance", help="Write the last stage's abundance "
                                             "profile into this PNG."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing figures."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """A chain of fits at a glance: residual RMS, convergence and derived masses per stage."""
    from lumina_jax.workflows import plots
    from lumina_jax.workflows.results import load_results

    for f, opt in ((figure, "--figure"), (abundance, "--abundance")):
        if f is not None:
            check_plot_path(f, option=opt, force=force)
    rep = plots.chain_report(results)
    if figure is not None:
        plots.chain_plot(results, figure)
    if abundance is not None:
        summary, idata = load_results(results[-1])
        plots.abundance_plot(summary, idata, abundance)
    if json_out:
        typer.echo(dumps_json(rep, indent=1))
        return
    for r in rep["stages"]:
        m = r["derived"]
        masses = ", ".join(f"{k} {m[k]['median']:.3f} [{m[k]['q16']:.3f}, {m[k]['q84']:.3f}]"
                           for k in ("M_total", "M_56Ni_0", "M_Si") if k in m)
        typer.echo(f"stage {r['stage']} ({r['n_free']} free): RMS {r['residual_rms']:.4f} over "
                   f"{r['rms_band_angstrom'][0]:.0f}-{r['rms_band_angstrom'][1]:.0f} A, R-hat "
                   f"{r['max_rhat'] if r['max_rhat'] is None else round(r['max_rhat'], 4)}, divergences "
                   f"{r['divergences']}" + (f"; Msun above the photosphere: {masses}" if masses else ""))
    for f in (figure, abundance):
        if f is not None:
            typer.echo(f"wrote {f}")


check_app = typer.Typer(help="Posterior checks against the physics (coverage, gradients, posterior predictive).",
                        no_args_is_help=True)


def _emulator_sigma_option(value: str | None) -> str | None:
    from lumina_jax.workflows.config import check_emulator_sigma

    return check_emulator_sigma(value, "--emulator-sigma")


@check_app.command("coverage")
def check_coverage(
    stage: int = typer.Option(1, "--stage"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint"),
    n: int = typer.Option(50, "--n", help="Number of injections."),
    noise: float = typer.Option(0.02, "--noise", help="Injected noise, fraction of the flux per pixel."),
    sampler: str = typer.Option("nuts", "--sampler", help="Sampler per injection (as in infer)."),
    warmup: int = typer.Option(300, "--warmup", help="Warm-up steps per chain."),
    samples: int = typer.Option(300, "--samples", help="Draws per chain."),
    chains: int = typer.Option(4, "--chains", help="Chains per injection (>= 2 gives a per-injection R-hat; blackjax-chees: raised to 16 when fewer)."),
    map_starts: int = typer.Option(32, "--map-starts", help="Adam starts of the MAP search per injection (as infer)."),
    seed: int = typer.Option(0, "--seed"),
    simulator: str = typer.Option("synth", "--simulator", help="synth (default) or emulator (self-consistency)."),
    synth_config: Optional[Path] = typer.Option(None, "--synth-config",
                                                help="synthesizer YAML of the injections (default: "
                                                "lumina_jax/configs/synth_campaign.yaml, the setting the shipped "
                                                "emulators' training campaigns used)."),
    out: Optional[Path] = typer.Option(None, "--out", help="JSON file written after every injection; an existing "
                                       "file from the same settings is resumed."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG: per-parameter coverage and the P-P plot of the "
                                        "truths' posterior quantiles."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/M: fit only injections i with i mod M == K (run M "
                                        "shards in parallel, each with its own --out, then --merge them)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Fit the injections on the Dask cluster "
                                            "whose scheduler is at ADDRESS (one shard per worker thread; needs "
                                            "pip install -e .[cluster]; --out on disk the workers share)."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Fit the injections on a Dask cluster started "
                                          "here: local[:N] (N worker processes, default 2), slurm or pbs (--cluster-config); "
                                          "one shard per worker thread, merged at the end."),
    cluster_config: Optional[Path] = typer.Option(None, "--cluster-config", help="YAML of --cluster slurm|pbs "
                                                  "(see docs/campaigns.md)."),
    merge: list[Path] = typer.Option([], "--merge", help="Coverage files of shards of this run (same settings) "
                                     "whose injections count as done; repeatable."),
    emulator_sigma: Optional[str] = typer.Option(None, "--emulator-sigma", help="varying or fixed (as infer; "
                                                 "default: config likelihood.emulator_sigma)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Inference YAML overriding the defaults (`lumina-jax config show` prints them all)."),
    json_out: bool = typer.Option(False, "--json"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --plot file."),
) -> None:
    """Injection-recovery: prior draws simulated by the synthesizer, inferred with the emulator.

    Every injection is fitted exactly like `lumina-jax infer` (multi-start MAP, Laplace
    preconditioning, NUTS); the output is the fraction of 68 % / 95 % intervals that contain
    the truth, per parameter and on average.  With --out the run can be interrupted and resumed.
    On several cores: `--shard 0/2 --out a.json` and `--shard 1/2 --out b.json` in parallel,
    then `--merge a.json --merge b.json --out all.json` for the full report; or let
    `--cluster local:N` (or --scheduler / --cluster slurm|pbs) run and merge the shards."""
    from lumina_jax.workflows import checks
    from lumina_jax.workflows.coverage import CoverageRun, read_coverage, run_coverage

    if n < 1 or map_starts < 1:
        raise UserError("--n and --map-starts must be >= 1")
    if out is not None:  # an existing file of the same run is resumed (checked in the workflow)
        check_out_file(out, force=True, inputs=merge, option="--out")
        if out.exists():
            read_coverage(out)
    for path in merge:
        read_coverage(path)
    check_plot_path(plot, force=force, inputs=(out, *merge))
    _interrupt.kept(f"finished injections are saved in {out}: run the same command again to continue"
                    if out is not None else "nothing saved (without --out no injection is kept)")
    _emulator_sigma_option(emulator_sigma)
    if not (math.isfinite(noise) and noise > 0):
        raise UserError(f"--noise must be a finite fraction of the flux > 0, got {noise}")
    if simulator not in ("synth", "emulator"):
        raise UserError("--simulator must be synth or emulator")
    shard_km = None
    if shard is not None:
        try:
            k_s, m_s = (int(x) for x in shard.split("/"))
        except ValueError:
            raise UserError(f"--shard must look like K/M (e.g. 0/2), got {shard!r}") from None
        if not (m_s >= 1 and 0 <= k_s < m_s):
            raise UserError(f"--shard K/M needs 0 <= K < M, got {shard!r}")
        shard_km = (k_s, m_s)
    fan = None
    if scheduler is not None or cluster is not None or cluster_config is not None:
        if shard is not None:
            raise UserError("--shard runs one shard here; with --cluster / --scheduler the shards are made for you")
        from runners.cluster import parse_cluster

        fan = parse_cluster(scheduler, cluster, cluster_config)
    scfg = _sampler_cfg(config, sampler, chains, warmup, samples, seed, None, None, False)
    log = (lambda m: typer.echo(m, err=True)) if json_out else typer.echo
    run = CoverageRun(stage=stage, n=n, noise=noise, sampler_name=sampler, warmup=warmup, samples=samples,
                      chains=chains, map_starts=map_starts, seed=seed, simulator=simulator, checkpoint=checkpoint,
                      synth_config=synth_config, emulator_sigma=emulator_sigma, config=config, out=out,
                      shard=shard_km, merge=tuple(merge))
    res, free = run_coverage(run, scfg, cluster=fan, log=log, write_guard=_interrupt.critical)
    if plot is not None:
        checks.plot_coverage(res, free, plot)
        log(f"plot: {plot}")
    if json_out:
        typer.echo(dumps_json(res, indent=1))
    else:
        for name, v in res["per_parameter"].items():
            ks = v.get("truth_quantile_ks_pvalue")
            typer.echo(f"{name:>20s}  in68 {v['in68']:.2f}  in95 {v['in95']:.2f}"
                       + (f"  truth-quantile KS p {ks:.3f}" if ks is not None else ""))

        def pm(key):
            se, z = res.get(f"mean_{key}_se"), res.get(f"mean_{key}_z")
            return (f"{res[f'mean_{key}']:.3f}" + (f" +- {se:.3f} ({z:+.1f} se from nominal {checks.NOMINAL[key]:.3f})"
                                                   if se else ""))

        typer.echo(f"mean over parameters: in68 {pm('in68')} (target 0.60-0.76), in95 {pm('in95')}")
        if res.get("max_rhat_median") is not None:
            typer.echo(f"per-injection max R-hat: median {res['max_rhat_median']:.3f}, "
                       f"{res['frac_injections_rhat_le_1.01']:.0%} of injections <= 1.01; "
                       f"divergent fraction {res['divergent_fraction']:.4f}; {res['wall_s']:.0f} s")
            if res.get("mean_in68_converged") is not None:
                typer.echo(f"over the converged injections only: in68 {res['mean_in68_converged']:.3f}, "
                           f"in95 {res['mean_in95_converged']:.3f}")
        rel = res.get("relaxation")
        if rel is not None:
            line = (f"next stage's truth inside the +-10 % box of the fit: {rel['all_inside_margin']:.0%} of "
                    f"{rel['n_injections']} injections (all parameters at once)")
            if rel.get("all_inside_union") is not None:
                line += (f"; inside its union with the {rel['union_mass']:.1%} posterior interval: "
                         f"{rel['all_inside_union']:.0%} (median width {rel['union_width_ratio_median']:.2f}x)")
            typer.echo(line)
            worst = sorted(rel["per_parameter"].items(), key=lambda kv: kv[1]["margin"])[:5]
            typer.echo("  most often outside the +-10 % box: "
                       + ", ".join(f"{n} {v['margin']:.0%}" for n, v in worst))


@check_app.command("gradient")
def check_gradient(
    results_dir: Path = typer.Argument(...),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint"),
    draws: int = typer.Option(8, "--draws", help="Also compare at this many posterior draws (0: the mode only)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Emulator vs synthesizer gradient of the log-likelihood at the posterior mode and at draws.

    At the mode the emulator's gradient is ~0 by construction (it is the emulator's mode): the
    comparison there says how far the physics would move the mode.  At posterior draws both
    gradients are large and their cosine measures the emulator's slopes."""
    import numpy as np

    from lumina_jax.workflows import checks
    from lumina_jax.workflows.results import full_theta_draws, load_fit

    if draws < 0:
        raise UserError(f"--draws must be >= 0, got {draws}")
    summary, idata, setup, data, wave, nuis, emu, synth = load_fit(results_dir, checkpoint)
    theta = np.asarray(idata.constant_data["theta_best"])
    # a fit made with the emulator's sigma fixed: its likelihood held sigma at the reference point
    lk = summary["likelihood"]
    ref = lk.get("emulator_sigma_reference") if lk.get("emulator_sigma") == "fixed" else None
    theta_sigma = None if ref is None else np.asarray(setup.space.from_dict(ref), float)
    res = checks.gradient_agreement(setup, emu, synth, data, theta, nuis, theta_sigma=theta_sigma)
    if draws:
        th, nd = full_theta_draws(summary, idata, draws)
        for k in ("log_scale", "f_sys"):  # results that did not sample a nuisance: its best fit
            nd.setdefault(k, np.full(len(th), nuis[k]))
        res["draws"] = checks.gradient_agreement_draws(setup, emu, synth, data, th, nd, theta_sigma=theta_sigma)
    res["emulator_sigma"] = "fixed" if theta_sigma is not None else "varying"
    if json_out:
        typer.echo(dumps_json(res, indent=1))
    else:
        typer.echo(f"at the mode: cosine similarity {res['cosine_similarity']:.4f}, |g_emu|/|g_syn| "
                   f"{res['norm_ratio']:.3f} (synthesizer gradient by {res['synthesizer_gradient_method']})")
        for n, v in res["per_parameter"].items():
            typer.echo(f"{n:>20s}  emu {v['emulator']:+.4g}  synth {v['synthesizer']:+.4g}")
        if draws:
            d = res["draws"]
            typer.echo(f"at {d['n_draws']} posterior draws: cosine median {d['cosine_median']:.4f} "
                       f"(10th pct {d['cosine_p10']:.4f}), |g_emu|/|g_syn| median {d['norm_ratio_median']:.3f}")


@check_app.command("ppc")
def check_ppc(
    results_dir: Path = typer.Argument(...),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint"),
    n: int = typer.Option(32, "--n", help="Posterior draws re-simulated."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Posterior predictive through the physics: draws re-simulated by the synthesizer."""
    from lumina_jax.workflows import checks
    from lumina_jax.workflows.results import full_theta_draws, load_fit

    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    summary, idata, setup, data, wave, nuis, emu, synth = load_fit(results_dir, checkpoint)
    th, nd = full_theta_draws(summary, idata, n)
    res = checks.ppc_physics(emu, synth, th, nd, data, wave)
    if json_out:
        typer.echo(dumps_json(res, indent=1))
    else:
        typer.echo(f"{res['n_draws']} draws: residual RMS synthesizer {res['rms_synthesizer_median']:.4f}, "
                   f"emulator {res['rms_emulator_median']:.4f}; mean |emu - synth|/synth "
                   f"{res['mean_frac_error_emulator_vs_synth']:.4f}")


def pipeline(
    stages: str = typer.Option("1-3", "--stages", help="Stages to run, e.g. 1-3 or 2-3."),
    backend: str = typer.Option("synth", "--backend", help="Forward model of the training campaigns: synth|lumina."),
    n_models: int = typer.Option(10000, "--n-models", help="Training models per stage."),
    workdir: Path = typer.Option(Path("runs/pipeline"), "--workdir", help="Stores, checkpoints and results."),
    observed: Optional[Path] = typer.Option(None, "--observed", help="Observed spectrum (default: the mock)."),
    sampler: str = typer.Option("nuts", "--sampler", help="Sampler of every stage's fit (see infer --sampler; "
                                "blackjax-chees is the fastest at 135-D in our benchmark)."),
    chains: int = typer.Option(4, "--chains", help="Chains per fit (blackjax-chees: raised to 16 when fewer)."),
    warmup: int = typer.Option(500, "--warmup", help="Warmup / adaptation steps per chain."),
    samples: int = typer.Option(500, "--samples", help="Draws per chain."),
    seed: int = typer.Option(0, "--seed"),
    target_accept: float = typer.Option(0.8, "--target-accept", help="NUTS / HMC / ChEES target acceptance "
                                        "(raise it when a stage diverges)."),
    lumina_bin: Optional[Path] = typer.Option(None, "--lumina-bin"),
    lumina_ref: Optional[Path] = typer.Option(None, "--lumina-ref"),
    train_config: Optional[Path] = typer.Option(None, "--train-config", help="Emulator training YAML."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default: the training config)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early-stopping patience (epochs)."),
    synth_config: Optional[Path] = typer.Option(None, "--synth-config", help="Synthesizer settings of the synth "
                                                "campaigns (default lumina_jax/configs/synth_campaign.yaml, as the shipped "
                                                "stage-1 emulator)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Synth models per batched call."),
    stage1_emulator: str = typer.Option("shipped", "--stage1-emulator", help="Stage-1 emulator: shipped (the "
                                        "shipped checkpoint, no stage-1 campaign), train (generate and train one "
                                        "in WORKDIR/stage1) or a checkpoint path."),
    redshift: Optional[float] = typer.Option(None, "--redshift", help="Heliocentric redshift of --observed."),
    ebv_mw: Optional[float] = typer.Option(None, "--ebv-mw", help="Milky-Way E(B-V) to correct (F99, R_V=3.1)."),
    ebv_host: Optional[float] = typer.Option(None, "--ebv-host", help="Host E(B-V) to correct (rest frame)."),
    prior: List[str] = typer.Option([], "--prior", help="Informative prior NAME=MEAN,SD of every stage's fit "
                                    "(repeatable), e.g. --prior t_exp=18,1"),
    ridge: Optional[str] = typer.Option(None, "--ridge", help="Ridge shear of every stage's fit (see infer "
                                        "--ridge): a parameter name or none.  Default: config sampler.ridge."),
    relax: str = typer.Option(DEFAULT_RELAX, "--relax", help="Box of stage N+1 around stage N's fit: 'margin' "
                              "(+-10 % of the best fit) or 'union' (its hull with the fit's central 99.7 % "
                              "interval)."),
    allow_unconverged: bool = typer.Option(False, "--allow-unconverged"),
) -> None:
    """generate -> train -> calibrate (the emulator-error covariance factor) -> infer for each stage, each stage
    seeded by the previous result; resumable."""
    from lumina_jax.workflows.config import default_checkpoint, parse_prior
    from lumina_jax.workflows.pipeline import PipelineOptions, run_pipeline

    s1 = {"shipped": None, "train": None}.get(stage1_emulator, Path(stage1_emulator))
    if stage1_emulator == "shipped":
        s1 = default_checkpoint(1)
    check_out_dir(workdir, force=True, option="--workdir", what="pipeline files")  # resumable: may hold files
    _interrupt.kept(f"the finished steps are kept in {workdir}: run the same command again to continue")
    opts = PipelineOptions(stages=stages, backend=backend, n_models=n_models, workdir=workdir, observed=observed,
                           sampler=_sampler_cfg(None, sampler, chains, warmup, samples, seed, target_accept, None, True,
                                                ridge=ridge),
                           lumina_bin=lumina_bin, lumina_ref=lumina_ref, train_config=train_config,
                           allow_unconverged=allow_unconverged, batch_size=batch_size,
                           **({"synth_config": synth_config} if synth_config else {}),
                           epochs=epochs, patience=patience, stage1_emulator=s1, redshift=redshift, ebv_mw=ebv_mw,
                           ebv_host=ebv_host, priors=dict(parse_prior(p) for p in prior), relax=relax)
    run_pipeline(opts, log=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("infer")(infer)
    app.command("plot")(plot)
    app.command("chain-report")(chain_report_cmd)
    app.add_typer(check_app, name="check")
    app.command("pipeline")(pipeline)
