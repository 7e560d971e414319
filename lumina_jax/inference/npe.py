"""Amortised neural posterior estimation (NPE): a conditional normalising flow q(theta | x).

Pure JAX / equinox maths (no file I/O; checkpoints: :mod:`lumina_jax.workflows.npe`).

Target ``t = (theta_free, c_1..c_K)``: the stage's free box parameters and the Legendre warp
coefficients of the likelihood (:mod:`~lumina_jax.inference.likelihood`).  The flow lives in
unbounded coordinates ``s``; the box parameters reach their box through the exact bijection
(:func:`to_box`)::

    theta_j = lo_j + (hi_j - lo_j) * sigmoid(s_j)          c_k = poly_sd * s_k

so every draw lies in the box and the density of ``theta`` carries the log-Jacobian
``log(hi - lo) + log sigmoid(s) + log sigmoid(-s)`` (:func:`box_log_det`).

Flow: flowjax's masked autoregressive flow with rational-quadratic spline transformers
(``flow_layers`` layers, ``knots`` knots on ``[-interval, interval]``, identity outside),
followed on the data side by ``affine_layers`` conditional affine autoregressive layers
(``s = mu(x, s_<i) + sigma(x, s_<i) * y``, sigma > 0 through a softplus), all conditioned on an embedding
``e = MLP(f)`` of the features ``f`` of a preprocessed spectrum.  The affine layers carry the
posterior's location and width, which splines fixed to the identity at ``+-interval`` do not
learn well: without them a Gaussian toy's posterior comes out 18-54 % too broad, with one
layer within 1.2 % (docs/design/decisions.md).  The features are
the whitened PCA coefficients (asinh flux on the checkpoint's bins) and the log of the noise
level (:func:`features`).  The embedding MLP is trained with the flow.

Simulator (:func:`simulate`): the synthesizer's clean preprocessed flux ``y0`` of a training
model, with the likelihood's nuisances applied on the fly::

    y = normalise( (1 + sum_k c_k P_k(x)) * (y0 + A (nf |g| xi)) ),   xi ~ N(0, I)

``g`` the unsmoothed normalised flux, ``A`` the preprocessing's (linear) smoothing restricted
to the used bins, ``nf`` the per-pixel noise fraction (log-uniform on ``noise_range``), ``c_k``
~ N(0, poly_sd) and ``normalise`` the division by the mean over the normalisation window (the
flux scale: observed spectra are normalised by the same preprocessing).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.inference.likelihood import legendre_basis


@dataclasses.dataclass(frozen=True)
class NPESettings:
    """Shapes and hyper-parameters of an NPE model (static, JSON-able).

    n_box: box parameters; n_poly: warp coefficients (target dim ``n_box + n_poly``);
    n_feat: spectrum features (PCA coefficients + 1 noise feature); n_embed: embedding size;
    flow_layers, nn_width, knots, interval: the spline flow; affine_layers: conditional affine
    layers after it; embed_width: hidden width of the embedding.  Settings without
    ``affine_layers`` (splines-only checkpoints) read as 0.
    """

    n_box: int
    n_poly: int
    n_feat: int
    n_embed: int = 32
    embed_width: int = 128
    flow_layers: int = 6
    nn_width: int = 96
    knots: int = 8
    interval: float = 5.0
    affine_layers: int = 1

    @property
    def dim(self) -> int:
        return self.n_box + self.n_poly

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NPESettings":
        return cls(**{"affine_layers": 0, **{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}})


class Box(NamedTuple):
    """Support of the target: ``lo, hi [n_box]`` physical bounds, ``poly_sd`` scale of the warp coefficients."""

    lo: jnp.ndarray
    hi: jnp.ndarray
    poly_sd: float


# ----------------------------------------------------------------------------- box bijection
def to_box(s, box: Box, n_box: int):
    """Unbounded ``s [..., dim]`` -> target ``t [..., dim]`` (box part in ``[lo, hi]`` exactly, also at +-inf)."""
    sb, sp = s[..., :n_box], s[..., n_box:]
    u = jax.nn.sigmoid(sb)
    theta = jnp.clip(box.lo + (box.hi - box.lo) * u, box.lo, box.hi)
    return jnp.concatenate([theta, box.poly_sd * sp], axis=-1)


def from_box(t, box: Box, n_box: int):
    """Inverse of :func:`to_box`: ``t [..., dim]`` -> ``s`` (``-inf`` / ``+inf`` on the walls)."""
    u = (t[..., :n_box] - box.lo) / (box.hi - box.lo)
    return jnp.concatenate([jnp.log(u) - jnp.log1p(-u), t[..., n_box:] / box.poly_sd], axis=-1)


def box_log_det(s, box: Box, n_box: int):
    """``log |dt/ds|`` of :func:`to_box` at ``s [..., dim]`` -> ``[...]``."""
    sb = s[..., :n_box]
    lj = jnp.log(box.hi - box.lo) + jax.nn.log_sigmoid(sb) + jax.nn.log_sigmoid(-sb)
    return jnp.sum(lj, axis=-1) + (s.shape[-1] - n_box) * jnp.log(box.poly_sd)


# ----------------------------------------------------------------------------- model
class NPEModel(eqx.Module):
    """Embedding MLP + conditional flow (an equinox pytree)."""

    embed: eqx.nn.MLP
    flow: eqx.Module


def init_model(key, settings: NPESettings) -> NPEModel:
    """A freshly initialised :class:`NPEModel` (flowjax MAF: rational-quadratic splines, then
    ``affine_layers`` affine autoregressive layers on the data side)."""
    from flowjax.bijections import Affine, Chain, RationalQuadraticSpline
    from flowjax.distributions import Normal, Transformed
    from flowjax.flows import masked_autoregressive_flow

    k1, k2, k3 = jax.random.split(key, 3)
    embed = eqx.nn.MLP(settings.n_feat, settings.n_embed, settings.embed_width, depth=2,
                       activation=jax.nn.gelu, key=k1)
    base = Normal(jnp.zeros(settings.dim))
    flow = masked_autoregressive_flow(
        k2, base_dist=base,
        transformer=RationalQuadraticSpline(knots=settings.knots, interval=settings.interval),
        cond_dim=settings.n_embed, flow_layers=settings.flow_layers, nn_width=settings.nn_width, invert=True)
    if settings.affine_layers > 0:
        affine = masked_autoregressive_flow(
            k3, base_dist=base, transformer=Affine(), cond_dim=settings.n_embed,
            flow_layers=settings.affine_layers, nn_width=settings.nn_width, invert=True)
        flow = Transformed(base, Chain([flow.bijection, affine.bijection]))  # sample: splines, then affine
    return NPEModel(embed, flow)


def embed(model: NPEModel, feats):
    """Features ``[..., n_feat]`` -> embedding ``[..., n_embed]``."""
    f = jnp.asarray(feats)
    return jnp.vectorize(model.embed, signature="(f)->(e)")(f)


def log_prob_s(model: NPEModel, s, feats):
    """log q(s | x) in the unbounded coordinates: ``s [B, dim]``, ``feats [B, n_feat]`` -> ``[B]``."""
    return model.flow.log_prob(s, condition=embed(model, feats))


def log_prob(model: NPEModel, t, feats, box: Box, n_box: int):
    """log q(t | x) of targets ``t [B, dim]`` (box parameters physical): the flow's density of
    ``s = from_box(t)`` minus the box Jacobian; ``-inf`` on or outside the walls."""
    s = from_box(t, box, n_box)
    return log_prob_s(model, s, feats) - box_log_det(s, box, n_box)


def sample(model: NPEModel, key, feats, n: int, box: Box, n_box: int):
    """``n`` draws ``t [n, dim]`` from q(t | x) for one spectrum's features ``feats [n_feat]``."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # flowjax wants a typed key
        key = jax.random.wrap_key_data(key)
    cond = model.embed(jnp.asarray(feats))
    s = model.flow.sample(key, (n,), condition=cond)
    return to_box(s, box, n_box)


