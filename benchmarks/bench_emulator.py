"""Emulator speed: batched spectra per second and value-and-gradient evaluations per second.

Run:  PYTHONPATH=$PWD python benchmarks/bench_emulator.py [--checkpoint CKPT] [--batch 4096]
Without a checkpoint a randomly initialised stage-1 emulator of the default size
([512, 512, 256, 256, 128] SiLU, 64 PCA components, 1601 bins) is timed; the cost does not
depend on the weights.  Goals (2-core CPU): >= 20,000 spectra/s batched, >= 2,000 value-and-
gradient evaluations/s.
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
from lumina_jax.emulator import EmulatorSettings, init_emulator, load_emulator
from lumina_jax.params import load_space


def _rate(fn, *args, n_items: int, min_time: float = 2.0) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    reps, t0 = 0, time.perf_counter()
    while True:
        jax.block_until_ready(fn(*args))
        reps += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return reps * n_items / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--grad-batch", type=int, default=256)
    ap.add_argument("--components", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.checkpoint:
        emu = load_emulator(args.checkpoint)
    else:
        emu = init_emulator(load_space(1), EmulatorSettings(n_components=args.components), jax.random.PRNGKey(0))
    space = emu.space
    rng = np.random.default_rng(0)
    theta = jnp.asarray(space.from_unit(rng.uniform(0.05, 0.95, size=(args.batch, space.dim))))
    obs = emu.spectrum(theta[0]) * 1.01
    sig = 0.02 * jnp.ones_like(obs)

    batched = jax.jit(jax.vmap(emu.spectrum))
    batched_sigma = jax.jit(jax.vmap(emu.spectrum_and_sigma))

    def loglike(th):
        f, s = emu.spectrum_and_sigma(th)
        var = sig**2 + s**2
        return -0.5 * jnp.sum((f - obs) ** 2 / var + jnp.log(var))

    vg = jax.jit(jax.value_and_grad(loglike))
    vg_batched = jax.jit(jax.vmap(jax.value_and_grad(loglike)))
    th1 = theta[0]
    tb = theta[: args.grad_batch]

    out = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "n_wave": int(emu.wavelength.size),
        "n_components": emu.n_components,
        "hidden": list(emu.settings.hidden),
        "spectra_per_s_batched": _rate(batched, theta, n_items=args.batch),
        "spectra_and_sigma_per_s_batched": _rate(batched_sigma, theta, n_items=args.batch),
        "value_and_grad_per_s_single": _rate(vg, th1, n_items=1),
        "value_and_grad_per_s_batched": _rate(vg_batched, tb, n_items=args.grad_batch),
        "batch": args.batch,
        "grad_batch": args.grad_batch,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"emulator benchmark on {out['device']} ({out['cpu_count']} CPUs), hidden {out['hidden']}, "
          f"{out['n_components']} PCA components, {out['n_wave']} bins")
    print(f"  batched spectra           : {out['spectra_per_s_batched']:12,.0f} /s   (goal >= 20,000; batch {args.batch})")
    print(f"  batched spectra + sigma   : {out['spectra_and_sigma_per_s_batched']:12,.0f} /s")
    print(f"  value_and_grad, one call  : {out['value_and_grad_per_s_single']:12,.0f} /s   (goal >= 2,000)")
    print(f"  value_and_grad, vmapped   : {out['value_and_grad_per_s_batched']:12,.0f} /s   (batch {args.grad_batch})")


if __name__ == "__main__":
    main()
