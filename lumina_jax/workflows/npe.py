"""NPE workflow: training sets from campaign stores, training, sealed checkpoints, posteriors.

The maths is :mod:`lumina_jax.inference.npe`; this module reads and writes files.

Checkpoint layout (``format = "lumina-jax-npe"``, ``format_version = 1``, one HDF5 file sealed
like the emulator's, :mod:`lumina_jax._seal`)::

    /          attrs: format, format_version, created, lumina_jax_version, stage, space_json,
                      free_json (target box names), settings_json (:class:`~.npe.NPESettings`),
                      preprocess_json, band (A), poly_sd, log_nf_range, metadata_json
    /encoder/{mean,components,scale}     PCA of asinh flux on the band's bins
    /weights/00000 ...                   the model's array leaves (float32), in tree order
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from pathlib import Path
from typing import Callable

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax import _seal
from lumina_jax.errors import DataFileError, UserError
from lumina_jax.inference import npe
from lumina_jax.params import ParameterSpace
from lumina_jax.preprocess import PreprocessConfig, Preprocessor, normalise, resample, smooth

FORMAT = "lumina-jax-npe"
FORMAT_VERSION = 1
SEAL_MAGIC = b"lumina-jax-npe seal\n"
DEFAULT_BAND = (3300.0, 9700.0)  # the mock window and the SN 2011fe SNfactory coverage
DEFAULT_NOISE = (0.005, 0.1)  # per-pixel noise fraction range (S/N 200 ... 10)
DEFAULT_NPE = Path(__file__).resolve().parents[1] / "checkpoints" / "stage1_npe.h5"


@dataclasses.dataclass
class NPE:
    """A loaded NPE: model, encoder, noise model and what it was trained for."""

    model: npe.NPEModel
    settings: npe.NPESettings
    encoder: npe.Encoder
    noise: npe.NoiseModel
    box: npe.Box
    space: ParameterSpace
    free: tuple
    preprocess: PreprocessConfig
    band: tuple
    rows: np.ndarray  # grid bins the NPE reads
    in_rows: np.ndarray  # grid bins its smoothing reads
    metadata: dict

    @property
    def names(self) -> list[str]:
        return list(self.free) + [f"poly_{k + 1}" for k in range(self.settings.n_poly)]


def default_npe(stage: int) -> Path:
    """The shipped NPE checkpoint of ``stage`` (only stage 1 ships one)."""
    if stage != 1 or not DEFAULT_NPE.exists():
        raise UserError(f"no shipped NPE for stage {stage}: pass --npe (train one with `lumina-jax train-npe`)")
    return DEFAULT_NPE


# ----------------------------------------------------------------------------- preprocessing operator
def band_operator(cfg: PreprocessConfig, band) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, M, in_rows): the grid bins a spectrum observed over ``band`` (A) keeps after
    preprocessing (``rows [R]``), the linear map from grid flux to its smoothed flux on them
    before normalisation (``M [R, n]``) and the input bins it reads (``in_rows``), as
    :func:`lumina_jax.observed.prepare_observation` preprocesses a windowed spectrum."""
    prep = Preprocessor(cfg)
    grid = np.asarray(prep.grid, float)
    keep = (grid >= band[0]) & (grid <= band[1])
    if keep.sum() < 50:
        raise UserError(f"band {band[0]:.0f}-{band[1]:.0f} A covers {int(keep.sum())} grid bins; need >= 50")
    g, k = jnp.asarray(grid), jnp.asarray(keep)

    def lin(f):
        r = resample(g, f, g, k)
        valid = jnp.isfinite(r)
        return smooth(jnp.where(valid, r, 0.0), prep._smoother, cfg, valid)

    probe = np.asarray(lin(jnp.ones(grid.size)))
    rows = np.flatnonzero(np.isfinite(probe))
    mat = np.asarray(jax.jit(jax.jacfwd(lambda f: jnp.nan_to_num(lin(f))))(jnp.ones(grid.size)))[rows]
    in_rows = np.flatnonzero(np.any(mat != 0.0, axis=0))
    return rows, mat, in_rows