def loss(model: NPEModel, s, feats):
    """Mean negative log density of a batch (training objective, unbounded coordinates)."""
    return -jnp.mean(log_prob_s(model, s, feats))


# ----------------------------------------------------------------------------- features
class Encoder(NamedTuple):
    """Spectrum -> features: PCA of asinh flux on the used bins plus the noise feature.

    mean [R], components [k, R], scale [k] (whitening); softening: asinh scale;
    log_nf_range: (lo, hi) of log noise fraction mapped to [-1, 1]."""

    mean: jnp.ndarray
    components: jnp.ndarray
    scale: jnp.ndarray
    softening: float
    log_nf_range: tuple


def features(enc: Encoder, y, log_nf):
    """Preprocessed flux ``y [..., R]`` and log noise fraction ``[...]`` -> ``[..., k + 1]``."""
    a = jnp.arcsinh(y / enc.softening)
    c = ((a - enc.mean) @ enc.components.T) / enc.scale
    lo, hi = enc.log_nf_range
    z = (2.0 * (log_nf - lo) / (hi - lo) - 1.0)[..., None]
    return jnp.concatenate([c, z], axis=-1)


def fit_encoder(y, n_components: int, softening: float, log_nf_range) -> Encoder:
    """PCA encoder fitted to simulated spectra ``y [N, R]`` (NumPy; boundary helper)."""
    a = np.arcsinh(np.asarray(y, float) / softening)
    mean = a.mean(0)
    _, sv, vt = np.linalg.svd(a - mean, full_matrices=False)
    k = min(n_components, vt.shape[0])
    scale = sv[:k] / np.sqrt(max(a.shape[0] - 1, 1))
    return Encoder(jnp.asarray(mean), jnp.asarray(vt[:k]), jnp.asarray(np.maximum(scale, 1e-12)), float(softening),
                   tuple(float(v) for v in log_nf_range))


