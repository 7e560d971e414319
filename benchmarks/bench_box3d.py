"""Throughput of the jitted, vmapped Box3D on CPU vs a plain NumPy per-point reference.

Usage:
    PYTHONPATH=$PWD python benchmarks/bench_box3d.py [--n 20000] [--orders 17,41] [--json]

Prints points per second of
  * box3d_jax.box3d (jit + vmap in lax.map blocks of --batch-size; float64 and float32; and
    float64 as one vmap over all points) at each Lebedev order,
  * box3d_jax.reference_numpy.box3d_loop (NumPy, one point at a time) at the same orders,
  * Box3D + residual model (hidden 64,64) at order 17, and its overhead factor.
Goals (issue 7): >= 1e5 points/s at order 17 on a 2-core CPU, >= 100x the NumPy
reference, residual overhead <= 2x. Each timing is the best of --repeat runs after a
compile/warm-up call. The machine load is printed, as shared machines skew timings.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import box3d_jax  # noqa: F401  (enables x64)
from box3d_jax import box3d as B
from box3d_jax import lebedev
from box3d_jax import reference_numpy as REF
from box3d_jax import residual as R
from box3d_jax.synthetic import random_initial_states


def best_time(fn, repeat: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="points per jitted call")
    ap.add_argument("--n-ref", type=int, default=200, help="points for the NumPy reference")
    ap.add_argument("--orders", default="17,41")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=B.DEFAULT_BATCH_SIZE, help="lax.map block size")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    F4 = random_initial_states(rng, args.n, max_flux_factor=0.9)
    F4_32 = F4.astype(np.float32) / np.float32(4.9e32)  # float32 needs n_tot-scaled values
    rows = []
    for order in (int(o) for o in args.orders.split(",")):
        fn64 = jax.jit(B.build_box3d(order, batch_size=args.batch_size))
        x64 = jnp.asarray(F4)
        t64 = best_time(lambda: fn64(x64).F4, args.repeat)
        fn_plain = jax.jit(B.build_box3d(order))  # one vmap over all points, no blocks
        t_plain = best_time(lambda: fn_plain(x64).F4, args.repeat)
        x32 = jnp.asarray(F4_32)
        t32 = best_time(lambda: fn64(x32).F4, args.repeat)
        d, w = lebedev.rule(order)
        sub = F4[: args.n_ref]
        REF.box3d_loop(sub[:5], d, w)
        t0 = time.perf_counter()
        REF.box3d_loop(sub, d, w)
        tref = time.perf_counter() - t0
        rate64, rate32, rate_ref = args.n / t64, args.n / t32, len(sub) / tref
        rows.append(
            {
                "order": order,
                "n_directions": int(w.shape[0]),
                "jax_f64_points_per_s": rate64,
                "jax_f32_points_per_s": rate32,
                "jax_f64_single_vmap_points_per_s": args.n / t_plain,
                "numpy_reference_points_per_s": rate_ref,
                "speedup_f64_vs_numpy": rate64 / rate_ref,
            }
        )

    cfg = R.ResidualConfig(hidden=(64, 64), order=17)
    params = R.init_params(cfg, jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda p: p + 0.01, params)
    box = jax.jit(B.build_box3d(17, batch_size=args.batch_size))
    pred = jax.jit(R.build_predict(cfg, batch_size=args.batch_size))
    x64 = jnp.asarray(F4)
    t_box = best_time(lambda: box(x64).F4, args.repeat)
    t_res = best_time(lambda: pred(params, x64), args.repeat)
    result = {
        "n_points": args.n,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "jax_devices": [str(d) for d in jax.devices()],
        "box3d": rows,
        "residual": {
            "box3d_points_per_s": args.n / t_box,
            "box3d_plus_residual_points_per_s": args.n / t_res,
            "overhead_factor": t_res / t_box,
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"Box3D throughput, {args.n} points per call in blocks of {args.batch_size}, {result['cpu_count']} CPUs, "
          f"load avg {result['load_average_1min']:.1f}, devices {result['jax_devices']}")
    print(f"{'order':>5} {'n_dir':>6} {'jax f64 pts/s':>14} {'jax f32 pts/s':>14} {'f64 1 vmap':>12} "
          f"{'numpy pts/s':>12} {'speedup':>8}")
    for r in rows:
        print(f"{r['order']:>5} {r['n_directions']:>6} {r['jax_f64_points_per_s']:>14.3e} "
              f"{r['jax_f32_points_per_s']:>14.3e} {r['jax_f64_single_vmap_points_per_s']:>12.3e} "
              f"{r['numpy_reference_points_per_s']:>12.3e} {r['speedup_f64_vs_numpy']:>8.0f}")
    res = result["residual"]
    print(f"order 17: Box3D {res['box3d_points_per_s']:.3e} pts/s, Box3D + residual (64,64) "
          f"{res['box3d_plus_residual_points_per_s']:.3e} pts/s, overhead x{res['overhead_factor']:.2f}")


if __name__ == "__main__":
    main()
