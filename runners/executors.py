"""The executor interface: what the work queue needs from a way of running forward models.

An :class:`Executor` is one *worker*: it takes a list of at most ``max_batch`` jobs and
returns one :class:`Outcome` per job, never raising for a failed model (failures are
outcomes).  The queue (:mod:`runners.queue`) and the store (:mod:`runners.store`) only see
this interface, so a new way of running models is one new class.

Built here: :class:`runners.backends.lumina.LuminaExecutor` (one subprocess per job, GPU
or CPU flavour), :class:`runners.backends.synth.SynthExecutor` (batched, vmapped JAX) and
:class:`runners.cluster.DaskExecutor` (one Dask task per batch, run on a cluster worker by
one of the other two).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

#: Failure kinds recorded in the store's ``fail_kind``.
FAIL_KINDS = ("timeout", "exit_code", "signal", "missing_output", "invalid_output", "error")


@dataclasses.dataclass(frozen=True)
class Job:
    """One forward-model evaluation: row ``index`` of the design, its ``attempt`` (1-based)."""

    index: int
    theta: np.ndarray  # [dim] physical values
    attempt: int


@dataclasses.dataclass
class Outcome:
    """Result of one job attempt.  ``spectrum`` is L_lambda [n_wave] erg/s/Angstrom when ``ok``."""

    index: int
    ok: bool
    spectrum: np.ndarray | None = None
    fail_kind: str = ""
    reason: str = ""
    elapsed_s: float = 0.0
    worker: str = ""
    #: per-attempt figures kept in the store (``runners.store.DIAGNOSTICS``), e.g. ``{"mc_seed": 123,
    #: "lum_ratio": 0.98}``; keys not given are stored as unknown
    diagnostics: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def failure(cls, job: Job, kind: str, reason: str, elapsed_s: float, worker: str,
                diagnostics: dict | None = None) -> "Outcome":
        assert kind in FAIL_KINDS, kind
        return cls(job.index, False, None, kind, reason, elapsed_s, worker, dict(diagnostics or {}))


class Executor:
    """Base class of a worker.  Subclasses set ``kind`` ("gpu", "cpu", "synth", ...), ``name``
    (unique, e.g. "gpu0") and ``max_batch``, and implement :meth:`run`."""

    kind: str = "abstract"
    name: str = "abstract"
    max_batch: int = 1

    async def run(self, jobs: Sequence[Job]) -> list[Outcome]:  # pragma: no cover - interface
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release resources (called once when the campaign ends)."""


def validate_spectrum(flux: np.ndarray, *, n_wave: int, min_positive_fraction: float = 0.5) -> str:
    """Why ``flux`` is not a valid spectrum ("" if it is).

    Valid: shape ``[n_wave]``, every value finite and >= 0, not all zero, and at least
    ``min_positive_fraction`` of the bins > 0.  The fraction suits a noise-free integral
    (the embedded synthesizer); a Monte Carlo histogram with few packets legitimately has
    many empty bins, so the LUMINA backend passes 0 and judges the luminosity instead
    (:func:`luminosity_problem`).
    """
    flux = np.asarray(flux)
    if flux.shape != (n_wave,):
        return f"expected {n_wave} flux values, got shape {flux.shape}"
    bad = ~np.isfinite(flux)
    if bad.any():
        return f"{int(bad.sum())} non-finite flux value(s)"
    if (flux < 0).any():
        return f"{int((flux < 0).sum())} negative flux value(s)"
    if not (flux > 0).any():
        return "every bin is zero (no flux)"
    frac = float(np.mean(flux > 0))
    if frac < min_positive_fraction:
        return f"only {frac:.1%} of the bins have positive flux (need {min_positive_fraction:.0%})"
    return ""


def band_luminosity(flux: np.ndarray, wavelength: np.ndarray) -> float:
    """Luminosity [erg/s] in the grid: sum of L_lambda [erg/s/Angstrom] x bin width [Angstrom].

    ``wavelength`` [n] are bin centres; the widths are the distances between the mid-points
    of neighbouring centres (the exact bin width on a uniform grid)."""
    lam = np.asarray(wavelength, dtype=np.float64)
    widths = np.gradient(lam) if lam.size > 1 else np.ones_like(lam)
    return float(np.sum(np.asarray(flux, dtype=np.float64) * widths))


def luminosity_problem(what: str, ratio: float, lum_range: tuple[float, float]) -> str:
    """Why a luminosity ratio ``ratio`` (emitted / requested) is unphysical ("" if within ``lum_range``).

    A NaN ratio (figure not available) is no problem."""
    lo, hi = lum_range
    if np.isnan(ratio) or lo <= ratio <= hi:
        return ""
    return f"{what} = {ratio:.3g} is outside {lo:g}-{hi:g}"
