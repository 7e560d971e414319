"""High-level entry points behind ``lumina-jax infer`` (also usable from Python).

The emulator and synthesizer are loaded through :mod:`lumina_jax.workflows.loaders` (lazy
imports); Python callers may pass the objects to :func:`prepare` / :func:`infer` instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from lumina_jax.errors import UserError
from lumina_jax.workflows import chaining, loaders
from lumina_jax.workflows.config import (DEFAULT_RESULTS, InferenceConfig, MockConfig, check_emulator_sigma,
                                         config_record, default_checkpoint, default_previous, load_inference_config)
from lumina_jax.workflows.fit import FitOutput, FitProblem, run_fit, write_results
from lumina_jax.inference.density import LikelihoodConfig
from lumina_jax.inference.density import make_setup
from lumina_jax.observed import load_observation, observation_from_model
from lumina_jax.inference.sampling import SamplerConfig


def mock_parameters(mock_cfg: MockConfig, stage: int, space, log: Callable[[str], None] = print,
                    previous: dict | None = None) -> dict:
    """The mock's true parameters for ``stage``: ``mock.stage{N}`` of the inference config; for
    stages 2 and 3 without one, the best fit of a ``previous`` stage fitted to an observed
    spectrum (a summary dict) expressed in the stage's zones -- the centre of the box it relaxes
    to -- or else (no previous result, or a previous mock fit) the stage-1 mock in the stage's zones (a layered composition is volume-averaged over each zone,
    :func:`lumina_jax.ejecta.stage1_composition_in_zones`)."""
    if mock_cfg.parameters(stage) is not None:
        return dict(mock_cfg.parameters(stage))
    if (stage > 1 and previous is not None and "mock" not in previous and space.zones is not None
            and space.parametrisation == "full"):
        from lumina_jax.ejecta import stage1_composition_in_zones
        from lumina_jax.params import ParameterSpace, load_space, transfer_best

        best = dict(previous["best_fit"])
        prev_space = (ParameterSpace.from_json(previous["space"]) if "space" in previous
                      else load_space(previous["stage"]))
        if prev_space.zones is None:
            out = {n: v for n, v in best.items() if n in space.names}
            out.update(stage1_composition_in_zones(best, space))
        else:
            out = transfer_best(best, prev_space, space)
        log(f"mock: the synthesizer at the stage-{previous['stage']} best fit, expressed in the {space.zones.n} "
            f"stage-{stage} zones (the centre of the sampled box)")
        return out
    if stage == 1 or mock_cfg.stage1 is None or space.zones is None or space.parametrisation != "full":
        raise UserError(f"no mock parameters for stage {stage} in the inference config; pass --observed")
    from lumina_jax.ejecta import stage1_composition_in_zones

    m1 = dict(mock_cfg.stage1)
    out = {n: v for n, v in m1.items() if n in space.names}
    out.update(stage1_composition_in_zones(m1, space))
    log(f"mock: the stage-1 SN 2011fe-like parameters with their composition expressed in the {space.zones.n} "
        f"stage-{stage} zones")
    return out


def emulator_error_model(emulator, lk: LikelihoodConfig, log: Callable[[str], None] = print):
    """(empirical basis or None, correlation length or None) for the likelihood, from the
    config's ``likelihood`` section and what the checkpoint carries.

    ``emulator_error: correlated`` (default) uses the checkpoint's empirical error correlation
    (``Emulator.error_basis``); a checkpoint without one falls back to ``emulator_corr_length``
    bumps when set, else to independent bins (said in the log).  ``independent`` ignores both."""
    mode, corr = lk.emulator_error, lk.emulator_corr_length
    basis = getattr(emulator, "error_basis", None)
    if mode == "independent":
        return None, None
    if corr:
        log(f"emulator-error model: correlated over {corr} A (Gaussian bumps, likelihood.emulator_corr_length)")
        return None, float(corr)
    if basis is not None:
        basis = np.asarray(basis, float)
        log(f"emulator-error model: empirical rank-{basis.shape[1]} wavelength correlation from the checkpoint")
        return basis, None
    log("emulator-error model: independent bins (the checkpoint carries no error correlation; retrain to get one)")
    return None, None


def emulator_error_scale(emulator, lk: LikelihoodConfig, emu_basis, log: Callable[[str], None] = print) -> float:
    """Variance factor of the correlated emulator-error model: ``likelihood.emulator_error_scale``
    from the config (a number, or ``checkpoint``, the default: the checkpoint's calibrated
    ``error_cov_scale``).  1.0 when the likelihood does not use the empirical basis."""
    if emu_basis is None:
        return 1.0
    v = lk.emulator_error_scale
    s = float(getattr(emulator, "error_cov_scale", 1.0)) if v == "checkpoint" else float(v)
    if s != 1.0:
        log(f"emulator error covariance x {s:.3f} ({'calibrated, from the checkpoint' if v == 'checkpoint' else 'config'})")
    return s


@dataclasses.dataclass
class InferRequest:
    """Everything ``lumina-jax infer`` needs (CLI options map 1:1; the optional fields left
    None take the configuration's values)."""

    stage: int = 1
    observed: Path | None = None
    checkpoint: Path | None = None
    previous: Path | None = None  # results dir of the previous stage (--from)
    relax: str = chaining.DEFAULT_RELAX  # the rule that builds the box around it (--relax)
    out: Path | None = None
    sampler: SamplerConfig | None = None  # None: the config's sampler section
    priors: dict = dataclasses.field(default_factory=dict)
    n_poly: int | None = None
    redshift: float | None = None
    ebv_mw: float | None = None
    ebv_host: float | None = None
    window: tuple[float, float] | None = None
    telluric: bool | None = None
    mock_noise: float | None = None
    margin: float = chaining.MARGIN
    map_starts: int | None = None
    config_path: Path | None = None  # YAML overrides of InferenceConfig (None: its defaults)
    config: InferenceConfig | None = None  # the configuration itself (instead of config_path)
    wave_unit: str | None = None
    flux_unit: str | None = None
    box_link: str | None = None  # None: the config's likelihood.box_link for this stage
    emulator_sigma: str | None = None  # None: the config's likelihood.emulator_sigma


def results_dir(req: InferRequest) -> Path:
    """Where :func:`infer` writes: ``req.out`` or ``results/stage{N}``."""
    return Path(req.out) if req.out else DEFAULT_RESULTS / f"stage{req.stage}"


@dataclasses.dataclass
class PreparedFit:
    """One ``infer`` request made concrete: the fit problem, the sampler and convergence
    settings, the emulator, and the configuration with the request's overrides in place."""

    problem: FitProblem
    sampler: SamplerConfig
    config: InferenceConfig
    emulator: object

    @property
    def setup(self):
        return self.problem.setup

    @property
    def obs(self):
        return self.problem.obs

    @property
    def truth(self):
        return self.problem.truth


def resolved_config(req: InferRequest) -> InferenceConfig:
    """The request's configuration with its overrides (the CLI flags) in place."""
    cfg = req.config if req.config is not None else load_inference_config(req.config_path)
    lk = cfg.likelihood
    lk = dataclasses.replace(lk, **{k: v for k, v in (
        ("n_poly", req.n_poly), ("emulator_sigma", req.emulator_sigma),
        ("box_link", (req.box_link,) * 3 if req.box_link else None)) if v is not None})
    ob = dataclasses.replace(cfg.observed, **{k: v for k, v in (
        ("redshift", req.redshift), ("ebv_mw", req.ebv_mw), ("ebv_host", req.ebv_host),
        ("telluric", req.telluric), ("window", req.window)) if v is not None})
    mk = dataclasses.replace(cfg.mock, **{k: v for k, v in (("noise_frac", req.mock_noise), ("window", req.window))
                                          if v is not None})
    sampler = req.sampler if req.sampler is not None else cfg.sampler
    if req.map_starts is not None:
        sampler = dataclasses.replace(sampler, map_starts=req.map_starts)
    return dataclasses.replace(cfg, likelihood=lk, observed=ob, mock=mk, sampler=sampler,
                               priors={**cfg.priors, **req.priors})


def prepare(req: InferRequest, *, emulator=None, synthesizer=None, log: Callable[[str], None] = print) -> PreparedFit:
    """Validate ``req`` and build its problem (setup, observation or mock, likelihood settings)
    without fitting: ``infer`` = ``prepare`` + ``run_fit`` + ``write_results``.  The sampler
    benchmark uses it to time the samplers on exactly the main job's problem."""
    check_emulator_sigma(req.emulator_sigma)
    chaining.check_relax(req.relax)
    cfg = resolved_config(req)
    previous = req.previous
    if previous is None and req.stage > 1 and req.checkpoint is None and emulator is None:
        previous = default_previous(req.stage)
        rule = (f"+-{100 * req.margin:.0f} %" if req.relax == "margin"
                else f"the union of +-{100 * req.margin:.0f} % and the 99.7 % interval")
        log(f"stage {req.stage}: the shipped SN 2011fe chain -- emulator {default_checkpoint(req.stage).name}, "
            f"box {rule} around the stage-{req.stage - 1} fit in {previous}")
    if previous is None and req.relax != chaining.DEFAULT_RELAX:
        raise UserError(f"--relax {req.relax} applies only to a stage chained from a previous result "
                        f"(--from, or stages 2 and 3)")
    prev_summary = chaining.read_summary(previous) if previous is not None else None
    space, fixed = chaining.stage_box(req.stage, prev_summary, margin=req.margin, relax=req.relax)
    ckpt = req.checkpoint
    if emulator is None:
        ckpt = ckpt or default_checkpoint(req.stage)
        emulator = loaders.get_emulator(ckpt)
    chaining.check_emulator_box(emulator.space, space, check_box=previous is not None, relax=req.relax)
    if previous is None:
        # stage without a previous result: sample the emulator's own training box
        space = emulator.space
    fixed = {n: float(np.clip(v, emulator.space.lows[emulator.space.index(n)],
                              emulator.space.highs[emulator.space.index(n)])) for n, v in fixed.items()}
    lk = cfg.likelihood
    setup = make_setup(space, fixed=fixed, priors=cfg.priors, n_poly=lk.n_poly, f_sys_range=lk.f_sys_range,
                       f_sys_prior=lk.f_sys_prior, f_sys_scale=lk.f_sys_scale, log_scale_sd=lk.log_scale_sd,
                       poly_sd=lk.poly_sd, ordering_softness=lk.ordering_softness, box_link=lk.link(req.stage))
    oc = cfg.observed
    truth = None
    meta = {"checkpoint": str(ckpt) if ckpt else "(in-memory emulator)"}
    wave = np.asarray(emulator.wavelength, float)
    if req.observed is None:
        mk = cfg.mock
        synth = synthesizer or loaders.get_synthesizer(space)
        base = setup.base_theta()
        truth_vec = space.from_dict(mock_parameters(mk, req.stage, space, log=log, previous=prev_summary),
                                    fill=dict(zip(space.names, base)))
        for i, n in enumerate(space.names):
            if n in setup.free and not space.lows[i] <= truth_vec[i] <= space.highs[i]:
                if req.stage == 1 or mk.parameters(req.stage) is not None:
                    raise UserError(f"mock parameter {n} = {truth_vec[i]:g} lies outside the sampling box")
        if req.stage > 1 and mk.parameters(req.stage) is None:
            # into the box's interior (5 % of the width from each wall): a truth on a wall can never lie
            # inside a central interval, so clipping to the wall itself made truth recovery meaningless
            lo_i, hi_i = np.asarray(space.lows, float), np.asarray(space.highs, float)
            inner = 0.05 * (hi_i - lo_i)
            out_i = (truth_vec < lo_i) | (truth_vec > hi_i)
            clipped = [n for i, n in enumerate(space.names) if n in setup.free and out_i[i]]
            truth_vec = np.where(out_i, np.clip(truth_vec, lo_i + inner, hi_i - inner), truth_vec)
            if clipped:
                log(f"mock: {len(clipped)} projected parameters lay outside the relaxed box and were moved to 5 % "
                    f"of its width inside it: {', '.join(clipped[:8])}{' ...' if len(clipped) > 8 else ''}")
        w_s, l_s = synth.spectrum(truth_vec)
        noise = mk.noise_frac
        obs = observation_from_model(np.asarray(w_s), np.asarray(l_s), wave, emulator.preprocess,
                                     noise_frac=noise, seed=mk.seed, window=mk.window,
                                     source="mock: synthesizer at SN 2011fe-like parameters")
        truth = space.to_dict(truth_vec)
        meta["mock"] = {"truth": truth, "noise_frac": noise, "made_by": "synthesizer"}
        chained = (req.stage > 1 and mk.parameters(req.stage) is None and prev_summary is not None
                   and "mock" not in prev_summary)
        where = (f"the stage-{prev_summary['stage']} SN 2011fe best fit" if chained
                 else f"SN 2011fe-like stage-{req.stage} parameters (the inference config's 'mock')")
        log(f"no --observed: fitting a MOCK observation made by the synthesizer at {where}, S/N {1 / noise:.0f} "
            f"per pixel, with emulator {meta['checkpoint']}")
    else:
        obs = load_observation(
            req.observed, wave, emulator.preprocess, wave_unit=req.wave_unit, flux_unit=req.flux_unit,
            redshift=oc.redshift, ebv_mw=oc.ebv_mw, ebv_host=oc.ebv_host, window=oc.window, telluric=oc.telluric,
            edge_trim=oc.edge_trim, norm_window=_norm_window(emulator))
        log(f"fitting {req.observed} ({obs.n_used} bins, {obs.meta['fit_range'][0]:.0f}-{obs.meta['fit_range'][1]:.0f} A) "
            f"with emulator {meta['checkpoint']}")
    if previous is not None:
        meta["previous"] = str(previous)
        meta["relax"] = {"rule": req.relax, "margin": req.margin}
    meta["config"] = config_record(cfg)
    emu_basis, corr_length = emulator_error_model(emulator, lk, log)
    problem = FitProblem(setup, emulator.spectrum_and_sigma, obs, likelihood=lk,
                         on_bins=getattr(emulator, "on_bins", None), emu_basis=emu_basis, corr_length=corr_length,
                         emu_var_scale=emulator_error_scale(emulator, lk, emu_basis, log), truth=truth, meta=meta)
    return PreparedFit(problem=problem, sampler=cfg.sampler, config=cfg, emulator=emulator)


def _norm_window(emulator):
    """The emulator's normalisation window (Å), when it says (for clearer errors), else None."""
    try:
        return tuple(float(x) for x in emulator.settings.preprocess.norm_window)
    except (AttributeError, TypeError, ValueError):
        return None


def infer(req: InferRequest, *, emulator=None, synthesizer=None, log: Callable[[str], None] = print,
          write_guard: Callable | None = None) -> tuple[FitOutput, Path]:
    """Run one stage's fit and write ``results/stage{N}`` (or ``req.out``).

    ``write_guard``: a context-manager factory wrapped around writing the results (the command
    line uses one that holds Ctrl-C back until the directory is complete)."""
    import contextlib

    from lumina_jax import derived

    p = prepare(req, emulator=emulator, synthesizer=synthesizer, log=log)
    out = run_fit(p.problem, p.sampler, convergence=p.config.convergence, log=log)
    if derived.is_ejecta_space(p.setup.space):
        m = out.summary["derived"] = derived.summarise(out.draws_theta, p.setup.space)
        log("above the photosphere (Msun, median [68 %]): " + ", ".join(
            f"{k} {m[k]['median']:.3f} [{m[k]['q16']:.3f}, {m[k]['q84']:.3f}]" for k in ("M_total", "M_56Ni_0", "M_Si")))
    out_dir = results_dir(req)
    with (write_guard or contextlib.nullcontext)():
        write_results(out, out_dir)
    return out, out_dir
