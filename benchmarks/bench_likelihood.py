"""Throughput of the posterior density that the samplers see: values (emcee) and values with
gradients (NUTS, MCLMC) per second, vmapped over a batch of chains / walkers.

    python benchmarks/bench_likelihood.py --checkpoint runs/pipeline/stage3/emulator.ckpt
    python benchmarks/bench_likelihood.py                        # random-weight stage-3 toy
    python benchmarks/bench_likelihood.py --checkpoint lumina_jax/checkpoints/stage1_synth.h5 --full-grid

Same problem as ``bench_inference.py`` (emulator mock, the ``infer`` likelihood with the
correlated emulator error at stride 8).  One jitted call per batch; the first call (compile)
is not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench_inference import problem  # noqa: E402
from lumina_jax.inference.toy import RandomMLPEmulator  # noqa: E402
from lumina_jax.params import load_space  # noqa: E402


def throughput(fn, z, min_evals=2000):
    jax.block_until_ready(fn(z))
    n = max(20, min_evals // z.shape[0])
    t = time.perf_counter()
    for _ in range(n):
        out = fn(z)
    jax.block_until_ready(out)
    return n * z.shape[0] / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="emulator checkpoint (default: random-weight stage-3 toy)")
    ap.add_argument("--batches", default="1,4,16,64,128,256")
    ap.add_argument("--full-grid", action="store_true",
                    help="also time the emulator evaluated on its whole grid (before Emulator.on_bins)")
    ap.add_argument("--json", help="write the rows to this JSON file")
    a = ap.parse_args(argv)
    if a.checkpoint:
        from lumina_jax.emulator import load_emulator

        emu = load_emulator(a.checkpoint)
    else:
        emu = RandomMLPEmulator.build(load_space(3), seed=3)
    fm, _ = problem(emu)
    fns = {"": fm.logdensity}
    if a.full_grid and hasattr(emu, "on_bins"):
        fns["full_grid_"] = problem(emu, used_bins_only=False)[0].logdensity
    print(f"bench_likelihood: {emu.space.dim}-D (n_z {fm.n_z}), device {jax.devices()[0].platform}"
          + ("; emulator on the used bins (Emulator.on_bins)" if hasattr(emu, "on_bins") else ""))
    rows = []
    for b in (int(x) for x in a.batches.split(",")):
        z = 0.01 * jax.random.normal(jax.random.PRNGKey(0), (b, fm.n_z), jnp.float64)
        r = {"batch": b}
        for tag, f in fns.items():
            r[f"{tag}value_and_grad_per_s"] = throughput(jax.jit(jax.vmap(jax.value_and_grad(f))), z)
            r[f"{tag}value_per_s"] = throughput(jax.jit(jax.vmap(f)), z)
        rows.append(r)
        line = f"  batch {b:4d}: value+grad {r['value_and_grad_per_s']:9.0f}/s   value {r['value_per_s']:9.0f}/s"
        if "full_grid_value_per_s" in r:
            line += (f"   | whole grid: value+grad {r['full_grid_value_and_grad_per_s']:9.0f}/s   "
                     f"value {r['full_grid_value_per_s']:9.0f}/s")
        print(line, flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
