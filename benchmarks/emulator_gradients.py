"""How well an emulator's derivatives match the physics: directional derivatives of the
smoothed, normalised flux through the emulator versus through the synthesizer (``jax.jvp``).

    python benchmarks/emulator_gradients.py --checkpoint runs/pipeline/stage3/emulator.ckpt \
        [--checkpoint other.ckpt ...] [--points 16] [--directions 4] [--synth-config YAML] \
        [--results FIT_DIR [--draws 8]] [--data STORE ...] [--json out.json]

The gradient samplers follow the emulator's derivatives, so their accuracy matters as much as
the accuracy of its values.  At ``--points`` parameter vectors drawn uniformly from the inner
80 % of the emulator's box (seeded; the same points for every checkpoint, which must share one
parameter space) and ``--directions`` random unit directions ``v`` in unit-box coordinates over
the free parameters, this compares ``J_emu v`` with ``J_syn v`` over 3300-9700 Å, where
``J = dF/du`` and ``F`` is the flux after the emulator's own preprocessing (so the synthesizer
path is exactly what the emulator was trained to reproduce).  Reported per checkpoint: the
median and 90th percentile of ``|J_emu v - J_syn v| / |J_syn v|`` and of the cosine between the
two, and, as a yardstick, the same fractional error of the values ``|F_emu - F_syn| / |F_syn|``.

``--derivatives STORE.jvp-KEY.npz --data STORE`` compares instead at the rows of a store whose
synthesizer derivatives ``lumina-jax train --sobolev`` cached (one synthesizer run per row, already
paid), using only the rows that none of the checkpoints saw in training or validation; it runs
no synthesizer, so it costs seconds.

``--results FIT_DIR`` adds what ``lumina-jax check gradient FIT_DIR --checkpoint C`` measures, for
every checkpoint at the same ``--draws`` posterior draws of that fit: the cosine between the
log-likelihood gradients (unit-box coordinates of the free parameters) through the emulator and
through the synthesizer (``--synth-config``), the emulator's sigma on both paths.  ``--data
STORE`` adds the held-out mean fractional error of the flux over the same window (the rows of
the stores that the checkpoint did not see in training or validation, as ``lumina-jax emulator
report`` scores them).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import lumina_jax  # noqa: F401
from lumina_jax.emulator import load_emulator
from lumina_jax.inference.density import make_setup
from lumina_jax.synth import Synthesizer


def draws(space, free_index, base, n, seed):
    """``[n, dim]`` parameter vectors, free parameters uniform in the inner 80 % of the box."""
    rng = np.random.default_rng(seed)
    th = np.repeat(base[None], n, axis=0)
    u = rng.uniform(0.1, 0.9, (n, free_index.size))
    th[:, free_index] = space.lower[free_index] + u * (space.upper[free_index] - space.lower[free_index])
    return th


def held_out(checkpoint, emu, stores, window):
    """Held-out mean fractional error of ``emu`` on the rows of ``stores`` it did not see."""
    from lumina_jax.emulator import evaluate, prepare_spectra, theta_hashes
    from lumina_jax.emulator._checkpoint import read_seen_hashes
    from lumina_jax.emulator._data import load_training_sets
    from lumina_jax.preprocess import Preprocessor

    prep = prepare_spectra(load_training_sets(stores), Preprocessor(emu.settings.preprocess))
    keep = ~np.isin(theta_hashes(prep.theta), read_seen_hashes(checkpoint))
    keep &= np.all((prep.theta >= emu.space.lower) & (prep.theta <= emu.space.upper), axis=1)
    if not keep.any():
        raise SystemExit(f"error: no held-out rows of {', '.join(stores)} for {checkpoint}")
    m = evaluate(emu, prep.theta[keep], prep.flux[keep], window=window)
    return {"held_out_mean_fractional_error": float(m["mean_fractional_error"]), "held_out_n": int(keep.sum())}


def likelihood_gradient(results_dir, checkpoint, synth, n_draws):
    """``check gradient``'s draw comparison for ``checkpoint`` at a fit's posterior draws."""
    from pathlib import Path

    from lumina_jax.workflows import checks
    from lumina_jax.workflows.results import full_theta_draws, load_fit

    # the benchmark's synthesizer on the physics path
    summary, idata, setup, data, _, nuis, emu, syn = load_fit(Path(results_dir), Path(checkpoint), synthesizer=synth)
    lk = summary["likelihood"]
    ref = lk.get("emulator_sigma_reference") if lk.get("emulator_sigma") == "fixed" else None
    theta_sigma = None if ref is None else np.asarray(setup.space.from_dict(ref), float)
    th, nd = full_theta_draws(summary, idata, n_draws)
    for k in ("log_scale", "f_sys"):
        nd.setdefault(k, np.full(len(th), nuis[k]))
    d = checks.gradient_agreement_draws(setup, emu, syn, data, th, nd, theta_sigma=theta_sigma)
    return {"lik_n_draws": d["n_draws"], "lik_cosine_median": d["cosine_median"], "lik_cosine_p10": d["cosine_p10"],
            "lik_norm_ratio_median": d["norm_ratio_median"], "lik_cosine": d["cosine"]}


def _summary(val_err, d_err, cos):
    return {"value_rel_error_median": float(np.median(val_err)), "jvp_rel_error_median": float(np.median(d_err)),
            "jvp_rel_error_p90": float(np.percentile(d_err, 90)), "jvp_cosine_median": float(np.median(cos)),
            "jvp_cosine_p10": float(np.percentile(cos, 10))}


def cached_comparison(a, emus):
    """Slopes at the rows of ``a.derivatives`` (cached synthesizer JVPs of the store ``a.data[0]``)
    that none of the checkpoints saw in training or validation, and held-out values."""
    from lumina_jax.emulator import theta_hashes
    from lumina_jax.emulator._checkpoint import read_seen_hashes
    from lumina_jax.emulator._data import load_training_set
    from lumina_jax.emulator._sobolev import preprocess_jvp
    from lumina_jax.preprocess import Preprocessor

    ts = load_training_set(a.data[0])
    with np.load(a.derivatives) as z:
        cached = {int(h): (v, d) for h, v, d in zip(z["hashes"], z["v"], z["dl"])}
    hashes = theta_hashes(ts.theta)
    seen = np.concatenate([read_seen_hashes(c) for c in a.checkpoint])
    space = emus[0].space
    inside = np.all((ts.theta >= space.lower) & (ts.theta <= space.upper), axis=1)
    rows = np.array([i for i, h in enumerate(hashes) if int(h) in cached and inside[i]
                     and not np.isin(h, seen)], int)
    if rows.size == 0:
        raise SystemExit(f"error: no row of {a.derivatives} is unseen by every checkpoint")
    v = np.stack([cached[int(hashes[i])][0] for i in rows])  # [M, k, dim]
    dl = np.stack([cached[int(hashes[i])][1] for i in rows])  # [M, k, m]
    width = jnp.asarray(space.upper - space.lower)
    out = []
    for c, emu in zip(a.checkpoint, emus):
        f_s, d_s = preprocess_jvp(Preprocessor(emu.settings.preprocess), ts.wavelength, ts.spectra[rows], dl)
        band = (emu.wavelength >= a.wl_min) & (emu.wavelength <= a.wl_max)
        emu_jvp = jax.jit(lambda th, u, emu=emu: jax.jvp(emu.spectrum, (th,), (u * width,)))
        val_err, d_err, cos = [], [], []
        for m, i in enumerate(rows):
            for k in range(v.shape[1]):
                f_e, d_e = (np.asarray(x, float)[band] for x in emu_jvp(jnp.asarray(ts.theta[i]), jnp.asarray(v[m, k])))
                fs, ds = f_s[m][band], d_s[m, k][band]
                if k == 0:
                    val_err.append(np.linalg.norm(f_e - fs) / np.linalg.norm(fs))
                d_err.append(np.linalg.norm(d_e - ds) / np.linalg.norm(ds))
                cos.append(float(d_e @ ds / (np.linalg.norm(d_e) * np.linalg.norm(ds))))
        row = {"checkpoint": c, "points": int(rows.size), "directions": int(v.shape[1]), "source": a.derivatives,
               **_summary(val_err, d_err, cos)}
        if a.data:
            row.update(held_out(c, emu, a.data, (a.wl_min, a.wl_max)))
        out.append(row)
        print(f"{c}: at {rows.size} unseen store rows x {v.shape[1]} directions: values "
              f"{100 * row['value_rel_error_median']:.2f} %; directional derivatives: median error "
              f"{100 * row['jvp_rel_error_median']:.1f} % (90th pct {100 * row['jvp_rel_error_p90']:.1f} %), cosine "
              f"median {row['jvp_cosine_median']:.3f} (10th pct {row['jvp_cosine_p10']:.3f}); held-out mean "
              f"fractional error {100 * row['held_out_mean_fractional_error']:.3f} % ({row['held_out_n']} models)",
              flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="emulator checkpoint (repeat to compare)")
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--directions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wl-min", type=float, default=3300.0)
    ap.add_argument("--wl-max", type=float, default=9700.0)
    ap.add_argument("--synth-config", help="synthesizer YAML (default lumina_jax/configs/synth.yaml; the pipeline's training "
                    "campaigns use lumina_jax/configs/synth_campaign.yaml, the function the emulator was fitted to)")
    ap.add_argument("--results", help="a fit's results directory: likelihood-gradient cosine at its posterior draws")
    ap.add_argument("--draws", type=int, default=8, help="posterior draws of --results used")
    ap.add_argument("--data", action="append", default=[], help="campaign store(s): held-out mean fractional error")
    ap.add_argument("--derivatives", help="a derivative cache of a --data store (STORE.jvp-KEY.npz, written by "
                    "`lumina-jax train --sobolev`): compare at its rows that no checkpoint saw, with the cached "
                    "synthesizer derivatives and stored spectra (no synthesizer run)")
    ap.add_argument("--reference", help="NPZ file of the synthesizer's values and derivatives at the points: read "
                    "when it holds the same points and directions, else computed and written (reuse across runs)")
    ap.add_argument("--json", help="write the results to this file")
    a = ap.parse_args(argv)
    emus = [load_emulator(c) for c in a.checkpoint]
    space = emus[0].space
    for c, e in zip(a.checkpoint, emus):
        if e.space.names != space.names or not (np.allclose(e.space.lower, space.lower)
                                                and np.allclose(e.space.upper, space.upper)):
            raise SystemExit(f"error: {c} has a different parameter space from {a.checkpoint[0]}")
    if a.derivatives:
        if len(a.data) != 1:
            raise SystemExit("error: --derivatives needs the one --data store it was computed for")
        rows = cached_comparison(a, emus)
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return
    setup = make_setup(space, n_poly=0)
    idx = np.asarray(setup.free_index)
    width = space.upper[idx] - space.lower[idx]
    thetas = draws(space, idx, setup.base_theta(), a.points, a.seed)
    rng = np.random.default_rng(a.seed + 1)
    dirs = rng.normal(size=(a.points, a.directions, idx.size))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    wave = emus[0].wavelength
    band = (wave >= a.wl_min) & (wave <= a.wl_max)
    synth = Synthesizer.default(space, a.synth_config)

    def theta_of(theta0, du):  # unit-box step on the free parameters -> physical theta
        return jnp.asarray(theta0).at[idx].add(du * width)

    def syn_flux(theta):
        w, lum = synth.spectrum(theta)
        return jnp.asarray(emus[0].preprocess(w, lum, None))

    def jvp(fn, theta0, v):
        return jax.jvp(lambda du: fn(theta_of(theta0, du)), (jnp.zeros(idx.size),), (jnp.asarray(v),))

    syn_jvp = jax.jit(lambda th, v: jvp(syn_flux, th, v))
    t0 = time.perf_counter()
    ref = None
    if a.reference and os.path.exists(a.reference):
        with np.load(a.reference) as z:
            if z["thetas"].shape == thetas.shape and np.array_equal(z["thetas"], thetas) \
                    and z["dirs"].shape == dirs.shape and np.array_equal(z["dirs"], dirs):
                ref = [[(z["flux"][p, k], z["dflux"][p, k]) for k in range(a.directions)] for p in range(a.points)]
                print(f"synthesizer: read {a.reference}", flush=True)
    if ref is None:
        ref = []
        for p in range(a.points):
            ref.append([tuple(np.asarray(x, float) for x in syn_jvp(thetas[p], dirs[p, k]))
                        for k in range(a.directions)])
            print(f"synthesizer: point {p + 1}/{a.points} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if a.reference:
            np.savez(a.reference, thetas=thetas, dirs=dirs, flux=np.array([[r[0] for r in q] for q in ref]),
                     dflux=np.array([[r[1] for r in q] for q in ref]))
    rows = []
    for c, emu in zip(a.checkpoint, emus):
        emu_jvp = jax.jit(lambda th, v, emu=emu: jvp(emu.spectrum, th, v))
        val_err, d_err, cos, floor = [], [], [], []
        comps = np.asarray(emu.pca.components, float)  # [k, n] orthonormal rows
        soft = emu.settings.preprocess.softening
        for p in range(a.points):
            for k in range(a.directions):
                f_e, d_e = (np.asarray(x, float)[band] for x in emu_jvp(thetas[p], dirs[p, k]))
                f_full, d_full = ref[p][k]
                dy = np.nan_to_num(d_full / np.sqrt(soft ** 2 + f_full ** 2))  # bins the synthesizer misses: 0
                floor.append(np.linalg.norm(dy - comps.T @ (comps @ dy)) / np.linalg.norm(dy))
                f_s, d_s = f_full[band], d_full[band]
                if k == 0:
                    val_err.append(np.linalg.norm(f_e - f_s) / np.linalg.norm(f_s))
                d_err.append(np.linalg.norm(d_e - d_s) / np.linalg.norm(d_s))
                cos.append(float(d_e @ d_s / (np.linalg.norm(d_e) * np.linalg.norm(d_s))))
        row = {"checkpoint": c, "points": a.points, "directions": a.directions,
               "value_rel_error_median": float(np.median(val_err)),
               "jvp_rel_error_median": float(np.median(d_err)), "jvp_rel_error_p90": float(np.percentile(d_err, 90)),
               "jvp_cosine_median": float(np.median(cos)), "jvp_cosine_p10": float(np.percentile(cos, 10)),
               "pca_floor_median": float(np.median(floor)), "n_components": int(comps.shape[0])}
        if a.data:
            row.update(held_out(c, emu, a.data, (a.wl_min, a.wl_max)))
        if a.results:
            row.update(likelihood_gradient(a.results, c, synth, a.draws))
        rows.append(row)
        print(f"{c}: values {100 * row['value_rel_error_median']:.2f} % (median |F_emu - F_syn| / |F_syn|); "
              f"directional derivatives: median error {100 * row['jvp_rel_error_median']:.1f} % "
              f"(90th pct {100 * row['jvp_rel_error_p90']:.1f} %), cosine median {row['jvp_cosine_median']:.3f} "
              f"(10th pct {row['jvp_cosine_p10']:.3f}); outside the {row['n_components']}-component PCA span: "
              f"{100 * row['pca_floor_median']:.1f} %", flush=True)
        if a.data:
            print(f"{c}: held-out mean fractional error {100 * row['held_out_mean_fractional_error']:.3f} % "
                  f"({row['held_out_n']} models)", flush=True)
        if a.results:
            print(f"{c}: likelihood gradient at {row['lik_n_draws']} posterior draws: cosine median "
                  f"{row['lik_cosine_median']:.3f} (10th pct {row['lik_cosine_p10']:.3f}), |g_emu|/|g_syn| median "
                  f"{row['lik_norm_ratio_median']:.3f}", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