def noise_model(cfg: PreprocessConfig, band, n_poly: int, poly_sd: float, log_nf_range, operator=None):
    """(:class:`~.npe.NoiseModel`, rows, M, in_rows) for ``band``: see :func:`band_operator`
    (``operator``: its result, when already computed)."""
    rows, mat, in_rows = operator if operator is not None else band_operator(cfg, band)
    grid = np.asarray(cfg.grid, float)
    w = grid[rows]
    x = 2.0 * (w - w.min()) / (w.max() - w.min()) - 1.0
    norm_rows = ((w >= cfg.norm_window[0]) & (w <= cfg.norm_window[1])).astype(float)
    nm = npe.NoiseModel(jnp.asarray(mat[:, in_rows]), jnp.asarray(x), jnp.asarray(norm_rows),
                        tuple(float(v) for v in log_nf_range), float(poly_sd))
    return nm, rows, mat, in_rows


def noise_rownorm(noise) -> np.ndarray:
    """``sqrt(sum_j A_ij^2)`` per used bin ``[R]``: the preprocessed noise of unit white input noise."""
    a = np.asarray(noise.A)
    return np.sqrt(np.sum(a * a, axis=1))


def light_noise_model(cfg: PreprocessConfig, rows, rownorm, poly_sd: float, log_nf_range):
    """The :class:`~.npe.NoiseModel` of a loaded checkpoint: the smoothing operator replaced by its
    row norms ``[R, 1]`` (all that inference needs: :func:`~.npe.noise_fraction` and the warp)."""
    grid = np.asarray(cfg.grid, float)
    w = grid[rows]
    x = 2.0 * (w - w.min()) / (w.max() - w.min()) - 1.0
    norm_rows = ((w >= cfg.norm_window[0]) & (w <= cfg.norm_window[1])).astype(float)
    return npe.NoiseModel(jnp.asarray(np.asarray(rownorm, float)[:, None]), jnp.asarray(x), jnp.asarray(norm_rows),
                          tuple(float(v) for v in log_nf_range), float(poly_sd))


def training_bank(paths, stage: int, cfg: PreprocessConfig, band, log: Callable[[str], None] = print):
    """(:class:`~.npe.Bank`, space, operator) from campaign stores (their finished rows),
    preprocessed as a spectrum observed over ``band`` (operator: :func:`band_operator`'s result)."""
    from runners.store import load_training_set

    if not paths:
        raise UserError("give at least one campaign store (--data)")
    thetas, specs, space, wl0 = [], [], None, None
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"campaign store not found: {p}")
        ts = load_training_set(p, stage=stage)
        if space is None:
            space, wl0 = ts.space, np.asarray(ts.wavelength, float)
        elif ts.space.to_json() != space.to_json():
            raise UserError(f"{p}: its parameter box differs from that of {paths[0]}")
        if ts.wavelength.shape != wl0.shape or not np.allclose(ts.wavelength, wl0):
            raise UserError(f"{p}: its wavelength grid differs from that of {paths[0]}")
        thetas.append(np.asarray(ts.theta, float))
        specs.append(np.asarray(ts.spectra, float))
    theta, spectra = np.concatenate(thetas), np.concatenate(specs)
    grid = np.asarray(cfg.grid, float)
    if wl0.shape != grid.shape or not np.allclose(wl0, grid):
        rs = jax.jit(jax.vmap(lambda f: resample(jnp.asarray(wl0), f, jnp.asarray(grid))))
        spectra = np.asarray(rs(jnp.asarray(spectra)))
    good = np.all(np.isfinite(spectra), axis=1) & np.any(spectra > 0, axis=1)
    theta, spectra = theta[good], spectra[good]
    if theta.shape[0] < 10:
        raise UserError(f"only {theta.shape[0]} finished models in the stores; need at least 10")
    rows, mat, in_rows = band_operator(cfg, band)
    s = spectra @ mat.T  # [N, R] smoothed
    full = np.full((s.shape[0], grid.size), np.nan)
    full[:, rows] = s
    y_full = np.asarray(normalise(jnp.asarray(full), jnp.asarray(grid), cfg))
    norm = s[:, 0] / y_full[:, rows[0]]
    ok = np.all(np.isfinite(y_full[:, rows]), axis=1) & (norm > 0)
    log(f"training set: {int(ok.sum())} synthesizer models from {len(paths)} store(s), {rows.size} bins "
        f"{grid[rows[0]]:.0f}-{grid[rows[-1]]:.0f} A")
    bank = npe.Bank(jnp.asarray(theta[ok]), jnp.asarray(y_full[ok][:, rows]),
                    jnp.asarray(spectra[ok][:, in_rows] / norm[ok, None]))
    return bank, space, (rows, mat, in_rows)