# ----------------------------------------------------------------------------- simulator
class Bank(NamedTuple):
    """Training models: ``theta [N, n_box]`` (physical), ``y0 [N, R]`` clean preprocessed flux on
    the used bins, ``g [N, M]`` unsmoothed normalised flux on the band's input bins."""

    theta: jnp.ndarray
    y0: jnp.ndarray
    g: jnp.ndarray


class NoiseModel(NamedTuple):
    """``A [R, M]`` smoothing from the band's input bins to the used bins; ``x [R]`` warp
    coordinate in [-1, 1]; ``norm_rows [R]`` 1.0 where a used bin lies in the normalisation
    window; ``log_nf_range`` (lo, hi) natural log of the per-pixel noise fraction; ``poly_sd``."""

    A: jnp.ndarray
    x: jnp.ndarray
    norm_rows: jnp.ndarray
    log_nf_range: tuple
    poly_sd: float


def warp_and_normalise(y, coeffs, noise: NoiseModel):
    """``(1 + sum c_k P_k(x)) y`` divided by its mean over the normalisation window: ``[..., R]``."""
    k = coeffs.shape[-1]
    w = 1.0 + (coeffs @ legendre_basis(noise.x, k) if k else 0.0)
    yw = w * y
    m = jnp.sum(yw * noise.norm_rows, axis=-1, keepdims=True) / jnp.sum(noise.norm_rows)
    return yw / m


def simulate(key, y0, g, noise: NoiseModel, n_poly: int):
    """One noisy, warped observation per row: ``y0 [B, R]``, ``g [B, M]`` ->
    (``y [B, R]``, ``coeffs [B, n_poly]``, ``log_nf [B]``)."""
    b = y0.shape[0]
    k1, k2, k3 = jax.random.split(key, 3)
    lo, hi = noise.log_nf_range
    log_nf = jax.random.uniform(k1, (b,), minval=lo, maxval=hi)
    xi = jax.random.normal(k2, g.shape)
    y = y0 + (jnp.exp(log_nf)[:, None] * jnp.abs(g) * xi) @ noise.A.T
    coeffs = noise.poly_sd * jax.random.normal(k3, (b, n_poly))
    return warp_and_normalise(y, coeffs, noise), coeffs, log_nf


def noise_fraction(sigma, y, rownorm):
    """Per-pixel noise fraction ``nf`` implied by a preprocessed sigma ``[R]``: the median of
    ``sigma_i / (|y_i| sqrt(sum_j A_ij^2))`` (``y [R]`` the smoothed flux, locally constant over
    a smoothing window; ``rownorm [R]`` the row norms of ``A``)."""
    return jnp.median(sigma / jnp.maximum(jnp.abs(y) * rownorm, 1e-30))


# ----------------------------------------------------------------------------- training step
def make_train_step(optimizer):
    """``step(model, opt_state, s, feats) -> (model, opt_state, loss)`` (jitted, equinox filter)."""

    @eqx.filter_jit
    def step(model, opt_state, s, feats):
        val, grads = eqx.filter_value_and_grad(loss)(model, s, feats)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, val

    return step


def fit_flow(key, model: NPEModel, draw_batch, *, steps: int, learning_rate: float = 1e-3,
             val_batch=None, eval_every: int = 200, progress=None):
    """Train ``model`` on batches from ``draw_batch(key) -> (s [B, dim], feats [B, n_feat])``
    by Adam with cosine decay; keeps the parameters of the lowest validation loss
    (``val_batch = (s, feats)``, else the training loss).  ``progress(i, loss, val)`` is called
    every ``eval_every`` steps.  Returns (model, history list of (step, train, val))."""
    import optax

    sched = optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.02)
    opt = optax.chain(optax.clip_by_global_norm(5.0), optax.adamw(sched, weight_decay=1e-5))
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_train_step(opt)
    val_loss = eqx.filter_jit(loss)
    best, best_val, hist, run = model, np.inf, [], []
    for i in range(steps):
        key, kb = jax.random.split(key)
        s, f = draw_batch(kb)
        model, opt_state, lv = step(model, opt_state, s, f)
        run.append(lv)
        if (i + 1) % eval_every == 0 or i + 1 == steps:
            tr = float(np.mean(np.asarray(jnp.stack(run))))
            run = []
            v = float(val_loss(model, *val_batch)) if val_batch is not None else tr
            hist.append((i + 1, tr, v))
            if np.isfinite(v) and v < best_val:
                best, best_val = model, v
            if progress is not None:
                progress(i + 1, tr, v)
    return best, hist
