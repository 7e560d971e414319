"""Self-describing emulator checkpoints (one HDF5 file).

Layout (``format = "lumina-jax-emulator"``, ``format_version = 1``)::

    /                      attrs: format, format_version, created, lumina_jax_version, stage,
                                  space_json (ParameterSpace.to_json), space_fingerprint,
                                  settings_json (network + preprocessing), metadata_json
                                  (training config, split, metrics), sigma_scale
    /wavelength            [n_wave] Å (emulator grid)
    /pca/{mean,components,scale,explained_variance_ratio}
    /weights/...           Flax parameter tree, one dataset per leaf (float32)
    /split/seen_hashes     uint64 hashes of the training + validation parameter rows

Files are written to a temporary name and renamed, so a crash never leaves a half file.

Integrity: the file is *sealed* (:mod:`lumina_jax._seal`): its first 512 bytes, an HDF5 user
block, hold :data:`SEAL_MAGIC` and the SHA-256 of the rest of the file, written by
:func:`save_emulator` and again by :func:`write_error_cov_scale` (the one in-place update).
:func:`load_emulator` verifies it before HDF5 reads the file and refuses a damaged one
(flipped bits, overwritten blocks); checkpoints written before seals existed are loaded
without it.  Every array the predictions use is also checked for finite values.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax import _seal
from lumina_jax.emulator._model import Emulator, EmulatorSettings
from lumina_jax.errors import DataFileError, UserError
from lumina_jax.params import ParameterSpace
from lumina_jax.preprocess import PCA

FORMAT = "lumina-jax-emulator"
FORMAT_VERSION = 1
CAMPAIGN_FORMAT = "lumina-jax-campaign"  # runners.store.FORMAT (not imported: the store module pulls in more)
SEAL_MAGIC = b"lumina-jax emulator checkpoint\n"


def theta_hashes(theta) -> np.ndarray:
    """uint64 hash of each parameter row ``[N, dim]`` (float64 bytes); identifies rows across files."""
    theta = np.ascontiguousarray(np.atleast_2d(np.asarray(theta, dtype=np.float64)))
    out = np.empty(theta.shape[0], dtype=np.uint64)
    for i, row in enumerate(theta):
        out[i] = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
    return out


def _write_tree(group, tree):
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            _write_tree(group.create_group(k), v)
        else:
            group.create_dataset(k, data=np.asarray(v, dtype=np.float32))


def _read_tree(group):
    out = {}
    for k, v in group.items():
        out[k] = _read_tree(v) if isinstance(v, h5py.Group) else jnp.asarray(v[...], jnp.float32)
    return out


def save_emulator(emu: Emulator, path, *, seen_hashes=None) -> Path:
    """Write ``emu`` to ``path`` (HDF5) atomically; returns the path."""
    from lumina_jax import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w", userblock_size=_seal.USERBLOCK) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.attrs["lumina_jax_version"] = __version__
        f.attrs["stage"] = int(emu.space.stage)
        f.attrs["space_json"] = emu.space.to_json()
        f.attrs["space_fingerprint"] = emu.space.fingerprint()
        f.attrs["settings_json"] = json.dumps(emu.settings.to_dict())
        f.attrs["metadata_json"] = emu.metadata_json
        f.attrs["sigma_scale"] = float(emu.sigma_scale)
        f.attrs["error_cov_scale"] = float(emu.error_cov_scale)
        f.create_dataset("wavelength", data=emu.wavelength)
        g = f.create_group("pca")
        for name, arr in emu.pca._asdict().items():
            g.create_dataset(name, data=np.asarray(arr, dtype=np.float32))
        _write_tree(f.create_group("weights"), emu.weights)
        if emu.error_basis is not None:
            f.create_dataset("error_basis", data=np.asarray(emu.error_basis, dtype=np.float32))
        f.create_dataset("split/seen_hashes",
                         data=np.asarray(seen_hashes if seen_hashes is not None else [], dtype=np.uint64))
    _seal.seal(tmp, SEAL_MAGIC)
    os.replace(tmp, path)
    return path


def read_seen_hashes(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.asarray(f["split/seen_hashes"][...], dtype=np.uint64)


def load_emulator(path, *, stage: int | None = None, space: ParameterSpace | None = None) -> Emulator:
    """Load an emulator checkpoint.

    Args:
        path: checkpoint file written by :func:`save_emulator` / ``lumina-jax train``.
        stage: if given, the checkpoint must be for this stage.
        space: if given, must have the same parameter names as the checkpoint, and its box must lie
            inside the emulator's training box (otherwise the emulator would extrapolate).

    Raises:
        DataFileError: missing, unreadable or wrong-format file.
        UserError: checkpoint for another stage or parameter space.
    """
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"emulator checkpoint {path} is a directory; give the checkpoint file (e.g. "
                            "lumina_jax/checkpoints/stage1_synth.h5)")
    if not path.is_file():
        raise DataFileError(f"emulator checkpoint not found: {path}")
    try:
        _seal.check_seal(path, SEAL_MAGIC, "corrupt emulator checkpoint")  # before HDF5 parses a damaged file
    except DataFileError:
        raise
    except OSError as exc:
        raise DataFileError(f"cannot read the emulator checkpoint {path} ({exc.strerror})") from None
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataFileError(f"{path} is not a readable HDF5 emulator checkpoint ({exc})".splitlines()[0]) from None
    try:
        with f:
            fmt = f.attrs.get("format")
            if isinstance(fmt, bytes):
                fmt = fmt.decode()
            if fmt == CAMPAIGN_FORMAT:
                raise DataFileError(f"{path} is a campaign store (training data), not an emulator checkpoint; train "
                                    f"one with `lumina-jax train --data {path} --out CKPT`")
            if fmt != FORMAT:
                raise DataFileError(f"{path} is not a lumina-jax emulator checkpoint (format={fmt!r})")
            ver = int(f.attrs.get("format_version", -1))
            if ver != FORMAT_VERSION:
                raise DataFileError(
                    f"{path}: checkpoint format version {ver} is not supported (this version reads {FORMAT_VERSION})")
            emu_space = ParameterSpace.from_json(f.attrs["space_json"])
            settings = EmulatorSettings.from_dict(json.loads(f.attrs["settings_json"]))
            wavelength = np.asarray(f["wavelength"][...])
            pca = PCA(*(jnp.asarray(f["pca"][k][...], jnp.float32) for k in PCA._fields))
            weights = _read_tree(f["weights"])
            sigma_scale = jnp.float32(f.attrs["sigma_scale"])
            meta = str(f.attrs.get("metadata_json", "{}"))
            error_basis = (jnp.asarray(f["error_basis"][...], jnp.float32) if "error_basis" in f else None)
            cov_scale = float(f.attrs.get("error_cov_scale", 1.0))
    except DataFileError:
        raise
    except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
        raise DataFileError(f"{path}: corrupt emulator checkpoint ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    # (the PCA's explained_variance_ratio is informational, NaN in an untrained emulator)
    _check_finite(path, wavelength=wavelength, pca_mean=pca.mean, pca_components=pca.components,
                  pca_scale=pca.scale, weights=weights, sigma_scale=sigma_scale)
    if wavelength.shape != settings.preprocess.grid.shape or not np.allclose(wavelength, settings.preprocess.grid):
        raise DataFileError(f"{path}: wavelength grid does not match the stored preprocessing settings")
    if pca.components.shape != (settings.n_components, wavelength.size):
        raise DataFileError(f"{path}: PCA basis shape {pca.components.shape} does not match the settings")
    if error_basis is not None and (error_basis.ndim != 2 or error_basis.shape[0] != wavelength.size
                                    or not bool(jnp.all(jnp.isfinite(error_basis)))):
        raise DataFileError(f"{path}: emulator error basis {tuple(error_basis.shape)} is malformed")
    if not (np.isfinite(cov_scale) and cov_scale > 0):
        raise DataFileError(f"{path}: error_cov_scale {cov_scale} must be a positive number")
    _check_compatible(path, emu_space, stage=stage, space=space)
    return Emulator(space=emu_space, settings=settings, weights=weights, pca=pca, sigma_scale=sigma_scale,
                    metadata_json=meta, error_basis=error_basis, error_cov_scale=cov_scale)


def _check_finite(path, **arrays) -> None:
    """Every array (or tree of arrays) of a checkpoint must be finite: a NaN or inf weight makes
    every prediction NaN, and the fit would run on it."""
    for name, value in arrays.items():
        leaves = jax.tree_util.tree_leaves(value)
        for k, leaf in enumerate(leaves):
            if not np.all(np.isfinite(np.asarray(leaf))):
                where = name if len(leaves) == 1 else f"{name} (array {k + 1} of {len(leaves)})"
                raise DataFileError(f"{path}: corrupt emulator checkpoint: non-finite values in its {where}")


def write_error_cov_scale(path, scale: float, info: dict) -> None:
    """Set the likelihood's emulator-error variance factor of checkpoint ``path``
    (``error_cov_scale`` attribute, with ``info`` as JSON in ``error_cov_calibration_json``):
    written into a copy, resealed and renamed over ``path``."""
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"error_cov_scale must be a positive number, got {scale}")
    path = Path(path)
    sealed = _seal.check_seal(path, SEAL_MAGIC, "corrupt emulator checkpoint")
    tmp = path.with_name(path.name + ".tmp")  # a copy, updated and renamed: never a half-written checkpoint
    shutil.copyfile(path, tmp)
    try:
        with h5py.File(tmp, "r+") as f:
            if f.attrs.get("format") != FORMAT:
                raise DataFileError(f"{path}: not a lumina-jax emulator checkpoint")
            f.attrs["error_cov_scale"] = float(scale)
            f.attrs["error_cov_calibration_json"] = json.dumps(info)
        if sealed:
            _seal.seal(tmp, SEAL_MAGIC)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def needs_error_cov_calibration(path) -> bool:
    """Whether checkpoint ``path`` carries an emulator-error correlation basis whose
    ``error_cov_scale`` ``lumina-jax emulator calibrate`` has not written yet (no calibration
    record).  Without a basis there is nothing to calibrate."""
    try:
        with h5py.File(path, "r") as f:
            return "error_basis" in f and "error_cov_calibration_json" not in f.attrs
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read the emulator checkpoint ({exc})") from None


def _check_compatible(path, emu_space: ParameterSpace, *, stage=None, space=None) -> None:
    if stage is not None and int(stage) != emu_space.stage:
        raise UserError(f"{path} is a stage-{emu_space.stage} emulator, but stage {stage} was requested")
    if space is None:
        return
    if space.stage != emu_space.stage or space.names != emu_space.names:
        raise UserError(
            f"{path} was trained for stage {emu_space.stage} ({emu_space.dim} parameters: "
            f"{', '.join(emu_space.names[:5])}...), which does not match the requested stage-{space.stage} space "
            f"({space.dim} parameters)")
    lo, hi = np.asarray(emu_space.lows), np.asarray(emu_space.highs)
    tol = 1e-9 * (hi - lo)
    out = [(n, a, b, el, eh) for n, a, b, el, eh, t in zip(space.names, space.lows, space.highs, lo, hi, tol)
           if a < el - t or b > eh + t]
    if out:
        n, a, b, el, eh = out[0]
        raise UserError(
            f"{path}: the requested range of {n} [{a:g}, {b:g}] is outside the emulator's training box "
            f"[{el:g}, {eh:g}] ({len(out)} parameter(s) outside); the emulator would extrapolate")
