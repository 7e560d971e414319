"""The emulator and the synthesizer a workflow runs, loaded on first use (their imports are
JAX-heavy).  Every workflow loads them through this module's functions, so one replacement
(tests: ``monkeypatch.setattr(loaders, "get_emulator", ...)``) reaches them all."""

from __future__ import annotations

from pathlib import Path

from lumina_jax.errors import UserError


def get_emulator(path):
    """``lumina_jax.emulator.load_emulator(path)`` (lazy import; clear error when missing)."""
    try:
        from lumina_jax.emulator import load_emulator
    except ImportError as exc:
        raise UserError(f"the emulator package is not available ({exc}); cannot load {path}") from None
    if not Path(path).exists():
        raise UserError(f"emulator checkpoint not found: {path}")
    return load_emulator(path)  # a directory, a campaign store or a damaged file: DataFileError


def get_synthesizer(space, config=None):
    """``lumina_jax.synth.Synthesizer.default(space, config)`` (lazy import; config: YAML path or None)."""
    try:
        from lumina_jax.synth import Synthesizer
    except ImportError as exc:
        raise UserError(f"the synthesizer (lumina_jax.synth) is not available: {exc}") from None
    return Synthesizer.default(space, config)
