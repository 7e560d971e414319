"""How wide should the posterior of a mock be?  Fisher widths from the synthesizer, against fits.

    python benchmarks/fisher_widths.py RESULTS_DIR [RESULTS_DIR ...] [--stride 8] [--json out.json]

Every RESULTS_DIR is a fit of the same ``infer`` mock (no ``--observed``): its ``summary.json``
holds the truth and the per-pixel noise fraction.  At the truth, the synthesizer (default
configuration, which made the mock) gives the Jacobian of the flux smoothed over the band
(``J = M dL/dtheta``, ``M`` the preprocessing's linear smoothing of the band,
:func:`lumina_jax.workflows.npe.band_operator`), plus three nuisance columns: the two Legendre
warp terms and the flux scale.  The noise of the smoothed flux has the exact covariance
``C = M diag((nf L)^2) M^T`` of per-pixel noise ``nf L`` pushed through the smoothing, so the
Cramér-Rao widths are ``sd_j = sqrt((J^T C^+ J)^-1)_jj`` (:func:`fisher_sd`; the scale
nuisance stands in for the normalisation; the warp terms are applied before the smoothing,
which for a quadratic warp changes nothing over a 55-155 Å window).  These are the widths of the synthesizer's own
posterior at high S/N, with no emulator in the loop.  Printed per free parameter: that sd and
each fit's posterior sd in its units; and, as a check of the likelihood's noise model, the
widths when every ``--stride``-th smoothed bin is taken as independent with variance ``C_ii``
(what the likelihood assumes; ``LikelihoodConfig.stride``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def fisher_sd(G, M, var, n_keep: int | None = None, rcond: float = 1e-10):
    """Cramér-Rao sd of the columns of ``G [n_in, p]`` (d flux / d parameter per input pixel)
    when the data are the smoothed flux ``M [R, n_in] @ flux`` and the pixels carry independent
    noise of variance ``var [n_in]``: ``sqrt(diag((J^T C^+ J)^-1))`` with ``J = M G``,
    ``C = M diag(var) M^T``.  Computed without inverting ``C`` (a smoothing operator makes it
    nearly singular): with ``B = M diag(var)^(1/2)``, ``J^T C^+ J = A^T A``, ``A = Q^T
    diag(var)^(-1/2) G`` and ``Q`` an orthonormal basis of the row space of ``B`` (singular
    values above ``rcond`` of the largest).  The first ``n_keep`` sds are returned (all when None)."""
    r = np.sqrt(np.asarray(var, float))
    _, sv, vt = np.linalg.svd(M * r[None, :], full_matrices=False)
    Q = vt[sv > rcond * sv.max()].T
    A = Q.T @ (G / r[:, None])
    sd = np.sqrt(np.diag(np.linalg.inv(A.T @ A)))
    return sd if n_keep is None else sd[:n_keep]


def fisher_sd_diagonal(J, var, stride: int = 1, n_keep: int | None = None):
    """The same with independent bins of variance ``var [n]``, every ``stride``-th bin used."""
    sel = np.arange(0, J.shape[0], stride)
    F = (J[sel] / var[sel, None]).T @ J[sel]
    sd = np.sqrt(np.diag(np.linalg.inv(F)))
    return sd if n_keep is None else sd[:n_keep]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="results dirs of fits of the same mock")
    ap.add_argument("--stride", type=int, default=8, help="bin stride of the likelihood's independent-bin view")
    ap.add_argument("--json", type=Path, help="write the table as JSON")
    args = ap.parse_args(argv)

    sums = []
    for d in args.results:
        f = d / "summary.json"
        if not f.is_file():
            print(f"error: {f} not found", file=sys.stderr)
            return 2
        s = json.loads(f.read_text())
        if "mock" not in s:
            print(f"error: {d} is not a fit of a mock (no truth in its summary.json)", file=sys.stderr)
            return 2
        sums.append(s)
    truth, nf, free = sums[0]["mock"]["truth"], sums[0]["mock"]["noise_frac"], sums[0]["free"]
    if any(s["mock"]["truth"] != truth or s["free"] != free for s in sums[1:]):
        print("error: the results are not fits of one mock with the same free parameters", file=sys.stderr)
        return 2

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from lumina_jax.inference.likelihood import legendre_basis
    from lumina_jax.params import load_space
    from lumina_jax.synth import Synthesizer
    from lumina_jax.workflows.config import default_checkpoint
    from lumina_jax.workflows.loaders import get_emulator
    from lumina_jax.workflows.npe import DEFAULT_BAND, band_operator

    stage = int(sums[0]["stage"])
    space = load_space(stage)
    ckpt = sums[0].get("checkpoint")  # the fit's emulator supplies the preprocessing
    ckpt = ckpt if ckpt and Path(ckpt).is_file() else default_checkpoint(stage)
    cfg = get_emulator(ckpt).settings.preprocess
    band = tuple(sums[0]["observation"].get("window") or DEFAULT_BAND)
    rows, mat, in_rows = band_operator(cfg, band)
    grid = np.asarray(cfg.grid, float)
    synth = Synthesizer.default(space)
    th0 = jnp.asarray(space.from_dict(truth))
    wl, L = synth.spectrum(th0)
    if np.shape(wl) != grid.shape or not np.allclose(np.asarray(wl), grid):
        print("error: the synthesizer's grid is not the preprocessing grid", file=sys.stderr)
        return 2
    spec = jax.jit(lambda th: synth.spectrum(th)[1])
    L = np.asarray(L)
    cols = []
    for n in free:
        v = jnp.zeros(space.dim).at[space.index(n)].set(1.0)
        cols.append(np.asarray(jax.jvp(spec, (th0,), (v,))[1]))
        print(f"d flux / d {n}", file=sys.stderr, flush=True)
    w, wr = grid, grid[rows]  # the warp's coordinate spans the used bins, as in the likelihood
    P = np.asarray(legendre_basis(jnp.asarray(2.0 * (w - wr.min()) / (wr.max() - wr.min()) - 1.0), 2))
    G = np.stack(cols + [P[0] * L, P[1] * L, L], axis=1)  # warp terms before smoothing: smooth over a window
    G, M, var = G[in_rows], mat[:, in_rows], (nf * L[in_rows]) ** 2  # the pixels the band reads
    k = len(free)
    sd = fisher_sd(G, M, var, k)
    sd_stride = fisher_sd_diagonal(M @ G, np.einsum("ij,j,ij->i", M, var, M), args.stride, k)
    names = [s.get("sampler_config", {}).get("name", str(d)) for s, d in zip(sums, args.results)]
    print(f"{'parameter':<18} {'Fisher sd':>10} {'stride-' + str(args.stride) + '/F':>10} "
          + " ".join(f"{n + '/F':>10}" for n in names))
    table = {}
    for j, n in enumerate(free):
        ratios = [s["intervals"][n]["sd"] / sd[j] for s in sums]
        table[n] = {"fisher_sd": float(sd[j]), "stride_sd": float(sd_stride[j]),
                    "posterior_sd": {str(d): s["intervals"][n]["sd"] for s, d in zip(sums, args.results)}}
        print(f"{n:<18} {sd[j]:>10.4g} {sd_stride[j] / sd[j]:>10.2f} " + " ".join(f"{r:>10.2f}" for r in ratios))
    for s, d, nm in zip(sums, args.results, names):
        r = [s["intervals"][n]["sd"] / table[n]["fisher_sd"] for n in free]
        print(f"{nm} ({d}): posterior sd / Fisher sd {min(r):.2f}-{max(r):.2f}, median {np.median(r):.2f}")
    if args.json:
        args.json.write_text(json.dumps({"truth": truth, "noise_frac": nf, "band": list(band), "stride": args.stride,
                                         "parameters": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
