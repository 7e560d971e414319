"""Crash-safe HDF5 store of a simulation campaign (the emulator's training set).

File layout (``format = "lumina-jax-campaign"``, ``format_version = 3``)
--------------------------------------------------------------------------
Root attributes: ``format``, ``format_version``, ``stage`` (int), ``space_json``
(``ParameterSpace.to_json()`` of the sampled space, bounds included), ``backend``, ``seed``,
``config_hash``, ``config_json``, ``max_attempts``, provenance (``binary_path``,
``binary_sha256``, ``host``, ``created``, ``updated``, ``lumina_jax_version``,
``n_checkpoints``; LUMINA campaigns add ``cpu_binary_*``, ``lumina_ref`` and
``lumina_ref_sha256``).  Version 3 files begin with a 512-byte HDF5 user block holding the
file's checksum (see *Integrity*).

Datasets (N jobs, n_wave wavelengths):

=============  ==================  ==================================================
``design``     [N, dim] float64    physical parameter values (written before any job)
``status``     [N] int8            0 pending, 1 done, 2 failed
``attempts``   [N] int32           attempts made so far
``fail_reason`` [N] utf-8 str      last failure message ("" if none)
``fail_kind``  [N] utf-8 str       timeout / exit_code / signal / missing_output /
                                   invalid_output / error ("" if none)
``wavelength`` [n_wave] float64    Angstrom
``spectra``    [N, n_wave] float64 L_lambda, erg/s/Angstrom; NaN unless status == 1
``elapsed_s``  [N] float64         wall time of the last attempt
``worker``     [N] utf-8 str       worker that ran the last attempt
=============  ==================  ==================================================

Per-attempt diagnostics (:data:`DIAGNOSTICS`, [N] each, figures of the last attempt, also
of a failed one; -1 / NaN where unknown, e.g. every one of them for the synth backend):
``mc_seed`` (int64, LUMINA's Monte Carlo seed), ``l_requested`` (erg/s), ``l_spectrum``
(erg/s, the spectrum summed over the grid), ``lum_ratio`` (``l_spectrum`` over the requested
luminosity's blackbody share of the grid), ``l_emitted`` (erg/s, LUMINA's last-iteration
L_emitted from stdout), ``escape_fraction`` (0-1, last iteration) and ``t_inner`` (K, the
last iteration's inner-boundary temperature).

Version 1 stores (no diagnostics) are read with the diagnostics unknown; version 1 and 2
stores (no checksums) are read without checksums.  A checkpoint of a resumed older store
adds what it lacks and sets ``format_version = 3`` (older versions of lumina-jax then refuse
it, rather than write into it without updating its checksum).

Integrity (:func:`read_store`, the one check every reader uses)
-----------------------------------------------------------------
``dataset info``, ``train``, ``emulator report`` / ``calibrate`` and ``generate --resume``
read a store through :func:`read_store`, which refuses (:class:`DataFileError`, one line) a
store that fails any of: the format, version, datasets and their shapes; a parseable
``space_json`` of the design's width; status codes 0/1/2 and attempts >= 0 (>= 1 for done
rows); a finite design inside the space's box; a finite, increasing, positive wavelength grid;
finite spectra in done rows.  From version 3 the file is *sealed*: its first
:data:`USERBLOCK` bytes (an HDF5 user block, which HDF5 skips) hold :data:`SEAL_MAGIC` and the
SHA-256 of every byte after the block, written after each complete write and verified before
HDF5 reads anything.  A flipped bit anywhere in a sealed store -- data, or HDF5 metadata whose
damage can crash or hang the HDF5 library -- is therefore refused without being parsed; a
version-3 file whose seal is missing is refused too.

Crash safety (copy-on-checkpoint)
---------------------------------
A new store is created under the exclusive lock ``FILE.h5.lock`` (taken before the check
that ``FILE.h5`` does not exist) and appears under its name through a hard link, which fails
if the name was taken meanwhile: two runs creating the same store never both succeed, and a
finished campaign is never replaced by a new one.

The file named ``FILE.h5`` is only ever replaced atomically.  A checkpoint copies the
current file to ``FILE.h5.tmp`` (a kernel-side copy), writes the rows that changed since
the last checkpoint into the copy, closes it, ``fsync``s it and ``os.replace``s it over
``FILE.h5`` (then ``fsync``s the directory).  A ``kill -9`` at any moment therefore leaves
either the previous or the new checkpoint -- both complete HDF5 files in which a row is
``done`` exactly when its spectrum is in the same file.  A stale ``FILE.h5.tmp`` is
deleted when the store is opened again.  Cost per checkpoint: one sequential copy of the
file plus the changed rows.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from lumina_jax import _seal
from lumina_jax.errors import DataFileError
from lumina_jax.params import ParameterSpace

FORMAT = "lumina-jax-campaign"
FORMAT_VERSION = 3
READ_VERSIONS = (1, 2, 3)
PENDING, DONE, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed"}

_STR = h5py.string_dtype("utf-8")
#: per-attempt diagnostics: name -> (dtype, value when unknown)
DIAGNOSTICS = {
    "mc_seed": (np.int64, -1),
    "l_requested": (np.float64, np.nan),
    "l_spectrum": (np.float64, np.nan),
    "lum_ratio": (np.float64, np.nan),
    "l_emitted": (np.float64, np.nan),
    "escape_fraction": (np.float64, np.nan),
    "t_inner": (np.float64, np.nan),
}
_ROW_DATASETS = ("status", "attempts", "fail_reason", "fail_kind", "spectra", "elapsed_s", "worker",
                 *DIAGNOSTICS)
#: bytes of the HDF5 user block that holds the seal (the file's checksum) of a version-3 store
USERBLOCK = _seal.USERBLOCK
SEAL_MAGIC = b"lumina-jax campaign store\n"
_REQUIRED = ("design", "status", "attempts", "fail_reason", "wavelength", "spectra", "elapsed_s", "worker")


class TrainingSet(NamedTuple):
    """The finished rows of a campaign store.

    space: the sampled :class:`ParameterSpace` (bounds included)
    theta: [n_done, dim] physical parameters
    wavelength: [n_wave] Angstrom
    spectra: [n_done, n_wave] L_lambda, erg/s/Angstrom
    ids: [n_done] row indices in the store's design
    """

    space: ParameterSpace
    theta: np.ndarray
    wavelength: np.ndarray
    spectra: np.ndarray
    ids: np.ndarray


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def provenance(binary: str | os.PathLike | None = None) -> dict:
    """Host, creation time, lumina-jax version and (optional) binary path + sha256."""
    import lumina_jax

    out = {"host": socket.gethostname(), "created": now_iso(), "lumina_jax_version": lumina_jax.__version__,
           "binary_path": "", "binary_sha256": ""}
    if binary is not None:
        out["binary_path"] = str(Path(binary).resolve())
        out["binary_sha256"] = sha256_file(binary)
    return out


def seal(path) -> None:
    """Seal a closed version-3 store (:mod:`lumina_jax._seal`)."""
    _seal.seal(path, SEAL_MAGIC)


def check_seal(path) -> bool:
    """True for a sealed store that matches its seal, False for an unsealed (older) one;
    :class:`DataFileError` for a damaged one."""
    return _seal.check_seal(path, SEAL_MAGIC, "corrupt store")


def _copy_with_userblock(src, dst) -> None:
    """Rewrite an older (unsealed) store with the user block of the seal: every dataset and attribute."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w", userblock_size=USERBLOCK) as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v
        for name in a:
            a.copy(a[name], b, name=name)


