"""Convergence diagnostics and the arviz InferenceData of a run.

R-hat: rank-normalised split R-hat (Vehtari et al. 2021); ESS: bulk and tail ESS (same
paper), all through arviz.  A run *converges* when max R-hat <= ``rhat_max`` (1.01) and the
divergent transitions are at most ``max_divergent_frac`` (1 %) of the draws.  R-hat compares
chains: a one-chain run reports it as unavailable (``None``) and is judged on divergences only.
"""

from __future__ import annotations

import warnings

import numpy as np

RHAT_MAX = 1.01
MAX_DIVERGENT_FRAC = 0.01


def _az():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
    return az


def chain_stats(draws: np.ndarray) -> dict:
    """R-hat, bulk and tail ESS per coordinate of ``draws`` [chains, draws, k] -> dict of [k]
    (R-hat NaN for a single chain)."""
    az = _az()
    ds = {"x": np.asarray(draws, float)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.convert_to_dataset(ds)
        if ds["x"].shape[0] > 1:
            rhat = np.asarray(az.rhat(idata)["x"]).ravel()
        else:
            rhat = np.full(ds["x"].shape[-1], np.nan)
        bulk = np.asarray(az.ess(idata, method="bulk")["x"]).ravel()
        tail = np.asarray(az.ess(idata, method="tail")["x"]).ravel()
    return {"rhat": rhat, "ess_bulk": bulk, "ess_tail": tail}


def summarize_run(run, names: list[str], physical: np.ndarray) -> dict:
    """Diagnostics of a :class:`SamplerRun` whose physical draws are ``physical``
    [chains, draws, k] named ``names``.  ESS/s uses the total wall time (warmup + sampling,
    JIT compilation included); ESS per gradient uses ``run.n_grad``.  With one chain the
    R-hats are ``None`` (unavailable)."""
    st = chain_stats(physical)
    n_draws = int(np.prod(run.diverging.shape))
    n_div = int(run.diverging.sum())
    multi = run.positions.shape[0] > 1
    per = {n: {"rhat": float(r) if multi else None, "ess_bulk": float(b), "ess_tail": float(t)}
           for n, r, b, t in zip(names, st["rhat"], st["ess_bulk"], st["ess_tail"])}
    min_bulk = float(np.nanmin(st["ess_bulk"]))
    return {
        "sampler": run.sampler,
        "chains": int(run.positions.shape[0]),
        "draws_per_chain": int(run.positions.shape[1]),
        "max_rhat": float(np.nanmax(st["rhat"])) if multi else None,
        "min_ess_bulk": min_bulk,
        "min_ess_tail": float(np.nanmin(st["ess_tail"])),
        "divergences": n_div,
        "divergent_fraction": n_div / max(n_draws, 1),
        "n_grad": int(run.n_grad),
        "wall_warmup_s": float(run.wall_warmup_s),
        "wall_sampling_s": float(run.wall_sampling_s),
        "min_ess_bulk_per_s": min_bulk / max(run.wall_s, 1e-9),
        "min_ess_bulk_per_grad": min_bulk / max(run.n_grad, 1),
        "per_parameter": per,
        "sampler_info": run.info,
    }


def convergence_problems(diag: dict, *, rhat_max: float = RHAT_MAX,
                         max_divergent_frac: float = MAX_DIVERGENT_FRAC) -> list[str]:
    """Human-readable reasons why a run has not converged (empty list: converged).  A run
    without R-hat (one chain) is judged on its divergences only."""
    out = []
    if diag["max_rhat"] is not None and not diag["max_rhat"] <= rhat_max:
        worst = sorted(diag["per_parameter"].items(), key=lambda kv: -np.nan_to_num(kv[1]["rhat"], nan=9))[:3]
        out.append(f"max R-hat {diag['max_rhat']:.4f} > {rhat_max} (worst: "
                   + ", ".join(f"{n} {v['rhat']:.3f}" for n, v in worst) + ")")
    if diag["divergent_fraction"] > max_divergent_frac:
        out.append(f"{diag['divergences']} divergent transitions ({100 * diag['divergent_fraction']:.1f} % "
                   f"> {100 * max_divergent_frac:.0f} % of draws)")
    return out


def remedy(problems: list[str], sampler: str = "nuts") -> str:
    """What to try for :func:`convergence_problems`' reasons: divergences of the NUTS / HMC
    (and ChEES) samplers call for smaller steps (a higher ``--target-accept``, which only they read), a
    high R-hat (or another sampler's divergences) for longer chains."""
    tips = []
    step_sized = sampler in ("nuts", "hmc", "blackjax-nuts", "blackjax-chees")
    if step_sized and any("divergent" in p for p in problems):
        tips.append("raise --target-accept (e.g. 0.9 or 0.95) for smaller steps")
    if any("R-hat" in p for p in problems) or (not step_sized and any("divergent" in p for p in problems)):
        tips.append("run longer with more --warmup/--samples")
    return "; ".join(tips + ["or pass --allow-unconverged" if tips else "pass --allow-unconverged"])


def format_rhat(value, digits: int = 4) -> str:
    """R-hat for a log line: the number, or "n/a (1 chain)" when it is unavailable."""
    return "n/a (1 chain)" if value is None else f"{value:.{digits}f}"


def make_inference_data(posterior: dict, *, sample_stats: dict | None = None, observed: dict | None = None,
                        constant: dict | None = None, attrs: dict | None = None):
    """arviz InferenceData from {name: [chains, draws, ...]} dicts."""
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_dict(posterior=posterior, sample_stats=sample_stats or {},
                             observed_data=observed or {}, constant_data=constant or {},
                             attrs={k: _attr(v) for k, v in (attrs or {}).items()})
    return idata


def _attr(v):
    if isinstance(v, (int, float, str)):
        return v
    import json

    return json.dumps(v)
