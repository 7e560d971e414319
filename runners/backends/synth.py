"""Embedded-synthesizer backend: jobs evaluated in batches by a vmapped JAX forward function.

The worker is built around a generic batched forward function
``fn(thetas [B, dim] float64) -> L_lambda [B, n_wave] erg/s/Angstrom`` and its wavelength
grid, so any JAX model (the real :class:`lumina_jax.synth.Synthesizer`, a test stand-in)
plugs in.  Batches are padded to a fixed size (one compilation), evaluated in a thread
(the event loop stays free for other workers and checkpoints), and every row is
validated like a LUMINA spectrum (finite, non-negative, mostly positive).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lumina_jax.errors import UserError
from lumina_jax.params import ParameterSpace
from runners.executors import Executor, Job, Outcome, validate_spectrum

DEFAULT_FACTORY = "lumina_jax.synth:Synthesizer.default"


def load_factory(spec: str) -> Callable:
    """``"module:attr.attr"`` -> the callable it names (imported lazily)."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise UserError(f"synthesizer factory must look like 'module:callable', got {spec!r}")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as exc:
        raise UserError(f"cannot import the synthesizer ({spec}): {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"{mod_name} has no attribute {attr!r} (synthesizer factory {spec})") from None
    return obj


def make_forward(space: ParameterSpace, factory: str = DEFAULT_FACTORY,
                 config: str | None = None) -> tuple[Callable, np.ndarray, str]:
    """Build a synthesizer for ``space`` (and a config YAML path, passed as the factory's second
    argument) -> (batched fn, wavelength [n_wave] Angstrom, description)."""
    if config is not None and not Path(config).is_file():
        raise UserError(f"synthesizer config not found: {config}")
    synth = load_factory(factory)(space, config) if config else load_factory(factory)(space)
    wavelength = np.asarray(synth.wavelength, dtype=np.float64)
    if wavelength.ndim != 1 or wavelength.size < 2:
        raise UserError(f"synthesizer {factory} has an invalid wavelength grid of shape {wavelength.shape}")
    return synth.batch, wavelength, f"{factory} ({type(synth).__name__})"


class SynthExecutor(Executor):
    """A worker that evaluates up to ``batch_size`` jobs per call with one vmapped call of ``fn``."""

    kind = "synth"

    def __init__(self, fn: Callable, wavelength: np.ndarray, *, batch_size: int = 256, name: str = "synth0",
                 min_positive_fraction: float = 0.5):
        self.fn = fn
        self.wavelength = np.asarray(wavelength, dtype=np.float64)
        self.max_batch = int(batch_size)
        self.name = name
        self.min_positive_fraction = min_positive_fraction

    def _evaluate(self, thetas: np.ndarray) -> np.ndarray:
        b = thetas.shape[0]
        if b < self.max_batch:  # pad to the compiled batch size (repeat the first row)
            thetas = np.concatenate([thetas, np.repeat(thetas[:1], self.max_batch - b, axis=0)])
        return np.asarray(self.fn(thetas), dtype=np.float64)[:b]

    async def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        t0 = time.monotonic()
        thetas = np.stack([np.asarray(j.theta, dtype=np.float64) for j in jobs])
        try:
            spectra = await asyncio.to_thread(self._evaluate, thetas)
        except Exception as exc:  # noqa: BLE001 - the batch failed; each job records why
            dt = (time.monotonic() - t0) / len(jobs)
            return [Outcome.failure(j, "error", f"synthesizer raised {type(exc).__name__}: {exc}"[:300], dt, self.name)
                    for j in jobs]
        dt = (time.monotonic() - t0) / len(jobs)
        n_wave = self.wavelength.size
        if spectra.shape != (len(jobs), n_wave):
            return [Outcome.failure(j, "invalid_output", f"synthesizer returned shape {spectra.shape}", dt, self.name)
                    for j in jobs]
        finite = np.isfinite(spectra).all(axis=1) & (spectra >= 0).all(axis=1) & (
            (spectra > 0).mean(axis=1) >= self.min_positive_fraction)
        out = []
        for k, j in enumerate(jobs):
            if finite[k]:
                out.append(Outcome(j.index, True, spectra[k], elapsed_s=dt, worker=self.name))
            else:
                why = validate_spectrum(spectra[k], n_wave=n_wave, min_positive_fraction=self.min_positive_fraction)
                out.append(Outcome.failure(j, "invalid_output", why, dt, self.name))
        return out
