"""Box3D asymptotic-state scheme for the fast flavor instability (FFI).

Richers, Froustey, Ghosh, Foucart & Gomez 2024 (arXiv:2409.04405), Eqs. 20-22; the
3D, three-flavor, XLN-aware generalisation of the Zaizen & Nagakura "Box" scheme.

Layout and units
----------------
Four-fluxes are arrays ``F4[..., 2, NF, 4]``: axis -3 = (ν, ν̄), axis -2 = flavor
(e, μ, τ for NF = 3; e, x for NF = 2), axis -1 = (F_x, F_y, F_z, N) -- **time component
last**. Any unit (cm⁻³ or n_tot-normalised): the map is homogeneous of degree one, and
the scheme works internally on the n_tot-normalised state. The HDF5 data files use
``[n, 4, 2, 3]``; convert with :func:`from_file_layout` / :func:`to_file_layout`.

Algorithm (per point)
---------------------
1. μ and τ are replaced by their mean x (separately for ν and ν̄).
2. ν_e, ν̄_e, ν_x, ν̄_x get Minerbo distributions f (:mod:`maxent`).
3. G = (f_e − f_x) − (f_ē − f_x̄) (ELN−XLN); I₊ = ∫G Θ(G), I₋ = ∫|G| Θ(−G).
4. The side Ω_< with the smaller integral I_< is equilibrated, P = 1/NF; the other side
   gets P = 1 − (1 − 1/NF) I_</I_>, which conserves every lepton number.
5. Difference form: ΔF4_e = −∫ (1 − P)(f_e − f_x)(n̂, 1) dΩ (ν̄ likewise),
   ΔF4_μ = ΔF4_τ = −ΔF4_e/(NF − 1); F4' = F4_avg + ΔF4. Flavor-summed four-fluxes
   and lepton numbers are thus conserved to round-off, and when nothing mixes the
   output is the input bit for bit.
6. Guard: with no crossing (or G ≡ 0) the output is F4_avg exactly ("sharp": I_< <=
   ``eps``·n_tot; "smooth": no direction of the rule on the minority side).

Two quadratures of the angular integrals (``method``):

* ``"smooth"`` (default; converged): only integrals over the minority side Ω_< are
  computed numerically; the whole-sphere ones are the exact Minerbo moments (F, N), so
  ΔF4_e = −(1 − 1/NF)[(1 − r) A_< + r A_tot] with A = ∫(f_e − f_x)(n̂, 1), r = I_</I_>
  and I_> = I_< + |∫G|. The step Θ(±G) is replaced by a compactly supported sixth-order
  smoothed step S(d/w) of an approximate geodesic distance d to the crossing (kernel
  moments ∫t²K = ∫t⁴K = 0, so the bias is O(w⁶)), integrated on a Lebedev rule that
  resolves it (default w = 0.4 rad on order 35, 434 directions). Accuracy: docs/box3d.md.
* ``"sharp"``: Θ(±G) at the nodes of a Lebedev rule, distributions normalised on the
  rule (Rhea's production scheme at order 17; errors up to ~1e-2·n_tot there).

Public API
----------
``box3d(F4, order=None, nf=3, method="smooth") -> F4'`` (jitted, vmapped, any batch shape),
``box3d_info(...) -> Box3DResult`` (also I₊, I₋, growth-rate proxy),
``build_box3d(order, nf, method=...) -> fn`` (the pure function, to jit/export yourself),
``heavy_average``, ``growth_rate_proxy``, ``from_file_layout``, ``to_file_layout``.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from box3d_jax import lebedev, maxent
from box3d_jax.errors import ParameterError

__all__ = [
    "SQRT2_GF_OVER_HBAR",
    "METHODS",
    "DEFAULT_METHOD",
    "DEFAULT_ORDER",
    "DEFAULT_WIDTH",
    "resolve_method",
    "Box3DResult",
    "build_box3d",
    "box3d",
    "box3d_info",
    "heavy_average",
    "n_total",
    "growth_rate_proxy",
    "from_file_layout",
    "to_file_layout",
]

#: √2 G_F/ħ in cm³ s⁻¹: converts a density (cm⁻³) to a rate (s⁻¹) (reference note §1.3).
SQRT2_GF_OVER_HBAR = 1.92552e-22
#: Relative threshold on I_</n_tot below which a point counts as stable (identity).
DEFAULT_EPS = 1e-12
#: Quadratures of the crossing integrals (module docstring).
METHODS = ("smooth", "sharp")
#: The default: converged to <= 1e-3·n_tot (docs/box3d.md).
DEFAULT_METHOD = "smooth"
#: Default Lebedev order per method (35: 434 directions; 17: 110, Rhea's choice).
DEFAULT_ORDER = {"smooth": 35, "sharp": 17}
#: Default width w (radians) of the smoothed step of the "smooth" method.
DEFAULT_WIDTH = 0.4


class Box3DResult(NamedTuple):
    """Box3D output for a batch ``[...]``.

    Attributes:
      F4: asymptotic four-fluxes ``[..., 2, NF, 4]`` (μ' = τ'), units of the input.
      I_plus, I_minus: crossing integrals ∫G Θ(G), ∫|G| Θ(−G) ``[...]``, units of the input.
      unstable: ``[...]`` bool, True where ELN−XLN crosses zero (where Box3D mixes).
      growth_rate: proxy √2G_F/ħ · √(I₊ I₋) ``[...]`` in s⁻¹ (meaningful for inputs in cm⁻³).
    """

    F4: jax.Array
    I_plus: jax.Array
    I_minus: jax.Array
    unstable: jax.Array
    growth_rate: jax.Array


def from_file_layout(F4_file: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
    """``[n, 4 (x,y,z,t), 2, NF]`` (HDF5 files) -> ``[n, 2, NF, 4]`` (this package)."""
    xp = jnp if isinstance(F4_file, jax.Array) else np
    return xp.moveaxis(F4_file, -3, -1)


def to_file_layout(F4: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
    """``[n, 2, NF, 4]`` -> ``[n, 4, 2, NF]`` (HDF5 file layout)."""
    xp = jnp if isinstance(F4, jax.Array) else np
    return xp.moveaxis(F4, -1, -3)


def n_total(F4: jax.Array) -> jax.Array:
    """Total number density n_tot = Σ over ν/ν̄ and flavors of N, shape ``[...]``."""
    return jnp.sum(F4[..., 3], axis=(-2, -1))


def heavy_average(F4: jax.Array) -> jax.Array:
    """Replace every heavy flavor (index >= 1) by the heavy-flavor mean, per ν/ν̄."""
    heavy = jnp.mean(F4[..., 1:, :], axis=-2, keepdims=True)
    return jnp.concatenate([F4[..., :1, :], jnp.broadcast_to(heavy, F4[..., 1:, :].shape)], axis=-2)


def growth_rate_proxy(I_plus: jax.Array, I_minus: jax.Array) -> jax.Array:
    """Box3D growth-rate proxy Γ ≈ √2G_F/ħ · √(I₊ I₋) in s⁻¹ for I± in cm⁻³.

    Computed as √I₊·√I₋ so that no product of two densities is formed (no overflow
    for inputs up to the float64 range)."""
    return SQRT2_GF_OVER_HBAR * jnp.sqrt(jnp.maximum(I_plus, 0.0)) * jnp.sqrt(jnp.maximum(I_minus, 0.0))


def resolve_method(method: str, order: int | None, width: float | None) -> tuple[str, int, float]:
    """Validate ``(method, order, width)`` and fill in the defaults of :data:`DEFAULT_ORDER`
    and :data:`DEFAULT_WIDTH`; raises ParameterError with the valid choices."""
    if method not in METHODS:
        raise ParameterError(f"Box3D method {method!r} unknown; choose one of {', '.join(METHODS)}")
    order = DEFAULT_ORDER[method] if order is None else order
    lebedev.rule(order)  # ParameterError with the list of orders
    width = DEFAULT_WIDTH if width is None else float(width)
    if method == "smooth" and not 0.0 < width <= 1.0:
        raise ParameterError(f"smoothing width must be in (0, 1] radians, got {width}")
    return method, int(order), width


def _point(
    F4: jax.Array,
    directions: jax.Array,
    weights: jax.Array,
    nf: int,
    approx_Z: bool,
    eps: float,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One point, F4 ``[2, nf, 4]`` -> (F4' [2, nf, 4], I₊, I₋, unstable), input units."""
    ntot = n_total(F4)
    scale = jnp.where(ntot > 0.0, ntot, 1.0)
    x = heavy_average(F4 / scale)  # [2, nf, 4], n_tot = 1
    ex = x[:, :2, :]  # species e and x (first heavy flavor = mean) for ν, ν̄: [2, 2, 4]
    f = maxent.distribution(ex[..., 3], ex[..., :3], directions, weights, approx_Z=approx_Z)
    D = f[:, 0, :] - f[:, 1, :]  # f_e − f_x for ν and ν̄: [2, n_dir]
    G = D[0] - D[1]  # ELN − XLN per steradian [n_dir]
    I_plus = jnp.sum(weights * jnp.maximum(G, 0.0))
    I_minus = jnp.sum(weights * jnp.maximum(-G, 0.0))
    less_is_plus = I_plus < I_minus
    I_less = jnp.minimum(I_plus, I_minus)
    I_more = jnp.maximum(I_plus, I_minus)
    unstable = I_less > eps
    ratio = jnp.where(unstable, I_less / jnp.where(unstable, I_more, 1.0), 0.0)
    in_less = jnp.where(less_is_plus, G > 0.0, G < 0.0)  # G = 0 -> larger side
    one_minus_P = jnp.where(in_less, 1.0 - 1.0 / nf, (1.0 - 1.0 / nf) * ratio)  # [n_dir]
    moments = jnp.concatenate([directions, jnp.ones_like(weights)[:, None]], axis=1)  # [n_dir, 4]
    dF_e = -((weights * one_minus_P) * D) @ moments  # [2, 4]
    dF_e = jnp.where(unstable, dF_e, 0.0)
    dF = jnp.concatenate(
        [dF_e[:, None, :], jnp.broadcast_to(-dF_e[:, None, :] / (nf - 1), (2, nf - 1, 4))], axis=1
    )
    out = heavy_average(F4) + dF * scale  # bit-exact identity where nothing mixes
    return out, I_plus * scale, I_minus * scale, unstable


