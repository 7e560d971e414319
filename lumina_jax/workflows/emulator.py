"""Emulator workflows: train on campaign stores and write a checkpoint; calibrate the
emulator-error covariance of a checkpoint on its validation models.

``lumina-jax train``, ``lumina-jax emulator calibrate`` and the pipeline call these.  Progress
goes through callbacks; ``write_guard`` (a context-manager factory, e.g. the CLI's
Ctrl-C-deferring block) wraps each file write.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

from lumina_jax.errors import UserError


def train(data: Sequence[Path], out: Path, *, config: Path | None = None, stage: int | None = None,
          overrides: dict | None = None, on_derivatives: Callable[[int, int], None] | None = None,
          on_epoch: Callable | None = None, write_guard: Callable = contextlib.nullcontext) -> dict:
    """Train an emulator on the finished models of the stores ``data`` and write ``out``.

    ``overrides``: keyword overrides of :func:`lumina_jax.emulator.load_train_config`
    (``max_epochs``, ``patience``, ``seed``, ``jvp_directions``, ...).  ``on_derivatives(done,
    total)`` reports the synthesizer derivatives of Sobolev training, ``on_epoch(epoch,
    max_epochs, train_loss, val_loss, best_epoch)`` the training.  Returns the summary of the checkpoint's
    metadata (sizes, epochs, validation error, sigma scale, seconds)."""
    from lumina_jax.emulator import load_train_config, save_emulator, train_emulator
    from lumina_jax.emulator._data import load_training_sets

    cfg = load_train_config(config, **(overrides or {}))
    ts = load_training_sets(data, stage=stage)
    label = ", ".join(str(d) for d in data)
    if ts.theta.shape[0] == 0:
        raise UserError(f"{label} has no finished models")
    jvp, jvp_info = None, None
    if cfg.jvp_directions:
        from lumina_jax.emulator import sobolev_targets

        jvp, jvp_info = sobolev_targets(list(data), cfg, on_progress=on_derivatives)
    report = None if on_epoch is None else (lambda e, tl, vl, best: on_epoch(e, cfg.max_epochs, tl, vl, best))
    emu, _, seen = train_emulator(ts, cfg, on_epoch=report, data_label=label, jvp=jvp, jvp_info=jvp_info)
    with write_guard():  # written to a temporary name and renamed
        save_emulator(emu, out, seen_hashes=seen)
    meta = emu.metadata
    summary = {k: meta[k] for k in ("n_models", "n_used", "n_dropped", "n_train", "n_val", "n_test", "n_components",
                                    "epochs", "best_epoch", "best_val_loss", "sigma_scale",
                                    "val_mean_fractional_error", "train_seconds")}
    summary["checkpoint"] = str(out)
    summary["n_derivative_rows"] = meta.get("n_derivative_rows", 0)
    return summary


def calibrate(checkpoint: Path, data: Sequence[Path], *, stride: int | None = None, n_max: int = 2000,
              dry_run: bool = False, log: Callable[[str], None] = print,
              write_guard: Callable = contextlib.nullcontext) -> dict:
    """Calibrate the emulator-error covariance factor of ``checkpoint`` on its validation models
    (the stores ``data`` it was trained on, in the same order) and store it in the checkpoint
    as ``error_cov_scale`` (unless ``dry_run``).

    The factor makes the error's projection onto the parameter directions consistent with the
    error model (projected chi-square, :mod:`lumina_jax.inference.calibration`); the likelihood
    applies it (``likelihood.emulator_error_scale``).  ``stride``: likelihood bin stride
    (default: :class:`~lumina_jax.inference.density.LikelihoodConfig`)."""
    import numpy as np

    from lumina_jax.emulator import load_emulator, prepare_spectra, theta_hashes
    from lumina_jax.emulator._checkpoint import read_seen_hashes, write_error_cov_scale
    from lumina_jax.emulator._data import load_training_sets
    from lumina_jax.emulator._training import split_indices
    from lumina_jax.inference.calibration import projected_error_scale
    from lumina_jax.inference.density import LikelihoodConfig, make_setup
    from lumina_jax.preprocess import Preprocessor

    checkpoint = Path(checkpoint)
    label = ", ".join(map(str, data))
    emu = load_emulator(checkpoint)
    folder = checkpoint.resolve().parent
    if not dry_run and not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{checkpoint}: its directory {folder} is not writable, and the calibration is stored in "
                        "the checkpoint (or pass --dry-run)")
    if emu.error_basis is None:
        raise UserError(f"{checkpoint} carries no error correlation basis; retrain it first")
    tc = json.loads(emu.metadata_json or "{}").get("config") or {}
    if not {"val_fraction", "test_fraction", "seed"} <= set(tc):
        raise UserError(f"{checkpoint}: its metadata lacks the training split (val_fraction, test_fraction, seed)")
    ts = load_training_sets(data)
    if ts.space.names != emu.space.names:
        raise UserError(f"the --data stores hold stage-{ts.space.stage} models; {checkpoint} is stage {emu.space.stage}")
    if ts.theta.shape[0] == 0:
        raise UserError(f"{label}: no finished models, so no validation models to calibrate on; "
                        "pass the stores the checkpoint was trained on")
    prep = prepare_spectra(ts, Preprocessor(emu.settings.preprocess))
    _, val, _ = split_indices(prep.theta.shape[0], tc["val_fraction"], tc["test_fraction"], tc["seed"])
    if val.size == 0:
        raise UserError(f"{label}: too few finished models for a validation split; pass the "
                        "stores the checkpoint was trained on")
    if not np.all(np.isin(theta_hashes(prep.theta[val]), read_seen_hashes(checkpoint))):
        raise UserError("the validation split of --data is not the one the checkpoint saw: pass the stores it was "
                        "trained on, in the same order")
    val = val[:n_max]
    lk = LikelihoodConfig()
    st = int(stride or lk.stride)
    idx = make_setup(emu.space, n_poly=0).free_index
    widths = (np.asarray(emu.space.upper) - np.asarray(emu.space.lower))[idx]
    log(f"projected chi-square of {val.size} validation models (stride {st}) ...")
    try:
        res = projected_error_scale(emu.spectrum_and_sigma, prep.theta[val], prep.flux[val], emu.wavelength,
                                    emu.error_basis, idx, widths, stride=st, emu_rank=lk.emulator_rank)
    except ValueError as exc:  # too few usable validation models
        raise UserError(f"cannot calibrate {checkpoint} on {val.size} validation models: {exc}") from exc
    res["checkpoint"] = str(checkpoint)
    res["written"] = not dry_run
    if not dry_run:
        with write_guard():  # an in-place update
            write_error_cov_scale(checkpoint, res["error_cov_scale"], res)
    return res
