"""How well an emulator's derivatives match the physics: directional derivatives of the
smoothed, normalised flux through the emulator versus through the synthesizer (``jax.jvp``).

    python benchmarks/emulator_gradients.py --checkpoint runs/pipeline/stage3/emulator.ckpt \
        [--checkpoint other.ckpt ...] [--points 16] [--directions 4] [--synth-config YAML] [--json out.json]

The gradient samplers follow the emulator's derivatives, so their accuracy matters as much as
the accuracy of its values.  At ``--points`` parameter vectors drawn uniformly from the inner
80 % of the emulator's box (seeded; the same points for every checkpoint, which must share one
parameter space) and ``--directions`` random unit directions ``v`` in unit-box coordinates over
the free parameters, this compares ``J_emu v`` with ``J_syn v`` over 3300-9700 Å, where
``J = dF/du`` and ``F`` is the flux after the emulator's own preprocessing (so the synthesizer
path is exactly what the emulator was trained to reproduce).  Reported per checkpoint: the
median and 90th percentile of ``|J_emu v - J_syn v| / |J_syn v|`` and of the cosine between the
two, and, as a yardstick, the same fractional error of the values ``|F_emu - F_syn| / |F_syn|``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import lumina_jax  # noqa: F401
from lumina_jax.emulator import load_emulator
from lumina_jax.inference.model import make_setup
from lumina_jax.synth import Synthesizer


def draws(space, free_index, base, n, seed):
    """``[n, dim]`` parameter vectors, free parameters uniform in the inner 80 % of the box."""
    rng = np.random.default_rng(seed)
    th = np.repeat(base[None], n, axis=0)
    u = rng.uniform(0.1, 0.9, (n, free_index.size))
    th[:, free_index] = space.lower[free_index] + u * (space.upper[free_index] - space.lower[free_index])
    return th


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="emulator checkpoint (repeat to compare)")
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--directions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wl-min", type=float, default=3300.0)
    ap.add_argument("--wl-max", type=float, default=9700.0)
    ap.add_argument("--synth-config", help="synthesizer YAML (default configs/synth.yaml; the pipeline's training "
                    "campaigns use configs/synth_campaign.yaml, the function the emulator was fitted to)")
    ap.add_argument("--json", help="write the results to this file")
    a = ap.parse_args(argv)
    emus = [load_emulator(c) for c in a.checkpoint]
    space = emus[0].space
    for c, e in zip(a.checkpoint, emus):
        if e.space.names != space.names or not (np.allclose(e.space.lower, space.lower)
                                                and np.allclose(e.space.upper, space.upper)):
            raise SystemExit(f"error: {c} has a different parameter space from {a.checkpoint[0]}")
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
    ref = []
    for p in range(a.points):
        ref.append([tuple(np.asarray(x, float) for x in syn_jvp(thetas[p], dirs[p, k])) for k in range(a.directions)])
        print(f"synthesizer: point {p + 1}/{a.points} ({time.perf_counter() - t0:.0f} s)", flush=True)
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
        rows.append(row)
        print(f"{c}: values {100 * row['value_rel_error_median']:.2f} % (median |F_emu - F_syn| / |F_syn|); "
              f"directional derivatives: median error {100 * row['jvp_rel_error_median']:.1f} % "
              f"(90th pct {100 * row['jvp_rel_error_p90']:.1f} %), cosine median {row['jvp_cosine_median']:.3f} "
              f"(10th pct {row['jvp_cosine_p10']:.3f}); outside the {row['n_components']}-component PCA span: "
              f"{100 * row['pca_floor_median']:.1f} %", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