# Odd-power coefficients of the smoothed step below: S(t) = 1/2 + t Σ_j C_j t^{2j}, |t| <= 1.
_STEP_COEFFS = tuple(
    c / 32768.0 for c in (96525, -525525, 1702701, -3185325, 3578575, -2395575, 883575, -138567)
)


def smoothed_step(t: jax.Array) -> jax.Array:
    """Compactly supported sixth-order smoothed step S(t) (any shape, float).

    S(t) = 0 for t <= −1, 1 for t >= 1, and S' = K(t) = (1 − t²)⁵ (a + b t² + c t⁴) on
    [−1, 1] with a, b, c = (96525, −1093950, 2078505)/32768 fixed by ∫K = 1 and
    ∫t²K = ∫t⁴K = 0. Replacing Θ(d) by S(d/w) in ∫Θ(d) h(d) dd therefore changes it by
    O(w⁶) for smooth h, and S is C⁵ at t = ±1 (quadrature-friendly). A polynomial: no
    transcendental function per direction.
    """
    t = jnp.clip(t, -1.0, 1.0)
    t2 = t * t
    acc = _STEP_COEFFS[-1]
    for c in _STEP_COEFFS[-2::-1]:
        acc = c + t2 * acc
    return 0.5 + t * acc


def _physical_fraction(base: jax.Array, dF: jax.Array, tol: float) -> jax.Array:
    """Largest λ in [0, 1] with every species of ``base + λ dF`` physical (N >= 0, |F| <= N).

    ``base``, ``dF``: ``[B, 2, nf, 4]`` (n_tot-normalised). Species already unphysical in
    ``base`` and violations <= ``tol`` are ignored. Returns ``[B]``. Used by the "smooth"
    method, whose output is physical only up to its quadrature error (it has no pointwise
    distribution); scaling ΔF keeps every conservation law exact.
    """
    c, d = base[..., 3], dF[..., 3]
    a, b = base[..., :3], dF[..., :3]
    A = d * d - jnp.sum(b * b, axis=-1)  # q(λ) = (c + λd)² − |a + λb|² = Aλ² + 2Bλ + C
    Bq = c * d - jnp.sum(a * b, axis=-1)
    C = c * c - jnp.sum(a * a, axis=-1)
    ok = ((A + 2.0 * Bq + C >= -tol) & (c + d >= -tol)) | (C < 0.0) | (c < 0.0)
    lam_N = jnp.where(d < 0.0, c / jnp.where(d < 0.0, -d, 1.0), 1.0)
    disc = Bq * Bq - A * C
    sq = jnp.where(disc > 0.0, jnp.sqrt(jnp.where(disc > 0.0, disc, 1.0)), 0.0)  # NaN-free gradient
    A_safe = jnp.where(A == 0.0, 1.0, A)
    roots = jnp.stack([(-Bq - sq) / A_safe, (-Bq + sq) / A_safe, -C / jnp.where(Bq == 0.0, 1.0, 2.0 * Bq)], -1)
    valid = (roots > 0.0) & jnp.stack([A != 0.0, A != 0.0, (A == 0.0) & (Bq != 0.0)], -1)
    lam_F = jnp.min(jnp.where(valid, roots, 1.0), axis=-1)
    lam = jnp.where(ok, 1.0, jnp.clip(jnp.minimum(lam_N, lam_F), 0.0, 1.0))
    return jnp.min(lam, axis=(-2, -1))


