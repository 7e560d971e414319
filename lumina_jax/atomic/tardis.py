"""Reader for the TARDIS/carsus atomic HDF5 file (``kurucz_cd23_chianti_H_He.h5`` layout).

The file is a pandas ``HDFStore`` in *fixed* format; it is read with h5py only (no pandas /
PyTables needed).  Tables used (index levels -> columns):

* ``levels_data``: (atomic_number, ion_number, level_number) -> energy [eV], g, metastable
* ``lines_data``: (atomic_number, ion_number, level_number_lower, level_number_upper) ->
  line_id, wavelength, f_ul, f_lu, nu, B_lu, B_ul, A_ul
* ``ionization_data``: (atomic_number, ion_number) -> ionisation energy [eV]
  (``ion_number`` = charge of the ion *created*, 1 for H I -> H II, as in TARDIS)
* ``zeta_data``: (atomic_number, ion_number) x temperatures -> zeta (optional)

Wavelengths are taken from ``nu`` (vacuum) and converted to air above 2000 A; the file's levels
(energy, g, metastable flag) form the level table and its line level numbers the lines' lower and
upper levels (full level identity), so partition functions and macro-atom blocks follow the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lumina_jax.atomic.data import N_STAGES, AtomicData, element_index, from_tables, vacuum_to_air
from lumina_jax.errors import DataFileError
from lumina_jax.params import ATOMIC_NUMBERS, ELEMENTS

C_A = 2.99792458e18


def _decode(a):
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(a).tolist()]


def _index(g, axis: str):
    """Row index of a fixed-format frame/series: list of level arrays (MultiIndex) or [array]."""
    if f"{axis}_label0" in g:
        out, i = [], 0
        while f"{axis}_label{i}" in g:
            lev = np.asarray(g[f"{axis}_level{i}"])
            lab = np.asarray(g[f"{axis}_label{i}"])
            out.append(lev[lab])
            i += 1
        return out
    return [np.asarray(g[axis])]


def read_frame(h5, key: str) -> tuple[list, dict]:
    """(index level arrays, {column: values}) of a pandas fixed-format frame or series."""
    if key not in h5:
        raise DataFileError(f"TARDIS atomic file lacks the table {key!r}")
    g = h5[key]
    if "values" in g and "block0_values" not in g:  # a Series
        return _index(g, "index"), {"values": np.asarray(g["values"])}
    cols = {}
    i = 0
    while f"block{i}_values" in g:
        vals = np.asarray(g[f"block{i}_values"])
        items = _decode(g[f"block{i}_items"]) if f"block{i}_items" in g else [f"block{i}_{k}" for k in range(vals.shape[1])]
        for k, name in enumerate(items):
            cols[name] = vals[:, k]
        i += 1
    return _index(g, "axis1"), cols


def read_tardis_h5(path: Path) -> tuple[AtomicData, dict]:
    """Read a TARDIS/carsus atomic HDF5 file into :class:`AtomicData` (model elements, ions I-IV)."""
    import h5py

    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataFileError(f"cannot open TARDIS atomic file {path}: {exc}") from None
    with h5:
        lev_idx, lev = read_frame(h5, "levels_data")
        lin_idx, lin = read_frame(h5, "lines_data")
        ion_idx, ion = read_frame(h5, "ionization_data")
        zeta_frame = read_frame(h5, "zeta_data") if "zeta_data" in h5 else None
        zeta_temps = np.asarray(h5["zeta_data"]["axis0"], float) if "zeta_data" in h5 else None
    if len(lev_idx) != 3 or len(lin_idx) < 4 or len(ion_idx) != 2:
        raise DataFileError(f"{path}: unexpected index layout of levels/lines/ionization tables")
    for need, cols in (("energy", lev), ("g", lev), ("metastable", lev), ("f_lu", lin)):
        if need not in cols:
            raise DataFileError(f"{path}: column {need!r} missing")
    n_el = len(ELEMENTS)
    # ionisation energies
    chi = np.full((n_el, N_STAGES - 1), np.nan)
    z_i, q_i = ion_idx[0].astype(int), ion_idx[1].astype(int)
    shift = 1 if q_i.min() >= 1 else 0
    vals = next(iter(ion.values()))
    for z, q, v in zip(z_i, q_i, vals):
        el = element_index(z)
        j = q - shift
        if el is not None and 0 <= j < N_STAGES - 1:
            chi[el, j] = v
    missing = [f"{ELEMENTS[e]} stage {j + 1}" for e in range(n_el) for j in range(N_STAGES - 1) if np.isnan(chi[e, j])]
    if missing:
        # high stages of light elements may be absent from small files: make them unreachable
        chi = np.where(np.isnan(chi), 1e3, chi)
    # level table: the file's levels of the model's ions, by (element, stage, energy); an ion the
    # file lacks gets one ground level of weight 1
    lz, lq, ll = (a.astype(int) for a in lev_idx)
    energy, g, meta = np.asarray(lev["energy"], float), np.asarray(lev["g"], float), np.asarray(lev["metastable"]).astype(float)
    levtab = {k: [] for k in ("el", "stage", "energy", "g", "meta", "origin")}
    index = {}  # (Z, ion, level_number) -> global level index
    offset = 0
    for el in range(n_el):
        zz = ATOMIC_NUMBERS[el]
        for st in range(N_STAGES):
            sel = np.where((lz == zz) & (lq == st))[0]
            if len(sel) == 0:
                e_, g_, m_, num = np.zeros(1), np.ones(1), np.ones(1), np.array([-1])
            else:
                o = np.argsort(energy[sel], kind="stable")
                sel = sel[o]
                e_, g_, m_, num = energy[sel], g[sel], meta[sel], ll[sel]
            for k, n in enumerate(num):
                index[(zz, st, int(n))] = offset + k
            for key, val in (("el", np.full(len(e_), el)), ("stage", np.full(len(e_), st)), ("energy", e_),
                             ("g", g_), ("meta", m_), ("origin", np.zeros(len(e_), int))):
                levtab[key].append(val)
            offset += len(e_)
    levtab = {k: np.concatenate(v) for k, v in levtab.items()}
    # lines
    z_l, q_l, lo_l, up_l = (a.astype(int) for a in lin_idx[:4])
    if "nu" in lin:
        wl = vacuum_to_air(C_A / np.asarray(lin["nu"], float))
    else:
        wl = np.asarray(lin["wavelength"], float)
    f_lu = np.asarray(lin["f_lu"], float)
    rows = []
    for k in range(len(z_l)):
        st = q_l[k]
        if st >= N_STAGES - 1:
            continue
        lo = index.get((z_l[k], st, lo_l[k]))
        up = index.get((z_l[k], st, up_l[k]))
        if lo is None or up is None:
            continue
        rows.append((wl[k], levtab["g"][lo] * f_lu[k], element_index(z_l[k]), st, lo, up))
    if not rows:
        raise DataFileError(f"{path}: no lines of the model's elements ({', '.join(ELEMENTS)})")
    a = np.asarray(rows)
    cols = {"wl": a[:, 0], "gf": a[:, 1], "el": a[:, 2].astype(int), "stage": a[:, 3].astype(int)}
    lower, upper = a[:, 4].astype(int), a[:, 5].astype(int)
    zeta = np.ones((n_el, N_STAGES, 2))
    zeta_t = np.array([1000.0, 100000.0])
    if zeta_frame is not None and zeta_temps is not None:
        (zz_, zq_), zcols = zeta_frame
        ztab = np.column_stack([zcols[c] for c in zcols])
        zeta = np.ones((n_el, N_STAGES, len(zeta_temps)))
        zeta_t = zeta_temps
        for z, q, row in zip(zz_.astype(int), zq_.astype(int), ztab):
            el = element_index(z)
            if el is not None and 0 <= q < N_STAGES:
                zeta[el, q] = row
    atomic = from_tables(levtab, cols, lower, upper, chi, zeta=zeta, zeta_t=zeta_t)
    prov = {"name": f"tardis:{path.name}", "sources": [str(path)], "levels_from": "file (metastable flags of the file)",
            "zeta": "file" if zeta_frame is not None else "1", "missing_ionisation_energies": missing,
            "wavelengths": "air above 2000 A (from nu)"}
    return atomic, prov
