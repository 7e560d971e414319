"""Read and write Rhea/Emu asymptotic-state HDF5 files.

Format (Rhea ``create_database.py``; reference note §5.1), all C-order (h5py):

================================  ==================  =======  =====================================
dataset                           shape               units    meaning
================================  ==================  =======  =====================================
``F4_initial(1|ccm)``             [n, 4, 2, NF]       cm⁻³     initial four-fluxes (x, y, z, N)
``F4_final(1|ccm)``               [n, 4, 2, NF]       cm⁻³     asymptotic (time-averaged) four-fluxes
``F4_final_stddev(1|ccm)``        [n, 4, 2, NF]       cm⁻³     optional: their standard deviation
``growthRate(1|s)``               [n]                 s⁻¹      optional: FFI growth rate
``nf``                            scalar int          --       optional: number of flavors (NF)
================================  ==================  =======  =====================================

In memory this package uses ``[n, 2, NF, 4]`` (:func:`box3d_jax.box3d.from_file_layout`).
Every reader check raises :class:`box3d_jax.errors.DataFileError` with the file, the
dataset and the first offending row (a file with no rows is refused too). Norms are
scaled before squaring, so any finite float64 scale (e.g. 1e162 cm⁻³) is handled. No I/O
happens inside numerical code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from box3d_jax.box3d import from_file_layout, to_file_layout
from box3d_jax.errors import DataFileError

__all__ = [
    "INITIAL",
    "FINAL",
    "STDDEV",
    "GROWTH",
    "BOX3D",
    "IN_DOMAIN",
    "FFIDataset",
    "read_dataset",
    "write_dataset",
    "check_F4",
    "flux_norm",
    "max_flux_factor",
]

INITIAL = "F4_initial(1|ccm)"
FINAL = "F4_final(1|ccm)"
STDDEV = "F4_final_stddev(1|ccm)"
GROWTH = "growthRate(1|s)"
#: Extra datasets of ``ffi box3d --residual``: Box3D alone (file layout) and the domain flags.
BOX3D = "F4_box3d(1|ccm)"
IN_DOMAIN = "residual_in_domain"

#: Relative slack on |F| <= N and N >= 0 (files store float32 or averaged data).
FLUX_FACTOR_TOL = 1e-6


class FFIDataset(NamedTuple):
    """In-memory dataset; four-flux arrays ``[n, 2, NF, 4]`` float64 (x, y, z, N), cm⁻³."""

    F4_initial: np.ndarray
    F4_final: np.ndarray | None = None
    F4_final_stddev: np.ndarray | None = None
    growth_rate: np.ndarray | None = None  # [n] s⁻¹

    @property
    def n(self) -> int:
        return self.F4_initial.shape[0]

    @property
    def nf(self) -> int:
        return self.F4_initial.shape[2]

    def select(self, mask: np.ndarray) -> "FFIDataset":
        """Rows where ``mask`` (bool ``[n]``) or index array selects."""
        return FFIDataset(*(None if a is None else a[mask] for a in self))


def flux_norm(F: np.ndarray) -> np.ndarray:
    """|F| over the last axis, scaled before squaring: no overflow or underflow for any
    finite float64 components (e.g. 1e162 cm⁻³, whose square overflows)."""
    F = np.asarray(F, dtype=np.float64)
    m = np.max(np.abs(F), axis=-1, keepdims=True)
    safe = np.where(m > 0, m, 1.0)
    return m[..., 0] * np.sqrt(np.sum((F / safe) ** 2, axis=-1))


def _per_row(a: np.ndarray) -> np.ndarray:
    """``[n, ...]`` -> ``[n, prod(...)]`` (also for n = 0)."""
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64)))


def max_flux_factor(F4: np.ndarray) -> np.ndarray:
    """Largest flux factor |F|/N over the 2·NF species of each row, ``[n]`` (0 where N = 0)."""
    N = F4[..., 3]
    norm = flux_norm(F4[..., :3])
    with np.errstate(divide="ignore", invalid="ignore"):
        ff = np.where(N > 0, norm / np.where(N > 0, N, 1.0), np.where(norm > 0, np.inf, 0.0))
    return _per_row(ff).max(axis=1, initial=0.0)


def check_F4(F4: np.ndarray, name: str, where: str = "", *, physical: bool = True) -> None:
    """Validate an in-memory ``[n, 2, NF, 4]`` array; raise DataFileError on problems.

    Checks: shape, finiteness and, if ``physical``, N >= 0 and |F| <= N (slack 1e-6·N).
    """
    at = f"{where}: " if where else ""
    if F4.ndim != 4 or F4.shape[1] != 2 or F4.shape[2] not in (2, 3) or F4.shape[3] != 4:
        raise DataFileError(
            f"{at}dataset {name!r} has shape {_file_shape(F4)}; expected [n, 4, 2, NF] with NF = 2 or 3"
        )
    bad = ~_per_row(np.isfinite(F4)).all(axis=1)
    if bad.any():
        raise DataFileError(f"{at}dataset {name!r} has non-finite values (first at row {int(np.argmax(bad))})")
    if not physical:
        return
    N = F4[..., 3]
    neg = _per_row(N < 0).any(axis=1)
    if neg.any():
        i = int(np.argmax(neg))
        raise DataFileError(
            f"{at}dataset {name!r} has negative number densities (first at row {i}: N = {N[i].tolist()})"
        )
    norm = flux_norm(F4[..., :3])
    over = _per_row(norm > N * (1 + FLUX_FACTOR_TOL) + 1e-300).any(axis=1)
    if over.any():
        i = int(np.argmax(over))
        raise DataFileError(
            f"{at}dataset {name!r} has flux factors |F|/N > 1 (first at row {i}: "
            f"max |F|/N = {float(max_flux_factor(F4[i:i + 1])[0]):.6g})"
        )


def _file_shape(F4: np.ndarray) -> list[int]:
    return list(to_file_layout(F4).shape) if F4.ndim == 4 else list(F4.shape)


def _read_F4(h5, name: str, path: Path, *, physical: bool) -> np.ndarray:
    raw = np.asarray(h5[name][()], dtype=np.float64)
    if raw.ndim != 4 or raw.shape[1] != 4 or raw.shape[2] != 2 or raw.shape[3] not in (2, 3):
        raise DataFileError(
            f"{path}: dataset {name!r} has shape {list(raw.shape)}; expected [n, 4 (x,y,z,N), 2 (nu, nubar), NF]"
        )
    F4 = np.ascontiguousarray(from_file_layout(raw))
    check_F4(F4, name, str(path), physical=physical)
    return F4


def read_dataset(path: str | os.PathLike, *, require_final: bool = False) -> FFIDataset:
    """Read an asymptotic-state file into :class:`FFIDataset` (arrays ``[n, 2, NF, 4]``).

    Args:
      path: HDF5 file in the Rhea/Emu format (module docstring).
      require_final: raise if ``F4_final(1|ccm)`` is missing.

    Raises:
      DataFileError: missing file or dataset, wrong shapes, row-count mismatch,
        non-finite values, negative densities, or flux factors > 1.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    with h5:
        if INITIAL not in h5:
            raise DataFileError(f"{path}: missing dataset {INITIAL!r} (found: {sorted(h5.keys())})")
        F4_i = _read_F4(h5, INITIAL, path, physical=True)
        n, nf = F4_i.shape[0], F4_i.shape[2]
        if n == 0:
            raise DataFileError(f"{path}: dataset {INITIAL!r} has no rows")
        with np.errstate(over="ignore"):
            ntot = F4_i[..., 3].sum(axis=(1, 2))
        if not np.isfinite(ntot).all():
            i = int(np.argmax(~np.isfinite(ntot)))
            raise DataFileError(f"{path}: dataset {INITIAL!r}: the total number density of row {i} "
                                "overflows float64 (rescale the file)")
        if "nf" in h5 and int(np.asarray(h5["nf"][()])) != nf:
            raise DataFileError(f"{path}: 'nf' = {int(np.asarray(h5['nf'][()]))} but {INITIAL!r} has NF = {nf}")
        F4_f = F4_s = growth = None
        if FINAL in h5:
            F4_f = _read_F4(h5, FINAL, path, physical=True)
        elif require_final:
            raise DataFileError(f"{path}: missing dataset {FINAL!r} (needed for training/evaluation)")
        if STDDEV in h5:
            F4_s = _read_F4(h5, STDDEV, path, physical=False)
            if (F4_s < 0).any():
                raise DataFileError(f"{path}: dataset {STDDEV!r} has negative standard deviations")
        if GROWTH in h5:
            growth = np.asarray(h5[GROWTH][()], dtype=np.float64)
            if growth.shape != (n,):
                raise DataFileError(f"{path}: dataset {GROWTH!r} has shape {list(growth.shape)}; expected [{n}]")
        for name, arr in ((FINAL, F4_f), (STDDEV, F4_s)):
            if arr is not None and arr.shape != F4_i.shape:
                raise DataFileError(
                    f"{path}: dataset {name!r} has shape {_file_shape(arr)} but {INITIAL!r} has {_file_shape(F4_i)}"
                )
    return FFIDataset(F4_i, F4_f, F4_s, growth)


