"""Benchmark and validation of the QKE solver (box3d_jax.qke).

Prints, per case: seconds per asymptotic state (LSA planning, compilation and time
stepping separately), the growth rate fitted from the linear phase against the LSA,
the conservation error over the run, and the asymptotic state beside Box3D's prediction.

Cases: ``fiducial`` (Emu: f = n/4π (1 ± μ) for ν_e / ν̄_e, heavies empty) and ``nsm1``
(reference note §7, Minerbo, anisotropic). Default resolution 128 cells × 302 directions.

    python benchmarks/bench_qke.py [--n-z 128] [--order 29] [--case fiducial --case nsm1] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from box3d_jax import box3d, lebedev, qke


def fiducial_case(order: int):
    """Per-bin densities [2, 3, n_dir] (n_tot = 1) and the four-fluxes [2, 3, 4] (n_tot = 1)."""
    d, w = lebedev.rule(order)
    rho = np.zeros((2, 3, len(w)))
    rho[0, 0] = 0.5 * w * (1 + d[:, 2]) / (4 * np.pi)
    rho[1, 0] = 0.5 * w * (1 - d[:, 2]) / (4 * np.pi)
    F4 = np.concatenate([rho @ d, rho.sum(-1, keepdims=True)], axis=-1)
    return rho, F4


def nsm1_F4() -> np.ndarray:
    """NSM1 point (reference note §7), cm⁻³, [2, 3, 4]."""
    F4 = np.zeros((2, 3, 4))
    Ne, Na, Nx = 14.22e32, 19.15e32, 19.65e32 / 4
    F4[0, 0] = [*(Ne * np.array([0.0974, 0.0421, -0.1343])), Ne]
    F4[1, 0] = [*(Na * np.array([0.0723, 0.0313, -0.3446])), Na]
    for s in (0, 1):
        for a in (1, 2):
            F4[s, a] = [*(Nx * np.array([-0.0216, 0.0743, -0.5354])), Nx]
    return F4


def run_case(name: str, n_z: int, order: int, t_end_growth: float, cfl: float, n_wavelengths: float = 8.0) -> dict:
    # validation: the LSA of exactly the discretised problem (lsa_order = 0); the production
    # planning LSA (Lebedev 17) is timed separately below.
    cfg = qke.QKEConfig(n_z=n_z, lebedev_order=order, t_end_growth=t_end_growth, cfl=cfl, lsa_order=0,
                        n_wavelengths=n_wavelengths).validate()
    d, w = lebedev.rule(order)
    if name == "fiducial":
        rho, F4n = fiducial_case(order)
    else:
        F4 = nsm1_F4()
        F4n = F4 / F4[..., 3].sum()
        rho = qke.minerbo_rho(F4n, d, w)
    c0 = time.process_time()
    tp = time.perf_counter()
    qke.plan_run(rho, qke.QKEConfig(n_z=n_z, lebedev_order=order, lsa_order=17))
    t_lsa17 = time.perf_counter() - tp
    t0 = time.perf_counter()
    plan, lsa_res = qke.plan_run(rho, cfg)
    (plan,), spd = qke._common_steps([plan], cfg)
    t1 = time.perf_counter()
    key = jax.random.PRNGKey(cfg.seed)
    args = (jnp.asarray(rho), key, plan, jnp.asarray(spd))
    compiled = jax.jit(functools.partial(qke.evolve, config=cfg)).lower(*args).compile()
    t2 = time.perf_counter()
    diag = jax.tree.map(np.asarray, compiled(*args))
    t3 = time.perf_counter()
    cpu = time.process_time() - c0
    res = qke.analyse(diag, plan, cfg)
    b3 = np.asarray(box3d.box3d(jnp.asarray(F4n), order=41))
    # direction-resolved survival probability of ν_e over the averaging window, in bins of
    # μ = v·ê (Box3D: 1/3 on the smaller side of the crossing, 1 − (2/3) I_</I_> on the other)
    win = diag.t >= cfg.avg_start * res.t_sat
    late = diag.rho_dir[win].mean(axis=0)  # [2, 3, V]
    mu = d @ np.asarray(plan.axis)
    edges = np.linspace(-1, 1, 9)
    P_bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (mu >= lo) & (mu <= hi) & (rho[0, 0] > 1e-12)
        P_bins.append(float(late[0, 0, sel].sum() / rho[0, 0, sel].sum()) if sel.any() else float("nan"))
    n_steps = spd * cfg.n_diag
    return {
        "case": name,
        "n_z": n_z,
        "n_wavelengths": n_wavelengths,
        "n_dir": len(w),
        "n_steps": n_steps,
        "dt": float(plan.dt),
        "t_end": res.t_end,
        "t_sat": res.t_sat,
        "seconds_lsa": t1 - t0,
        "seconds_lsa17": t_lsa17,
        "seconds_production": t_lsa17 + (t3 - t1),
        "cpu_seconds_all": cpu,
        "seconds_compile": t2 - t1,
        "seconds_run": t3 - t2,
        "seconds_total": t3 - t0,
        "seconds_per_step": (t3 - t2) / n_steps,
        "growth_lsa": res.growth_lsa,
        "growth_fit": res.growth_rate,
        "growth_fit_total": res.growth_rate_total,
        "growth_ratio": res.growth_rate / res.growth_lsa if res.growth_lsa else math.nan,
        "k_lsa": float(plan.k_lsa),
        "conservation_err": res.conservation_err,
        "ok": res.ok,
        "reason": res.reason,
        "N_final": res.F4_final[..., 3].tolist(),
        "N_stddev": res.F4_stddev[..., 3].tolist(),
        "F_final": res.F4_final[..., :3].tolist(),
        "N_initial": F4n[..., 3].tolist(),
        "N_box3d": b3[..., 3].tolist(),
        "F_box3d": b3[..., :3].tolist(),
        "rms_vs_box3d": float(np.sqrt(np.mean((res.F4_final - b3) ** 2))),
        "mu_bin_edges": edges.tolist(),
        "nue_survival_by_mu": P_bins,
    }


def convergence(n_points: int, resolutions: list[tuple[int, int]], seed: int, t_end_growth: float, cfl: float,
                lsa_order: int) -> dict:
    """Asymptotic states of sampled unstable points at several resolutions (n_z, order).

    The first resolution is the reference; returns RMS/n_tot and max |Δ|/n_tot of the
    others against it, per point, plus each run's stddev and acceptance.
    """
    from box3d_jax import generate as G

    ref_cfg = qke.QKEConfig(n_z=resolutions[0][0], lebedev_order=resolutions[0][1], t_end_growth=t_end_growth,
                            cfl=cfl, lsa_order=lsa_order)
    scfg = G.SamplerConfig(p_stable=0.0)
    F4s, i = [], 0
    while len(F4s) < n_points:
        c = G.prepare(i, seed, ref_cfg, scfg)
        i += 1
        if c.keep:
            F4s.append(c.F4)
    F4s = np.stack(F4s)
    out = {"points": F4s.tolist(), "runs": {}}
    for n_z, order in resolutions:
        cfg = qke.QKEConfig(n_z=n_z, lebedev_order=order, t_end_growth=t_end_growth, cfl=cfl, lsa_order=lsa_order)
        t0 = time.perf_counter()
        fin, std, g, res = qke.asymptotic_state(F4s, cfg, seed=seed)
        ntot = F4s[..., 3].sum(axis=(1, 2))[:, None, None, None]
        out["runs"][f"{n_z}x{lebedev.n_points(order)}"] = {
            "seconds_per_point": (time.perf_counter() - t0) / n_points,
            "F4_final": (fin / ntot).tolist(),
            "stddev_max": [float(r.F4_stddev.max()) for r in res],
            "ok": [bool(r.ok) for r in res],
            "growth_fit_over_lsa": [r.growth_rate / r.growth_lsa for r in res],
        }
    ref = np.array(next(iter(out["runs"].values()))["F4_final"])
    for key, r in out["runs"].items():
        diff = np.array(r["F4_final"]) - ref
        r["rms_vs_ref"] = np.sqrt((diff**2).mean(axis=(1, 2, 3))).tolist()
        r["max_vs_ref"] = np.abs(diff).max(axis=(1, 2, 3)).tolist()
        b3 = np.asarray(box3d.box3d(jnp.asarray(F4s / F4s[..., 3].sum(axis=(1, 2))[:, None, None, None]), order=41))
        r["rms_vs_box3d"] = np.sqrt(((np.array(r["F4_final"]) - b3) ** 2).mean(axis=(1, 2, 3))).tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-z", type=int, default=128)
    ap.add_argument("--order", type=int, default=29)
    ap.add_argument("--case", action="append", choices=("fiducial", "nsm1"))
    ap.add_argument("--t-end-growth", type=float, default=qke.QKEConfig.t_end_growth)
    ap.add_argument("--cfl", type=float, default=qke.QKEConfig.cfl)
    ap.add_argument("--n-wavelengths", type=float, default=qke.QKEConfig.n_wavelengths)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--converge", type=int, default=0, metavar="N",
                    help="instead: convergence check on N sampled unstable points")
    ap.add_argument("--resolutions", default="128x29,64x17,32x17,32x11",
                    help="with --converge: n_z x Lebedev order, the first is the reference")
    ap.add_argument("--lsa-order", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.converge:
        res = [tuple(int(x) for x in r.split("x")) for r in a.resolutions.split(",")]
        out = convergence(a.converge, res, a.seed, a.t_end_growth, a.cfl, a.lsa_order)
        summary = {k: {m: v[m] for m in ("seconds_per_point", "rms_vs_ref", "max_vs_ref", "rms_vs_box3d",
                                             "stddev_max", "ok", "growth_fit_over_lsa")}
                   for k, v in out["runs"].items()}
        print(json.dumps(summary, indent=1))
        return
    out = [run_case(c, a.n_z, a.order, a.t_end_growth, a.cfl, a.n_wavelengths) for c in (a.case or ["fiducial", "nsm1"])]
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"backend: {jax.default_backend()}  devices: {jax.devices()}")
    np.set_printoptions(precision=4, suppress=True)
    for r in out:
        print(f"\n== {r['case']}: {r['n_z']} cells x {r['n_dir']} directions, box {r['n_wavelengths']:g} wavelengths, {r['n_steps']} steps (dt = {r['dt']:.3f})")
        print(f"seconds per asymptotic state (wall): {r['seconds_production']:.1f} with the production "
              f"Lebedev-17 LSA ({r['seconds_lsa17']:.1f}) + compile {r['seconds_compile']:.1f} + "
              f"run {r['seconds_run']:.1f} ({1e3 * r['seconds_per_step']:.1f} ms/step); "
              f"validation LSA at the solver's order {r['seconds_lsa']:.1f}; "
              f"process CPU time of everything {r['cpu_seconds_all']:.1f}")
        print(f"growth rate [√2G_F n_tot/ħ]: LSA {r['growth_lsa']:.5f} (k = {r['k_lsa']:.4f}), "
              f"fit (fastest mode) {r['growth_fit']:.5f}, ratio {r['growth_ratio']:.4f}; "
              f"Rhea-style fit of the total off-diagonal {r['growth_fit_total']:.5f}")
        print(f"t_sat = {r['t_sat']:.1f}, t_end = {r['t_end']:.1f}; conservation error {r['conservation_err']:.2e}; "
              f"accepted: {r['ok']} {r['reason']}")
        print("N/n_tot  initial (nu; nubar):", np.array(r["N_initial"]).round(4).tolist())
        print("N/n_tot  QKE final          :", np.array(r["N_final"]).round(4).tolist(),
              " stddev max", f"{np.max(r['N_stddev']):.4f}")
        print("N/n_tot  Box3D              :", np.array(r["N_box3d"]).round(4).tolist())
        print("F/n_tot  QKE final          :", np.array(r["F_final"]).round(4).tolist())
        print("F/n_tot  Box3D              :", np.array(r["F_box3d"]).round(4).tolist())
        print(f"RMS(QKE − Box3D)/n_tot over 24 components: {r['rms_vs_box3d']:.4f}")
        print("nu_e survival probability in bins of mu = v.axis (edges -1..1 step 0.25):",
              np.round(r["nue_survival_by_mu"], 3).tolist())


if __name__ == "__main__":
    main()
