"""Compare the embedded synthesizer with TARDIS and the observed SN 2011fe spectrum.

Reads ../shared/data/sn2011fe/{sn2011fe.yml, tardis_spectrum.csv, sn2011fe_observed_Bmax.csv}
(beside the repository root; never committed), builds the TARDIS model (uniform abundances,
power-law density, 30 shells 10,000-25,000 km/s, t = 19 d, L = 9.44e42 erg/s) as an Ejecta,
synthesises it, normalises all three spectra by their mean over 3500-9000 A and prints the RMS
differences.  Writes docs/sn2011fe_comparison.png (and --json for the numbers).

It also tests what the reference spectrum is: a Planck function is fitted to it in windows free of
its absorption dips, and the largest relative residual there is reported.  The shipped
``tardis_spectrum.csv`` is a Planck function (11,994 K) to 2e-4 outside three smooth dips -- a
stand-in with TARDIS's name, not a Monte Carlo spectrum (which has noise, Fe-group lines and
emission peaks) -- so "ours vs TARDIS" measures the distance to that stand-in.

    python benchmarks/compare_sn2011fe.py [--data DIR] [--out docs/sn2011fe_comparison.png] [--json]
        [--radiation-field power_law|transfer] [--line-interaction scatter|downbranch|macroatom]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lumina_jax.params import load_space  # noqa: E402
from lumina_jax.synth import SynthConfig, Synthesizer  # noqa: E402
from lumina_jax.tardis_config import read_tardis_yaml  # noqa: E402

BAND = (3500.0, 9000.0)
#: windows (A) of the reference spectrum that are free of its three absorption dips
CONTINUUM_WINDOWS = ((3000.0, 3300.0), (4200.0, 4900.0), (6700.0, 10000.0))
HC_K_A = 1.438776877e8  # h c / k in K Angstrom


def planck_lambda(wl, t_k, scale):
    """``scale * B_lambda(T)`` up to constants: ``scale / wl^5 / (exp(hc / wl k T) - 1)``; wl in A."""
    return scale / wl**5 / np.expm1(HC_K_A / (wl * t_k))


def planck_continuum(wl, flux, windows=CONTINUUM_WINDOWS):
    """Fit ``planck_lambda`` to ``flux`` inside ``windows``: returns (T [K], largest relative residual
    inside the windows, number of points fitted, dips [(wavelength A, depth)] of flux / Planck - 1
    deeper than 5 % anywhere)."""
    from scipy.optimize import curve_fit
    from scipy.signal import find_peaks

    wl, flux = np.asarray(wl, float), np.asarray(flux, float)
    m = np.zeros(wl.shape, bool)
    for lo, hi in windows:
        m |= (wl >= lo) & (wl <= hi)
    if m.sum() < 3:
        raise ValueError("fewer than 3 points of the spectrum lie in the continuum windows")
    t0 = HC_K_A / (wl[m][np.argmax(flux[m] * wl[m] ** 5)] * 5.0)  # rough, from the Wien peak
    guess_scale = flux[m][0] * wl[m][0] ** 5 * np.expm1(HC_K_A / (wl[m][0] * t0))
    (t_k, scale), _ = curve_fit(lambda w, t, a: planck_lambda(w, t, a * guess_scale), wl[m], flux[m], p0=(t0, 1.0))
    ratio = flux / planck_lambda(wl, t_k, scale * guess_scale)
    depth = 1.0 - ratio
    peaks, _ = find_peaks(depth, height=0.05)
    return (float(t_k), float(np.max(np.abs(ratio[m] - 1.0))), int(m.sum()),
            [(float(wl[k]), float(depth[k])) for k in peaks])


def normalised(wl, flux, grid):
    f = np.interp(grid, wl, flux)
    band = (grid >= BAND[0]) & (grid <= BAND[1])
    return f / f[band].mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = next((a / "shared" / "data" / "sn2011fe" for a in ROOT.parents
                    if (a / "shared" / "data" / "sn2011fe").exists()), ROOT.parent / "shared" / "data" / "sn2011fe")
    ap.add_argument("--data", type=Path, default=default, help="folder with the SN 2011fe files (default: ../shared/data/sn2011fe)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "sn2011fe_comparison.png")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--radiation-field", choices=("power_law", "transfer"), default=None,
                    help="the synthesizer's radiation field (default: that of configs/synth.yaml)")
    ap.add_argument("--line-interaction", choices=("scatter", "downbranch", "macroatom"), default=None,
                    help="the synthesizer's line interaction (default: that of configs/synth.yaml)")
    args = ap.parse_args()
    files = [args.data / n for n in ("sn2011fe.yml", "tardis_spectrum.csv", "sn2011fe_observed_Bmax.csv")]
    for f in files:
        if not f.exists():
            raise SystemExit(f"error: {f} not found (the SN 2011fe data lie in ../shared/data/sn2011fe)")
    tardis = np.loadtxt(files[1], delimiter=",", skiprows=1)
    obs = np.loadtxt(files[2], delimiter=",", skiprows=1)
    t0 = time.time()
    config = SynthConfig.load()
    config = config.replace(**{k: v for k, v in (("radiation_field", args.radiation_field),
                                                 ("line_interaction", args.line_interaction)) if v is not None})
    synth = Synthesizer.default(load_space(1), config)
    ej = read_tardis_yaml(files[0])
    l_lam, state = synth.spectrum_of_ejecta(ej)
    wl = synth.wavelength
    grid = wl[(wl >= BAND[0]) & (wl <= BAND[1])]
    ours = normalised(wl, l_lam, grid)
    ref = normalised(tardis[:, 0], tardis[:, 1], grid)
    z_m101 = 0.000804  # heliocentric redshift of M101
    seen = normalised(obs[:, 0] / (1 + z_m101), obs[:, 1], grid)
    rms = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))  # noqa: E731
    sel = (wl >= 5900) & (wl <= 6400)
    t_ref, resid_ref, n_ref, dips_ref = planck_continuum(tardis[:, 0], tardis[:, 1])
    resid_obs = planck_continuum(obs[:, 0] / (1 + z_m101), obs[:, 1])[1]  # a real spectrum, for contrast
    res = {
        "radiation_field": config.radiation_field, "line_interaction": config.line_interaction,
        "l_emergent_over_requested": float(state["l_emergent"] / ej.luminosity),
        "rms_ours_vs_tardis": rms(ours, ref), "rms_ours_vs_observed": rms(ours, seen),
        "rms_tardis_vs_observed": rms(ref, seen), "band_A": list(BAND),
        "t_inner_K": float(state["t_inner"]), "tardis_t_inner_K": 10521.52,
        # TARDIS's converged radiation field of this configuration (LUMINA-SN's reference export)
        "w_range": [float(np.min(state["w"])), float(np.max(state["w"]))], "tardis_w_range": [0.090, 0.380],
        "t_rad_range_K": [float(np.min(state["t_rad"])), float(np.max(state["t_rad"]))],
        "tardis_t_rad_range_K": [6861.0, 12291.0],
        "si_ii_minimum_A": float(wl[sel][np.argmin(l_lam[sel])]), "n_lines": synth.n_lines,
        "reference_planck_T_K": round(t_ref, 1), "reference_planck_max_residual": resid_ref,
        "reference_planck_points": n_ref, "observed_planck_max_residual": resid_obs,
        "reference_dips": [{"wavelength_A": round(w, 1), "depth": round(d, 3)} for w, d in dips_ref],
        "seconds": round(time.time() - t0, 1), "figure": str(args.out),
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.plot(grid, seen, color="0.3", lw=1.0, label="SN 2011fe observed (B max)")
    ax.plot(grid, ref, color="tab:orange", lw=1.0,
            label=f"'TARDIS reference' (RMS vs obs {res['rms_tardis_vs_observed']:.3f}; a {t_ref:,.0f} K Planck "
                  f"function to {resid_ref:.0e} outside {len(dips_ref)} dips)")
    ax.plot(grid, ours, color="tab:blue", lw=1.2,
            label=f"lumina-jax synth (RMS vs TARDIS {res['rms_ours_vs_tardis']:.3f}, vs obs {res['rms_ours_vs_observed']:.3f})")
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel("flux / mean(3500–9000 Å)")
    ax.set_title("SN 2011fe configuration (../shared/data/sn2011fe/sn2011fe.yml)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    plt.close(fig)
    print(json.dumps(res, indent=1) if args.json else
          "\n".join(f"{k}: {v}" for k, v in res.items()))


if __name__ == "__main__":
    main()
