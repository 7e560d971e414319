"""Sampling of physical initial moments and resumable ground-truth dataset generation.

Each candidate point i of a campaign is drawn from its own generator
``numpy.random.default_rng([seed, i])`` so a campaign is reproducible and resumable
point by point (the campaign runner's queue idea: the candidate index is the queue,
the output file is the store).

Sampling (n_tot-normalised, then scaled by a log-uniform n_tot in [1e32, 1e34] cm⁻³):

* densities: N_ν̄e/N_νe log-uniform in [0.4, 2.5]; each heavy species N_x/N_νe
  log-uniform in [0.05, 1.5] with ν_μ = ν_τ; ν̄_x = ν_x for half of the points, else
  N_ν̄x/N_νx log-uniform in [0.6, 1.6] (XLN ≠ 0);
* flux factors uniform in [0, ff_max_s] with ff_max = (0.5, 0.7, 0.8) for ν_e, ν̄_e,
  heavies (all < 0.9); flux directions n̂_s = normalise(ê + κ ξ_s), ê isotropic,
  ξ_s Gaussian, κ uniform in [0, 2] per point: from aligned (NSM-like) to random;
* Minerbo angular distributions (:func:`box3d_jax.qke.minerbo_rho`).

Selection: the LSA (along the ELN−XLN flux) classifies candidates. Unstable ones with
Γ < ``gamma_min`` (runs too long for the budget) are skipped; stable ones are kept
with probability ``p_stable`` (a minority of "no mixing" points). The stored
``F4_initial`` are the moments of the discretised initial distributions (as in Emu's
databases), ``F4_final`` the solver's late-time averages, ``growthRate(1|s)`` the
growth rate fitted from the solver's linear phase (0 for stable points). Runs that
fail the acceptance tests of :func:`box3d_jax.qke.analyse` are counted, not stored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from box3d_jax import lebedev, lsa, qke
from box3d_jax.io import FINAL, GROWTH, INITIAL, STDDEV
from box3d_jax.errors import DataFileError, ParameterError

__all__ = ["SamplerConfig", "sample_point", "Candidate", "prepare", "generate", "read_progress"]

#: Extra datasets and attributes of a generation file (ignored by ordinary readers).
INDEX = "qke_candidate_index"
GROWTH_LSA = "qke_growth_lsa(1|s)"


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Ranges of the initial-moment sampler (module docstring)."""

    ratio_bar: tuple[float, float] = (0.4, 2.5)
    ratio_heavy: tuple[float, float] = (0.05, 1.5)
    ratio_heavy_bar: tuple[float, float] = (0.6, 1.6)
    ff_max: tuple[float, float, float] = (0.5, 0.7, 0.8)
    kappa_max: float = 2.0
    ntot_range: tuple[float, float] = (1e32, 1e34)
    p_stable: float = 0.25
    gamma_min: float = 0.01


def _loguniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _unit(rng):
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def sample_point(rng: np.random.Generator, cfg: SamplerConfig = SamplerConfig()) -> np.ndarray:
    """One initial state: four-fluxes ``[2, 3, 4]`` in cm⁻³ (μ = τ)."""
    N = np.zeros((2, 3))
    N[0, 0] = 1.0
    N[1, 0] = _loguniform(rng, *cfg.ratio_bar)
    N[0, 1] = N[0, 2] = _loguniform(rng, *cfg.ratio_heavy)
    xb = 1.0 if rng.uniform() < 0.5 else _loguniform(rng, *cfg.ratio_heavy_bar)
    N[1, 1] = N[1, 2] = N[0, 1] * xb
    e = _unit(rng)
    kappa = rng.uniform(0.0, cfg.kappa_max)
    F4 = np.zeros((2, 3, 4))
    kinds = ((0, 0, 0), (1, 0, 1), (0, 1, 2), (1, 1, 2))  # (nu/nubar, flavor, ff range)
    for s, a, r in kinds:
        d = e + kappa * rng.normal(size=3)
        d /= np.linalg.norm(d)
        F4[s, a, :3] = rng.uniform(0.0, cfg.ff_max[r]) * N[s, a] * d
        F4[s, a, 3] = N[s, a]
    F4[:, 2] = F4[:, 1]
    return F4 / N.sum() * _loguniform(rng, *cfg.ntot_range)