def _smooth_block(
    F4: jax.Array,
    directions: jax.Array,
    weights: jax.Array,
    nf: int,
    approx_Z: bool,
    eps: float,
    width: float,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Points ``F4 [B, 2, nf, 4]`` -> (F4' [B, 2, nf, 4], I₊, I₋, unstable [B]), input units.

    The "smooth" method (module docstring). Species order inside: ν_e, ν_x, ν̄_e, ν̄_x;
    f_s(n̂) = N_s/(4π) · 2Z_s/(1 − e^{−2Z_s}) · e^{Z_s(F̂_s·n̂ − 1)} (analytic normalisation,
    Eqs. 6-7), G = Σ_s c_s f_s with c = (1, −1, −1, 1).
    """
    ntot = n_total(F4)
    scale = jnp.where(ntot > 0.0, ntot, 1.0)
    x = heavy_average(F4 / scale[:, None, None, None])
    ex = x[:, :, :2, :].reshape(-1, 4, 4)  # [B, 4 species, 4]
    N, F = ex[..., 3], ex[..., :3]
    ff = maxent.flux_factor(N, F)
    Z = maxent.minerbo_Z_approx(ff) if approx_Z else maxent.minerbo_Z(ff)
    Fhat = maxent.flux_direction(F)
    tiny = Z < 1e-8
    Zs = jnp.where(tiny, 1.0, Z)
    pref = jnp.maximum(N, 0.0) / (4.0 * jnp.pi) * jnp.where(tiny, 1.0 + Z, 2.0 * Zs / -jnp.expm1(-2.0 * Zs))
    int_G = (N[:, 0] - N[:, 1]) - (N[:, 2] - N[:, 3])  # ∫G dΩ, exact (0 exactly if ν ≡ ν̄)
    s = jnp.where(int_G > 0.0, -1.0, 1.0)  # sign of G on the minority side Ω_<
    k = Z[..., None] * Fhat  # [B, 4, 3]
    dx, dy, dz = directions[:, 0], directions[:, 1], directions[:, 2]
    f, zmu = [], []  # per species, unrolled: elementwise [B, n_dir] arrays fuse well on CPU
    for i in range(4):
        zmu.append(k[:, i, 0:1] * dx + k[:, i, 1:2] * dy + k[:, i, 2:3] * dz)  # Z F̂·n̂
        f.append(pref[:, i : i + 1] * jnp.exp(zmu[i] - Z[:, i : i + 1]))
    D_nu, D_nubar = f[0] - f[1], f[2] - f[3]
    # Grouped as (ν) − (ν̄) so that identical ν and ν̄ give G = 0 exactly (no crossing).
    sG = s[:, None] * (D_nu - D_nubar)
    # Level-set function ρ = G/Σ, Σ = Σ_s f_s (= tanh(½ ln(P/M)) with P = f_e + f_x̄,
    # M = f_x + f_ē), and distance proxy d ≈ ρ/|∇_S ρ| = G Σ/|Σ∇G − G∇Σ|: the exact geodesic
    # distance to the crossing at first order, and growing fast away from it even where one
    # narrow Minerbo beam dominates (where G/|∇G| would stay below 1/Z). With ∇f_s = Z_s F̂_s f_s
    # (ambient): Σ∇G − G∇Σ = 2 Σ_{a ∈ {e, x̄}, b ∈ {x, ē}} f_a f_b (Z_a F̂_a − Z_b F̂_b).
    vx = vy = vz = vn = 0.0
    for a in (0, 3):
        for b in (1, 2):
            ff_ab = f[a] * f[b]
            dk = k[:, a] - k[:, b]
            vx, vy, vz = vx + ff_ab * dk[:, 0:1], vy + ff_ab * dk[:, 1:2], vz + ff_ab * dk[:, 2:3]
            vn = vn + ff_ab * (zmu[a] - zmu[b])  # radial part n̂·(...)
    # tangential part |v|² − (n̂·v)²; the floor keeps values and gradients finite where it
    # vanishes (isotropic species: there |t| saturates and S is 0 or 1).
    floor = 1e-200 if jnp.finfo(F4.dtype).eps < 1e-10 else 1e-20
    v2 = jnp.maximum(vx * vx + vy * vy + vz * vz - vn * vn, floor)
    sigma = (f[0] + f[1]) + (f[2] + f[3])
    t = sG * sigma * jax.lax.rsqrt(v2) * (0.5 / width)  # ≈ s × distance to G = 0 in units of w
    W = weights * smoothed_step(t)  # [B, n_dir]: smoothed Θ(s·G), exactly 0 or 1 beyond ±w
    moments = jnp.concatenate([directions, jnp.ones_like(weights)[:, None]], axis=1)  # [n_dir, 4]
    # Two separate products (not one stacked array): XLA:CPU then evaluates W once per node.
    A_less = jnp.stack([(W * D_nu) @ moments, (W * D_nubar) @ moments], axis=1)
    # A_less: ∫_{Ω<} (f_e − f_x)(n̂, 1) for ν and ν̄, [B, 2, 4]
    # I_< := N-component of A_<^ν − A_<^ν̄ (times s): the same weights, so lepton numbers
    # are conserved to round-off.
    I_less = s * (A_less[:, 0, 3] - A_less[:, 1, 3])
    A_tot = jnp.stack(
        [jnp.concatenate([F[:, 0] - F[:, 1], (N[:, 0] - N[:, 1])[:, None]], axis=-1),
         jnp.concatenate([F[:, 2] - F[:, 3], (N[:, 2] - N[:, 3])[:, None]], axis=-1)],
        axis=1,
    )  # [B, 2, 4], exact Minerbo moments
    I_more = I_less + jnp.abs(int_G)  # = I_< − s∫G
    # Unstable iff some direction of the rule has s·G > 0 (G changes sign for certain). The
    # smoothed I_< decides nothing: near a crossing that does not happen it can be > 0, and for
    # a shallow minority region next to a narrow beam it can be < 0; r = I_</I_> may then be
    # slightly negative, which keeps lepton numbers conserved exactly (the guard keeps
    # I_> >= |∫G|/2 > 0). Minority regions smaller than the node spacing (~0.15 rad at order
    # 35) are missed, as by any rule.
    node_in = jnp.max(sG, axis=-1) > 0.0
    unstable = node_in & (I_less > -0.5 * jnp.abs(int_G))
    ratio = jnp.where(unstable, I_less / jnp.where(unstable, I_more, 1.0), 0.0)
    dF_e = -(1.0 - 1.0 / nf) * ((1.0 - ratio)[:, None, None] * A_less + ratio[:, None, None] * A_tot)
    dF_e = jnp.where(unstable[:, None, None], dF_e, 0.0)
    dF = jnp.concatenate(
        [dF_e[:, :, None, :], jnp.broadcast_to(-dF_e[:, :, None, :] / (nf - 1), dF_e.shape[:2] + (nf - 1, 4))],
        axis=2,
    )
    # Box3D's output is physical (P in [1/3, 1]: convex combinations); this quadrature keeps it
    # so only to its error, which matters for nearly empty species: scale ΔF where needed.
    dF = dF * _physical_fraction(x, dF, 1e-14)[:, None, None, None]
    out = heavy_average(F4) + dF * scale[:, None, None, None]  # bit-exact identity where nothing mixes
    I_less = jnp.maximum(I_less, 0.0)  # diagnostics (I±, growth proxy)
    I_more = I_less + jnp.abs(int_G)
    plus_less = s > 0.0
    I_plus = jnp.where(plus_less, I_less, I_more) * scale
    I_minus = jnp.where(plus_less, I_more, I_less) * scale
    return out, I_plus, I_minus, unstable


def build_box3d(
    order: int | None = None,
    nf: int = 3,
    *,
    method: str = DEFAULT_METHOD,
    width: float | None = None,
    approx_Z: bool = False,
    eps: float = DEFAULT_EPS,
    batch_size: int | None = None,
) -> Callable[[jax.Array], Box3DResult]:
    """Build the (un-jitted) batched Box3D function.

    Args:
      order: Lebedev degree (see :data:`box3d_jax.lebedev.ORDERS`); None: the method's
        default (:data:`DEFAULT_ORDER`: 35 for "smooth", 17 for "sharp").
      nf: number of flavors, 3 (P_< = 1/3) or 2 (Zaizen-Nagakura values P_< = 1/2).
      method: "smooth" (converged default) or "sharp" (Heaviside at the Lebedev nodes,
        Rhea's scheme); see the module docstring.
      width: half-width w (radians) of the smoothed step ("smooth" only); None: 0.4.
        The rule must resolve it (w·order ≳ 12).
      approx_Z: use Jedynak's closed-form Z instead of the exact solve.
      eps: stability threshold on I_</n_tot ("sharp"; "smooth" decides by the sign of G
        at the directions of the rule).
      batch_size: if given, points are processed ``batch_size`` at a time
        (``jax.lax.map`` over blocks) so that the per-direction intermediates stay in
        cache. Needs a concrete batch size (leave None for ``jax.export`` with a symbolic
        batch dimension).

    Returns:
      ``fn(F4 [..., 2, nf, 4]) -> Box3DResult``, pure; vmapped over all leading axes.
    """
    if nf not in (2, 3):
        raise ParameterError(f"nf must be 2 or 3, got {nf!r}")
    method, order, width = resolve_method(method, order, width)
    d_np, w_np = lebedev.rule(order)

    def fn(F4: jax.Array) -> Box3DResult:
        F4 = jnp.asarray(F4)
        if F4.shape[-3:] != (2, nf, 4):
            raise ValueError(f"expected F4[..., 2, {nf}, 4], got shape {F4.shape}")
        d, w = jnp.asarray(d_np, F4.dtype), jnp.asarray(w_np, F4.dtype)
        batch = F4.shape[:-3]
        flat = F4.reshape((-1, 2, nf, 4))
        if method == "smooth":
            block = functools.partial(
                _smooth_block, directions=d, weights=w, nf=nf, approx_Z=approx_Z, eps=eps, width=width
            )
            if batch_size is not None and flat.shape[0] > batch_size:
                n = flat.shape[0]
                n_blocks = -(-n // batch_size)
                padded = jnp.concatenate([flat, jnp.zeros((n_blocks * batch_size - n, 2, nf, 4), flat.dtype)])
                res = jax.lax.map(block, padded.reshape((n_blocks, batch_size, 2, nf, 4)))
                out, ip, im, unst = (r.reshape((n_blocks * batch_size,) + r.shape[2:])[:n] for r in res)
            else:
                out, ip, im, unst = block(flat)
        else:
            point = functools.partial(
                _point, directions=d, weights=w, nf=nf, approx_Z=approx_Z, eps=eps
            )
            if batch_size is not None and flat.shape[0] > batch_size:
                out, ip, im, unst = jax.lax.map(point, flat, batch_size=batch_size)
            else:
                out, ip, im, unst = jax.vmap(point)(flat)
        return Box3DResult(
            F4=out.reshape(F4.shape),
            I_plus=ip.reshape(batch),
            I_minus=im.reshape(batch),
            unstable=unst.reshape(batch),
            growth_rate=growth_rate_proxy(ip, im).reshape(batch),
        )

    return fn


#: Block size used by the convenience functions (cache-friendly on CPU).
DEFAULT_BATCH_SIZE = 512


@functools.lru_cache(maxsize=32)
def _jitted(
    order: int, nf: int, approx_Z: bool, eps: float, method: str = "sharp", width: float = DEFAULT_WIDTH
) -> Callable:
    return jax.jit(
        build_box3d(order, nf, method=method, width=width, approx_Z=approx_Z, eps=eps, batch_size=DEFAULT_BATCH_SIZE)
    )


def jitted(
    order: int | None = None,
    nf: int = 3,
    *,
    method: str = DEFAULT_METHOD,
    width: float | None = None,
    approx_Z: bool = False,
    eps: float = DEFAULT_EPS,
) -> Callable[[jax.Array], Box3DResult]:
    """Cached ``jax.jit(build_box3d(...))`` in blocks of :data:`DEFAULT_BATCH_SIZE`."""
    method, order, width = resolve_method(method, order, width)
    return _jitted(order, int(nf), bool(approx_Z), float(eps), method, width)


def box3d_info(
    F4: jax.Array,
    order: int | None = None,
    nf: int = 3,
    *,
    method: str = DEFAULT_METHOD,
    width: float | None = None,
    approx_Z: bool = False,
    eps: float = DEFAULT_EPS,
) -> Box3DResult:
    """Jitted Box3D with diagnostics; see :func:`build_box3d` for the arguments."""
    fn = jitted(order, nf, method=method, width=width, approx_Z=approx_Z, eps=eps)
    return fn(jnp.asarray(F4))


def box3d(
    F4: jax.Array,
    order: int | None = None,
    nf: int = 3,
    *,
    method: str = DEFAULT_METHOD,
    width: float | None = None,
    approx_Z: bool = False,
    eps: float = DEFAULT_EPS,
) -> jax.Array:
    """Asymptotic four-fluxes ``F4'[..., 2, nf, 4]`` predicted by Box3D (jitted, vmapped).

    Conserves Σ_flavor F4 for ν and for ν̄ and every N_α − N̄_α to round-off; returns
    the heavy-averaged input unchanged where ELN−XLN has no crossing. The default
    ("smooth", order 35) is converged to <= 1e-3·n_tot; ``method="sharp", order=17``
    is Rhea's production quadrature.
    """
    return box3d_info(F4, order, nf, method=method, width=width, approx_Z=approx_Z, eps=eps).F4