def lock_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


def take_lock(path):
    """The exclusive advisory lock of store ``path`` (an open file; closing it releases the lock).
    A lock held elsewhere raises :class:`DataFileError`."""
    lock = lock_path(path)
    try:
        fh = open(lock, "a+")
    except OSError as exc:
        raise DataFileError(f"cannot create the lock file {lock} ({exc.strerror})") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise DataFileError(f"{path} is being created or written by another runner (lock {lock})") from None
    return fh


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _runs(idx: np.ndarray):
    """Sorted unique indices -> list of (start, stop) contiguous runs."""
    if idx.size == 0:
        return []
    breaks = np.nonzero(np.diff(idx) != 1)[0]
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks + 1, [idx.size]])
    return [(int(idx[a]), int(idx[b - 1]) + 1) for a, b in zip(starts, stops)]


@dataclasses.dataclass
class Delta:
    """Rows changed since the last checkpoint (copies: safe to write from another thread)."""

    rows: np.ndarray
    values: dict
    attrs: dict


class CampaignStore:
    """In-memory state of a campaign plus its on-disk checkpoint ``path``.

    Jobs update the arrays in memory (:meth:`record_success`, :meth:`record_failure`); a
    :meth:`checkpoint` makes them durable atomically.  Only rows with ``status == DONE``
    carry data.
    """

    def __init__(self, path: Path, attrs: dict, arrays: dict):
        self.path = Path(path)
        self.attrs = dict(attrs)
        self.design: np.ndarray = arrays["design"]
        self.status: np.ndarray = arrays["status"]
        self.attempts: np.ndarray = arrays["attempts"]
        self.fail_reason: np.ndarray = arrays["fail_reason"]
        self.fail_kind: np.ndarray = arrays["fail_kind"]
        self.wavelength: np.ndarray = arrays["wavelength"]
        self.spectra: np.ndarray = arrays["spectra"]
        self.elapsed_s: np.ndarray = arrays["elapsed_s"]
        self.worker: np.ndarray = arrays["worker"]
        self.diagnostics: dict[str, np.ndarray] = {k: arrays[k] for k in DIAGNOSTICS}
        self.space = ParameterSpace.from_json(self.attrs["space_json"])
        self._dirty: set[int] = set()
        self._lock_fh = None

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, path, *, space: ParameterSpace, design: np.ndarray, wavelength: np.ndarray,
               backend: str, seed: int, config: dict, max_attempts: int, prov: dict,
               keep_lock: bool = False) -> "CampaignStore":
        """Write a new store (design included, every job pending) atomically; refuse to overwrite.

        The store's lock is taken before the check that ``path`` is free, and the file appears
        under its name by a hard link that fails if the name was taken: of two runs creating the
        same store, one fails with :class:`DataFileError`.  ``keep_lock``: keep holding the lock
        (the runner that goes on to fill the store), else release it at the end."""
        path = Path(path)
        lock_fh = take_lock(path)
        try:
            if path.exists():
                raise DataFileError(f"{path} already exists (use --resume to continue it, or choose another --out)")
            store = cls._create_locked(path, space=space, design=design, wavelength=wavelength, backend=backend,
                                       seed=seed, config=config, max_attempts=max_attempts, prov=prov)
        except BaseException:
            lock_fh.close()
            raise
        store._lock_fh = lock_fh
        if not keep_lock:
            store.release_lock()
        return store

    @classmethod
    def _create_locked(cls, path, *, space, design, wavelength, backend, seed, config, max_attempts, prov):
        design = np.asarray(design, dtype=np.float64)
        wavelength = np.asarray(wavelength, dtype=np.float64)
        n, n_wave = design.shape[0], wavelength.shape[0]
        config_json = json.dumps(config, sort_keys=True, default=str)
        import hashlib

        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "stage": int(space.stage),
            "space_json": space.to_json(),
            "backend": backend,
            "seed": int(seed),
            "config_json": config_json,
            "config_hash": hashlib.sha256(config_json.encode()).hexdigest()[:16],
            "max_attempts": int(max_attempts),
            "n_checkpoints": 0,
            "updated": now_iso(),
            **prov,
        }
        arrays = {
            "design": design,
            "status": np.zeros(n, np.int8),
            "attempts": np.zeros(n, np.int32),
            "fail_reason": np.array([""] * n, dtype=object),
            "fail_kind": np.array([""] * n, dtype=object),
            "wavelength": wavelength,
            "spectra": np.full((n, n_wave), np.nan),
            "elapsed_s": np.full(n, np.nan),
            "worker": np.array([""] * n, dtype=object),
            **_unknown_diagnostics(n),
        }
        store = cls(path, attrs, arrays)
        store._write_full()
        return store

    def _write_full(self) -> None:
        """Write the whole store to the temporary file, then give it its name (exclusively)."""
        tmp = self.tmp_path
        with h5py.File(tmp, "w", userblock_size=USERBLOCK) as f:
            for k, v in self.attrs.items():
                f.attrs[k] = v
            f.create_dataset("design", data=self.design)
            f.create_dataset("status", data=self.status)
            f.create_dataset("attempts", data=self.attempts)
            f.create_dataset("fail_reason", data=self.fail_reason.astype(object), dtype=_STR)
            f.create_dataset("fail_kind", data=self.fail_kind.astype(object), dtype=_STR)
            f.create_dataset("wavelength", data=self.wavelength)
            f.create_dataset("spectra", data=self.spectra, fillvalue=np.nan)
            f.create_dataset("elapsed_s", data=self.elapsed_s)
            f.create_dataset("worker", data=self.worker.astype(object), dtype=_STR)
            for name, values in self.diagnostics.items():
                f.create_dataset(name, data=values)
        seal(tmp)
        self._commit_new(tmp)
        self._dirty.clear()

    @property
    def tmp_path(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    def _commit_tmp(self, tmp: Path) -> None:
        _fsync_path(tmp)
        os.replace(tmp, self.path)
        _fsync_path(self.path.parent.resolve(), directory=True)

    def _commit_new(self, tmp: Path) -> None:
        """Give a new store its name, never over an existing file."""
        _fsync_path(tmp)
        taken = DataFileError(f"{self.path} already exists (another run created it meanwhile); "
                              "use --resume to continue it, or choose another --out")
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            raise taken from None
        except OSError:  # a file system without hard links: we hold the lock and checked the name
            if self.path.exists():
                tmp.unlink(missing_ok=True)
                raise taken from None
            os.rename(tmp, self.path)
        else:
            tmp.unlink()
        _fsync_path(self.path.parent.resolve(), directory=True)

    # ------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path, *, lock: bool = False) -> "CampaignStore":
        """Read a store into memory (to resume it), through the integrity check of
        :func:`read_store`.  A stale ``.tmp`` checkpoint is removed.  ``lock``: take the
        store's lock first (a runner that will write it) and keep it."""
        path = Path(path)
        lock_fh = take_lock(path) if lock else None
        try:
            attrs, arrays = read_store(path)
            store = cls(path, attrs, arrays)
        except BaseException:
            if lock_fh is not None:
                lock_fh.close()
            raise
        store._lock_fh = lock_fh
        store.attrs["format_version"] = FORMAT_VERSION  # what the next checkpoint writes
        if store.tmp_path.exists():
            store.tmp_path.unlink()
        return store

    def acquire_lock(self) -> None:
        """Take the exclusive advisory lock (``FILE.h5.lock``) unless this store holds it; a
        second runner gets a :class:`DataFileError`."""
        if self._lock_fh is None:
            self._lock_fh = take_lock(self.path)

    def release_lock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    # ----------------------------------------------------------------- updating
    @property
    def n(self) -> int:
        return self.design.shape[0]

    def record_success(self, i: int, spectrum: np.ndarray, *, elapsed_s: float, worker: str,
                       diagnostics: dict | None = None) -> None:
        if self.status[i] == DONE:
            raise RuntimeError(f"job {i} is already done; a finished job must never run twice")
        self.spectra[i] = spectrum
        self.status[i] = DONE
        self.attempts[i] += 1
        self.fail_reason[i] = ""
        self.fail_kind[i] = ""
        self.elapsed_s[i] = elapsed_s
        self.worker[i] = worker
        self._set_diagnostics(i, diagnostics)
        self._dirty.add(i)

    def record_failure(self, i: int, *, kind: str, reason: str, elapsed_s: float, worker: str,
                       diagnostics: dict | None = None) -> None:
        """A failed attempt: the row is marked failed (retryable while attempts < max_attempts)."""
        if self.status[i] == DONE:
            raise RuntimeError(f"job {i} is already done")
        self.spectra[i] = np.nan
        self.status[i] = FAILED
        self.attempts[i] += 1
        self.fail_reason[i] = reason
        self.fail_kind[i] = kind
        self.elapsed_s[i] = elapsed_s
        self.worker[i] = worker
        self._set_diagnostics(i, diagnostics)
        self._dirty.add(i)

    def _set_diagnostics(self, i: int, diagnostics: dict | None) -> None:
        """Row ``i``'s diagnostics of this attempt (names not given: unknown)."""
        diagnostics = diagnostics or {}
        unknown = sorted(set(diagnostics) - set(DIAGNOSTICS))
        if unknown:
            raise KeyError(f"unknown diagnostics {', '.join(unknown)}")
        for name, (_, missing) in DIAGNOSTICS.items():
            value = diagnostics.get(name)
            self.diagnostics[name][i] = missing if value is None else value

    def todo(self, max_attempts: int | None = None) -> np.ndarray:
        """Indices to run: pending rows and failed rows with attempts < max_attempts."""
        m = int(self.attrs["max_attempts"]) if max_attempts is None else int(max_attempts)
        mask = (self.status == PENDING) | ((self.status == FAILED) & (self.attempts < m))
        return np.nonzero(mask)[0]

    def counts(self) -> dict:
        return {name: int(np.sum(self.status == code)) for code, name in STATUS_NAMES.items()}

    def mark_dirty(self, rows) -> None:
        self._dirty.update(int(i) for i in rows)

    @property
    def n_dirty(self) -> int:
        return len(self._dirty)

    # --------------------------------------------------------------- checkpoints
    def take_delta(self) -> Delta:
        """Copy the rows changed since the last delta (call from the owning thread)."""
        rows = np.array(sorted(self._dirty), dtype=np.int64)
        self._dirty.clear()
        values = {name: self._row_array(name)[rows].copy() for name in _ROW_DATASETS}
        self.attrs["n_checkpoints"] = int(self.attrs.get("n_checkpoints", 0)) + 1
        self.attrs["updated"] = now_iso()
        attrs = {k: self.attrs[k] for k in ("n_checkpoints", "updated", "max_attempts")}
        return Delta(rows, values, attrs)

    def _row_array(self, name: str) -> np.ndarray:
        return self.diagnostics[name] if name in DIAGNOSTICS else getattr(self, name)

    def write_delta(self, delta: Delta) -> None:
        """Make ``delta`` durable: copy file -> write rows into the copy -> fsync -> replace.

        Pure file work (no access to the in-memory arrays): may run in a worker thread, one
        at a time.  A version-1 file gets the diagnostics datasets (unknown values) first; a
        version-1 or -2 file is rewritten with the user block of the seal."""
        tmp = self.tmp_path
        if _seal.is_sealed(self.path, SEAL_MAGIC):  # (verified when it was opened; we wrote it since)
            shutil.copyfile(self.path, tmp)
        else:
            _copy_with_userblock(self.path, tmp)
        with h5py.File(tmp, "r+") as f:
            n = f["status"].shape[0]
            for name, (dtype, missing) in DIAGNOSTICS.items():
                if name not in f:
                    f.create_dataset(name, data=np.full(n, missing, dtype=dtype))
            f.attrs["format_version"] = FORMAT_VERSION
            for a, b in _runs(delta.rows):
                lo = int(np.searchsorted(delta.rows, a))
                hi = lo + (b - a)
                for name in _ROW_DATASETS:
                    v = delta.values[name][lo:hi]
                    f[name][a:b] = v.astype(object) if v.dtype == object else v
            for k, v in delta.attrs.items():
                f.attrs[k] = v
        seal(tmp)
        self._commit_tmp(tmp)

    def checkpoint(self) -> None:
        """Synchronous checkpoint of everything recorded so far."""
        self.write_delta(self.take_delta())


# ------------------------------------------------------------------------- reading
def _open_h5(path: Path) -> tuple[h5py.File, bool]:
    """(open file, sealed) of a store whose seal (if any) matched its contents."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"campaign store not found: {path}")
    if path.is_dir():
        raise DataFileError(f"{path} is a directory, not a campaign store")
    try:
        sealed = check_seal(path)  # before HDF5 parses anything of a damaged file
    except OSError as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"cannot read the campaign store {path} ({exc.strerror})") from None
    try:
        return h5py.File(path, "r"), sealed
    except OSError as exc:
        raise DataFileError(f"{path} is not a readable HDF5 file (corrupt or foreign): {exc}".splitlines()[0]) from None


def _check_format(f: h5py.File, path: Path, sealed: bool) -> None:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        raise DataFileError(f"{path} is not a lumina-jax campaign store (format attribute {fmt!r})")
    ver = int(f.attrs.get("format_version", -1))
    if ver not in READ_VERSIONS:
        raise DataFileError(f"{path}: unsupported store format_version {ver} "
                            f"(this version reads {', '.join(map(str, READ_VERSIONS))})")
    if ver >= 3 and not sealed:
        raise DataFileError(f"{path}: corrupt store, the checksum block at its start is missing or damaged")
    missing = [k for k in _REQUIRED if k not in f]
    if missing:
        raise DataFileError(f"{path}: corrupt store, missing dataset(s) {', '.join(missing)}")
    n, dim = f["design"].shape
    n_wave = f["wavelength"].shape[0]
    for k in ("status", "attempts", "fail_reason", "elapsed_s", "worker", *(d for d in DIAGNOSTICS if d in f)):
        if f[k].shape != (n,):
            raise DataFileError(f"{path}: corrupt store, {k} has shape {f[k].shape}, expected ({n},)")
    if f["spectra"].shape != (n, n_wave):
        raise DataFileError(f"{path}: corrupt store, spectra has shape {f['spectra'].shape}, expected {(n, n_wave)}")


def _attrs(f: h5py.File) -> dict:
    out = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _unknown_diagnostics(n: int) -> dict[str, np.ndarray]:
    return {name: np.full(n, missing, dtype=dtype) for name, (dtype, missing) in DIAGNOSTICS.items()}


#: what h5py / HDF5 raise on a damaged file (beyond our own DataFileError)
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, OverflowError, AttributeError,
              UnicodeDecodeError, MemoryError)


def _damaged(path: Path, exc: BaseException) -> DataFileError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataFileError(f"{path}: corrupt store ({text[:200]})")


def _read_all(path: Path) -> tuple[dict, dict]:
    """Every dataset and attribute of a store, unchecked beyond the format (see :func:`read_store`)."""
    try:
        f, sealed = _open_h5(path)
        with f:
            _check_format(f, path, sealed)
            n = f["design"].shape[0]
            arrays = {
                "design": f["design"][...].astype(np.float64),
                "status": f["status"][...].astype(np.int8),
                "attempts": f["attempts"][...].astype(np.int32),
                "fail_reason": np.array(f["fail_reason"].asstr()[...], dtype=object),
                "fail_kind": (np.array(f["fail_kind"].asstr()[...], dtype=object) if "fail_kind" in f
                              else np.array([""] * n, dtype=object)),
                "wavelength": f["wavelength"][...].astype(np.float64),
                "spectra": f["spectra"][...].astype(np.float64),
                "elapsed_s": f["elapsed_s"][...].astype(np.float64),
                "worker": np.array(f["worker"].asstr()[...], dtype=object),
                **_unknown_diagnostics(n),
            }
            for name, (dtype, _) in DIAGNOSTICS.items():
                if name in f:
                    arrays[name] = f[name][...].astype(dtype)
            attrs = _attrs(f)
            arrays["_sealed"] = sealed
    except DataFileError:
        raise
    except _H5_ERRORS as exc:  # HDF5 metadata or data damaged beyond the format checks
        raise _damaged(path, exc) from None
    return attrs, arrays


def read_store(path) -> tuple[dict, dict]:
    """(attributes, arrays) of a store that passed the integrity check of the module docstring
    (*Integrity*); any failure is one :class:`DataFileError` line naming the first problem.
    ``arrays`` holds every row dataset, ``space`` the parsed :class:`ParameterSpace`."""
    path = Path(path)
    attrs, arrays = _read_all(path)
    arrays["space"] = _verify(path, attrs, arrays)
    return attrs, arrays


def _first(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    return f"row {idx[0]}" + (f" and {idx.size - 1} more" if idx.size > 1 else "")


def _verify(path: Path, attrs: dict, arrays: dict) -> ParameterSpace:
    bad = f"{path}: corrupt store,"
    try:
        space = ParameterSpace.from_json(attrs["space_json"])
    except Exception as exc:  # noqa: BLE001 - any failure here means a foreign/corrupt attribute
        raise DataFileError(f"{path}: unreadable space_json attribute ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    design, status, spectra = arrays["design"], arrays["status"], arrays["spectra"]
    wavelength = arrays["wavelength"]
    if design.ndim != 2 or design.shape[1] != space.dim:
        raise DataFileError(f"{path}: design has {design.shape[-1] if design.ndim else 0} columns, space has {space.dim}")
    unknown = ~np.isin(status, list(STATUS_NAMES))
    if unknown.any():
        raise DataFileError(f"{bad} {_first(unknown)} has status {int(status[unknown][0])} (not 0, 1 or 2)")
    done = status == DONE
    if not np.all(np.isfinite(wavelength)) or wavelength.size < 2 or np.any(np.diff(wavelength) <= 0) \
            or wavelength[0] <= 0:
        raise DataFileError(f"{bad} its wavelength grid is not finite, positive and increasing")
    finite = np.all(np.isfinite(design), axis=1)
    if not finite.all():
        raise DataFileError(f"{bad} {_first(~finite)} of the design has non-finite parameter values")
    lo, hi = np.asarray(space.lower, float), np.asarray(space.upper, float)
    tol = 1e-9 * np.maximum(hi - lo, 1e-300)
    outside = np.any((design < lo - tol) | (design > hi + tol), axis=1)
    if outside.any():
        raise DataFileError(f"{bad} {_first(outside)} of the design lies outside the store's parameter box")
    nonfinite = done & ~np.all(np.isfinite(spectra), axis=1)
    if nonfinite.any():
        raise DataFileError(f"{bad} a done row holds non-finite spectrum values ({_first(nonfinite)})")
    attempts = arrays["attempts"]
    if np.any(attempts < 0) or np.any(attempts[done] < 1):
        raise DataFileError(f"{bad} {_first((attempts < 0) | (done & (attempts < 1)))} has an impossible attempt count")
    return space


def read_attrs(path) -> dict:
    """Root attributes of a store (validated format; the rows are checked by :func:`read_store`)."""
    path = Path(path)
    try:
        f, sealed = _open_h5(path)
        with f:
            _check_format(f, path, sealed)
            return _attrs(f)
    except DataFileError:
        raise
    except _H5_ERRORS as exc:
        raise _damaged(path, exc) from None


def load_training_set(path, *, stage: int | None = None) -> TrainingSet:
    """The finished rows (``status == done``) of a campaign store.

    Raises :class:`DataFileError` for a missing, corrupt or foreign file (the integrity check of
    :func:`read_store`, the one ``dataset info`` uses) or a store of another stage than
    ``stage`` (when given).
    """
    path = Path(path)
    if stage is not None:
        attrs = read_attrs(path)
        if int(attrs["stage"]) != int(stage):
            raise DataFileError(f"{path} holds stage-{attrs['stage']} models, stage {stage} was requested")
    attrs, arrays = read_store(path)
    ids = np.nonzero(arrays["status"] == DONE)[0]
    theta = arrays["design"][ids]
    wavelength = arrays["wavelength"]
    spectra = arrays["spectra"][ids] if ids.size else np.empty((0, wavelength.size))
    return TrainingSet(space=arrays["space"], theta=theta, wavelength=wavelength, spectra=spectra, ids=ids)


def store_info(path) -> dict:
    """Summary of a store: counts by status, failure kinds and reasons, provenance, shapes.

    The store passes the same integrity check as :func:`load_training_set` (:func:`read_store`)
    first: a store that training would refuse is never reported as healthy."""
    path = Path(path)
    attrs, arrays = read_store(path)
    status = arrays["status"]
    failed = status == FAILED
    kinds: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for k, r in zip(arrays["fail_kind"][failed], arrays["fail_reason"][failed]):
        kinds[k or "unknown"] = kinds.get(k or "unknown", 0) + 1
        r1 = str(r).splitlines()[0][:160] if r else ""
        reasons[r1] = reasons.get(r1, 0) + 1
    done = status == DONE
    workers: dict[str, int] = {}
    for w in arrays["worker"][done]:
        workers[str(w)] = workers.get(str(w), 0) + 1
    el = arrays["elapsed_s"][done]
    diag = {}
    for name in DIAGNOSTICS:
        if name == "mc_seed":
            continue
        v = arrays[name][done]
        v = v[np.isfinite(v)]
        if v.size:
            diag[name] = {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
                          "n": int(v.size)}
    max_att = int(attrs.get("max_attempts", 1))
    return {
        "path": str(path),
        "n_models": int(status.size),
        "dim": int(arrays["design"].shape[1]),
        "n_wave": int(arrays["wavelength"].size),
        "wavelength_range": [float(arrays["wavelength"].min()), float(arrays["wavelength"].max())]
        if arrays["wavelength"].size else [],
        "counts": {name: int(np.sum(status == code)) for code, name in STATUS_NAMES.items()},
        "retryable_failed": int(np.sum(failed & (arrays["attempts"] < max_att))),
        "failure_kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "failure_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:20]),
        "done_by_worker": dict(sorted(workers.items())),
        "elapsed_s_done": {"mean": float(el.mean()), "median": float(np.median(el)), "max": float(el.max())}
        if el.size else {},
        "diagnostics_done": diag,
        "attrs": {k: v for k, v in attrs.items() if k != "space_json"},
        "sealed": bool(arrays.get("_sealed")),
    }
