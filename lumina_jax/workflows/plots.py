"""Plots of a results directory: corner, spectrum fit with posterior-predictive bands and
residuals, trace and rank plots, and the best fit re-simulated with the synthesizer."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from lumina_jax.errors import DataFileError
from lumina_jax.workflows.results import full_theta_draws, load_results, posterior_array

MAX_CORNER = 15


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _corner_names(summary) -> tuple[list[str], str]:
    """The free parameters the corner plot shows (at most :data:`MAX_CORNER`, in the space's
    order: the global ones first) and a note on those left out ("" when none)."""
    free = list(summary["free"])
    names = free[:MAX_CORNER]
    if len(free) <= MAX_CORNER:
        return names, ""
    return names, (f"{len(names)} of {len(free)} free parameters shown: {', '.join(names)}; "
                   f"omitted: {free[len(names)]} ... {free[-1]}")


def _corner_labels(summary, names) -> list[str]:
    """Axis labels with units of ``names``: the units recorded in the summary's space, else the
    stage YAMLs'."""
    from lumina_jax.params import label

    units = {p["name"]: p.get("unit") for p in (summary.get("space") or {}).get("parameters", [])}
    return [label(n, units.get(n)) for n in names]


def _title_fmt(x) -> str:
    """Format of a diagonal title: two significant digits of the 68 % half-width."""
    q16, q84 = np.percentile(x, [16, 84])
    half = 0.5 * (q84 - q16)
    digits = 2 if not (np.isfinite(half) and half > 0) else int(np.clip(1 - np.floor(np.log10(half)), 0, 8))
    return f".{digits}f"


def corner_plot(summary, idata, path):
    """Corner plot of the free parameters (``corner.corner``): 68 / 95 % contours, 16 / 50 / 84 %
    quantiles on the diagonals, the mock's truths where the summary has them.  Returns the
    (closed) figure."""
    plt = _plt()
    import corner

    names, omitted = _corner_names(summary)
    x = posterior_array(idata, names)
    x = x[np.all(np.isfinite(x), axis=1)]
    if x.shape[0] <= len(names):
        raise DataFileError(f"the corner plot needs more finite posterior draws than its {len(names)} "
                            f"parameters, got {x.shape[0]}")
    labels = _corner_labels(summary, names)
    truth = (summary.get("mock") or {}).get("truth") or {}
    truths = [truth.get(n) for n in names]
    truths = truths if any(t is not None for t in truths) else None
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = np.where(hi > lo, 0.0, np.maximum(1e-3 * np.abs(lo), 1e-12))  # a constant column needs a range
    lo, hi = lo - pad, hi + pad
    off_panel = []  # truths farther than 3 sample spans from the draws stay off the panels
    for i, t in enumerate(truths or []):
        if t is None:
            continue
        span = hi[i] - lo[i]
        if lo[i] - 3 * span <= t <= hi[i] + 3 * span:
            lo[i], hi[i] = min(lo[i], t - 0.05 * span), max(hi[i], t + 0.05 * span)
        else:
            off_panel.append(names[i])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # corner: too few points for a contour in a short run
        fig = corner.corner(
            x, labels=labels, quantiles=[0.16, 0.5, 0.84], levels=(0.68, 0.95),
            truths=truths if len(names) > 1 else None, truth_color="C3",
            range=list(zip(lo, hi)), bins=30, smooth=1.0, plot_datapoints=False, fill_contours=True,
            color="C0", label_kwargs={"fontsize": 9})
    if len(names) == 1 and truths:  # corner 2.3 fails to draw the truth of a single parameter
        fig.axes[0].axvline(truths[0], color="C3")
    for ax in fig.axes:  # no offset text ("+4.3e1"): it would overprint the axis labels
        for axis in (ax.xaxis, ax.yaxis):
            if hasattr(axis.get_major_formatter(), "set_useOffset"):
                axis.get_major_formatter().set_useOffset(False)
    # the diagonals' titles: median and 16 / 84 % quantiles, digits matched to each width
    for i, ax in enumerate(np.asarray(fig.axes).reshape(len(names), len(names)).diagonal()):
        q16, q50, q84 = np.percentile(x[:, i], [16, 50, 84])
        f = _title_fmt(x[:, i])
        ax.set_title(rf"{labels[i].rsplit(' [', 1)[0]} = ${q50:{f}}_{{-{q50 - q16:{f}}}}^{{+{q84 - q50:{f}}}}$",
                     fontsize=8)
    title = (f"stage {summary['stage']} posterior, sampler {summary['diagnostics'].get('sampler', 'unknown')}: "
             f"68 / 95 % contours, 16 / 50 / 84 % quantiles" + (", mock truths in red" if truths else "")
             + (f" (off the panels: {', '.join(off_panel)})" if off_panel else ""))
    # room above the diagonals' titles for the figure title (corner leaves 0.4 inch)
    w, h = fig.get_size_inches()
    extra = 0.5 + (0.3 if omitted else 0.0)
    sp = fig.subplotpars
    fig.set_size_inches(w, h + extra)
    fig.subplots_adjust(bottom=sp.bottom * h / (h + extra), top=sp.top * h / (h + extra))
    fig.suptitle(title + ("\n" + omitted if omitted else ""), fontsize=10 if len(names) > 4 else 8,
                 y=1 - 0.1 / (h + extra), va="top", wrap=True)
    fig.savefig(path, dpi=90 if len(names) > 8 else 110)
    plt.close(fig)
    return fig


