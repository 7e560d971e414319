"""Equivariant, conservative Flax model of the residual F4_true − Box3D(F4).

Model
-----
On the heavy-averaged, n_tot-normalised input x (species ν_e, ν_x, ν̄_e, ν̄_x), an MLP
maps the 27 Lorentz invariants (:mod:`box3d_jax.invariants`, rotation- and
scale-invariant) to 10 coefficients c_ab, d_a, a ∈ {ν_e, ν̄_e}, and

    ΔF_a = Σ_b c_ab(inv) x_b + d_a(inv) u,      b ∈ {ν_e, ν_x, ν̄_e, ν̄_x},  u = (0, 0, 0, 1),

which is O(3)-equivariant by construction (the x_b rotate, u and the invariants do
not). Conservation is then enforced by projection, exactly (float64 round-off):

* lepton number of every flavor: ΔN_e and ΔN̄_e are both replaced by their mean;
* flavor-summed four-flux of ν and of ν̄: ΔF_μ = ΔF_τ = −ΔF_e/2 (same for ν̄),
  which also gives μ/τ symmetry of the output.

Prediction = Box3D(F4) + n_tot · ΔF, with the Box3D quadrature the model was trained on
(``ResidualConfig.method/order/width``; checkpoints written before the "smooth" method
existed carry no method and mean the "sharp" Lebedev rule). The MLP runs in float32; the
combination with the basis vectors and the projection run in float64. The last layer
starts at zero, so an untrained model predicts Box3D exactly.

Domain of validity: :func:`training_domain` records, per feature (the 27 invariants the
MLP sees and the 4 flux factors of ν_e, ν̄_e, ν_x, ν̄_x), the range over the training
rows; :func:`outside_domain` flags inputs beyond it (by more than ``margin`` × the range)
or at/above the training flux-factor cut. :func:`predict` (also ``box3d_jax.predict``)
warns with :class:`OutOfDomainWarning` when any input is flagged.

Training (:func:`train`) uses optax Adam on n_tot-normalised Rhea/Emu data: loss =
mean over the 24 components of (prediction − F4_final)²/n_tot² (Rhea's
``comparison_loss_fn``) + a penalty on unphysical outputs (N < 0, |F| > N).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from box3d_jax import box3d as B
from box3d_jax.invariants import PAIRS, invariants, n_invariants
from box3d_jax.errors import DataFileError, ParameterError

__all__ = [
    "ResidualConfig",
    "ResidualModel",
    "OutOfDomainWarning",
    "DOMAIN_FEATURES",
    "domain_features",
    "training_domain",
    "outside_domain",
    "load_model",
    "predict",
    "CoefficientMLP",
    "init_params",
    "residual",
    "build_predict",
    "jitted_predict",
    "jitted_residual",
    "TrainData",
    "prepare_data",
    "train",
    "save_checkpoint",
    "load_checkpoint",
]

Params = Any
N_COEFF = 2 * 5  # (ΔF_νe, ΔF_ν̄e) × (4 species vectors + u)


@dataclasses.dataclass(frozen=True)
class ResidualConfig:
    """Static configuration (hashable: usable as a jit static argument).

    Attributes:
      hidden: widths of the hidden layers of the coefficient MLP.
      order: Lebedev order of the Box3D baseline.
      max_flux_factor: training/evaluation cut on the initial flux factors (Rhea: 0.9).
      unphysical_weight: weight of the N < 0 / |F| > N penalty in the loss.
      method, width: Box3D quadrature of the baseline (:func:`box3d_jax.box3d.build_box3d`).
    """

    hidden: tuple[int, ...] = (64, 64)
    order: int = B.DEFAULT_ORDER[B.DEFAULT_METHOD]
    max_flux_factor: float = 0.9
    unphysical_weight: float = 1.0
    method: str = B.DEFAULT_METHOD
    width: float = B.DEFAULT_WIDTH

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, d: dict) -> "ResidualConfig":
        try:
            cfg = cls(
                hidden=tuple(int(h) for h in d["hidden"]),
                order=int(d["order"]),
                max_flux_factor=float(d["max_flux_factor"]),
                unphysical_weight=float(d.get("unphysical_weight", 1.0)),
                # checkpoints from before the "smooth" method used the sharp Lebedev rule
                method=str(d.get("method", "sharp")),
                width=float(d.get("width", B.DEFAULT_WIDTH)),
            )
            B.resolve_method(cfg.method, cfg.order, cfg.width)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFileError(f"invalid residual-model configuration: {exc}") from None
        return cfg

    @property
    def box3d_kwargs(self) -> dict:
        """Keyword arguments selecting the Box3D baseline (for :func:`box3d_jax.box3d.box3d`)."""
        return {"order": self.order, "method": self.method, "width": self.width}


class CoefficientMLP(nn.Module):
    """MLP: invariants ``[..., 27]`` (float32) -> coefficients ``[..., 2, 5]``."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, inv: jax.Array) -> jax.Array:
        h = inv.astype(jnp.float32)
        for width in self.hidden:
            h = nn.gelu(nn.Dense(width, dtype=jnp.float32, param_dtype=jnp.float32)(h))
        out = nn.Dense(
            N_COEFF, dtype=jnp.float32, param_dtype=jnp.float32, kernel_init=nn.initializers.zeros
        )(h)
        return out.reshape(inv.shape[:-1] + (2, 5))


