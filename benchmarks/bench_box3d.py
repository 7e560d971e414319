"""Box3D speed and accuracy, per quadrature, in one run.

Usage:
    PYTHONPATH=$PWD python benchmarks/bench_box3d.py [--n 20000] [--n-acc 1500]
        [--methods smooth:35,smooth:29,sharp:17,sharp:41] [--repeat 5] [--json]

For each ``method:order`` (``box3d_jax.box3d.build_box3d``; "smooth" is the default,
"sharp" the Heaviside-at-Lebedev-nodes scheme of Rhea) it prints

* throughput: points/s of the jitted float64 function in ``lax.map`` blocks (best of
  --repeat wall-clock runs after a compile call) and the CPU time per point (all threads;
  far less sensitive than wall time to other jobs on a shared machine), and float32 points/s;
* accuracy on --n-acc random physical inputs (flux factors < 0.9, a third each from
  ``synthetic.random_initial_states``, ``synthetic.random_isotropic_states`` and the QKE
  campaign sampler ``generate.sample_point``): max / 99th percentile / median over points of
  max |F4' − F4'_ref|/n_tot, against (a) the independent NumPy Box3D at Lebedev 131
  (``reference_numpy.box3d_loop``, itself within ~6e-4 n_tot of converged) and (b) a
  converged reference, the smooth method at Lebedev 131 (5810 directions) with w = 0.1
  (within 2e-6 n_tot of the rule-free ``reference_numpy.box3d_adaptive``);
* N_e' of the NSM1 point (converged: 1.08448e33 cm⁻³, docs/box3d.md);

then the NumPy reference speed and the Box3D + residual (hidden 64,64) overhead at the
default quadrature. The load average is printed before and after: other jobs on the
machine lower the wall-clock figures.
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
from box3d_jax import generate as GEN
from box3d_jax import lebedev
from box3d_jax import reference_numpy as REF
from box3d_jax import residual as R
from box3d_jax.synthetic import random_initial_states, random_isotropic_states

NSM1_NE_CONVERGED = 1.08448e33  # cm⁻³ (docs/box3d.md: adaptive quadrature split along G = 0)


def nsm1() -> np.ndarray:
    """The NSM1 point of the reference note §7, ``[2, 3, 4]`` cm⁻³."""
    def sp(N, fx, fy, fz):
        return [fx * N, fy * N, fz * N, N]

    x = sp(19.65e32 / 4, -0.0216, 0.0743, -0.5354)
    return np.array([[sp(14.22e32, 0.0974, 0.0421, -0.1343), x, x], [sp(19.15e32, 0.0723, 0.0313, -0.3446), x, x]])


def accuracy_inputs(n: int, seed: int = 0) -> np.ndarray:
    """``n`` random physical inputs ``[n, 2, 3, 4]``: a third from each generator."""
    k = n // 3
    rng = np.random.default_rng(seed)
    parts = [
        random_initial_states(rng, k, max_flux_factor=0.9),
        random_isotropic_states(rng, k, max_flux_factor=0.9),
        np.stack([GEN.sample_point(np.random.default_rng([seed, i])) for i in range(n - 2 * k)]),
    ]
    return np.concatenate(parts)


def timed(fn, repeat: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds) of ``fn()`` over ``repeat`` runs after a warm-up."""
    jax.block_until_ready(fn())
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def errors(pred: np.ndarray, ref: np.ndarray, F4: np.ndarray) -> dict:
    ntot = F4[..., 3].sum(axis=(1, 2))
    e = np.abs(pred - ref).max(axis=(1, 2, 3)) / ntot
    return {"max": float(e.max()), "p99": float(np.percentile(e, 99)), "median": float(np.median(e))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="points per timed call")
    ap.add_argument("--n-acc", type=int, default=1500, help="random inputs for the accuracy columns")
    ap.add_argument("--methods", default="smooth:35,smooth:29,sharp:17,sharp:41", help="method:order list")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=B.DEFAULT_BATCH_SIZE, help="lax.map block size")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    load_before = os.getloadavg()
    F4 = random_initial_states(np.random.default_rng(0), args.n, max_flux_factor=0.9)
    x64 = jnp.asarray(F4)
    x32 = jnp.asarray((F4 / 4.9e32).astype(np.float32))  # float32 needs n_tot-scaled values
    acc = accuracy_inputs(args.n_acc)
    d131, w131 = lebedev.rule(131)
    t0 = time.perf_counter()
    ref_numpy = REF.box3d_loop(acc, d131, w131)
    numpy_131_rate = len(acc) / (time.perf_counter() - t0)
    ref_conv = np.asarray(B.box3d(acc, 131, method="smooth", width=0.1))

    rows = []
    for spec in args.methods.split(","):
        method, order = spec.split(":")
        fn = jax.jit(B.build_box3d(int(order), method=method, batch_size=args.batch_size))
        wall, cpu = timed(lambda: fn(x64).F4, args.repeat)
        wall32, _ = timed(lambda: fn(x32).F4, args.repeat)
        pred = np.asarray(fn(jnp.asarray(acc)).F4)
        rows.append({
            "method": method,
            "order": int(order),
            "n_directions": lebedev.n_points(int(order)),
            "f64_points_per_s": args.n / wall,
            "f64_cpu_us_per_point": cpu / args.n * 1e6,
            "f32_points_per_s": args.n / wall32,
            "error_vs_numpy_lebedev131": errors(pred, ref_numpy, acc),
            "error_vs_converged": errors(pred, ref_conv, acc),
            "nsm1_Ne": float(np.asarray(fn(jnp.asarray(nsm1()[None])).F4)[0, 0, 0, 3]),
        })

    d17, w17 = lebedev.rule(17)
    sub = F4[:200]
    REF.box3d_loop(sub[:5], d17, w17)
    t0 = time.perf_counter()
    REF.box3d_loop(sub, d17, w17)
    numpy_17_rate = len(sub) / (time.perf_counter() - t0)

    cfg = R.ResidualConfig(hidden=(64, 64))
    params = jax.tree_util.tree_map(lambda p: p + 0.01, R.init_params(cfg, jax.random.PRNGKey(0)))
    box = jax.jit(B.build_box3d(cfg.order, method=cfg.method, width=cfg.width, batch_size=args.batch_size))
    pred = jax.jit(R.build_predict(cfg, batch_size=args.batch_size))
    t_box, _ = timed(lambda: box(x64).F4, args.repeat)
    t_res, _ = timed(lambda: pred(params, x64), args.repeat)
    result = {
        "n_points": args.n,
        "n_accuracy_inputs": len(acc),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "jax_devices": [str(d) for d in jax.devices()],
        "box3d": rows,
        "numpy_reference_points_per_s": {"order_17": numpy_17_rate, "order_131": numpy_131_rate},
        "residual": {
            "method": cfg.method,
            "order": cfg.order,
            "box3d_points_per_s": args.n / t_box,
            "box3d_plus_residual_points_per_s": args.n / t_res,
            "overhead_factor": t_res / t_box,
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    la, lb = result["load_average_before"], result["load_average_after"]
    print(f"Box3D, {args.n} points per call in blocks of {args.batch_size}; {result['cpu_count']} CPUs "
          f"(affinity {result['cpu_affinity']}), load average {la[0]:.1f} before / {lb[0]:.1f} after; "
          f"accuracy on {len(acc)} random inputs (flux factors < 0.9), errors / n_tot")
    print(f"{'method':>6} {'order':>5} {'dirs':>5} {'f64 pts/s':>10} {'cpu us/pt':>9} {'f32 pts/s':>10} "
          f"{'max vs L131':>11} {'p99':>8} {'median':>8} {'max vs conv':>11} {'median':>8} {'NSM1 N_e′':>11}")
    for r in rows:
        a, c = r["error_vs_numpy_lebedev131"], r["error_vs_converged"]
        print(f"{r['method']:>6} {r['order']:>5} {r['n_directions']:>5} {r['f64_points_per_s']:>10.3e} "
              f"{r['f64_cpu_us_per_point']:>9.2f} {r['f32_points_per_s']:>10.3e} {a['max']:>11.2e} {a['p99']:>8.1e} "
              f"{a['median']:>8.1e} {c['max']:>11.2e} {c['median']:>8.1e} {r['nsm1_Ne']:>11.5e}")
    print(f"NSM1 N_e′ converged: {NSM1_NE_CONVERGED:.5e}; NumPy reference: {numpy_17_rate:.3e} pts/s at order 17, "
          f"{numpy_131_rate:.3e} at 131")
    res = result["residual"]
    print(f"{res['method']} {res['order']}: Box3D {res['box3d_points_per_s']:.3e} pts/s, Box3D + residual (64,64) "
          f"{res['box3d_plus_residual_points_per_s']:.3e} pts/s, overhead x{res['overhead_factor']:.2f}")


if __name__ == "__main__":
    main()