class Candidate(NamedTuple):
    """A sampled and planned candidate (n_tot units inside)."""

    index: int
    F4: np.ndarray  # [2, 3, 4] cm⁻³ as sampled
    ntot: float
    rho: np.ndarray  # [2, 3, n_dir]
    plan: qke.RunPlan
    spd: int
    keep: bool
    why: str


def prepare(index: int, seed: int, config: qke.QKEConfig, scfg: SamplerConfig) -> Candidate:
    """Sample candidate ``index`` of campaign ``seed``, run its LSA and decide whether to keep it."""
    rng = np.random.default_rng([seed, index])
    F4 = sample_point(rng, scfg)
    ntot = float(F4[..., 3].sum())
    d, w = lebedev.rule(config.lebedev_order)
    rho = qke.minerbo_rho(F4 / ntot, d, w)
    plan, res = qke.plan_run(rho, config)
    plan, spd = qke.finalise_plan(plan, config)
    keep, why = True, ""
    if res.growth_rate == 0.0:
        if rng.uniform() >= scfg.p_stable:
            keep, why = False, "stable (not drawn)"
    elif res.growth_rate < scfg.gamma_min:
        keep, why = False, f"growth {res.growth_rate:.3g} < gamma_min"
    return Candidate(index, F4, ntot, rho, plan, spd, keep, why)


def _config_json(config: qke.QKEConfig, scfg: SamplerConfig, seed: int) -> str:
    return json.dumps({"qke": dataclasses.asdict(config), "sampler": dataclasses.asdict(scfg), "seed": seed},
                      sort_keys=True)


def read_progress(path: Path) -> dict:
    """Contents of a (partial) generation file as NumPy arrays plus its metadata."""
    import h5py

    with h5py.File(path, "r") as h5:
        if INDEX not in h5:
            raise DataFileError(f"{path}: not a 'ffi generate' file (no {INDEX!r}); refusing to resume")
        out = {name: np.asarray(h5[name][()]) for name in (INITIAL, FINAL, STDDEV, GROWTH, GROWTH_LSA, INDEX)}
        out["attrs"] = dict(h5.attrs)
    return out


def _write(path: Path, rows: dict, meta: dict) -> None:
    """Atomic write (FILE.tmp then os.replace) in the Rhea/Emu layout [n, 4, 2, 3] plus extras."""
    import h5py

    from box3d_jax.box3d import to_file_layout

    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        h5.create_dataset("nf", data=np.int64(3))
        for name in (INITIAL, FINAL, STDDEV):
            arr = np.asarray(rows[name], dtype=np.float64).reshape(-1, 2, 3, 4)
            h5.create_dataset(name, data=to_file_layout(arr))
        h5.create_dataset(GROWTH, data=np.asarray(rows[GROWTH], dtype=np.float64))
        h5.create_dataset(GROWTH_LSA, data=np.asarray(rows[GROWTH_LSA], dtype=np.float64))
        h5.create_dataset(INDEX, data=np.asarray(rows[INDEX], dtype=np.int64))
        for k, v in meta.items():
            h5.attrs[k] = v
    os.replace(tmp, path)


