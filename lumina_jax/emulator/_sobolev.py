"""Derivative targets for Sobolev training: the synthesizer's directional derivatives at the
rows of a training set, in the emulator's input and output coordinates.

For each training model ``theta0 [dim]`` and ``k`` random unit directions ``v [dim]`` in
unit-box coordinates (over the active parameters of the space; zero on inactive ones)::

    dL = d L_lambda(theta0 + s v (upper - lower)) / ds |_{s=0}       # jax.jvp through the synthesizer
    dF = (S(dL) - F * mean_win S(dL)) / mean_win S(L)                 # the training preprocessing, linearised

where ``S`` is the preprocessing's linear resample + smooth operator and ``mean_win`` the mean
over the normalisation window, so ``F = S(L) / mean_win S(L)`` is exactly what
:func:`~lumina_jax.emulator._training.prepare_spectra` computes.  The emulator's input is
``x = 2 u - 1``, so its JVP along ``2 v`` is the matching derivative; the training loss maps
``dF`` into standardised PCA coefficients (:func:`~lumina_jax.emulator._training._jvp_targets`).

One forward-mode pass per model gives all ``k`` directions (the tangents are vmapped, the
primal is shared) and the primal itself, which is checked against the stored spectrum: a
store made by another forward model (LUMINA, another synth config) is refused.

The raw derivatives ``dL`` (erg/s/Å, float64) are cached beside the store in
``<store>.jvp-<key>.npz``; ``key`` hashes the synthesizer config, the space, ``k`` and the
direction seed, so a changed setting computes afresh and a grown store only computes its new
rows.  The preprocessing is applied at load time (a changed preprocessing reuses the cache).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.emulator._checkpoint import theta_hashes
from lumina_jax.emulator._data import TrainingSet
from lumina_jax.errors import UserError
from lumina_jax.preprocess import Preprocessor

CACHE_VERSION = 1


def random_directions(theta, n_directions: int, active, seed: int) -> np.ndarray:
    """Unit directions ``[N, k, dim]`` in unit-box coordinates, zero where ``active`` is False.

    Seeded per model by the hash of its ``theta`` row (and ``seed``), so a model gets the same
    directions whatever else is in the training set (cache rows stay valid as a store grows)."""
    theta = np.asarray(theta, np.float64)
    active = np.asarray(active, bool)
    if n_directions < 1 or not active.any():
        raise UserError("need at least one direction and one active parameter for derivative targets")
    out = np.zeros((theta.shape[0], n_directions, theta.shape[1]))
    for i, h in enumerate(theta_hashes(theta)):
        rng = np.random.default_rng([int(seed), int(h) & 0xFFFFFFFF, int(h) >> 32])
        d = rng.normal(size=(n_directions, int(active.sum())))
        out[i][:, active] = d / np.linalg.norm(d, axis=-1, keepdims=True)
    return out


def synth_jvp_fn(synth) -> Callable:
    """Jitted ``(theta [dim], v [k, dim] unit-box) -> (L [n_wave], dL [k, n_wave])`` of a
    :class:`~lumina_jax.synth.Synthesizer` (float64, erg/s/Å per unit step in ``u``)."""
    width = jnp.asarray(synth.space.upper - synth.space.lower, jnp.float64)

    def one(theta, v):
        theta = jnp.asarray(theta, jnp.float64)
        lin_primal, f_jvp = jax.linearize(synth.l_lambda, theta)
        return lin_primal, jax.vmap(f_jvp)(jnp.asarray(v, jnp.float64) * width)

    return jax.jit(one)


def preprocess_jvp(prep: Preprocessor, wavelength, spectra, dspectra, *, op=None):
    """The training preprocessing and its linearisation.

    Args:
        prep: the emulator's :class:`Preprocessor`.
        wavelength: ``[m]`` Å of the raw spectra.
        spectra: ``[N, m]`` raw ``L_lambda``.
        dspectra: ``[N, k, m]`` directional derivatives of the raw spectra.
        op: ``prep.smoothing_operator`` for ``wavelength`` (computed when None).

    Returns:
        ``(F [N, n], dF [N, k, n])`` normalised smoothed flux on the emulator grid and its derivative.
    """
    wl = np.asarray(wavelength, np.float64)
    grid = prep.grid
    same = wl.size == grid.size and np.allclose(wl, grid)
    op = prep.smoothing_operator(None if same else wl) if op is None else op
    lo, hi = prep.cfg.norm_window
    win = (grid >= lo) & (grid <= hi)
    s = np.asarray(spectra, np.float64) @ op.T
    ds = np.asarray(dspectra, np.float64) @ op.T
    norm = s[:, win].mean(axis=1)
    f = s / norm[:, None]
    dnorm = ds[:, :, win].mean(axis=2)
    df = (ds - f[:, None, :] * dnorm[:, :, None]) / norm[:, None, None]
    return f, df


def cache_path(store, synth, n_directions: int, seed: int) -> Path:
    """``<store>.jvp-<key>.npz``: key over the synthesizer config, the space, ``k`` and the seed."""
    cfg = synth.config
    cfg_blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str) if dataclasses.is_dataclass(cfg) \
        else repr(cfg)
    blob = json.dumps([CACHE_VERSION, cfg_blob, synth.space.fingerprint(), int(n_directions), int(seed),
                       int(synth.n_lines)])
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    store = Path(store)
    return store.with_name(f"{store.name}.jvp-{key}.npz")


def _read_cache(path: Path, n_wave: int, k: int) -> dict:
    try:
        with np.load(path) as z:
            c = {name: np.asarray(z[name]) for name in ("hashes", "v", "dl")}
    except (OSError, ValueError, KeyError):
        return {}
    if c["dl"].ndim != 3 or c["dl"].shape[1:] != (k, n_wave) or c["hashes"].shape[0] != c["dl"].shape[0]:
        return {}
    return {int(h): (v, d) for h, v, d in zip(c["hashes"], c["v"], c["dl"])}


def _write_cache(path: Path, rows: dict) -> None:
    hs = np.array(list(rows), np.uint64)
    v = np.stack([rows[int(h)][0] for h in hs])
    dl = np.stack([rows[int(h)][1] for h in hs])
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, hashes=hs, v=v, dl=dl)
    os.replace(tmp, path)


def synthesizer_jvp_targets(ts: TrainingSet, synth, prep: Preprocessor, *, n_directions: int = 2, seed: int = 0,
                            rows=None, cache: Path | str | None = None, save_every: int = 50,
                            primal_tol: float = 1e-3, on_progress: Callable[[int, int], None] | None = None):
    """The synthesizer's directional derivatives at training-set rows, as :class:`JvpData`.

    Args:
        ts: training set (raw spectra on the synthesizer's grid).
        synth: the :class:`~lumina_jax.synth.Synthesizer` that made the spectra (same space).
        prep: the emulator's preprocessing.
        n_directions: random unit directions per model (``k``).
        seed: direction seed.
        rows: indices into ``ts`` to compute (default all).
        cache: ``.npz`` file of raw derivatives (read, extended and rewritten every
            ``save_every`` new rows); None: no cache.
        primal_tol: largest median fractional difference between the synthesizer's primal
            (preprocessed) and the stored spectrum that is accepted.
        on_progress: ``(done, total)`` callback (progress display).

    Returns:
        :class:`~lumina_jax.emulator.JvpData` with ``theta [M k, dim]``, ``v [M k, dim]`` and
        ``dflux [M k, n_wave]`` (preprocessed, emulator grid); rows whose spectrum or derivative
        is not finite are left out.
    """
    from lumina_jax.emulator._training import JvpData

    if ts.space.names != synth.space.names or not (np.allclose(ts.space.lower, synth.space.lower)
                                                   and np.allclose(ts.space.upper, synth.space.upper)):
        raise UserError("derivative targets: the synthesizer's parameter space is not the training set's")
    wl = np.asarray(ts.wavelength, np.float64)
    if synth.wavelength.shape != wl.shape or not np.allclose(synth.wavelength, wl):
        raise UserError("derivative targets: the synthesizer's wavelength grid is not the store's; "
                        "pass the synth config the campaign was made with")
    rows = np.arange(ts.theta.shape[0]) if rows is None else np.asarray(rows)
    theta = np.asarray(ts.theta, np.float64)[rows]
    spectra = np.asarray(ts.spectra, np.float64)[rows]
    k = int(n_directions)
    v_all = random_directions(theta, k, ts.space.active_mask & (ts.space.upper > ts.space.lower), seed)
    hashes = theta_hashes(theta)
    path = Path(cache) if cache is not None else None
    done = _read_cache(path, wl.size, k) if path is not None and path.exists() else {}
    todo = [i for i, h in enumerate(hashes) if int(h) not in done]
    fn = synth_jvp_fn(synth) if todo else None
    same = wl.size == prep.grid.size and np.allclose(wl, prep.grid)
    op = prep.smoothing_operator(None if same else wl)
    bad_primal = []
    new = 0
    if on_progress is not None:
        on_progress(len(rows) - len(todo), len(rows))
    try:
        for n, i in enumerate(todo):
            lam, dl = (np.asarray(x, np.float64) for x in fn(theta[i], v_all[i]))
            f_syn, _ = preprocess_jvp(prep, wl, lam[None], dl[None], op=op)
            f_store, _ = preprocess_jvp(prep, wl, spectra[i][None], dl[None], op=op)
            if np.all(np.isfinite(f_syn)) and np.all(np.isfinite(f_store)):
                bad_primal.append(float(np.median(np.abs(f_syn - f_store) / np.maximum(np.abs(f_store), 1e-3))))
                if len(bad_primal) == 8 and np.median(bad_primal) > primal_tol:
                    raise UserError(
                        f"derivative targets: the synthesizer does not reproduce the stored spectra (median "
                        f"fractional difference {np.median(bad_primal):.2g} over 8 models > {primal_tol:g}); pass the "
                        "synth config the campaign was made with (stores made by LUMINA have no synthesizer "
                        "derivatives)")
            done[int(hashes[i])] = (v_all[i], dl)
            new += 1
            if path is not None and new % save_every == 0:
                _write_cache(path, done)
            if on_progress is not None:
                on_progress(len(rows) - len(todo) + n + 1, len(rows))
    finally:  # an interruption keeps what was computed
        if path is not None and new and new % save_every:
            _write_cache(path, done)
    dl = np.stack([done[int(h)][1] for h in hashes])  # [M, k, m]
    v = np.stack([done[int(h)][0] for h in hashes])
    ok = np.all(np.isfinite(spectra), axis=1) & np.all(np.isfinite(dl), axis=(1, 2))
    _, df = preprocess_jvp(prep, wl, np.where(ok[:, None], spectra, 1.0), np.where(ok[:, None, None], dl, 0.0), op=op)
    ok &= np.all(np.isfinite(df), axis=(1, 2))
    m = int(ok.sum())
    return JvpData(theta=np.repeat(theta[ok], k, axis=0), v=v[ok].reshape(m * k, -1),
                   dflux=df[ok].reshape(m * k, -1))


def store_synth_config(path) -> str | None:
    """The synthesizer YAML a ``synth``-backend campaign store records (None: the default config).

    Raises :class:`UserError` for a store made by another backend (no synthesizer derivatives)."""
    from runners.store import read_attrs

    attrs = read_attrs(Path(path))
    if str(attrs.get("backend", "")) != "synth":
        raise UserError(f"{path} was made by the {attrs.get('backend')!r} backend, not the embedded synthesizer: "
                        "its spectra have no synthesizer derivatives (pass the synth config explicitly to use one)")
    try:
        cfg = json.loads(str(attrs.get("config_json") or "{}")).get("synth_config")
    except ValueError:
        cfg = None
    if cfg is not None and not Path(cfg).is_file():
        raise UserError(f"{path} was made with the synth config {cfg}, which is not there any more; "
                        "pass the synth config explicitly")
    return cfg


def sobolev_targets(paths, cfg, *, on_progress: Callable[[int, int], None] | None = None, cache: bool = True):
    """Derivative targets for ``train_emulator(jvp=...)`` from campaign stores, per ``cfg``
    (:class:`~lumina_jax.emulator.TrainConfig`: ``jvp_directions``, ``jvp_rows``, ``jvp_synth_config``, ``seed``).

    Only rows of the training split (the split ``train_emulator`` will draw) get derivatives;
    with ``jvp_rows`` the first that many of them in store order.  Each store's synthesizer is
    the config it records unless ``cfg.jvp_synth_config`` is given; derivatives are cached
    beside each store (:func:`cache_path`).

    Returns:
        ``(JvpData, info)``, or ``(None, None)`` when ``cfg.jvp_directions == 0``.  ``info`` is the
        provenance recorded in the checkpoint's metadata.
    """
    from lumina_jax.emulator._data import load_training_set, load_training_sets
    from lumina_jax.emulator._training import JvpData, prepare_spectra, split_indices
    from lumina_jax.synth import Synthesizer

    if cfg.jvp_directions == 0:
        return None, None
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    prep = Preprocessor(cfg.preprocess)
    data = prepare_spectra(load_training_sets(paths), prep)
    tr, _, _ = split_indices(data.theta.shape[0], cfg.val_fraction, cfg.test_fraction, cfg.seed)
    train_set = {int(h) for h in theta_hashes(data.theta[tr])}
    plan, left = [], cfg.jvp_rows if cfg.jvp_rows is not None else np.inf
    for p in paths:
        ts = load_training_set(p)
        rows = np.array([i for i, h in enumerate(theta_hashes(ts.theta)) if int(h) in train_set], int)
        rows = rows[: int(min(left, rows.size))]
        left -= rows.size
        syn_cfg = cfg.jvp_synth_config if cfg.jvp_synth_config is not None else store_synth_config(p)
        plan.append((p, ts, rows, syn_cfg))
    total = sum(r.size for _, _, r, _ in plan)
    if total == 0:
        raise UserError("derivative targets: no training-split rows in the given stores")
    synths: dict = {}
    parts, offset = [], 0
    for p, ts, rows, syn_cfg in plan:
        if rows.size == 0:
            continue
        if syn_cfg not in synths:
            synths[syn_cfg] = Synthesizer.default(ts.space, syn_cfg)
        syn = synths[syn_cfg]
        cp = cache_path(p, syn, cfg.jvp_directions, cfg.seed) if cache else None
        prog = None if on_progress is None else (lambda d, t, o=offset: on_progress(o + d, total))
        parts.append(synthesizer_jvp_targets(ts, syn, prep, n_directions=cfg.jvp_directions, seed=cfg.seed,
                                             rows=rows, cache=cp, on_progress=prog))
        offset += rows.size
    jvp = JvpData(*(np.concatenate(x) for x in zip(*parts)))
    info = {"directions_per_model": int(cfg.jvp_directions), "direction_seed": int(cfg.seed),
            "synth_config": sorted({str(c) if c is not None else "default" for _, _, r, c in plan if r.size}),
            "cache": [str(cache_path(p, synths[c], cfg.jvp_directions, cfg.seed)) for p, _, r, c in plan
                      if r.size and cache]}
    return jvp, info
