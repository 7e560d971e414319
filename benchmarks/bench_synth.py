"""Benchmark of the embedded synthesizer (default config and default atomic data).

Prints: lines in play, compile time, seconds per spectrum (single, jitted), spectra per second
with Synthesizer.batch, and the cost of a gradient of a scalar loss relative to a forward pass.

    python benchmarks/bench_synth.py [--stage 1] [--batch 8] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lumina_jax.params import load_space  # noqa: E402
from lumina_jax.synth import SynthConfig, Synthesizer  # noqa: E402


def best_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return min(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    space = load_space(args.stage)
    t0 = time.perf_counter()
    synth = Synthesizer.default(space, SynthConfig.load(args.config))
    t_init = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    lo, hi = np.asarray(space.lows), np.asarray(space.highs)
    draws = lo + (hi - lo) * rng.random((20 * args.batch, space.dim))
    thetas = jnp.asarray(draws[space.valid_mask(draws)][: args.batch])
    theta = thetas[0]
    t0 = time.perf_counter()
    jax.block_until_ready(synth.l_lambda(theta))
    t_compile = time.perf_counter() - t0
    t_fwd = best_time(lambda: synth.l_lambda(theta), args.repeats)
    grad = jax.jit(jax.grad(lambda t: jnp.sum(jnp.log(synth.l_lambda(t)))))
    t0 = time.perf_counter()
    g = jax.block_until_ready(grad(theta))
    t_gcompile = time.perf_counter() - t0
    t_grad = best_time(lambda: grad(theta), args.repeats)
    jax.block_until_ready(synth.batch(thetas))
    t_batch = best_time(lambda: synth.batch(thetas), max(1, args.repeats - 1))
    res = {
        "stage": args.stage, "n_lines": synth.n_lines, "n_lines_total": synth.n_lines_total,
        "n_wave": len(synth.wavelength), "n_obs_internal": synth.grid.n_obs,
        "n_rays": len(synth.grid.core_nodes) + space.ejecta.n_shells * len(synth.grid.shell_nodes),
        "init_s": round(t_init, 2), "compile_s": round(t_compile, 1), "grad_compile_s": round(t_gcompile, 1),
        "forward_s": round(t_fwd, 3), "spectra_per_s_single": round(1 / t_fwd, 2),
        "batch": args.batch, "spectra_per_s_batch": round(args.batch / t_batch, 2),
        "grad_s": round(t_grad, 3), "grad_over_forward": round(t_grad / t_fwd, 2),
        "grad_finite": bool(np.all(np.isfinite(np.asarray(g)))),
        "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 1),
        "backend": jax.default_backend(),
    }
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res.items():
            print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
