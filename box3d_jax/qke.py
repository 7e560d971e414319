"""Multi-angle three-flavor fast-flavor solver (collisionless QKE) in a periodic 1D box.

Generates "ground-truth" asymptotic states for the Box3D closure and its residual
model, like the Emu merger-grid runs (reference note §5.4, §10).

Equations (dimensionless; reference note §10.1)
------------------------------------------------
Densities are normalised by n_tot (the sum of N over the six species), time by
ħ/(√2 G_F n_tot), length by ħc/(√2 G_F n_tot). The state in every cell z and discrete
direction v (Lebedev rule, weight w_v) is the 3×3 Hermitian number matrix ρ(z, v)
(number in the angular bin: diagonal = w_v f_a(v)) and the same for antineutrinos; we
evolve ρ̃ = ρ̄*, which obeys the same equation with the same Hamiltonian (§3 of the note)::

    (∂_t + v_z ∂_z) X_v = −i [H_v, X_v],    X ∈ {ρ, ρ̃},
    H_v(z) = Σ_v' (1 − v·v') (ρ_v' − ρ̃_v')(z)              (ν–ν forward scattering)

(vacuum and matter terms dropped: pure fast flavor). v_z = v·ê where ê is the box
axis, oriented along the ELN−XLN number flux. No collisions.

Discretisation
--------------
* Space: N_z Fourier modes, periodic box of length L = ``n_wavelengths`` × 2π/|k_max|
  (k_max from :mod:`box3d_jax.lsa`, so the fastest mode is a box mode).
* Advection exactly in Fourier space by the integrating factor e^{−i k v_z t};
  the local commutator term by the 4th-order Lawson (integrating-factor) Runge-Kutta
  scheme, with fixed dt = ``cfl`` / max_v‖H_v‖ (the spread of eigenvalues of H at t = 0).
  An exponential filter exp(−36 (|k|/k_Nyq)^36) after each step removes aliasing
  debris at the grid scale; it never touches k = 0, so the box averages below are
  unaffected.
* Conservation: box-averaged Tr ρ_v, Tr ρ̃_v (every direction) and the lepton-number
  matrix Σ_v (ρ_v − ρ̃_v) are conserved by every Runge-Kutta stage to round-off
  (the k = 0 mode of a commutator has zero trace; Σ_v [H_v, D_v] = 0 by the symmetry
  of 1 − v·v'), which the diagnostics monitor.
* Initial state: Minerbo distributions from the four-fluxes (:mod:`box3d_jax.maxent`)
  or any given per-direction distributions, homogeneous in z, plus random seeds in
  every off-diagonal element: ρ_ab = A·(ξ + iη)·(ρ_aa − ρ_bb), ξ, η ~ U(−1, 1)
  independent per cell, direction, pair and ν/ν̄ (Emu's recipe).

Outputs
-------
:func:`evolve` returns diagnostics every ``steps_per_diag`` steps (box-averaged
four-fluxes ``[2, 3, 4]``, off-diagonal magnitude, conservation errors).
:func:`analyse` turns them into the saturation time, fitted growth rate and the time
average (± standard deviation) of the four-fluxes over [``avg_start``·t_sat, t_end],
and flags runs that do not saturate early enough or violate conservation.
:func:`asymptotic_state` chains everything for a batch of initial four-fluxes in cm⁻³.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from box3d_jax import lebedev, lsa, maxent
from box3d_jax.errors import ParameterError

__all__ = [
    "SQRT2_GF_OVER_HBAR",
    "QKEConfig",
    "RunPlan",
    "Diagnostics",
    "RunResult",
    "minerbo_rho",
    "box_axis",
    "plan_run",
    "finalise_plan",
    "initial_state",
    "evolve",
    "analyse",
    "solve_distributions",
    "asymptotic_state",
]

#: √2 G_F/ħ in cm³ s⁻¹ (reference note §1.3): rate [s⁻¹] = Γ_dimensionless · n_tot · this.
SQRT2_GF_OVER_HBAR = 1.92552e-22


@dataclasses.dataclass(frozen=True)
class QKEConfig:
    """Resolution and run-control parameters (hashable; a jit static argument).

    n_z: Fourier modes (cells) along the box.
    lebedev_order: angular quadrature (29 -> 302 directions, 17 -> 110).
    n_wavelengths: box length in fastest-growing wavelengths.
    t_end_growth: run length in e-folding times 1/Γ_LSA.
    cfl: dt · max‖H‖ (fixed step; the Lawson-RK4 stability limit is ~2.8).
    seed_amplitude: relative amplitude A of the off-diagonal seeds.
    n_diag: number of diagnostic samples over the run.
    avg_start: the time average starts at avg_start · t_sat.
    min_t_end_over_t_sat: runs with t_end below this multiple of t_sat are rejected.
    conservation_tol: reject runs whose conservation errors exceed this (units of n_tot).
    stddev_tol: reject runs whose late-time standard deviation exceeds this (n_tot).
    filter: apply the exponential Fourier filter.
    lsa_order: Lebedev order of the LSA that sizes the box (0: the solver's; the growth
      rate is insensitive to the order from 17 on, reference note §10.3, and a 110-point
      eigenproblem is ~20x cheaper than a 302-point one).
    seed: base PRNG seed.
    """

    n_z: int = 128
    lebedev_order: int = 29
    n_wavelengths: float = 8.0
    t_end_growth: float = 60.0
    cfl: float = 0.4
    seed_amplitude: float = 1e-6
    n_diag: int = 200
    avg_start: float = 2.0
    min_t_end_over_t_sat: float = 3.0
    conservation_tol: float = 1e-6
    stddev_tol: float = 0.05
    filter: bool = True
    lsa_order: int = 17
    seed: int = 0

    def validate(self) -> "QKEConfig":
        if self.n_z < 4 or self.n_z % 2:
            raise ParameterError(f"n_z must be an even integer >= 4, got {self.n_z}")
        lebedev.rule(self.lebedev_order)
        if self.lsa_order:
            lebedev.rule(self.lsa_order)
        for name in ("n_wavelengths", "t_end_growth", "cfl", "seed_amplitude", "avg_start"):
            if not getattr(self, name) > 0:
                raise ParameterError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.n_diag < 10:
            raise ParameterError(f"n_diag must be >= 10, got {self.n_diag}")
        if self.seed < 0:
            raise ParameterError(f"seed must be >= 0, got {self.seed}")
        return self


class RunPlan(NamedTuple):
    """Per-run geometry and time step (dimensionless; arrays allow vmapping).

    axis [3]: box axis ê; length []: box length L; dt []: time step;
    growth_lsa []: Γ_max from the LSA; k_lsa []: its wave number along ê.
    """

    axis: jax.Array
    length: jax.Array
    dt: jax.Array
    growth_lsa: jax.Array
    k_lsa: jax.Array


class Diagnostics(NamedTuple):
    """Time series, leading axis = diagnostic sample (plus batch axes if vmapped).

    t: time; F4: box-averaged four-fluxes ``[2, 3, 4]`` (x, y, z, N; n_tot units);
    offdiag: sqrt(box-average of Σ_{a<b} |N_ab|²) of ν (Emu's N_offdiag_mag);
    offdiag_bar: the same for ν̄; offdiag_mode: the ν off-diagonal amplitude in the single
    Fourier mode of the LSA's fastest wave number (a clean exponential in the linear phase);
    trace_err: max_v |ΔTr ρ_v|, |ΔTr ρ̃_v| (box-averaged);
    lepton_err: max |Δ Σ_v (ρ_v − ρ̃_v)| elementwise (box-averaged);
    hermit_err: max |X − X†| over the box (a numerical-health check);
    rho_dir: box-averaged diagonal per direction ``[2, 3, n_dir]`` (angular distributions,
    number per bin; for survival probabilities per direction).
    """

    t: jax.Array
    F4: jax.Array
    offdiag: jax.Array
    offdiag_bar: jax.Array
    offdiag_mode: jax.Array
    trace_err: jax.Array
    lepton_err: jax.Array
    hermit_err: jax.Array
    rho_dir: jax.Array


class RunResult(NamedTuple):
    """Result of :func:`analyse` for one run (NumPy; n_tot units unless stated).

    F4_final/F4_stddev ``[2, 3, 4]``: time average and standard deviation over the window;
    growth_rate: fitted from the off-diagonal amplitude of the fastest LSA mode (NaN if no
    clean linear phase); growth_rate_total: Rhea's fit of the box-averaged off-diagonal
    magnitude (all modes; biased low by ~2% by slower neighbouring modes);
    t_sat, t_end: saturation time and run length; conservation_err: max of the trace and
    lepton-number errors over the run; ok: accepted; reason: why not (empty if ok).
    """

    F4_final: np.ndarray
    F4_stddev: np.ndarray
    growth_rate: float
    growth_rate_total: float
    growth_lsa: float
    t_sat: float
    t_end: float
    conservation_err: float
    ok: bool
    reason: str


# ----------------------------------------------------------------------------- setup


def minerbo_rho(F4: np.ndarray, directions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-bin diagonal densities ``[2, 3, n_dir]`` (w_v f_a(v)) from four-fluxes ``[2, 3, 4]``.

    Minerbo closure normalised on the quadrature (Σ_v = N exactly).
    """
    F4 = np.asarray(F4, dtype=np.float64)
    f = maxent.distribution(F4[..., 3], F4[..., :3], directions, weights)
    return np.asarray(f) * np.asarray(weights)


def box_axis(rho_diag: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Unit ELN−XLN number-flux direction (x = mean of μ, τ); +z if that flux vanishes."""
    lep = rho_diag[0] - rho_diag[1]  # [3, n_dir]
    g = lep[0] - 0.5 * (lep[1] + lep[2])
    flux = directions.T @ g
    norm = float(np.linalg.norm(flux))
    if norm <= 1e-12 * float(np.abs(rho_diag).sum()):
        return np.array([0.0, 0.0, 1.0])
    return flux / norm


def _h_spread(rho_diag: np.ndarray, directions: np.ndarray) -> float:
    """max over directions of (largest − smallest eigenvalue) of the initial H_v."""
    D = rho_diag[0] - rho_diag[1]  # [3, n_dir] (diagonal at t = 0)
    h = D.sum(axis=1)[:, None] - (D @ directions) @ directions.T  # [3, n_dir]
    return float((h.max(axis=0) - h.min(axis=0)).max())


def plan_run(rho_diag: np.ndarray, config: QKEConfig) -> tuple[RunPlan, lsa.LSAResult]:
    """Box axis, length and time step for one run from its initial distributions.

    Args:
      rho_diag: ``[2, 3, n_dir]`` per-bin densities on the solver's Lebedev rule (n_tot units).

    Returns:
      (plan, LSA result). A stable input (Γ = 0) gets L = 2π·n_wavelengths/|Λ1| and
      t_end = t_end_growth (no instability to wait for).
    """
    d, w = lebedev.rule(config.lebedev_order)
    axis = box_axis(rho_diag, d)
    if config.lsa_order and config.lsa_order != config.lebedev_order:
        # LSA on a coarser rule: re-project the distribution (per steradian) onto it.
        d_l, w_l = lebedev.rule(config.lsa_order)
        F4 = np.concatenate([rho_diag @ d, rho_diag.sum(-1, keepdims=True)], axis=-1)
        G = np.asarray(lsa.pair_G(minerbo_rho(F4, d_l, w_l)))
        res = lsa.fastest_mode(G, d_l, axis)
    else:
        res = lsa.fastest_mode(np.asarray(lsa.pair_G(rho_diag)), d, axis)
    gamma, k = res.growth_rate, res.k
    if gamma > 0 and abs(k) > 1e-3:
        length = config.n_wavelengths * 2 * math.pi / abs(k)
    else:
        lam = float(np.abs(rho_diag[0] - rho_diag[1]).sum()) or 1.0
        length = config.n_wavelengths * 2 * math.pi / lam
    t_end = config.t_end_growth / gamma if gamma > 0 else config.t_end_growth
    hmax = max(_h_spread(rho_diag, d), 1e-3)
    n_steps = max(config.n_diag, math.ceil(t_end * hmax / config.cfl))
    dt = t_end / n_steps
    plan = RunPlan(
        axis=jnp.asarray(axis), length=jnp.asarray(length), dt=jnp.asarray(dt),
        growth_lsa=jnp.asarray(gamma), k_lsa=jnp.asarray(k),
    )
    return plan, res


def initial_state(rho_diag: jax.Array, key: jax.Array, n_z: int, amplitude: float) -> jax.Array:
    """Homogeneous initial state with random off-diagonal seeds, in Fourier space.

    Args:
      rho_diag: ``[2, 3, n_dir]`` per-bin densities of ν and ν̄ (real).
      key: PRNG key; n_z: cells; amplitude: relative seed amplitude A.

    Returns:
      X̂ ``[2, 3, 3, n_dir, n_z]`` complex128: FFT along z of (ρ, ρ̄*).
    """
    rho_diag = jnp.asarray(rho_diag, dtype=jnp.float64)
    n_dir = rho_diag.shape[-1]
    X = jnp.zeros((2, 3, 3, n_dir, n_z), dtype=jnp.complex128)
    for a in range(3):
        X = X.at[:, a, a].set(rho_diag[:, a, :, None].astype(jnp.complex128))
    keys = jax.random.split(key, 6)
    for p, (a, b) in enumerate(lsa.PAIRS):
        xi = jax.random.uniform(keys[2 * p], (2, n_dir, n_z), minval=-1.0, maxval=1.0)
        eta = jax.random.uniform(keys[2 * p + 1], (2, n_dir, n_z), minval=-1.0, maxval=1.0)
        scale = amplitude * (rho_diag[:, a] - rho_diag[:, b])[..., None]
        off = scale * (xi + 1j * eta)  # seeds of ρ_ab and ρ̄_ab
        off = off.at[1].set(jnp.conj(off[1]))  # ρ̃ = ρ̄*
        X = X.at[:, a, b].set(off)
        X = X.at[:, b, a].set(jnp.conj(off))
    return jnp.fft.fft(X, axis=-1)


# ----------------------------------------------------------------------------- dynamics


def _rhs_real(X: jax.Array, moments: jax.Array) -> jax.Array:
    """−i[H, X] in real space. X ``[2, 3, 3, V, Z]``; moments ``[V, 4]`` = (1, v)."""
    D = X[0] - X[1]  # [3, 3, V, Z]
    M = jnp.einsum("ijvz,vc->ijcz", D, moments.astype(D.dtype))  # (N, F) of D
    sign = jnp.array([1.0, -1.0, -1.0, -1.0], dtype=D.dtype)
    H = jnp.einsum("ijcz,vc->ijvz", M, (moments * sign).astype(D.dtype))  # N − v·F
    P = jnp.sum(H[None, :, :, None] * X[:, None, :, :], axis=2)  # HX, [2, 3, 3, V, Z]
    C = P - jnp.conj(jnp.swapaxes(P, 1, 2))  # HX − XH (X, H Hermitian)
    return -1j * C


def _make_step(moments: jax.Array, vz: jax.Array, k: jax.Array, dt: jax.Array, filt: jax.Array):
    """One Lawson-RK4 step in Fourier space (exact advection, RK4 for the commutator)."""
    phase = -1j * k[None, :] * vz[:, None]  # [V, Z]
    E1 = jnp.exp(phase * dt)
    Eh = jnp.exp(phase * (0.5 * dt))

    def N(Xh):
        X = jnp.fft.ifft(Xh, axis=-1)
        return jnp.fft.fft(_rhs_real(X, moments), axis=-1)

    def step(Xh):
        k1 = N(Xh)
        k2 = N(Eh * (Xh + 0.5 * dt * k1))
        k3 = N(Eh * Xh + 0.5 * dt * k2)
        k4 = N(E1 * Xh + dt * (Eh * k3))
        out = E1 * Xh + (dt / 6.0) * (E1 * k1 + 2.0 * Eh * (k2 + k3) + k4)
        return out * filt

    return step


def _diagnose(Xh, moments, ref_trace, ref_lepton, n_z: int, mode: jax.Array):
    box = Xh[..., 0] / n_z  # box averages [2, 3, 3, V]
    diag = jnp.real(jnp.diagonal(box, axis1=1, axis2=2))  # [2, V, 3]
    F4 = jnp.einsum("svf,vc->sfc", diag, moments[:, jnp.array([1, 2, 3, 0])])
    tr = jnp.sum(diag, axis=-1)  # [2, V]
    lep = jnp.sum(box[0] - box[1], axis=-1)  # [3, 3]
    Nk = jnp.sum(Xh, axis=3)  # [2, 3, 3, Z] Fourier modes of the cell densities
    iu = jnp.array([0, 0, 1]), jnp.array([1, 2, 2])
    od = jnp.sum(jnp.abs(Nk[:, iu[0], iu[1], :]) ** 2, axis=(1, 2)) / n_z**2  # Parseval
    od_mode = jnp.sqrt(jnp.sum(jnp.abs(Nk[0, iu[0], iu[1], mode]) ** 2)) / n_z
    X = jnp.fft.ifft(Xh, axis=-1)
    herm = jnp.max(jnp.abs(X - jnp.conj(jnp.swapaxes(X, 1, 2))))
    rho_dir = jnp.swapaxes(diag, 1, 2)  # [2, 3, V]
    return (
        F4,
        jnp.sqrt(od[0]),
        jnp.sqrt(od[1]),
        od_mode,
        jnp.max(jnp.abs(tr - ref_trace)),
        jnp.max(jnp.abs(lep - ref_lepton)),
        herm,
        rho_dir,
    )


def evolve(
    rho_diag: jax.Array, key: jax.Array, plan: RunPlan, n_steps_per_diag: jax.Array, config: QKEConfig
) -> Diagnostics:
    """Run one simulation and return its diagnostics (jitted inside; vmap over the first four args).

    Args:
      rho_diag: ``[2, 3, n_dir]`` initial per-bin densities (n_tot units) on the rule
        ``config.lebedev_order``.
      key: PRNG key for the seeds.
      plan: :class:`RunPlan` (axis, length, dt).
      config: static resolution and run parameters.
      n_steps_per_diag: steps between diagnostic samples (int, traced: runs of one
        vmapped batch may differ); the run lasts ``config.n_diag · n_steps_per_diag · dt``.

    Returns:
      :class:`Diagnostics` with ``config.n_diag + 1`` samples (t = 0 included).
    """
    return _evolve(
        rho_diag, key, plan, n_steps_per_diag, jnp.asarray(config.seed_amplitude, dtype=jnp.float64),
        n_z=config.n_z, order=config.lebedev_order, n_diag=config.n_diag, use_filter=config.filter,
    )


@functools.partial(jax.jit, static_argnames=("n_z", "order", "n_diag", "use_filter"))
def _evolve(rho_diag, key, plan, n_steps_per_diag, seed_amplitude, *, n_z, order, n_diag, use_filter):
    # Only the grid is static: configs differing in run control share one compilation.
    d, w = lebedev.rule(order)
    d = jnp.asarray(d)
    moments = jnp.concatenate([jnp.ones((d.shape[0], 1)), d], axis=1)  # [V, 4] = (1, v)
    vz = d @ plan.axis
    # The Nyquist mode is dropped (k = 0 there, filter 0): its shift e^{-ik v dt} cannot
    # be Hermitian-symmetric, and a non-Hermitian stage would break trace conservation.
    nyq = n_z // 2
    k = 2.0 * jnp.pi * jnp.fft.fftfreq(n_z, d=1.0 / n_z) / plan.length  # [Z]
    k = k.at[nyq].set(0.0)
    if use_filter:
        kn = jnp.abs(jnp.fft.fftfreq(n_z)) * 2.0  # |k|/k_Nyquist
        filt = jnp.exp(-36.0 * kn**36)
    else:
        filt = jnp.ones(n_z)
    filt = filt.at[nyq].set(0.0)
    Xh0 = initial_state(rho_diag, key, n_z, seed_amplitude) * filt
    step = _make_step(moments, vz, k, plan.dt, filt.astype(jnp.complex128))
    box0 = Xh0[..., 0] / n_z
    ref_trace = jnp.real(jnp.trace(box0, axis1=1, axis2=2))  # [2, V]
    ref_lepton = jnp.sum(box0[0] - box0[1], axis=-1)

    # Fourier index of the fastest LSA mode (the box holds a whole number of its wavelengths)
    n_fast = jnp.round(plan.length * jnp.abs(plan.k_lsa) / (2.0 * jnp.pi)).astype(jnp.int32)
    n_fast = jnp.clip(n_fast, 0, n_z // 2 - 1)
    mode = jnp.where(plan.k_lsa >= 0, n_fast, (n_z - n_fast) % n_z)

    def diag_of(Xh, t):
        return Diagnostics(t, *_diagnose(Xh, moments, ref_trace, ref_lepton, n_z, mode))

    def outer(Xh, i):
        Xh = jax.lax.fori_loop(0, n_steps_per_diag, lambda _, x: step(x), Xh)
        t = (i + 1) * n_steps_per_diag * plan.dt
        return Xh, diag_of(Xh, t)

    _, series = jax.lax.scan(outer, Xh0, jnp.arange(n_diag))
    first = diag_of(Xh0, jnp.zeros_like(plan.dt))
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, series)


# ----------------------------------------------------------------------------- analysis


def _saturation_index(od: np.ndarray) -> int:
    """Rhea's t_sat: first local maximum >= 1e3 × every earlier local maximum, else argmax."""
    peaks = [i for i in range(1, len(od) - 1) if od[i] >= od[i - 1] and od[i] >= od[i + 1]]
    prev = None
    for i in peaks:
        if prev is not None and od[i] >= 1e3 * prev:
            return i
        prev = od[i] if prev is None else max(prev, od[i])
    return int(np.argmax(od))


def fit_growth_rate(t: np.ndarray, od: np.ndarray, i_sat: int, lo: float = 1e-3, hi: float = 1e-1) -> float:
    """Least-squares slope of ln(offdiag) for samples with lo·max < od < hi·max before t_sat."""
    top = od[: i_sat + 1].max()
    sel = np.zeros(len(od), bool)
    sel[: i_sat + 1] = True
    sel &= (od > lo * top) & (od < hi * top)
    if sel.sum() < 3:
        return float("nan")
    return float(np.polyfit(t[sel], np.log(od[sel]), 1)[0])


def analyse(diag: Diagnostics, plan: RunPlan, config: QKEConfig) -> RunResult:
    """Saturation time, growth rate, time-averaged asymptotic state and acceptance of one run."""
    t = np.asarray(diag.t)
    od = np.asarray(diag.offdiag)
    F4 = np.asarray(diag.F4)
    cons = float(max(np.max(diag.trace_err), np.max(diag.lepton_err)))
    i_sat = _saturation_index(od)
    t_sat, t_end = float(t[i_sat]), float(t[-1])
    growth_total = fit_growth_rate(t, od, i_sat)
    odm = np.asarray(diag.offdiag_mode)
    growth = fit_growth_rate(t, odm, int(np.argmax(odm[: i_sat + 1])), lo=1e-4, hi=1e-2)
    gamma_lsa = float(plan.growth_lsa)
    reasons = []
    if gamma_lsa <= 0:
        # Stable: nothing should happen; the average over the second half is the answer.
        window = t >= 0.5 * t_end
    else:
        window = t >= config.avg_start * t_sat
        if t_end < config.min_t_end_over_t_sat * t_sat:
            reasons.append(f"t_end = {t_end / t_sat:.2f} t_sat < {config.min_t_end_over_t_sat}")
    if window.sum() < 2:
        window = t >= t[-2]
    mean = F4[window].mean(axis=0)
    std = F4[window].std(axis=0)
    if not np.all(np.isfinite(F4)):
        reasons.append("non-finite state")
    if cons > config.conservation_tol:
        reasons.append(f"conservation error {cons:.2e} > {config.conservation_tol:.0e}")
    if std.max() > config.stddev_tol:
        reasons.append(f"late-time stddev {std.max():.3f} > {config.stddev_tol}")
    return RunResult(mean, std, growth, growth_total, gamma_lsa, t_sat, t_end, cons, not reasons, "; ".join(reasons))


# ----------------------------------------------------------------------------- drivers


def solve_distributions(
    rho_diag: np.ndarray, config: QKEConfig = QKEConfig(), *, seed: int | None = None
) -> tuple[RunResult, Diagnostics, RunPlan]:
    """Plan, evolve and analyse one run from per-bin distributions ``[2, 3, n_dir]`` (n_tot units)."""
    config = config.validate()
    rho_diag = np.asarray(rho_diag, dtype=np.float64)
    plan, _ = plan_run(rho_diag, config)
    (plan,), spd = _common_steps([plan], config)
    key = jax.random.PRNGKey(config.seed if seed is None else seed)
    diag = evolve(jnp.asarray(rho_diag), key, plan, jnp.asarray(spd), config)
    diag = jax.tree.map(np.asarray, diag)
    return analyse(diag, plan, config), diag, plan


def _t_end(plan: RunPlan, config: QKEConfig) -> float:
    g = float(plan.growth_lsa)
    return config.t_end_growth / g if g > 0 else config.t_end_growth


def _common_steps(plans: list[RunPlan], config: QKEConfig) -> tuple[list[RunPlan], int]:
    """Steps per diagnostic sample for a batch of plans (each keeps its own t_end).

    The batch takes its finest-resolved run's step count; the others take smaller dt
    (used where one compiled program with a common step count is wanted).
    """
    n_steps = max(math.ceil(_t_end(p, config) / float(p.dt) - 1e-9) for p in plans)
    spd = max(1, math.ceil(n_steps / config.n_diag))
    return [p._replace(dt=jnp.asarray(_t_end(p, config) / (spd * config.n_diag))) for p in plans], spd


def finalise_plan(plan: RunPlan, config: QKEConfig) -> tuple[RunPlan, int]:
    """Round the step count up to a multiple of ``n_diag``: (plan with final dt, steps per sample)."""
    (plan,), spd = _common_steps([plan], config)
    return plan, spd


def _check_F4(F4: np.ndarray) -> None:
    if F4.ndim < 3 or F4.shape[-3:] != (2, 3, 4):
        raise ParameterError(f"F4 must have shape [..., 2, 3, 4] (nu/nubar, e/mu/tau, x/y/z/N); got {F4.shape}")
    if not np.all(np.isfinite(F4)):
        raise ParameterError("F4 has non-finite values")
    N = F4[..., 3]
    if (N < 0).any():
        raise ParameterError("F4 has negative number densities")
    if (np.linalg.norm(F4[..., :3], axis=-1) > N * (1 + 1e-9) + 1e-300).any():
        raise ParameterError("F4 has flux factors |F|/N > 1")
    if (N.sum(axis=(-1, -2)) <= 0).any():
        raise ParameterError("F4 has a row with zero total number density")


def asymptotic_state(
    F4_init: np.ndarray, config: QKEConfig = QKEConfig(), *, seed: int | None = None, batch: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[RunResult]]:
    """Asymptotic four-fluxes of a batch of initial states (Minerbo initial distributions).

    Args:
      F4_init: ``[n, 2, 3, 4]`` (or ``[2, 3, 4]``) initial four-fluxes, any units (cm⁻³).
      config: :class:`QKEConfig`.
      seed: PRNG seed (default ``config.seed``); run i uses seed + i.
      batch: runs evolved together under ``jax.vmap`` (one compiled program for all; each
        run keeps its own dt and step count).

    Returns:
      (F4_final, F4_stddev, growth_rate_per_s_or_dimensionless, results): the first two
      ``[n, 2, 3, 4]`` in the units of F4_init; growth rates ``[n]`` in units of
      n_tot·√2G_F/ħ times the caller's density unit (multiply by
      :data:`SQRT2_GF_OVER_HBAR` for s⁻¹ when F4 is in cm⁻³); per-run :class:`RunResult`
      (n_tot units) with acceptance flags. Rejected runs are returned too (check ``ok``).
    """
    config = config.validate()
    F4_init = np.asarray(F4_init, dtype=np.float64)
    _check_F4(F4_init)
    single = F4_init.ndim == 3
    F4_init = F4_init.reshape(-1, 2, 3, 4)
    seed = config.seed if seed is None else seed
    results = run_batch(F4_init, config, seeds=np.arange(len(F4_init)) + seed, batch=batch)
    ntot = F4_init[..., 3].sum(axis=(1, 2))
    fin = np.stack([r.F4_final for r in results]) * ntot[:, None, None, None]
    std = np.stack([r.F4_stddev for r in results]) * ntot[:, None, None, None]
    growth = np.array([r.growth_rate for r in results]) * ntot
    if single:
        return fin[0], std[0], growth[0], results
    return fin, std, growth, results


def run_batch(F4_init: np.ndarray, config: QKEConfig, seeds: np.ndarray, batch: int = 1) -> list[RunResult]:
    """Normalise, plan and evolve runs ``[n, 2, 3, 4]`` in vmapped batches; results in n_tot units."""
    d, w = lebedev.rule(config.lebedev_order)
    ntot = F4_init[..., 3].sum(axis=(1, 2))
    F4n = F4_init / ntot[:, None, None, None]
    rhos = [minerbo_rho(f, d, w) for f in F4n]
    plans = [plan_run(r, config)[0] for r in rhos]
    out: list[RunResult] = []
    for s in range(0, len(rhos), batch):
        idx = list(range(s, min(s + batch, len(rhos))))
        fin = [finalise_plan(plans[i], config) for i in idx]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *[p for p, _ in fin])
        spd = jnp.asarray([n for _, n in fin])
        keys = jnp.stack([jax.random.PRNGKey(int(seeds[i])) for i in idx])
        rho = jnp.stack([jnp.asarray(rhos[i]) for i in idx])
        diag = jax.vmap(functools.partial(evolve, config=config))(rho, keys, stacked, spd)
        diag = jax.tree.map(np.asarray, diag)
        for j, i in enumerate(idx):
            out.append(analyse(jax.tree.map(lambda a: a[j], diag), fin[j][0], config))
    return out