def init_params(config: ResidualConfig, key: jax.Array) -> Params:
    """Fresh parameters (last layer zero: the untrained residual is exactly 0)."""
    return CoefficientMLP(config.hidden).init(key, jnp.zeros((1, n_invariants(3)), jnp.float32))


def residual(params: Params, F4: jax.Array, config: ResidualConfig) -> jax.Array:
    """Conservative, equivariant correction ΔF4 ``[..., 2, 3, 4]`` (units of F4) to Box3D."""
    F4 = jnp.asarray(F4, jnp.float64)
    ntot = B.n_total(F4)
    scale = jnp.where(ntot > 0, ntot, 1.0)
    x = B.heavy_average(F4) / scale[..., None, None, None]
    coeff = CoefficientMLP(config.hidden).apply(params, invariants(x)).astype(jnp.float64)
    u = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 0.0, 1.0]), x.shape[:-3] + (1, 4))
    basis = jnp.concatenate([x[..., 0, :2, :], x[..., 1, :2, :], u], axis=-2)  # [..., 5, 4]
    dF_e = jnp.einsum("...ab,...bc->...ac", coeff, basis)  # [..., 2 (ν, ν̄), 4]
    dN = 0.5 * (dF_e[..., 0, 3] + dF_e[..., 1, 3])  # lepton-number projection
    dF_e = dF_e.at[..., 3].set(jnp.broadcast_to(dN[..., None], dF_e.shape[:-1]))
    dF = jnp.stack([dF_e, -0.5 * dF_e, -0.5 * dF_e], axis=-2)  # flavor-sum projection
    return dF * scale[..., None, None, None]


