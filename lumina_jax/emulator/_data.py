"""Reading training sets from campaign stores.

Uses ``runners.store.load_training_set`` when that module exists; otherwise a minimal reader of
the same store layout (HDF5, root attrs ``format = "lumina-jax-campaign"``,
``format_version = 1``, ``stage``, ``space_json``; datasets ``design [N, dim]``,
``status [N]`` (1 = done), ``wavelength [n_wave]`` Å, ``spectra [N, n_wave]`` erg/s/Å).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from lumina_jax.errors import DataFileError
from lumina_jax.params import ParameterSpace


class TrainingSet(NamedTuple):
    """Finished models of a campaign: ``theta [N, dim]`` physical, ``spectra [N, n_wave]`` on
    ``wavelength [n_wave]`` (Å), ``ids [N]`` row numbers in the store."""

    space: ParameterSpace
    theta: np.ndarray
    wavelength: np.ndarray
    spectra: np.ndarray
    ids: np.ndarray


def _read_store(path, *, stage=None) -> TrainingSet:
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"campaign store not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataFileError(f"{path} is not a readable HDF5 file ({exc})".splitlines()[0]) from None
    with f:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != "lumina-jax-campaign":
            raise DataFileError(f"{path} is not a lumina-jax campaign store (format={fmt!r})")
        if int(f.attrs.get("format_version", -1)) != 1:
            raise DataFileError(f"{path}: unsupported campaign format version {f.attrs.get('format_version')}")
        try:
            space = ParameterSpace.from_json(f.attrs["space_json"])
            status = np.asarray(f["status"][...])
            done = np.flatnonzero(status == 1)
            theta = np.asarray(f["design"][...], dtype=np.float64)[done]
            wavelength = np.asarray(f["wavelength"][...], dtype=np.float64)
            spectra = np.asarray(f["spectra"][...], dtype=np.float64)[done]
        except KeyError as exc:
            raise DataFileError(f"{path}: campaign store lacks {exc}") from None
    if stage is not None and int(stage) != space.stage:
        raise DataFileError(f"{path} holds a stage-{space.stage} campaign, not stage {stage}")
    return TrainingSet(space=space, theta=theta, wavelength=wavelength, spectra=spectra, ids=done)


def load_training_set(path, *, stage=None) -> TrainingSet:
    """Done rows of a campaign store (see module docstring)."""
    try:
        from runners.store import load_training_set as _runner_loader  # type: ignore
    except ImportError:
        return _read_store(path, stage=stage)
    ts = _runner_loader(path, stage=stage)
    return TrainingSet(space=ts.space, theta=np.asarray(ts.theta, np.float64),
                       wavelength=np.asarray(ts.wavelength, np.float64),
                       spectra=np.asarray(ts.spectra, np.float64), ids=np.asarray(ts.ids))


def write_store(path, space: ParameterSpace, theta, wavelength, spectra, status=None) -> Path:
    """Write a minimal campaign store (tests, toy data).  NaN spectra rows for not-done models."""
    import h5py

    theta = np.asarray(theta, np.float64)
    spectra = np.asarray(spectra, np.float64)
    status = np.ones(len(theta), np.int8) if status is None else np.asarray(status, np.int8)
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "lumina-jax-campaign"
        f.attrs["format_version"] = 1
        f.attrs["stage"] = int(space.stage)
        f.attrs["space_json"] = space.to_json()
        f.create_dataset("design", data=theta)
        f.create_dataset("status", data=status)
        f.create_dataset("wavelength", data=np.asarray(wavelength, np.float64))
        f.create_dataset("spectra", data=np.where(status[:, None] == 1, spectra, np.nan))
    return path
