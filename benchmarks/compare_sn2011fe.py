"""Compare the embedded synthesizer with TARDIS and the observed SN 2011fe spectrum.

Reads ../shared/data/sn2011fe/{sn2011fe.yml, tardis_spectrum.csv, sn2011fe_observed_Bmax.csv}
(beside the repository root; never committed), builds the TARDIS model (uniform abundances,
power-law density, 30 shells 10,000-25,000 km/s, t = 19 d, L = 9.44e42 erg/s) as an Ejecta,
synthesises it, normalises all three spectra by their mean over 3500-9000 A and prints the RMS
differences.  Writes docs/sn2011fe_comparison.png (and --json for the numbers).

    python benchmarks/compare_sn2011fe.py [--data DIR] [--out docs/sn2011fe_comparison.png] [--json]
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
    args = ap.parse_args()
    files = [args.data / n for n in ("sn2011fe.yml", "tardis_spectrum.csv", "sn2011fe_observed_Bmax.csv")]
    for f in files:
        if not f.exists():
            raise SystemExit(f"error: {f} not found (the SN 2011fe data lie in ../shared/data/sn2011fe)")
    tardis = np.loadtxt(files[1], delimiter=",", skiprows=1)
    obs = np.loadtxt(files[2], delimiter=",", skiprows=1)
    t0 = time.time()
    synth = Synthesizer.default(load_space(1), SynthConfig.load())
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
    res = {
        "rms_ours_vs_tardis": rms(ours, ref), "rms_ours_vs_observed": rms(ours, seen),
        "rms_tardis_vs_observed": rms(ref, seen), "band_A": list(BAND),
        "t_inner_K": float(state["t_inner"]), "tardis_t_inner_K": 10521.52,
        "si_ii_minimum_A": float(wl[sel][np.argmin(l_lam[sel])]), "n_lines": synth.n_lines,
        "seconds": round(time.time() - t0, 1), "figure": str(args.out),
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.plot(grid, seen, color="0.3", lw=1.0, label="SN 2011fe observed (B max)")
    ax.plot(grid, ref, color="tab:orange", lw=1.0, label=f"TARDIS reference (RMS vs obs {res['rms_tardis_vs_observed']:.3f})")
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