def generate(
    out: str | os.PathLike,
    n: int,
    config: qke.QKEConfig,
    *,
    sampler: SamplerConfig = SamplerConfig(),
    seed: int = 0,
    resume: bool = False,
    batch: int = 1,
    checkpoint_every: int = 10,
    max_candidates: int | None = None,
    on_progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Generate ``n`` accepted points into ``out`` (resumable; atomic checkpoints).

    Args:
      out: output HDF5 path (Rhea/Emu format + generation metadata).
      n: number of accepted points wanted in the file.
      config: solver configuration; sampler: sampling ranges; seed: campaign seed.
      resume: continue an existing file made with the same settings (else refuse to
        overwrite an existing file).
      batch: runs evolved together under ``jax.vmap``.
      checkpoint_every: rewrite the file after this many new accepted points.
      max_candidates: give up after this many candidates (default 20 n).
      on_progress: callback(n_done, n, stats) after every batch.

    Returns:
      stats: counts of accepted, rejected (by reason class) and skipped candidates.
    """
    config = config.validate()
    path = Path(out)
    cfg_json = _config_json(config, sampler, seed)
    rows = {name: [] for name in (INITIAL, FINAL, STDDEV, GROWTH, GROWTH_LSA, INDEX)}
    stats = {"accepted": 0, "rejected": 0, "skipped": 0, "next_candidate": 0}
    if path.exists():
        if not resume:
            raise ParameterError(f"{path} exists; pass --resume to continue it or choose another --out")
        prev = read_progress(path)
        if prev["attrs"].get("config") != cfg_json:
            raise ParameterError(f"{path} was generated with different settings; cannot resume with these")
        for name in rows:
            arr = prev[name]
            if name in (INITIAL, FINAL, STDDEV):
                arr = np.moveaxis(arr, 1, -1)
            rows[name] = list(arr)
        stats.update(json.loads(prev["attrs"]["stats"]))
    max_candidates = max_candidates or 20 * n
    since = 0

    def flush():
        meta = {"config": cfg_json, "stats": json.dumps(stats), "generator": "lumina-jax ffi generate"}
        _write(path, rows, meta)

    while len(rows[INDEX]) < n and stats["next_candidate"] < max_candidates:
        cands = []
        while len(cands) < batch and stats["next_candidate"] < max_candidates:
            c = prepare(stats["next_candidate"], seed, config, sampler)
            stats["next_candidate"] += 1
            if c.keep:
                cands.append(c)
            else:
                stats["skipped"] += 1
        if not cands:
            break
        keys = jnp.stack([jax.random.PRNGKey(seed * 1_000_003 + c.index) for c in cands])
        plans = jax.tree.map(lambda *a: jnp.stack(a), *[c.plan for c in cands])
        diag = jax.vmap(lambda r, k, p, s: qke.evolve(r, k, p, s, config))(
            jnp.stack([jnp.asarray(c.rho) for c in cands]), keys, plans, jnp.asarray([c.spd for c in cands])
        )
        diag = jax.tree.map(np.asarray, diag)
        for j, c in enumerate(cands):
            d = jax.tree.map(lambda a: a[j], diag)
            res = qke.analyse(d, c.plan, config)
            if not res.ok:
                stats["rejected"] += 1
                key = "rejected:" + res.reason.split(" ")[0]
                stats[key] = stats.get(key, 0) + 1
                continue
            stats["accepted"] += 1
            rows[INITIAL].append(d.F4[0] * c.ntot)  # moments of the discretised initial state
            rows[FINAL].append(res.F4_final * c.ntot)
            rows[STDDEV].append(res.F4_stddev * c.ntot)
            rate = res.growth_rate if np.isfinite(res.growth_rate) else res.growth_lsa
            rows[GROWTH].append(max(rate, 0.0) * c.ntot * qke.SQRT2_GF_OVER_HBAR)
            rows[GROWTH_LSA].append(res.growth_lsa * c.ntot * qke.SQRT2_GF_OVER_HBAR)
            rows[INDEX].append(c.index)
            since += 1
        if since >= checkpoint_every:
            flush()
            since = 0
        if on_progress is not None:
            on_progress(len(rows[INDEX]), n, stats)
    flush()
    return stats