def build_predict(
    config: ResidualConfig, batch_size: int | None = None
) -> Callable[[Params, jax.Array], jax.Array]:
    """``predict(params, F4 [..., 2, 3, 4]) -> Box3D(F4) + residual`` (pure, jittable).

    ``batch_size``: process the points in blocks (``jax.lax.map``), as in
    :func:`box3d_jax.box3d.build_box3d`; needs a concrete batch size.
    """
    box = B.build_box3d(config.order, 3, method=config.method, width=config.width)

    def block(params: Params, F4: jax.Array) -> jax.Array:
        return box(F4).F4 + residual(params, F4, config)

    def predict(params: Params, F4: jax.Array) -> jax.Array:
        F4 = jnp.asarray(F4)
        flat = F4.reshape((-1, 2, 3, 4))
        n = flat.shape[0]
        if batch_size is not None and n > batch_size:
            n_blocks = -(-n // batch_size)
            padded = jnp.concatenate([flat, jnp.zeros((n_blocks * batch_size - n, 2, 3, 4), flat.dtype)])
            out = jax.lax.map(lambda x: block(params, x), padded.reshape((n_blocks, batch_size, 2, 3, 4)))
            return out.reshape((n_blocks * batch_size, 2, 3, 4))[:n].reshape(F4.shape)
        return block(params, F4)

    return predict


@functools.lru_cache(maxsize=16)
def jitted_predict(config: ResidualConfig, batch_size: int | None = B.DEFAULT_BATCH_SIZE) -> Callable:
    """Cached ``jax.jit(build_predict(config, batch_size))``."""
    return jax.jit(build_predict(config, batch_size))


@functools.lru_cache(maxsize=16)
def jitted_residual(config: ResidualConfig) -> Callable[[Params, jax.Array], jax.Array]:
    """Cached ``jax.jit`` of :func:`residual` alone: ``(params, F4) -> ΔF4`` (add it to Box3D)."""
    return jax.jit(functools.partial(residual, config=config))


# ------------------------------------------------------------------- domain of validity
_SPECIES = ("nu_e", "nu_mu", "nu_tau", "nubar_e", "nubar_mu", "nubar_tau")
#: Names of the features whose training ranges define the domain of validity.
DOMAIN_FEATURES: tuple[str, ...] = (
    *(f"F_{_SPECIES[a]}.F_{_SPECIES[b]}/n_tot^2" for a, b in PAIRS),
    *(f"F_{s}.u/n_tot" for s in _SPECIES),
    "fluxfac_nu_e", "fluxfac_nu_x", "fluxfac_nubar_e", "fluxfac_nubar_x",
)  # fmt: skip
#: Default slack beyond the training range, as a fraction of the range of each feature.
DOMAIN_MARGIN = 0.05


class OutOfDomainWarning(UserWarning):
    """Inputs outside the residual model's training domain (its correction is extrapolated)."""


def domain_features(F4: np.ndarray) -> np.ndarray:
    """Features ``[n, 31]`` (:data:`DOMAIN_FEATURES`) of ``F4 [n, 2, 3, 4]``, any units.

    The 27 invariants of the heavy-averaged, n_tot-normalised state (the MLP's inputs)
    and the flux factors |F|/N of ν_e, ν_x, ν̄_e, ν̄_x. NumPy, float64; rows with n_tot <= 0
    give zeros.
    """
    F4 = np.asarray(F4, np.float64).reshape(-1, 2, 3, 4)
    ntot = F4[..., 3].sum(axis=(1, 2))
    scale = np.where(ntot > 0, ntot, 1.0)
    x = F4 / scale[:, None, None, None]
    x = np.concatenate([x[:, :, :1], np.repeat(x[:, :, 1:].mean(axis=2, keepdims=True), 2, axis=2)], axis=2)
    inv = np.asarray(invariants(jnp.asarray(x)))
    ex = x[:, :, :2, :].reshape(-1, 4, 4)  # ν_e, ν_x, ν̄_e, ν̄_x
    N = ex[..., 3]
    norm = np.linalg.norm(ex[..., :3], axis=-1)  # O(1) after normalisation: no overflow
    ff = np.where(N > 0, norm / np.where(N > 0, N, 1.0), 0.0)
    return np.concatenate([inv, ff], axis=1)


def training_domain(F4_train: np.ndarray, config: ResidualConfig) -> dict:
    """Domain record (JSON-ready) of training inputs ``[n, 2, 3, 4]``: per-feature ranges."""
    feats = domain_features(F4_train)
    if feats.shape[0] == 0:
        raise ParameterError("no training rows to define the residual model's domain")
    return {
        "features": list(DOMAIN_FEATURES),
        "lo": feats.min(axis=0).tolist(),
        "hi": feats.max(axis=0).tolist(),
        "n_rows": int(feats.shape[0]),
        "max_flux_factor": config.max_flux_factor,
    }


def outside_domain(
    F4: np.ndarray, domain: dict | None, config: ResidualConfig, margin: float = DOMAIN_MARGIN
) -> tuple[np.ndarray, dict[str, int]]:
    """Which rows of ``F4 [n, 2, 3, 4]`` lie outside the training domain.

    A row is outside if any initial flux factor is >= ``config.max_flux_factor`` (the
    training cut) or, when ``domain`` (from :func:`training_domain`) is given, any feature
    lies outside [lo − margin·(hi − lo), hi + margin·(hi − lo)].

    Returns:
      ``(mask [n] bool, counts)``: counts maps each violated feature (or
      ``"max_flux_factor"``) to the number of rows violating it.
    """
    from box3d_jax.io import max_flux_factor

    F4 = np.asarray(F4, np.float64).reshape(-1, 2, 3, 4)
    cut = max_flux_factor(F4) >= config.max_flux_factor
    counts = {"max_flux_factor": int(cut.sum())} if cut.any() else {}
    mask = cut.copy()
    if domain is not None:
        try:
            lo, hi = np.asarray(domain["lo"], np.float64), np.asarray(domain["hi"], np.float64)
            names = list(domain["features"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFileError(f"invalid residual-model domain record: {exc}") from None
        if lo.shape != (len(DOMAIN_FEATURES),) or hi.shape != lo.shape or names != list(DOMAIN_FEATURES):
            raise DataFileError("invalid residual-model domain record: features do not match this version")
        slack = margin * (hi - lo)
        feats = domain_features(F4)
        bad = (feats < lo - slack) | (feats > hi + slack)  # [n, features]
        mask |= bad.any(axis=1)
        counts.update({names[j]: int(c) for j, c in enumerate(bad.sum(axis=0)) if c})
    return mask, counts


class ResidualModel(NamedTuple):
    """A trained residual model: parameters, configuration, checkpoint metadata."""

    params: Params
    config: ResidualConfig
    meta: dict

    @property
    def domain(self) -> dict | None:
        """The training-domain record (:func:`training_domain`), or None for old checkpoints."""
        return self.meta.get("domain")


def load_model(path: str | os.PathLike) -> ResidualModel:
    """:class:`ResidualModel` from a checkpoint directory (:func:`load_checkpoint`)."""
    return ResidualModel(*load_checkpoint(path))


def domain_message(n_out: int, n: int, counts: dict[str, int], has_domain: bool) -> str:
    """One-line description of out-of-domain inputs (for warnings and the CLI)."""
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    why = ", ".join(f"{name} ({c})" for name, c in top)
    extra = "" if has_domain else "; the checkpoint records no training ranges, only the flux-factor cut was checked"
    return (f"{n_out} of {n} inputs lie outside the residual model's training domain "
            f"(features out of range: {why}){extra}; the residual there is an extrapolation")


def predict(
    F4: jax.Array | np.ndarray,
    residual: ResidualModel | str | os.PathLike | None = None,
    *,
    method: str | None = None,
    order: int | None = None,
    width: float | None = None,
    warn: bool = True,
) -> jax.Array:
    """Asymptotic four-fluxes: Box3D, plus the residual model if one is given.

    Args:
      F4: initial four-fluxes ``[..., 2, 3, 4]`` (x, y, z, N last; any units, float64).
      residual: None (Box3D alone), a :class:`ResidualModel` or a checkpoint directory.
        With a model, Box3D uses the quadrature the model was trained on; ``method``,
        ``order`` and ``width`` must then be left unset or agree with it.
      method, order, width: Box3D quadrature without a model (defaults: converged "smooth").
      warn: emit :class:`OutOfDomainWarning` when inputs lie outside the model's training
        domain (:func:`outside_domain`).

    Returns:
      ``F4' [..., 2, 3, 4]`` in the units of ``F4``; conserves the flavor-summed four-fluxes
      and every lepton number to round-off.
    """
    import warnings

    if residual is None:
        return B.box3d(F4, order, 3, method=method or B.DEFAULT_METHOD, width=width)
    model = residual if isinstance(residual, ResidualModel) else load_model(residual)
    cfg = model.config
    for name, value, own in (("method", method, cfg.method), ("order", order, cfg.order), ("width", width, cfg.width)):
        if value is not None and value != own:
            raise ParameterError(
                f"the residual model was trained on Box3D with {name} = {own!r}; got {name} = {value!r}"
            )
    F4 = jnp.asarray(F4)
    if F4.shape[-3:] != (2, 3, 4):
        raise ParameterError(f"the residual model needs F4[..., 2, 3, 4] (NF = 3), got shape {F4.shape}")
    if warn:
        mask, counts = outside_domain(np.asarray(F4), model.domain, cfg)
        if mask.any():
            warnings.warn(domain_message(int(mask.sum()), mask.size, counts, model.domain is not None),
                          OutOfDomainWarning, stacklevel=2)
    return jitted_predict(cfg)(model.params, F4)


# ------------------------------------------------------------------------------ training
class TrainData(NamedTuple):
    """n_tot-normalised training arrays ``[n, 2, 3, 4]`` and the Box3D baseline on them."""

    F4_initial: np.ndarray
    F4_final: np.ndarray
    F4_box3d: np.ndarray


def prepare_data(F4_initial: np.ndarray, F4_final: np.ndarray, config: ResidualConfig) -> tuple[TrainData, np.ndarray]:
    """Apply the flux-factor cut, normalise by n_tot, precompute Box3D.

    Returns:
      ``(data, kept)``: the arrays of the kept rows, and the bool mask ``[n]`` of rows kept
      (all initial flux factors < ``config.max_flux_factor`` and n_tot > 0).
    """
    from box3d_jax.io import max_flux_factor

    F4_initial = np.asarray(F4_initial, np.float64)
    F4_final = np.asarray(F4_final, np.float64)
    if F4_initial.shape[1:] != (2, 3, 4) or F4_final.shape != F4_initial.shape:
        raise DataFileError(
            f"training needs NF = 3 arrays [n, 2, 3, 4] of equal shape, got {F4_initial.shape}, {F4_final.shape}"
        )
    ntot = F4_initial[..., 3].sum(axis=(1, 2))
    kept = (max_flux_factor(F4_initial) < config.max_flux_factor) & (ntot > 0)
    x = F4_initial[kept] / ntot[kept, None, None, None]
    y = F4_final[kept] / ntot[kept, None, None, None]
    b = np.asarray(B.box3d(x, **config.box3d_kwargs))
    return TrainData(x, y, b), kept


def _loss(params, config: ResidualConfig, x, y, b):
    pred = b + residual(params, x, config)
    mse = jnp.mean((pred - y) ** 2)
    N = pred[..., 3]
    normF = jnp.sqrt(jnp.sum(pred[..., :3] ** 2, axis=-1) + 1e-30)
    unphys = jnp.mean(jax.nn.relu(-N) ** 2 + jax.nn.relu(normF - N) ** 2)
    return mse + config.unphysical_weight * unphys, mse


def train(
    data: TrainData,
    config: ResidualConfig,
    *,
    epochs: int = 200,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
    seed: int = 0,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[Params, list[float]]:
    """Fit the residual model with optax Adam (cosine-decayed learning rate).

    Args:
      data: :func:`prepare_data` output (training rows only).
      epochs, batch_size, learning_rate, seed: optimisation settings.
      callback: called as ``callback(epoch, train_mse)`` after every epoch.

    Returns:
      ``(params, history)`` with the training MSE (n_tot-normalised) per epoch.
    """
    n = data.F4_initial.shape[0]
    if n == 0:
        raise ParameterError("no training points left after the flux-factor cut")
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise ParameterError("epochs and batch_size must be >= 1 and learning_rate > 0")
    batch_size = min(batch_size, n)
    steps_per_epoch = max(n // batch_size, 1)
    key = jax.random.PRNGKey(seed)
    key, init_key = jax.random.split(key)
    params = init_params(config, init_key)
    schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch, alpha=0.05)
    opt = optax.adam(schedule)
    opt_state = opt.init(params)
    x, y, b = (jnp.asarray(a) for a in data)

    @jax.jit
    def epoch(params, opt_state, key):
        perm = jax.random.permutation(key, n)[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)

        def step(carry, idx):
            params, opt_state = carry
            (_, mse), grads = jax.value_and_grad(_loss, has_aux=True)(params, config, x[idx], y[idx], b[idx])
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), mse

        (params, opt_state), mses = jax.lax.scan(step, (params, opt_state), perm)
        return params, opt_state, jnp.mean(mses)

    history = []
    for ep in range(epochs):
        key, sub = jax.random.split(key)
        params, opt_state, mse = epoch(params, opt_state, sub)
        history.append(float(mse))
        if callback is not None:
            callback(ep, history[-1])
    return params, history


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, params: Params, config: ResidualConfig, meta: dict | None = None) -> Path:
    """Write ``path/config.json`` and ``path/params.msgpack`` (flax serialization)."""
    from flax import serialization

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "params.msgpack").write_bytes(serialization.to_bytes(params))
    doc = {"format": "box3d_jax.residual/1", "config": config.to_dict(), "meta": meta or {}}
    (path / "config.json").write_text(json.dumps(doc, indent=2, default=float))
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[Params, ResidualConfig, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`; DataFileError if invalid."""
    from flax import serialization

    path = Path(path)
    cfg_file, par_file = path / "config.json", path / "params.msgpack"
    if not cfg_file.is_file() or not par_file.is_file():
        raise DataFileError(f"{path}: not a residual-model checkpoint (needs config.json and params.msgpack)")
    try:
        doc = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{cfg_file}: invalid JSON ({exc})") from None
    if doc.get("format") != "box3d_jax.residual/1":
        raise DataFileError(f"{cfg_file}: unknown checkpoint format {doc.get('format')!r}")
    config = ResidualConfig.from_dict(doc.get("config", {}))
    template = init_params(config, jax.random.PRNGKey(0))
    try:
        state = serialization.msgpack_restore(par_file.read_bytes())
        params = serialization.from_state_dict(template, state)
        shapes_ok = jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(template) and all(
            np.shape(a) == np.shape(b)
            for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(template))
        )
    except Exception as exc:  # corrupt msgpack, missing keys
        raise DataFileError(f"{par_file}: parameters do not match the configuration ({exc})") from None
    if not shapes_ok:
        raise DataFileError(f"{par_file}: parameters do not match the configuration (array shapes differ)")
    return params, config, doc.get("meta", {})