def predictive_flux(emulator, summary, idata, n: int = 100):
    """Posterior-predictive mean model m = w * F_emu for ``n`` draws -> [n, n_wave]."""
    import jax
    import jax.numpy as jnp

    from lumina_jax.inference.likelihood import make_likelihood_data, predicted_flux

    wave = np.asarray(idata.constant_data["wavelength"])
    obs = idata.observed_data
    data = make_likelihood_data(wave, obs["flux"], obs["sigma_obs"], np.asarray(obs["mask"]).astype(bool))
    th, nuis = full_theta_draws(summary, idata, n)
    polys = sorted(k for k in nuis if k.startswith("poly_"))
    coeffs = np.stack([nuis[k] for k in polys], -1) if polys else np.zeros((len(th), 0))
    f = jax.vmap(lambda t: emulator.spectrum_and_sigma(t)[0])(jnp.asarray(th))
    m = jax.vmap(lambda fl, ls, c: predicted_flux(fl, ls, c, data.x))(f, jnp.asarray(nuis["log_scale"]),
                                                                   jnp.asarray(coeffs))
    return np.asarray(m)


def spectrum_plot(summary, idata, path, emulator=None, n: int = 100):
    plt = _plt()
    wave = np.asarray(idata.constant_data["wavelength"])
    obs = idata.observed_data
    mask = np.asarray(obs["mask"]).astype(bool)
    y = np.where(mask, np.asarray(obs["flux"]), np.nan)
    best = np.asarray(idata.constant_data["best_model_flux"])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    a1.plot(wave, y, color="k", lw=0.8, label="observed (preprocessed)")
    if emulator is not None:
        m = predictive_flux(emulator, summary, idata, n)
        q = np.percentile(m, [2.5, 16, 84, 97.5], axis=0)
        a1.fill_between(wave, q[0], q[3], color="C0", alpha=0.2, lw=0, label="posterior predictive 95%")
        a1.fill_between(wave, q[1], q[2], color="C0", alpha=0.4, lw=0, label="68%")
    a1.plot(wave, best, color="C3", lw=0.8, label="best fit (emulator)")
    a1.set_ylabel("normalised flux")
    rms = summary["residual_rms"]
    a1.set_title(f"stage {summary['stage']}: residual RMS {rms['value']:.4f} over "
                 f"{rms['band_angstrom'][0]:.0f}-{rms['band_angstrom'][1]:.0f} A", fontsize=9)
    a1.legend(fontsize=7)
    a2.plot(wave, y - best, color="k", lw=0.6)
    a2.axhline(0, color="C3", lw=0.6)
    a2.set_ylabel("obs - model")
    a2.set_xlabel("rest wavelength [A]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trace_rank_plots(summary, idata, out_dir):
    plt = _plt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        names = summary["free"][:6] + ["f_sys"]
        az.plot_trace(idata, var_names=names, compact=False)
        plt.gcf().savefig(Path(out_dir) / "trace.png", dpi=80)
        plt.close("all")
        az.plot_rank(idata, var_names=names)
        plt.gcf().savefig(Path(out_dir) / "rank.png", dpi=80)
        plt.close("all")


def synth_vs_emulator_plot(summary, idata, path, emulator, synthesizer):
    """The best fit re-simulated by the synthesizer (preprocessed like the data) beside the
    emulator's prediction at the same parameters."""
    plt = _plt()
    theta = np.asarray(idata.constant_data["theta_best"])
    w_s, l_s = synthesizer.spectrum(theta)
    f_syn = np.asarray(emulator.preprocess(np.asarray(w_s), np.asarray(l_s), None))
    f_emu, s_emu = (np.asarray(a) for a in emulator.spectrum_and_sigma(theta))
    wave = np.asarray(emulator.wavelength)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    a1.plot(wave, f_syn, "k", lw=0.8, label="synthesizer at best fit")
    a1.plot(wave, f_emu, "C3", lw=0.8, label="emulator at best fit")
    a1.fill_between(wave, f_emu - s_emu, f_emu + s_emu, color="C3", alpha=0.3, lw=0)
    a1.legend(fontsize=7)
    a2.plot(wave, (f_emu - f_syn) / np.maximum(np.abs(f_syn), 1e-3), "k", lw=0.6)
    a2.set_ylabel("(emu - synth)/synth")
    a2.set_xlabel("wavelength [A]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    ok = np.isfinite(f_syn)
    return float(np.mean(np.abs(f_emu[ok] - f_syn[ok]) / np.maximum(np.abs(f_syn[ok]), 1e-3)))


def has_ejecta(summary) -> bool:
    """Whether the fit's space is an ejecta model's (stage spaces; not the tests' toy spaces)."""
    from lumina_jax.derived import is_ejecta_space
    from lumina_jax.params import ParameterSpace

    try:
        space = ParameterSpace.from_json(summary["space"])
    except Exception:  # noqa: BLE001  (a toy space of the tests is not a stage's: from_json refuses it)
        return False
    return is_ejecta_space(space)


def abundance_plot(summary, idata, path, n: int = 400, grid=None):
    """The abundance-tomography figure: mass fraction at explosion against velocity per species
    (median, 68 % and 95 % bands over ``n`` posterior draws), the photosphere marked."""
    import jax

    from lumina_jax import derived
    from lumina_jax.params import ParameterSpace

    plt = _plt()
    space = ParameterSpace.from_json(summary["space"])
    th, _ = full_theta_draws(summary, idata, n)
    grid = np.linspace(5000.0, space.ejecta.v_outer, 400) if grid is None else np.asarray(grid, float)
    prof = np.asarray(jax.jit(jax.vmap(lambda t: derived.profile(t, space, grid)))(th))  # [n, grid, species]
    v_ph = np.median(th[:, space.index("v_inner")])
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.cm.tab10(np.arange(len(derived.PROFILE_SPECIES)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns below the photosphere
        q = np.nanpercentile(prof, [2.5, 16, 50, 84, 97.5], axis=0)
    for k, (name, c) in enumerate(zip(derived.PROFILE_SPECIES, colours)):
        ax.fill_between(grid, q[0, :, k], q[4, :, k], color=c, alpha=0.12, lw=0, step="mid")
        ax.fill_between(grid, q[1, :, k], q[3, :, k], color=c, alpha=0.3, lw=0, step="mid")
        ax.plot(grid, q[2, :, k], color=c, lw=1.5, label=name, drawstyle="steps-mid")
    ax.axvspan(grid[0], v_ph, color="0.85", zorder=0)
    ax.axvline(v_ph, color="k", ls="--", lw=1)
    ax.text(v_ph, 1.3, " photosphere", fontsize=8, va="bottom")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 2.0)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel("velocity (km/s)")
    ax.set_ylabel("mass fraction at explosion")
    ax.set_title(f"stage {summary['stage']}: abundance profile (median, 68 % and 95 % bands; "
                 f"grey: below the photosphere, unconstrained)", fontsize=9)
    ax.legend(fontsize=8, ncol=4, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def chain_report(results_dirs) -> dict:
    """What a chain of fits (stage 1 -> 2 -> 3 results directories) says, per stage: the fitted
    dimension, convergence, normalised residual RMS and the derived masses (when recorded)."""
    from lumina_jax import derived
    from lumina_jax.params import ParameterSpace

    rows = []
    for d in results_dirs:
        summary, idata = load_results(d)
        if not summary.get("derived") and has_ejecta(summary):  # results written before masses were recorded
            n_all = int(np.prod(np.asarray(idata.posterior[summary["free"][0]]).shape))
            th, _ = full_theta_draws(summary, idata, n_all)
            summary["derived"] = derived.summarise(th, ParameterSpace.from_json(summary["space"]))
        rms = summary["residual_rms"]
        diag = summary["diagnostics"]
        rows.append({"results": str(d), "stage": int(summary["stage"]), "n_free": len(summary["free"]),
                     "residual_rms": float(rms["value"]), "rms_band_angstrom": list(rms["band_angstrom"]),
                     "max_rhat": diag.get("max_rhat"), "divergences": diag.get("divergences"),
                     "converged": bool(summary.get("converged")), "derived": summary.get("derived") or {}})
    return {"stages": rows}


def chain_plot(results_dirs, path, *, offset: float = 1.0):
    """One figure of a chain of fits: each stage's observed (preprocessed) spectrum and best-fit
    model, offset vertically, and below it the residuals of every stage."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    n = len(results_dirs)
    for k, d in enumerate(results_dirs):
        summary, idata = load_results(d)
        wave = np.asarray(idata.constant_data["wavelength"])
        obs = idata.observed_data
        mask = np.asarray(obs["mask"]).astype(bool)
        y = np.where(mask, np.asarray(obs["flux"]), np.nan)
        best = np.asarray(idata.constant_data["best_model_flux"])
        shift = (n - 1 - k) * offset
        rms = summary["residual_rms"]["value"]
        label = f"stage {summary['stage']} ({len(summary['free'])} free): RMS {rms:.3f}"
        a1.plot(wave, y + shift, color="k", lw=0.7, label="observed" if k == 0 else None)
        a1.plot(wave, best + shift, color=f"C{k}", lw=1.0, label=label)
        a2.plot(wave, y - best, color=f"C{k}", lw=0.6, alpha=0.85, label=f"stage {summary['stage']}")
    a1.set_ylabel("normalised flux (+ offset)")
    a1.legend(fontsize=8, loc="upper right")
    a2.axhline(0, color="k", lw=0.6)
    a2.set_ylabel("obs - model")
    a2.set_xlabel("rest wavelength [A]")
    a2.legend(fontsize=7, ncol=n)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_plots(results_dir, emulator=None, synthesizer=None, log=print) -> list[Path]:
    """All plots into ``results_dir``; returns the files written."""
    d = Path(results_dir)
    summary, idata = load_results(d)
    files = []
    corner_plot(summary, idata, d / "corner.png")
    files.append(d / "corner.png")
    spectrum_plot(summary, idata, d / "spectrum_fit.png", emulator)
    files.append(d / "spectrum_fit.png")
    trace_rank_plots(summary, idata, d)
    files += [d / "trace.png", d / "rank.png"]
    if has_ejecta(summary):
        abundance_plot(summary, idata, d / "abundance_profile.png")
        files.append(d / "abundance_profile.png")
    if emulator is not None and synthesizer is not None:
        fe = synth_vs_emulator_plot(summary, idata, d / "synth_vs_emulator.png", emulator, synthesizer)
        files.append(d / "synth_vs_emulator.png")
        log(f"best fit: mean |emulator - synthesizer| / synthesizer = {fe:.4f}")
    elif synthesizer is None:
        log("synthesizer not available: synth_vs_emulator.png skipped")
    return files


def plot_results(results_dir, summary, *, checkpoint=None, log=print) -> list[Path]:
    """:func:`make_plots` with the fit's emulator (``checkpoint`` or the one recorded) and,
    where it can be built, its synthesizer."""
    from lumina_jax.workflows.results import emulator_and_space, synthesizer_or_none

    emu, space = emulator_and_space(summary, checkpoint)
    return make_plots(results_dir, emulator=emu, synthesizer=synthesizer_or_none(space), log=log)
