"""Held-out accuracy and calibration of an emulator (``lumina-jax emulator report``).

Metrics, over the bins of ``window`` (default 3300-9700 Å) of the held-out spectra (rows whose
parameters were neither trained on nor used for validation/calibration):

* fractional error ``|F_pred - F_true| / |F_true|`` of the normalised smoothed flux: mean over
  all bins and spectra (the acceptance figure), median and 95th percentile of the per-spectrum
  mean, per-wavelength mean, the worst bins.  In saturated troughs the smoothed flux of a few
  models passes through zero (the cubic Savitzky-Golay filter undershoots a near-black
  trough), where the ratio is unbounded: those bins make the error spikes at 3665 and 7855 Å.
  So the report also gives the same mean with the denominator floored at the asinh softening
  (``max(|F_true|, 0.05)``: an absolute error relative to 5 % of the optical mean flux where
  the flux is below that), and the fraction of bins below the floor;
* calibration: fraction of residuals within 1 and 2 predicted sigma (a Gaussian gives 0.683 and
  0.954);
* sigma per model (what inference needs: a sigma that is right on average but too small for
  the models the emulator gets worst makes those posteriors overconfident): the Spearman rank
  correlation between each spectrum's RMS predicted sigma and its RMS actual error (both
  fractional), and the 50th / 95th percentiles of the per-spectrum RMS of residual / sigma
  (1 for a well-calibrated sigma), with the fraction of spectra where that RMS exceeds 2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.emulator._model import Emulator
from lumina_jax.preprocess import FEATURE_WINDOWS, within


def predict_batched(emu: Emulator, theta, chunk: int = 2048):
    """(flux, sigma) ``[N, n_wave]`` float64 NumPy, evaluated in jitted chunks."""
    f = jax.jit(jax.vmap(emu.spectrum_and_sigma))
    theta = np.asarray(theta, np.float64)
    outs_f, outs_s = [], []
    for i in range(0, theta.shape[0], chunk):
        fl, sg = f(jnp.asarray(theta[i:i + chunk]))
        outs_f.append(np.asarray(fl, np.float64))
        outs_s.append(np.asarray(sg, np.float64))
    return np.concatenate(outs_f), np.concatenate(outs_s)


def evaluate(emu: Emulator, theta, flux_true, *, window=(3300.0, 9700.0), n_worst: int = 5) -> dict:
    """Accuracy and calibration of ``emu`` on preprocessed spectra ``flux_true [N, n_wave]``.

    Returns a JSON-able dict (see module docstring)."""
    theta = np.asarray(theta, np.float64)
    flux_true = np.asarray(flux_true, np.float64)
    wl = emu.wavelength
    f_pred, s_pred = predict_batched(emu, theta)
    m = within(wl, [window])
    ft, fp, sp = flux_true[:, m], f_pred[:, m], s_pred[:, m]
    resid = fp - ft
    fe = np.abs(resid) / np.maximum(np.abs(ft), 1e-6)
    floor = emu.settings.preprocess.softening
    fe_floor = np.abs(resid) / np.maximum(np.abs(ft), floor)
    per_spec = fe.mean(axis=1)
    per_wl = fe.mean(axis=0)
    z = np.abs(resid) / sp
    wlm = wl[m]
    worst = np.argsort(per_wl)[::-1][:n_worst]
    feats = {}
    for name, (lo, hi) in FEATURE_WINDOWS.items():
        sel = (wlm >= lo) & (wlm <= hi)
        if sel.any():
            feats[name] = float(fe[:, sel].mean())
    asinh_res = np.arcsinh(fp / emu.settings.preprocess.softening) - np.arcsinh(ft / emu.settings.preprocess.softening)
    from scipy.stats import spearmanr

    rms_err = np.sqrt(np.mean(fe**2, axis=1))
    rms_sig = np.sqrt(np.mean((sp / np.maximum(np.abs(ft), 1e-6)) ** 2, axis=1))
    rms_z = np.sqrt(np.mean(z**2, axis=1))
    rank_corr = float(spearmanr(rms_sig, rms_err).statistic) if theta.shape[0] > 2 else float("nan")
    return {
        "n_spectra": int(theta.shape[0]),
        "window": [float(window[0]), float(window[1])],
        "mean_fractional_error": float(fe.mean()),
        "mean_fractional_error_floored": float(fe_floor.mean()),
        "flux_floor": float(floor),
        "fraction_bins_below_floor": float(np.mean(np.abs(ft) < floor)),
        "median_spectrum_fractional_error": float(np.median(per_spec)),
        "p95_spectrum_fractional_error": float(np.quantile(per_spec, 0.95)),
        "max_spectrum_fractional_error": float(per_spec.max()),
        "rms_asinh_residual": float(np.sqrt(np.mean(asinh_res**2))),
        "fraction_within_1sigma": float(np.mean(z <= 1.0)),
        "fraction_within_2sigma": float(np.mean(z <= 2.0)),
        "median_sigma_over_flux": float(np.median(sp / np.maximum(np.abs(ft), 1e-6))),
        "sigma_error_rank_correlation": rank_corr,
        "per_spectrum_rms_z_median": float(np.median(rms_z)),
        "per_spectrum_rms_z_p95": float(np.quantile(rms_z, 0.95)),
        "fraction_spectra_rms_z_above_2": float(np.mean(rms_z > 2.0)),
        "feature_windows_fractional_error": feats,
        "worst_bins": [{"wavelength": float(wlm[i]), "mean_fractional_error": float(per_wl[i])} for i in worst],
        "wavelength": wlm.tolist(),
        "per_wavelength_fractional_error": per_wl.tolist(),
        "per_wavelength_fraction_within_1sigma": np.mean(z <= 1.0, axis=0).tolist(),
    }


def plot_report(metrics: dict, emu: Emulator, theta, flux_true, path) -> None:
    """Two panels: per-wavelength mean fractional error and one example spectrum with its band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wl = np.asarray(metrics["wavelength"])
    fig, ax = plt.subplots(2, 1, figsize=(9, 7), constrained_layout=True)
    ax[0].plot(wl, 100 * np.asarray(metrics["per_wavelength_fractional_error"]), lw=1)
    ax[0].axhline(100 * metrics["mean_fractional_error"], color="k", ls="--", lw=0.8,
                  label=f"mean {100 * metrics['mean_fractional_error']:.2f} %")
    for lo, hi in FEATURE_WINDOWS.values():
        ax[0].axvspan(lo, hi, color="0.9", zorder=0)
    ax[0].set_ylabel("mean |dF|/F [%]")
    ax[0].set_title(f"held-out fractional error ({metrics['n_spectra']} spectra); "
                    f"within 1 sigma: {metrics['fraction_within_1sigma']:.3f}")
    ax[0].legend()
    i = int(np.argsort(np.abs(np.asarray(theta)[:, 0]))[len(theta) // 2]) if len(theta) else 0
    f, s = emu.spectrum_and_sigma(jnp.asarray(np.asarray(theta)[i]))
    f, s = np.asarray(f), np.asarray(s)
    g = emu.wavelength
    ax[1].plot(g, flux_true[i], color="k", lw=1, label="held-out model")
    ax[1].plot(g, f, color="C1", lw=1, label="emulator")
    ax[1].fill_between(g, f - s, f + s, color="C1", alpha=0.3, label="1 sigma")
    ax[1].set_xlabel("wavelength [Å]")
    ax[1].set_ylabel("normalised flux")
    ax[1].legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)