def write_dataset(
    path: str | os.PathLike,
    F4_initial: np.ndarray,
    F4_final: np.ndarray | None = None,
    F4_final_stddev: np.ndarray | None = None,
    growth_rate: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write arrays ``[n, 2, NF, 4]`` (cm⁻³) in the Rhea/Emu file layout; atomic replace.

    ``extra``: further datasets written as given (first axis = rows), e.g.
    :data:`BOX3D` (file layout) and :data:`IN_DOMAIN` from ``ffi box3d --residual``;
    :func:`read_dataset` ignores them.

    Raises:
      DataFileError: on inconsistent shapes or non-finite values.
    """
    import h5py

    path = Path(path)
    F4_initial = np.asarray(F4_initial, dtype=np.float64)
    check_F4(F4_initial, INITIAL, physical=False)
    arrays = {INITIAL: F4_initial}
    for name, arr in ((FINAL, F4_final), (STDDEV, F4_final_stddev)):
        if arr is not None:
            arr = np.asarray(arr, dtype=np.float64)
            check_F4(arr, name, physical=False)
            if arr.shape != F4_initial.shape:
                raise DataFileError(f"dataset {name!r} shape {_file_shape(arr)} != {_file_shape(F4_initial)}")
            arrays[name] = arr
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        h5.create_dataset("nf", data=np.int64(F4_initial.shape[2]))
        for name, arr in arrays.items():
            h5.create_dataset(name, data=to_file_layout(arr))
        if growth_rate is not None:
            g = np.asarray(growth_rate, dtype=np.float64)
            if g.shape != (F4_initial.shape[0],):
                raise DataFileError(f"growth rate shape {list(g.shape)} != [{F4_initial.shape[0]}]")
            h5.create_dataset(GROWTH, data=g)
        for name, arr in (extra or {}).items():
            arr = np.asarray(arr)
            if name in h5 or arr.shape[:1] != (F4_initial.shape[0],):
                raise DataFileError(f"extra dataset {name!r}: name taken or not one entry per row")
            h5.create_dataset(name, data=arr)
    os.replace(tmp, path)
    return path