# ----------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Settings of ``lumina-jax train-npe`` (see its --help)."""

    n_poly: int = 2
    poly_sd: float = 0.1
    band: tuple = DEFAULT_BAND
    noise_range: tuple = DEFAULT_NOISE
    n_components: int = 64
    reps: int = 32  # noise / warp realisations per training model
    steps: int = 6000
    batch_size: int = 256
    learning_rate: float = 1e-3
    val_fraction: float = 0.1
    seed: int = 0
    n_embed: int = 32
    flow_layers: int = 5
    nn_width: int = 64
    knots: int = 8
    affine_layers: int = 1


def train(paths, stage: int, cfg: PreprocessConfig, opts: TrainOptions, *, log: Callable[[str], None] = print,
          progress: Callable | None = None) -> NPE:
    """Train an NPE on the campaign stores ``paths`` of ``stage`` (see :mod:`~.npe`)."""
    if opts.n_poly < 0 or opts.n_poly > 10:
        raise UserError(f"--n-poly must be in 0..10, got {opts.n_poly}")
    lo_nf, hi_nf = opts.noise_range
    if not 0 < lo_nf <= hi_nf:
        raise UserError(f"noise range must satisfy 0 < low <= high, got {opts.noise_range}")
    t0 = time.perf_counter()
    bank, space, op = training_bank(paths, stage, cfg, opts.band, log)
    free = tuple(n for n in space.names if n not in space.inactive)
    idx = np.array([space.index(n) for n in free])
    log_nf_range = (float(np.log(lo_nf)), float(np.log(hi_nf) + (1e-9 if hi_nf == lo_nf else 0.0)))
    noise, rows, _, in_rows = noise_model(cfg, opts.band, opts.n_poly, opts.poly_sd, log_nf_range, op)
    box = npe.Box(jnp.asarray(np.asarray(space.lower, float)[idx]), jnp.asarray(np.asarray(space.upper, float)[idx]),
                  float(opts.poly_sd))
    n = bank.theta.shape[0]
    perm = np.random.default_rng(opts.seed).permutation(n)
    n_val = max(1, int(round(opts.val_fraction * n)))
    vi, ti = jnp.asarray(perm[:n_val]), jnp.asarray(perm[n_val:])
    key = jax.random.PRNGKey(opts.seed)
    k_pca, k_val, k_init, k_fit = jax.random.split(key, 4)
    sim = jax.jit(lambda k, y0, g: npe.simulate(k, y0, g, noise, opts.n_poly))
    # encoder: PCA of simulated (noisy, warped) training spectra
    sel = ti[: min(4096, ti.size)]
    y_pca, _, _ = sim(k_pca, bank.y0[sel], bank.g[sel])
    encoder = npe.fit_encoder(np.asarray(y_pca), opts.n_components, cfg.softening, log_nf_range)
    settings = npe.NPESettings(n_box=len(free), n_poly=opts.n_poly, n_feat=int(encoder.scale.shape[0]) + 1,
                               n_embed=opts.n_embed, flow_layers=opts.flow_layers, nn_width=opts.nn_width,
                               knots=opts.knots, affine_layers=opts.affine_layers)
    theta_free = bank.theta[:, idx]

    def table(k, ids, reps):
        """``reps`` simulated observations of each model ``ids``: (s [n, dim], feats [n, n_feat])."""
        out_s, out_f = [], []
        for r in range(reps):
            k, kr = jax.random.split(k)
            for c0 in range(0, len(ids), 2048):
                kr, kc = jax.random.split(kr)
                b = ids[c0:c0 + 2048]
                y, c, lnf = sim(kc, bank.y0[b], bank.g[b])
                t = jnp.concatenate([theta_free[b], c], axis=-1)
                out_s.append(npe.from_box(t, box, settings.n_box))
                out_f.append(npe.features(encoder, y, lnf))
        return jnp.concatenate(out_s), jnp.concatenate(out_f)

    # noise and warps drawn once per model and repetition (``reps``), then minibatches of that table
    tr_s, tr_f = table(k_fit, np.asarray(ti), opts.reps)
    val = table(k_val, np.asarray(vi), max(1, 4096 // vi.size))
    k_fit = jax.random.fold_in(k_fit, 1)

    def draw(k):
        ids = jax.random.randint(k, (opts.batch_size,), 0, tr_s.shape[0])
        return tr_s[ids], tr_f[ids]

    model = npe.init_model(k_init, settings)
    log(f"training NPE: {settings.dim}-D target ({len(free)} box parameters + {opts.n_poly} warp coefficients), "
        f"{settings.n_feat} features, {ti.size} train / {vi.size} validation models x {opts.reps} noise draws, "
        f"{opts.steps} steps")
    model, hist = npe.fit_flow(k_fit, model, draw, steps=opts.steps, learning_rate=opts.learning_rate,
                               val_batch=val, progress=progress)
    best = min(h[2] for h in hist)
    meta = {"stores": [str(p) for p in paths], "n_models": int(n), "n_train": int(ti.size), "n_val": int(vi.size),
            "options": dataclasses.asdict(opts), "history": hist, "best_val_loss": best,
            "train_s": time.perf_counter() - t0}
    log(f"trained in {meta['train_s']:.0f} s; best validation loss {best:.3f}")
    return NPE(model, settings, encoder, noise, box, space, free, cfg, tuple(opts.band), rows, in_rows, meta)


# ----------------------------------------------------------------------------- checkpoint
def save_npe(obj: NPE, path) -> Path:
    """Write ``obj`` to ``path`` (temporary name, sealed, renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    leaves = jax.tree.leaves(eqx.filter(obj.model, eqx.is_array))
    with h5py.File(tmp, "w", userblock_size=_seal.USERBLOCK) as f:
        a = f.attrs
        a["format"], a["format_version"] = FORMAT, FORMAT_VERSION
        a["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        from lumina_jax import __version__

        a["lumina_jax_version"] = __version__
        a["stage"] = int(obj.space.stage)
        a["space_json"] = obj.space.to_json()
        a["free_json"] = json.dumps(list(obj.free))
        a["settings_json"] = json.dumps(obj.settings.to_dict())
        a["preprocess_json"] = json.dumps(obj.preprocess.to_dict())
        a["band"] = np.asarray(obj.band, float)
        a["poly_sd"] = float(obj.box.poly_sd)
        a["log_nf_range"] = np.asarray(obj.noise.log_nf_range, float)
        a["rows"] = np.asarray(obj.rows, np.int64)
        a["in_rows"] = np.asarray(obj.in_rows, np.int64)
        a["noise_rownorm"] = np.asarray(noise_rownorm(obj.noise), float)
        a["metadata_json"] = json.dumps(obj.metadata, default=float)
        e = f.create_group("encoder")
        e["mean"] = np.asarray(obj.encoder.mean, np.float32)
        e["components"] = np.asarray(obj.encoder.components, np.float32)
        e["scale"] = np.asarray(obj.encoder.scale, np.float32)
        w = f.create_group("weights")
        for i, leaf in enumerate(leaves):
            w[f"{i:05d}"] = np.asarray(leaf, np.float32)
    _seal.seal(tmp, SEAL_MAGIC)
    os.replace(tmp, path)
    return path


def load_npe(path) -> NPE:
    """Read and verify an NPE checkpoint (:class:`DataFileError` for a damaged or foreign file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NPE checkpoint not found: {path}")
    if not _seal.check_seal(path, SEAL_MAGIC, "corrupt NPE checkpoint"):
        raise DataFileError(f"{path}: not an NPE checkpoint (no lumina-jax-npe seal); train one with "
                            "`lumina-jax train-npe`")
    try:
        with h5py.File(path, "r") as f:
            a = dict(f.attrs)
            if a.get("format") != FORMAT or int(a.get("format_version", -1)) != FORMAT_VERSION:
                raise DataFileError(f"{path}: format {a.get('format')!r} v{a.get('format_version')}, "
                                    f"expected {FORMAT} v{FORMAT_VERSION}")
            enc = {k: np.asarray(f["encoder"][k], float) for k in ("mean", "components", "scale")}
            leaves = [np.asarray(f["weights"][k]) for k in sorted(f["weights"])]
    except (OSError, KeyError) as exc:
        raise DataFileError(f"{path}: unreadable NPE checkpoint ({exc})") from None
    settings = npe.NPESettings.from_dict(json.loads(a["settings_json"]))
    space = ParameterSpace.from_json(a["space_json"])
    free = tuple(json.loads(a["free_json"]))
    cfg = PreprocessConfig.from_dict(json.loads(a["preprocess_json"]))
    band = tuple(float(v) for v in a["band"])
    log_nf_range = tuple(float(v) for v in a["log_nf_range"])
    skeleton = npe.init_model(jax.random.PRNGKey(0), settings)
    params, static = eqx.partition(skeleton, eqx.is_array)
    ref = jax.tree.leaves(params)
    if len(ref) != len(leaves) or any(r.shape != l.shape for r, l in zip(ref, leaves)):
        raise DataFileError(f"{path}: its weights do not match its settings")
    if not all(np.all(np.isfinite(l)) for l in leaves) or not all(np.all(np.isfinite(v)) for v in enc.values()):
        raise DataFileError(f"{path}: non-finite weights")
    params = jax.tree.unflatten(jax.tree.structure(params),
                                [jnp.asarray(l, r.dtype) for l, r in zip(leaves, ref)])
    model = eqx.combine(params, static)
    idx = np.array([space.index(n) for n in free])
    poly_sd = float(a["poly_sd"])
    box = npe.Box(jnp.asarray(np.asarray(space.lower, float)[idx]), jnp.asarray(np.asarray(space.upper, float)[idx]),
                  poly_sd)
    rows, in_rows = np.asarray(a["rows"], int), np.asarray(a["in_rows"], int)
    noise = light_noise_model(cfg, rows, np.asarray(a["noise_rownorm"], float), poly_sd, log_nf_range)
    encoder = npe.Encoder(jnp.asarray(enc["mean"]), jnp.asarray(enc["components"]), jnp.asarray(enc["scale"]),
                          float(cfg.softening), log_nf_range)
    if encoder.mean.shape[0] != rows.size:
        raise DataFileError(f"{path}: its encoder reads {encoder.mean.shape[0]} bins, its band {rows.size}")
    return NPE(model, settings, encoder, noise, box, space, free, cfg, band, rows, in_rows,
               json.loads(a["metadata_json"]))


def check_compatible(obj: NPE, setup, preprocess_cfg=None, path="NPE checkpoint") -> None:
    """Refuse (UserError) an NPE trained for another stage, box, set of free parameters, warp
    order or preprocessing than the fit ``setup``."""
    sp = setup.space
    if int(obj.space.stage) != int(sp.stage):
        raise UserError(f"{path} was trained for stage {obj.space.stage}, this fit is stage {sp.stage}")
    if list(obj.space.names) != list(sp.names) or not (
            np.allclose(obj.space.lower, sp.lower) and np.allclose(obj.space.upper, sp.upper)):
        raise UserError(f"{path} was trained in another parameter box than this fit's (stage {sp.stage}: "
                        "a --from box or another emulator's); train one for this box with `lumina-jax train-npe`")
    if tuple(setup.free) != tuple(obj.free):
        raise UserError(f"{path} infers {len(obj.free)} parameters ({', '.join(obj.free[:4])}...), this fit frees "
                        f"{len(setup.free)}")
    if int(setup.n_poly) != obj.settings.n_poly:
        raise UserError(f"{path} was trained with a {obj.settings.n_poly}-coefficient warp, this fit uses "
                        f"--n-poly {setup.n_poly}")
    if preprocess_cfg is not None and preprocess_cfg != obj.preprocess:
        raise UserError(f"{path} was trained with another preprocessing than the emulator's")


# ----------------------------------------------------------------------------- posterior
def observation_features(obj: NPE, flux, sigma, mask, log: Callable[[str], None] | None = None):
    """Features ``[n_feat]`` of a preprocessed observation (arrays on the grid) and its noise
    fraction.  The observation must cover the NPE's band (``UserError`` otherwise)."""
    flux, sigma, mask = (np.asarray(v) for v in (flux, sigma, mask))
    rows = obj.rows
    miss = ~mask[rows].astype(bool)
    grid = obj.preprocess.grid
    if miss.mean() > 0.02:
        raise UserError(f"the NPE reads {grid[rows[0]]:.0f}-{grid[rows[-1]]:.0f} A; the observation leaves "
                        f"{100 * miss.mean():.0f} % of it unused (window or masks): fit it with a sampler, or "
                        f"train an NPE for its coverage (train-npe --band)")
    y = np.asarray(flux, float)[rows]
    if miss.any():  # a few edge bins: linear fill
        good = ~miss
        y[miss] = np.interp(rows[miss], rows[good], y[good])
    lo, hi = obj.noise.log_nf_range
    s = np.asarray(sigma, float)[rows]
    if np.any(s[~miss] > 0):
        s = np.where(miss, np.interp(rows, rows[~miss], s[~miss]), s)
        nf = float(npe.noise_fraction(jnp.asarray(s), jnp.asarray(y), rownorm_of(obj.noise)))
        log_nf = float(np.log(max(nf, 1e-12)))
    else:
        log_nf = lo
        if log is not None:
            log(f"the observation has no errors: NPE at its lowest noise, S/N {np.exp(-lo):.0f} per pixel")
    if not lo - 1e-6 <= log_nf <= hi + 1e-6 and log is not None:
        log(f"warning: the observation's noise ({np.exp(log_nf):.3g} of the flux per pixel) lies outside the NPE's "
            f"training range {np.exp(lo):.3g}-{np.exp(hi):.3g}; clipped")
    log_nf = float(np.clip(log_nf, lo, hi))
    y = np.asarray(npe.warp_and_normalise(jnp.asarray(y), jnp.zeros((0,)), obj.noise))
    return npe.features(obj.encoder, jnp.asarray(y), jnp.asarray(log_nf)), float(np.exp(log_nf))


def rownorm_of(noise) -> jnp.ndarray:
    """Row norms ``[R]`` of the noise operator (full ``[R, M]`` or already reduced ``[R, 1]``)."""
    return noise.A[:, 0] if noise.A.shape[1] == 1 else jnp.sqrt(jnp.sum(noise.A * noise.A, axis=1))


def posterior_draws(obj: NPE, key, feats, n: int) -> np.ndarray:
    """``n`` draws ``[n, dim]`` from q(t | x) (box parameters physical, then warp coefficients)."""
    fn = eqx.filter_jit(lambda model, k, f: npe.sample(model, k, f, n, obj.box, obj.settings.n_box))
    return np.asarray(fn(obj.model, key, jnp.asarray(feats)))
