"""The emulator network and the :class:`Emulator` object (a pytree closing over its weights).

Forward model for one parameter vector ``theta [dim]`` (physical units):

    u = space.to_unit(theta)                       # training box -> [0, 1]^dim
    z, log_sigma_y = net(2 u - 1)                  # MLP, float32
    y = pca.mean + (z * pca.scale) @ pca.components     # asinh spectrum [n_wave]
    F = a sinh(y)                                  # normalised smoothed flux, a = 0.05
    sigma_F = s_cal * exp(log_sigma_y) * a cosh(y) # calibrated 1-sigma error of F

``z`` are standardised PCA coefficients; ``log_sigma_y`` is the log standard deviation of the
emulator's error in asinh units, read out of the last hidden layer through a learned smooth
basis over wavelength (``n_sigma`` functions) and trained with a Gaussian likelihood; ``s_cal``
is one scalar fitted on the validation set so that 68.3 % of held-out residuals fall within 1
sigma (see :mod:`lumina_jax.emulator._training`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.params import ParameterSpace
from lumina_jax.preprocess import PCA, PreprocessConfig, Preprocessor

DEFAULT_HIDDEN: tuple[int, ...] = (512, 512, 256, 256, 128)


class EmulatorNet(nn.Module):
    """MLP ``x [..., dim] in [-1, 1] -> (z [..., n_out], log_sigma [..., n_wave])``.

    Attributes:
        hidden: widths of the hidden layers (SiLU activations).
        n_out: number of PCA coefficients predicted.
        n_wave: wavelength bins of the sigma output.
        n_sigma: number of learned wavelength basis functions of ``log_sigma``.
        sigma_hidden: widths of a separate SiLU MLP from ``x`` to the ``n_sigma`` basis
            coefficients (empty: a linear read-out of the trunk's last hidden layer, the
            format-1 head).  The separate network is what the post-hoc refit on held-out
            residuals trains (``_training.refit_sigma``).
        log_sigma_init: initial ``log_sigma`` (asinh units).
    """

    hidden: tuple[int, ...]
    n_out: int
    n_wave: int
    n_sigma: int = 16
    sigma_hidden: tuple[int, ...] = ()
    log_sigma_init: float = float(np.log(0.02))

    @nn.compact
    def __call__(self, x, detach_sigma_features: bool = False):
        """``detach_sigma_features=True`` (training only) stops the sigma loss from training the
        trunk; at inference it must stay False so d sigma / d theta flows through the trunk."""
        h = x
        for i, width in enumerate(self.hidden):
            h = nn.silu(nn.Dense(width, name=f"dense_{i}")(h))
        z = nn.Dense(self.n_out, name="coefficients", kernel_init=nn.initializers.normal(1e-2))(h)
        # In training the sigma head reads the trunk's features without training them (the mean
        # prediction is fitted by the squared-error loss alone); the stop-gradient must not be
        # applied at inference, where it would drop d sigma / d theta through the trunk.
        if self.sigma_hidden:
            g = x
            for i, width in enumerate(self.sigma_hidden):
                g = nn.silu(nn.Dense(width, name=f"sigma_dense_{i}")(g))
            a = nn.Dense(self.n_sigma, name="sigma_head", kernel_init=nn.initializers.normal(1e-2))(g)
        else:
            a = nn.Dense(self.n_sigma, name="sigma_head")(jax.lax.stop_gradient(h) if detach_sigma_features else h)
        basis = self.param("sigma_basis", nn.initializers.normal(1e-2), (self.n_sigma, self.n_wave))
        offset = self.param("sigma_offset", nn.initializers.constant(self.log_sigma_init), (self.n_wave,))
        log_sigma = offset + a @ basis
        return z, log_sigma


@dataclasses.dataclass(frozen=True)
class EmulatorSettings:
    """Static (hashable) description of an emulator: network shape and preprocessing."""

    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    n_components: int = 64
    n_sigma: int = 16
    preprocess: PreprocessConfig = PreprocessConfig()
    sigma_hidden: tuple[int, ...] = ()

    @property
    def n_wave(self) -> int:
        return self.preprocess.grid.size

    def net(self) -> EmulatorNet:
        return EmulatorNet(hidden=tuple(self.hidden), n_out=self.n_components, n_wave=self.n_wave,
                           n_sigma=self.n_sigma, sigma_hidden=tuple(self.sigma_hidden))

    def to_dict(self) -> dict:
        return {"hidden": list(self.hidden), "n_components": self.n_components, "n_sigma": self.n_sigma,
                "sigma_hidden": list(self.sigma_hidden), "preprocess": self.preprocess.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "EmulatorSettings":
        return cls(hidden=tuple(int(x) for x in d["hidden"]), n_components=int(d["n_components"]),
                   n_sigma=int(d["n_sigma"]), preprocess=PreprocessConfig.from_dict(d["preprocess"]),
                   sigma_hidden=tuple(int(x) for x in d.get("sigma_hidden", ())))


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class Emulator:
    """A trained (or freshly initialised) spectral emulator.

    Array fields are pytree leaves (so an ``Emulator`` can be passed through ``jax.jit``);
    ``space``, ``settings`` and ``metadata_json`` are static.

    Attributes:
        space: the :class:`ParameterSpace` trained in; its bounds are the training box.
        settings: network shape and preprocessing config.
        weights: Flax parameter pytree of :class:`EmulatorNet` (float32).
        pca: :class:`PCA` basis of asinh spectra (float32 arrays).
        sigma_scale: calibration factor of the predicted sigma (scalar).
        metadata_json: training metadata (JSON text).
        error_basis: ``[n_wave, r]`` float32 or None: leading eigenvectors (times the square
            root of their eigenvalues) of the correlation matrix of the validation residuals
            in units of the calibrated sigma -- the emulator error's correlation in
            wavelength, used by the inference likelihood (see :func:`error_correlation_basis`).
        error_cov_scale: variance factor of that correlated error model in the likelihood
            (static float, 1.0 until ``lumina-jax emulator calibrate`` sets it: see
            :func:`lumina_jax.inference.calibration.projected_error_scale`).
    """

    space: ParameterSpace
    settings: EmulatorSettings
    weights: Any
    pca: PCA
    sigma_scale: Any = 1.0
    metadata_json: str = "{}"
    error_basis: Any = None
    error_cov_scale: float = 1.0

    # ------------------------------------------------------------------ pytree
    def tree_flatten(self):
        return ((self.weights, self.pca, self.sigma_scale, self.error_basis),
                (self.space, self.settings, self.metadata_json, float(self.error_cov_scale)))

    @classmethod
    def tree_unflatten(cls, aux, children):
        space, settings, meta, cov_scale = aux
        weights, pca, sigma_scale, error_basis = children
        return cls(space=space, settings=settings, weights=weights, pca=pca, sigma_scale=sigma_scale,
                   metadata_json=meta, error_basis=error_basis, error_cov_scale=cov_scale)

    # ------------------------------------------------------------------ info
    @property
    def wavelength(self) -> np.ndarray:
        """Emulator grid ``[n_wave]`` in Å."""
        return self.settings.preprocess.grid

    @property
    def metadata(self) -> dict:
        return json.loads(self.metadata_json)

    @property
    def n_components(self) -> int:
        return self.settings.n_components

    @functools.cached_property
    def _preprocessor(self) -> Preprocessor:
        return Preprocessor(self.settings.preprocess)

    # ------------------------------------------------------------------ model
    def _forward(self, theta):
        """``theta [..., dim]`` -> (asinh spectrum y [..., n], log sigma_y [..., n]), float32."""
        theta = jnp.asarray(theta)
        u = self.space.to_unit(theta)
        x = (2.0 * u - 1.0).astype(jnp.float32)
        z, log_sigma = self.settings.net().apply(self.weights, x)
        comps = jnp.asarray(self.pca.components, jnp.float32)
        scale = jnp.asarray(self.pca.scale, jnp.float32)
        y = jnp.asarray(self.pca.mean, jnp.float32) + (z * scale) @ comps
        return y, log_sigma

    def _out_dtype(self, theta):
        dt = jnp.result_type(theta)
        return jnp.promote_types(dt, jnp.float32) if jnp.issubdtype(dt, jnp.floating) else jnp.float32

    def spectrum(self, theta):
        """Normalised smoothed flux ``[..., n_wave]`` (linear, ~1 in the optical) at ``theta [..., dim]``.

        Pure, jittable, vmappable, differentiable; ``theta`` in physical units."""
        y, _ = self._forward(theta)
        a = self.settings.preprocess.softening
        return (a * jnp.sinh(y)).astype(self._out_dtype(theta))

    def spectrum_and_sigma(self, theta):
        """(flux ``[..., n_wave]``, calibrated 1-sigma emulator error ``[..., n_wave]``), same units."""
        y, log_sigma = self._forward(theta)
        return self._flux_and_sigma(y, log_sigma, self._out_dtype(theta))

    def _flux_and_sigma(self, y, log_sigma, dt):
        """Asinh spectrum and log sigma_y -> (flux, calibrated sigma_F) in dtype ``dt``."""
        a = self.settings.preprocess.softening
        flux = a * jnp.sinh(y)
        # a cosh(y) = sqrt(a^2 + F^2): no second transcendental per bin.
        dflux_dy = jnp.sqrt(a * a + flux * flux)
        sigma = jnp.asarray(self.sigma_scale, jnp.float32) * jnp.exp(log_sigma) * dflux_dy
        return flux.astype(dt), sigma.astype(dt)

    def asinh_spectrum(self, theta):
        """Asinh-space prediction ``[..., n_wave]`` (what the PCA models)."""
        return self._forward(theta)[0]

    def on_bins(self, rows) -> "EmulatorOnBins":
        """The same model on the grid bins ``rows`` only (e.g. the bins a likelihood uses).

        Returns a pure callable ``theta [..., dim] -> (flux, sigma)``, each ``[..., len(rows)]``,
        equal to ``spectrum_and_sigma(theta)[..., rows]`` (up to float32 summation order).  The
        PCA reconstruction -- a ``[k, n_wave]`` product, a third of the weights -- and the
        per-bin transforms then run over ``len(rows)`` bins: at stride 8, 200 of 1601.  Built
        once outside ``jit`` (the restricted basis is precomputed here)."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"rows must be a non-empty 1-D array of bin indices, got {rows.dtype} {rows.shape}")
        if rows.min() < 0 or rows.max() >= self.settings.n_wave:
            raise ValueError(f"rows must lie in [0, {self.settings.n_wave}), got {rows.min()}..{rows.max()}")
        return EmulatorOnBins(
            emulator=self, rows=jnp.asarray(rows),
            mean=jnp.asarray(np.asarray(self.pca.mean, np.float32)[rows]),
            components=jnp.asarray(np.asarray(self.pca.components, np.float32)[:, rows]))

    # ------------------------------------------------------------------ data
    def preprocess(self, wavelength, flux, mask=None):
        """Apply the training preprocessing to any spectrum (observed or simulated).

        Args:
            wavelength: ``[m]`` Å, increasing (rest frame; de-redshift first).
            flux: ``[m]`` linear flux density (any units).
            mask: optional bool ``[m]``, True where the flux is usable.

        Returns:
            ``[n_wave]`` smoothed flux on :attr:`wavelength`, normalised to mean 1 over
            4000-7000 Å (over the covered part of it); NaN where there is no valid input.
        """
        return self._preprocessor.normalised(wavelength, flux, mask)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class EmulatorOnBins:
    """:meth:`Emulator.on_bins`: the emulator's flux and sigma on a subset of its grid bins.

    Attributes:
        emulator: the full emulator (its network and calibration are used as they are).
        rows: ``[m]`` int indices of the bins.
        mean, components: the PCA mean ``[m]`` and basis ``[k, m]`` on those bins (float32).
    """

    emulator: Emulator
    rows: Any
    mean: Any
    components: Any

    def tree_flatten(self):
        return (self.emulator, self.rows, self.mean, self.components), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __call__(self, theta):
        """``theta [..., dim]`` (physical units) -> (flux, calibrated 1-sigma) ``[..., m]``."""
        emu = self.emulator
        theta = jnp.asarray(theta)
        x = (2.0 * emu.space.to_unit(theta) - 1.0).astype(jnp.float32)
        z, log_sigma = emu.settings.net().apply(emu.weights, x)  # log_sigma: a [16] x [16, n_wave] product, kept
        y = self.mean + (z * jnp.asarray(emu.pca.scale, jnp.float32)) @ self.components
        return emu._flux_and_sigma(y, log_sigma[..., self.rows], emu._out_dtype(theta))


