"""Spectral preprocessing: resampling, band-adaptive Savitzky-Golay smoothing, normalisation,
asinh transform and PCA, as pure JAX functions.

The same chain is applied to simulated training spectra and to observed spectra, so that the
emulator's output and the data live in one space.  Steps (all shapes for one spectrum; every
public function is jit/vmap friendly and differentiable in the flux):

1. **Resample** (:func:`resample`) any input grid onto the emulator grid (default 2000-10000 Å,
   step 5 Å, 1601 bins) by averaging the piecewise-linear input over each output bin (flux
   conserving for fine input, equal to linear interpolation for coarse input).  Bins not fully
   covered by valid input are NaN.
2. **Smooth** (:func:`smooth`) with a *band-adaptive* Savitzky-Golay filter (polynomial order
   3).  Windows follow the original Lumina-ML pipeline: 155 Å (31 bins) below 3500 Å, 105 Å
   (21) for 3500-4500 Å, 55 Å (11) for 4500-7500 Å, 105 Å (21) above 7500 Å.  Unlike the
   original (which filtered each band as a separate array and so had kinks at 3500, 4500 and
   7500 Å), every window is applied over the whole spectrum and the results are blended with
   C1-smooth raised-cosine weights of full width ``blend_width`` (default 200 Å) centred on each
   band edge.  Because each filter reproduces cubics exactly and the weights sum to one, the
   blended filter still reproduces cubics exactly.  The filter is a *weighted local polynomial
   fit*: masked or uncovered bins get zero weight, so a gap or a spectrum end shortens the window
   instead of pulling in garbage (at full coverage and away from the ends it equals
   ``scipy.signal.savgol_filter``).  For unmasked spectra it is a fixed banded matrix
   (``kernel [n, K]`` applied to ``K``-point neighbourhoods).
3. **Normalise** (:func:`normalise`) by the mean smoothed flux over 4000-7000 Å.  The original
   divided by the *peak* in 4000-7000 Å, which is set by one noisy bin and jumps between
   features as parameters change; the mean over a 3000 Å window is a smooth function of the
   parameters and of the data, so normalised flux is ~1 in the optical.
4. **asinh** (:func:`to_asinh`): ``y = asinh(F / 0.05)`` (log-like for F >> 0.05, linear near
   zero), so that a residual ``dy`` is approximately the fractional error ``dF / F`` where
   F >~ 0.1.
5. **PCA** (:func:`fit_pca`, :func:`pca_encode`, :func:`pca_decode`) on asinh spectra.

Units: wavelength Å; input flux any linear flux-density unit (erg/s/Å for simulations);
normalised flux is dimensionless.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "PreprocessConfig",
    "Preprocessor",
    "PCA",
    "default_grid",
    "resample",
    "smooth",
    "normalise",
    "to_asinh",
    "from_asinh",
    "fit_pca",
    "pca_encode",
    "pca_decode",
    "band_weights",
]

#: Diagnostic windows (Å) used by the emulator's feature-weighted loss and by reports.
FEATURE_WINDOWS: dict[str, tuple[float, float]] = {
    "Ca II H&K": (3600.0, 4000.0),
    "Fe blends": (4800.0, 5100.0),
    "S II W": (5300.0, 5700.0),
    "Si II 5972": (5700.0, 6000.0),
    "Si II 6355": (5900.0, 6500.0),
    "O I 7774": (7400.0, 7900.0),
    "Ca II IR": (8000.0, 8800.0),
}


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Settings of the preprocessing chain (hashable; stored in checkpoints).

    Attributes
    ----------
    wl_min, wl_max, step: output grid in Å (inclusive of both ends).
    band_edges: wavelengths (Å) where the smoothing window changes, ascending.
    windows: Savitzky-Golay window per band in Å (``len(band_edges) + 1`` entries); converted
        to an odd number of bins ``2 h + 1`` with ``h = round((w / step - 1) / 2)``
        (155 Å -> 31 bins, 105 Å -> 21, 55 Å -> 11 at 5 Å steps).
    polyorder: polynomial order of the local fits.
    blend_width: full width (Å) of the raised-cosine blend across each band edge.
    norm_window: (lo, hi) Å over which the mean smoothed flux is set to 1.
    softening: asinh softening ``a`` in ``y = asinh(F / a)``.
    """

    wl_min: float = 2000.0
    wl_max: float = 10000.0
    step: float = 5.0
    band_edges: tuple[float, ...] = (3500.0, 4500.0, 7500.0)
    windows: tuple[float, ...] = (155.0, 105.0, 55.0, 105.0)
    polyorder: int = 3
    blend_width: float = 200.0
    norm_window: tuple[float, float] = (4000.0, 7000.0)
    softening: float = 0.05

    def __post_init__(self):
        if len(self.windows) != len(self.band_edges) + 1:
            raise ValueError("windows needs one entry more than band_edges")
        if list(self.band_edges) != sorted(self.band_edges):
            raise ValueError("band_edges must be ascending")
        if not (self.wl_max > self.wl_min and self.step > 0):
            raise ValueError("need wl_max > wl_min and step > 0")

    @property
    def grid(self) -> np.ndarray:
        return default_grid(self.wl_min, self.wl_max, self.step)

    @property
    def half_windows(self) -> tuple[int, ...]:
        """Half window per band in bins (window = 2 h + 1)."""
        return tuple(max(int(round((w / self.step - 1.0) / 2.0)), (self.polyorder + 1) // 2 + 1) for w in self.windows)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        d = dict(d)
        for k in ("band_edges", "windows", "norm_window"):
            if k in d:
                d[k] = tuple(float(x) for x in d[k])
        return cls(**d)


def default_grid(wl_min: float = 2000.0, wl_max: float = 10000.0, step: float = 5.0) -> np.ndarray:
    """Uniform wavelength grid in Å, both ends included (2000..10000 step 5 -> 1601 bins)."""
    n = int(round((wl_max - wl_min) / step)) + 1
    return wl_min + step * np.arange(n, dtype=np.float64)


# ----------------------------------------------------------------------------- resampling
@jax.jit
def resample(wavelength, flux, grid, mask=None):
    """Average a piecewise-linear spectrum over the bins of a uniform ``grid``.

    Args:
        wavelength: input wavelengths ``[m]`` (Å), strictly increasing.
        flux: input flux ``[m]``; NaN/inf values are treated as masked.
        grid: output bin centres ``[n]`` (Å), uniform.
        mask: optional bool ``[m]``, True where the input is valid.

    Returns:
        ``[n]`` mean flux per output bin (same units as ``flux``), exact for the piecewise-linear
        interpolant of the input; NaN where less than 99 % of the bin is covered by valid input.
    """
    wavelength = jnp.asarray(wavelength)
    flux = jnp.asarray(flux)
    grid = jnp.asarray(grid, dtype=wavelength.dtype)
    good = jnp.isfinite(flux)
    if mask is not None:
        good = good & jnp.asarray(mask, dtype=bool)
    m = good.astype(flux.dtype)
    f = jnp.where(good, flux, 0.0)
    # A masked node kills the two segments that touch it: segment weight = m_i * m_{i+1}.
    seg_ok = m[1:] * m[:-1]
    dx = jnp.diff(wavelength)
    seg_int = 0.5 * (f[1:] + f[:-1]) * dx * seg_ok
    cum_f = jnp.concatenate([jnp.zeros(1, flux.dtype), jnp.cumsum(seg_int)])
    cum_m = jnp.concatenate([jnp.zeros(1, flux.dtype), jnp.cumsum(dx * seg_ok)])
    step = grid[1] - grid[0]
    lo, hi = grid - 0.5 * step, grid + 0.5 * step

    def cumulative(x):
        # Exact integrals of the piecewise-linear input from wavelength[0] to x.
        j = jnp.clip(jnp.searchsorted(wavelength, x, side="right") - 1, 0, wavelength.size - 2)
        t = jnp.clip(x - wavelength[j], 0.0, dx[j])
        slope = (f[j + 1] - f[j]) / dx[j]
        return (cum_f[j] + seg_ok[j] * (f[j] * t + 0.5 * slope * t**2),
                cum_m[j] + seg_ok[j] * t)

    (F_hi, M_hi), (F_lo, M_lo) = cumulative(hi), cumulative(lo)
    F, M = F_hi - F_lo, M_hi - M_lo
    inside = (lo >= wavelength[0]) & (hi <= wavelength[-1])
    ok = inside & (M >= 0.99 * step)
    return jnp.where(ok, F / jnp.where(ok, M, 1.0), jnp.nan)


# ----------------------------------------------------------------------------- smoothing
def band_weights(grid, cfg: PreprocessConfig) -> np.ndarray:
    """Blend weights ``[n_bands, n]`` (non-negative, sum to 1, C1-smooth in wavelength)."""
    grid = np.asarray(grid, dtype=np.float64)
    steps = []
    for e in cfg.band_edges:
        t = np.clip((grid - (e - 0.5 * cfg.blend_width)) / cfg.blend_width, 0.0, 1.0)
        steps.append(0.5 - 0.5 * np.cos(np.pi * t))  # raised cosine ramp 0 -> 1
    s = [np.ones_like(grid)] + steps + [np.zeros_like(grid)]
    return np.stack([s[b] - s[b + 1] for b in range(len(cfg.windows))])


def _neighbourhoods(x, half: int, fill=0.0):
    """``[n] -> [n, 2 half + 1]``: the values at offsets ``-half..half`` (``fill`` beyond ends)."""
    pad = jnp.pad(x, (half, half), constant_values=fill)
    n = x.shape[0]
    idx = jnp.arange(n)[:, None] + jnp.arange(2 * half + 1)[None, :]
    return pad[idx]


def _local_fit_kernels(valid_nb, cfg: PreprocessConfig, xp=jnp):
    """Kernels ``[B, n, K]`` of the weighted local cubic fits per band and validity ``[B, n]``.

    ``valid_nb`` is the validity (1/0) of each bin's ``K``-neighbourhood, ``K = 2 H + 1`` with
    ``H`` the largest half window.  Row ``i`` of band ``b``, dotted with the flux neighbourhood,
    gives that band's smoothed flux at bin ``i``.  ``xp`` is ``jax.numpy`` or ``numpy``.
    """
    H = max(cfg.half_windows)
    offs = xp.arange(-H, H + 1).astype(valid_nb.dtype)
    p = cfg.polyorder
    kernels = []
    oks = []
    for h in cfg.half_windows:
        x = offs / h  # scaled positions keep the normal equations well conditioned
        inwin = (xp.abs(offs) <= h).astype(valid_nb.dtype)
        w = valid_nb * inwin[None, :]  # [n, K]
        A = xp.stack([x**k for k in range(p + 1)], axis=-1)  # [K, p+1]
        G = xp.einsum("nk,ka,kb->nab", w, A, A)  # [n, p+1, p+1]
        count = xp.sum(w, axis=1)
        ok = count >= p + 2
        G = xp.where(ok[:, None, None], G, xp.eye(p + 1, dtype=G.dtype))
        # Value at the centre = first coefficient: c0 = e0^T G^-1 A^T W y.
        rhs = xp.zeros(G.shape[:-1] + (1,), dtype=G.dtype)
        rhs = rhs.at[:, 0, 0].set(1.0) if xp is jnp else _set_first(rhs)
        g = xp.linalg.solve(G, rhs)[..., 0]  # [n, p+1]  (G symmetric)
        kernels.append(xp.einsum("na,ka,nk->nk", g, A, w))
        oks.append(ok)
    return xp.stack(kernels), xp.stack(oks)  # [B, n, K], [B, n]


def _set_first(rhs):
    rhs = rhs.copy()
    rhs[:, 0, 0] = 1.0
    return rhs


class _Smoother(NamedTuple):
    kernel: np.ndarray  # [n, K] blended kernel for fully valid input
    weights: np.ndarray  # [B, n] band blend weights
    half: int  # H


def _build_smoother(cfg: PreprocessConfig) -> _Smoother:
    grid = cfg.grid
    n = grid.size
    H = max(cfg.half_windows)
    idx = np.arange(n)[:, None] + np.arange(-H, H + 1)[None, :]
    valid_nb = ((idx >= 0) & (idx < n)).astype(np.float64)
    kb, _ = _local_fit_kernels(valid_nb, cfg, xp=np)
    wts = band_weights(grid, cfg)
    kernel = np.einsum("bn,bnk->nk", wts, kb)
    return _Smoother(kernel=kernel, weights=wts, half=H)


def smooth(flux, smoother: _Smoother, cfg: PreprocessConfig, valid=None):
    """Band-adaptive Savitzky-Golay smoothing of ``flux [n]`` on the config grid.

    With ``valid=None`` all bins are used (fixed banded kernel, fast path); otherwise ``valid``
    (bool ``[n]``) marks usable bins, the local fits ignore the others, and the output is NaN at
    invalid bins or where a window has fewer than ``polyorder + 2`` valid bins.
    """
    H = smoother.half
    if valid is None:
        nb = _neighbourhoods(flux, H, 0.0)
        return jnp.sum(nb * jnp.asarray(smoother.kernel, flux.dtype), axis=-1)
    valid = jnp.asarray(valid, dtype=bool) & jnp.isfinite(flux)
    f = jnp.where(valid, flux, 0.0)
    vnb = _neighbourhoods(valid.astype(flux.dtype), H, 0.0)
    kb, ok = _local_fit_kernels(vnb, cfg)
    wts = jnp.asarray(smoother.weights, flux.dtype)
    kernel = jnp.einsum("bn,bnk->nk", wts, kb)
    ok_all = jnp.all(ok | (wts <= 0.0), axis=0) & valid
    out = jnp.sum(_neighbourhoods(f, H, 0.0) * kernel, axis=-1)
    return jnp.where(ok_all, out, jnp.nan)


# ----------------------------------------------------------------------------- normalise / asinh
def normalise(flux, grid, cfg: PreprocessConfig):
    """Divide ``flux [..., n]`` by its mean over ``cfg.norm_window`` (NaN bins ignored)."""
    g = jnp.asarray(grid)
    inwin = (g >= cfg.norm_window[0]) & (g <= cfg.norm_window[1])
    finite = jnp.isfinite(flux)
    safe = jnp.where(finite, flux, 0.0)
    use = inwin & finite
    mean = jnp.sum(jnp.where(use, safe, 0.0), axis=-1, keepdims=True) / jnp.sum(use, axis=-1, keepdims=True)
    # divide the NaN-free copy: d(flux / mean) / d mean at a NaN bin would be NaN x 0 = NaN and
    # poison the gradient of every bin (spectra resampled with partial coverage have NaN edges)
    return jnp.where(finite, safe / mean, flux)


def to_asinh(flux, softening: float = 0.05):
    """``y = asinh(F / a)``."""
    return jnp.arcsinh(flux / softening)


def from_asinh(y, softening: float = 0.05):
    """Inverse of :func:`to_asinh`: ``F = a sinh(y)``."""
    return softening * jnp.sinh(y)


# ----------------------------------------------------------------------------- preprocessor
@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """The preprocessing chain for one config, with its precomputed smoothing kernel.

    ``Preprocessor(cfg)`` builds the kernel once (about 0.1 s).  Methods are pure functions of
    their array arguments (jit/vmap/grad friendly).
    """

    cfg: PreprocessConfig = PreprocessConfig()

    def __post_init__(self):
        object.__setattr__(self, "_smoother", _build_smoother(self.cfg))
        object.__setattr__(self, "_normalised_jit", jax.jit(self._normalised_impl))
        object.__setattr__(self, "_smooth_jit", jax.jit(self._smooth_impl))

    def __hash__(self):
        return hash(self.cfg)

    def __eq__(self, other):
        return isinstance(other, Preprocessor) and other.cfg == self.cfg

    @property
    def grid(self) -> np.ndarray:
        return self.cfg.grid

    def smooth(self, flux, valid=None):
        """Smooth ``flux [n]`` given on :attr:`grid` (see :func:`smooth`); jitted."""
        return self._smooth_jit(flux, valid)

    def _smooth_impl(self, flux, valid):
        return smooth(flux, self._smoother, self.cfg, valid)

    def normalised(self, wavelength, flux, mask=None):
        """Any spectrum -> ``[n]`` smoothed flux on :attr:`grid`, mean 1 over the norm window.

        NaN where the input has no valid coverage (outside its range or masked)."""
        # decided on the input as given: inside jit, jnp.asarray of a NumPy grid is already a
        # tracer, which used to send on-grid spectra down the resampling path (whose jitted
        # gradient has NaNs)
        same_grid = (
            mask is None
            and not isinstance(wavelength, jax.core.Tracer)
            and np.shape(wavelength) == self.grid.shape
            and np.allclose(np.asarray(wavelength), self.grid)
        )
        wavelength = jnp.asarray(wavelength)
        flux = jnp.asarray(flux)
        if same_grid:
            return self._normalised_jit(None, flux, None)
        return self._normalised_jit(wavelength, flux, mask)

    def _normalised_impl(self, wavelength, flux, mask):
        f = flux if wavelength is None else resample(wavelength, flux, self.grid, mask)
        valid = jnp.isfinite(f)
        s = self._smooth_impl(jnp.where(valid, f, 0.0), valid)
        return normalise(s, self.grid, self.cfg)

    def normalised_full(self, flux):
        """Fast path for simulations already on :attr:`grid` with full coverage: ``[..., n]``."""
        s = jnp.vectorize(self._smooth_impl, excluded={1}, signature="(n)->(n)")(flux, None)
        return normalise(s, self.grid, self.cfg)

    def smoothing_operator(self, wavelength=None) -> np.ndarray:
        """Dense matrix ``A [n, m]``: resample from ``wavelength [m]`` (default: the grid itself)
        and smooth, for fully covered, unmasked input (``A @ flux`` before normalisation).

        Fast path for training sets where all spectra share one input grid."""
        n = self.grid.size
        H = self._smoother.half
        S = np.zeros((n, n))
        rows = np.repeat(np.arange(n), 2 * H + 1)
        cols = (np.arange(n)[:, None] + np.arange(-H, H + 1)[None, :]).ravel()
        ok = (cols >= 0) & (cols < n)
        np.add.at(S, (rows[ok], cols[ok]), self._smoother.kernel.ravel()[ok])
        if wavelength is None:
            return S
        wavelength = np.asarray(wavelength, np.float64)
        eye = jnp.eye(wavelength.size, dtype=jnp.float64)
        R = np.asarray(jax.jit(jax.vmap(lambda e: resample(wavelength, e, self.grid)))(eye)).T  # [n, m]
        if not np.all(np.isfinite(R)):
            raise ValueError("input wavelengths do not cover the grid")
        return S @ R

    def asinh(self, flux):
        return to_asinh(flux, self.cfg.softening)

    def inverse_asinh(self, y):
        return from_asinh(y, self.cfg.softening)


# ----------------------------------------------------------------------------- PCA
class PCA(NamedTuple):
    """PCA basis of asinh spectra.

    mean: ``[n]``; components: ``[k, n]`` orthonormal rows; scale: ``[k]`` standard deviation of
    each coefficient over the fitting set; explained_variance_ratio: ``[k]``.
    """

    mean: jax.Array
    components: jax.Array
    scale: jax.Array
    explained_variance_ratio: jax.Array


def fit_pca(
    Y,
    *,
    variance: float = 0.999,
    max_rms: float | None = None,
    n_components: int | None = None,
    max_components: int = 256,
) -> PCA:
    """Fit a PCA basis to rows of ``Y [N, n]`` (NumPy, float64 internally; not jitted).

    The number of components is ``n_components`` if given, else the smallest ``k`` reaching
    ``variance`` of the total variance **and** (if ``max_rms`` is given) a residual RMS per bin
    below ``max_rms`` (in the units of ``Y``), capped at ``max_components``.
    """
    Y = np.asarray(Y, dtype=np.float64)
    N, n = Y.shape
    mean = Y.mean(axis=0)
    X = Y - mean
    m = min(n, N, int(n_components) if n_components is not None else max_components)
    if N <= n:
        # Few spectra: thin SVD of the data matrix, O(N^2 n).
        _, sv, vt = np.linalg.svd(X, full_matrices=False)
        all_evals = sv**2 / max(N - 1, 1)
        total = float(all_evals.sum())
        evals, evecs = all_evals[:m], vt[:m].T
    else:
        import scipy.linalg

        cov = X.T @ X / max(N - 1, 1)
        total = float(np.trace(cov))
        # Only the leading m eigenpairs are needed (much faster than a full decomposition).
        evals, evecs = scipy.linalg.eigh(cov, subset_by_index=[n - m, n - 1], driver="evr")
        order = np.argsort(evals)[::-1]
        evals, evecs = evals[order], evecs[:, order]
    evals = np.clip(evals, 0.0, None)
    cum = np.cumsum(evals) / total
    if n_components is not None:
        k = int(n_components)
    else:
        k = int(np.searchsorted(cum, variance) + 1)
        if max_rms is not None:
            resid_rms = np.sqrt(np.clip(total - np.cumsum(evals), 0.0, None) / n)
            k = max(k, int(np.searchsorted(-resid_rms, -max_rms) + 1))
        k = min(k, max_components)
    k = max(1, min(k, evals.size))
    comps = evecs[:, :k].T
    # Sign convention: largest-magnitude loading positive (deterministic output).
    sign = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * sign[:, None]
    scale = np.sqrt(np.maximum(evals[:k], 1e-30))
    return PCA(
        mean=mean,
        components=comps,
        scale=scale,
        explained_variance_ratio=evals[:k] / total,
    )


def pca_encode(pca: PCA, y):
    """Asinh spectra ``[..., n]`` -> coefficients ``[..., k]``."""
    return (y - pca.mean) @ jnp.asarray(pca.components).T


def pca_decode(pca: PCA, c):
    """Coefficients ``[..., k]`` -> asinh spectra ``[..., n]``."""
    return pca.mean + c @ jnp.asarray(pca.components)


def within(grid, windows: Sequence[tuple[float, float]]) -> np.ndarray:
    """Bool ``[n]``: grid points inside any of ``windows``."""
    grid = np.asarray(grid)
    m = np.zeros(grid.shape, bool)
    for lo, hi in windows:
        m |= (grid >= lo) & (grid <= hi)
    return m
