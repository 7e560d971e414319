"""A fit's abundance stratification against the published SN 2011fe abundance tomography.

    python benchmarks/compare_tomography.py runs/sn2011fe/stage3/results [--json out.json]

For each velocity band of the published stratification (Mazzali et al. 2014, MNRAS 439, 1959,
as tabulated in the TARDIS-bundle interpretation of their models; 56Ni and stable Fe at
explosion), the fit's posterior mass fraction averaged over the band (median and 68 % interval
over the draws; volume-weighted within the band), and the part of the band that lies above the
fit's photosphere (below it a photospheric spectrum constrains nothing).  The fit's model fixes
C at 0.02 (so the outer C-rich layer cannot be reproduced) and puts stable Fe and 56Ni in the
same zones as the other species.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from lumina_jax import derived
from lumina_jax.workflows.results import full_theta_draws, load_results
from lumina_jax.params import ParameterSpace

#: (species, band lo, band hi km/s, published range) -- Mazzali et al. 2014 stratification
PUBLISHED = [
    ("56Ni (t=0)", 9000.0, 10500.0, (0.26, 0.26)),
    ("56Ni (t=0)", 12000.0, 13500.0, (0.04, 0.04)),
    ("Si", 9000.0, 13500.0, (0.44, 0.56)),
    ("S", 9000.0, 13500.0, (0.08, 0.15)),
    ("O", 13500.0, 19500.0, (0.70, 0.93)),
]


def band_fractions(results_dir, n: int = 1000):
    summary, idata = load_results(results_dir)
    space = ParameterSpace.from_json(summary["space"])
    th, _ = full_theta_draws(summary, idata, n)
    grid = np.linspace(5000.0, space.ejecta.v_outer - 1.0, 2001)
    prof = np.asarray(jax.jit(jax.vmap(lambda t: derived.profile(t, space, grid)))(th))  # [n, grid, species]
    rho_w = grid ** 2  # volume weight v^2 dv of the uniform grid
    v_ph = th[:, space.index("v_inner")]
    rows = []
    for sp, lo, hi, pub in PUBLISHED:
        k = derived.PROFILE_SPECIES.index(sp)
        sel = (grid >= lo) & (grid < hi)
        vals = prof[:, sel, k]
        w = np.where(np.isfinite(vals), rho_w[sel][None], 0.0)
        mean = np.sum(np.nan_to_num(vals) * w, axis=1) / np.maximum(w.sum(axis=1), 1e-30)
        covered = np.clip((hi - np.maximum(lo, v_ph)) / (hi - lo), 0.0, 1.0)
        ok = w.sum(axis=1) > 0
        q = np.percentile(mean[ok], [16, 50, 84]) if ok.any() else [np.nan] * 3
        rows.append({"species": sp, "band_kms": [lo, hi], "published": list(pub), "fit_median": float(q[1]),
                     "fit_q16": float(q[0]), "fit_q84": float(q[2]),
                     "band_above_photosphere": float(np.median(covered))})
    return {"v_inner_median": float(np.median(v_ph)), "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="results directory of a stage-2 or stage-3 fit (posterior.nc)")
    ap.add_argument("--json", help="write the table to this file")
    a = ap.parse_args()
    out = band_fractions(a.results)
    print(f"photosphere (posterior median): {out['v_inner_median']:.0f} km/s")
    print(f"{'species':12s} {'band (km/s)':>15s} {'published':>11s} {'fit median [68 %]':>22s} {'above v_ph':>10s}")
    for r in out["rows"]:
        pub = r["published"]
        p = f"{pub[0]:.2f}" if pub[0] == pub[1] else f"{pub[0]:.2f}-{pub[1]:.2f}"
        print(f"{r['species']:12s} {r['band_kms'][0]:7.0f}-{r['band_kms'][1]:<7.0f} {p:>11s} "
              f"{r['fit_median']:8.3f} [{r['fit_q16']:.3f}, {r['fit_q84']:.3f}] {r['band_above_photosphere']:10.2f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