def error_correlation_basis(residuals, *, max_rank: int = 32, variance: float = 0.95) -> np.ndarray:
    """Low-rank factor of the correlation of normalised emulator residuals.

    Args:
        residuals: ``[N, n_wave]`` validation residuals divided by the calibrated sigma.
        max_rank: largest rank kept.
        variance: keep eigenpairs up to this fraction of the trace (or ``max_rank``).

    Returns:
        ``B [n_wave, r]`` with ``B B^T`` ~ the correlation matrix (unit diagonal) and row norms
        ``|B_i| <= 1``; the rest of each bin's variance is uncorrelated (``1 - |B_i|^2``).
    """
    r = np.asarray(residuals, np.float64)
    if r.ndim != 2 or r.shape[0] < 2:
        raise ValueError(f"need [N >= 2, n_wave] residuals, got {r.shape}")
    c = (r.T @ r) / r.shape[0]
    sd = np.sqrt(np.clip(np.diag(c), 1e-12, None))
    c = c / np.outer(sd, sd)
    ev, vec = np.linalg.eigh(c)
    ev, vec = ev[::-1].clip(0.0), vec[:, ::-1]
    k = int(np.searchsorted(np.cumsum(ev) / ev.sum(), variance) + 1)
    k = max(1, min(k, max_rank, r.shape[0] - 1))
    b = vec[:, :k] * np.sqrt(ev[:k])
    norm = np.sqrt(np.sum(b * b, axis=1, keepdims=True))
    return (b / np.maximum(norm, 1.0)).astype(np.float32)


def init_emulator(space: ParameterSpace, settings: EmulatorSettings, key, pca: PCA | None = None,
                  metadata: dict | None = None) -> Emulator:
    """A randomly initialised emulator (for training, tests and benchmarks).

    Without ``pca`` a random orthonormal basis is used (benchmarks only)."""
    net = settings.net()
    k1, k2 = jax.random.split(key)
    weights = net.init(k1, jnp.zeros((space.dim,), jnp.float32))
    n = settings.n_wave
    if pca is None:
        q, _ = np.linalg.qr(np.asarray(jax.random.normal(k2, (n, settings.n_components))))
        pca = PCA(mean=np.full(n, np.arcsinh(1.0 / settings.preprocess.softening)), components=q.T,
                  scale=np.geomspace(3.0, 1e-3, settings.n_components),
                  explained_variance_ratio=np.full(settings.n_components, np.nan))
    pca = PCA(*(jnp.asarray(x, jnp.float32) for x in pca))
    return Emulator(space=space, settings=settings, weights=weights, pca=pca, sigma_scale=jnp.float32(1.0),
                    metadata_json=json.dumps(metadata or {}))
