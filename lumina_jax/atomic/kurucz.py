"""Kurucz per-ion line lists ``gfZZII.pos`` / ``.all`` (gfall 160-column format): reader and downloader.

Record (Kurucz): ``F11.4 wavelength nm (air above 200 nm), F7.3 log gf, F6.2 code Z.ii,
F12.3 E cm^-1, F5.2 J, 1X, A10 label, F12.3 E' cm^-1, F5.2 J', 1X, A10 label', ...``.
Negative energies mark predicted levels (we take |E|).  The lower level is the one of smaller |E|.
Partition functions and metastable flags come from PyNeb's NIST level lists (parity rule, see
:mod:`lumina_jax.atomic.data`), ionisation energies from PyNeb's NIST table.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np

from lumina_jax.atomic.data import HC_EV_CM, AtomicData, assemble, element_index
from lumina_jax.atomic.sources import TOL_PRECISE
from lumina_jax.errors import DataFileError
from lumina_jax.params import ATOMIC_NUMBERS

KURUCZ_URLS = (
    "http://kurucz.harvard.edu/atoms/{zz:02d}{ii:02d}/gf{zz:02d}{ii:02d}.pos",
    "http://kurucz.harvard.edu/atoms/{zz:02d}{ii:02d}/gf{zz:02d}{ii:02d}.all",
    "http://kurucz.harvard.edu/linelists/gfall/gf{zz:02d}{ii:02d}.all",
)


def read_gfall(path: Path) -> dict:
    """Read one gfall-format file -> line columns (wl air A, gf, e_low / e_up eV, el, stage, g_low / g_up = 2J + 1)."""
    rows = []
    try:
        fh = open(path, errors="replace")
    except OSError as exc:
        raise DataFileError(f"cannot read Kurucz file {path}: {exc}") from None
    with fh:
        for n, line in enumerate(fh):
            if len(line.rstrip("\n")) < 80 or not line.strip():
                continue
            try:
                wl_nm = float(line[0:11])
                loggf = float(line[11:18])
                code = float(line[18:24])
                e1, j1 = abs(float(line[24:36])), float(line[36:41])
                e2, j2 = abs(float(line[52:64])), float(line[64:69])
            except ValueError:
                raise DataFileError(f"{path}:{n + 1}: not a Kurucz gfall record") from None
            z = int(code)
            stage = int(round((code - z) * 100))
            el = element_index(z)
            if el is None:
                continue
            (el_lo, j_lo), (el_up, j_up) = sorted([(e1, j1), (e2, j2)])
            rows.append((wl_nm * 10.0, 10.0**loggf, el_lo * HC_EV_CM, el_up * HC_EV_CM, el, stage,
                         2 * j_lo + 1, 2 * j_up + 1))
    if not rows:
        return {k: np.zeros(0) for k in ("wl", "gf", "e_low", "e_up", "el", "stage", "g_low", "g_up", "tol_low")}
    a = np.asarray(rows)
    return {"wl": a[:, 0], "gf": a[:, 1], "e_low": a[:, 2], "e_up": a[:, 3],
            "el": a[:, 4].astype(int), "stage": a[:, 5].astype(int), "g_low": a[:, 6], "g_up": a[:, 7],
            "tol_low": np.full(len(a), TOL_PRECISE)}


def read_kurucz_dir(folder: Path) -> tuple[AtomicData, dict]:
    """All ``gf*.pos`` / ``gf*.all`` files of a folder -> :class:`AtomicData` (+ provenance)."""
    from lumina_jax.atomic import sources as src

    folder = Path(folder)
    files = sorted(list(folder.glob("gf*.pos")) + list(folder.glob("gf*.all")))
    if not files:
        raise DataFileError(f"no Kurucz gf*.pos / gf*.all files in {folder}; download them with "
                            "`lumina-jax atomic download-kurucz`")
    parts = [read_gfall(f) for f in files]
    lines = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    lines["source"] = np.concatenate([np.full(len(p["wl"]), i) for i, p in enumerate(parts)])
    pn = src.package_dir("pyneb")
    if pn is None:
        raise DataFileError("reading Kurucz files needs the pyneb package (NIST levels and ionisation energies)")
    levels = src.pyneb_levels(pn)
    chi = src.pyneb_ionisation_energies(pn)
    atomic = assemble(lines, levels, chi)
    prov = {"name": f"kurucz:{folder}", "sources": [f.name for f in files], "levels_from": "pyneb NIST level lists",
            "zeta": "1", "wavelengths": "air above 2000 A"}
    return atomic, prov


def download_kurucz(dest: Path, ions=None, *, timeout: float = 60.0, progress=None) -> list[Path]:
    """Download ``gfZZII.pos`` (falling back to ``.all``) for ``ions`` [(Z, charge)] (default: the
    model's elements, charges 0-3) into ``dest``.  Needs internet access to kurucz.harvard.edu."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ions = ions or [(z, i) for z in ATOMIC_NUMBERS for i in range(4)]
    got = []
    for z, ii in ions:
        for url in KURUCZ_URLS:
            u = url.format(zz=z, ii=ii)
            target = dest / Path(u).name
            if target.exists():
                got.append(target)
                break
            try:
                with urllib.request.urlopen(u, timeout=timeout) as r:
                    data = r.read()
            except OSError:
                continue
            tmp = target.with_suffix(target.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(target)
            got.append(target)
            if progress:
                progress(f"{target.name}: {len(data) / 1e6:.1f} MB")
            break
        else:
            if progress:
                progress(f"Z={z} charge {ii}: no Kurucz file found")
    if not got:
        raise DataFileError("no Kurucz file could be downloaded (no internet access to kurucz.harvard.edu?)")
    return got
