"""The atomic-data pytree used by the synthesizer, and helpers to assemble it.

:class:`AtomicData` is a ``NamedTuple`` of arrays (a JAX pytree, pluggable: any source that
fills the same arrays works).  Ion stages are indexed ``0..N_STAGES-1`` = I..V; ions I-IV carry
lines, stage V closes the ionisation ladder.  Elements are always
:data:`lumina_jax.params.ELEMENTS` in that order.

Partition functions are tabulated on a log-temperature grid, split into the metastable and the
non-metastable part so that the dilute-LTE partition function is
``Z(T, W) = U_meta(T) + W * U_nonmeta(T)`` (TARDIS ``dilute-lte``; Lucy 1999).

A level is *metastable* when no level of opposite parity lies below it (it has no E1 decay):
for each ion, every level below the lowest level whose parity differs from the ground level's is
metastable, every level above it is not (an E1 route down exists).  This parity rule is applied to
the NIST level lists and, through the lower-level energy, to every line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import NamedTuple

import numpy as np

from lumina_jax.atomic.air import air_to_vacuum, vacuum_to_air  # noqa: F401 (re-exported: readers and tests use it)
from lumina_jax.params import ATOMIC_NUMBERS, ELEMENTS

N_STAGES = 5  # I, II, III, IV, V
ROMAN = ("I", "II", "III", "IV", "V", "VI")
K_EV = 8.617333262e-5  # Boltzmann constant, eV/K
HC_EV_A = 12398.419843320026  # h c in eV Angstrom
HC_EV_CM = 1.0 / 8065.54429  # eV per cm^-1

#: atomic masses (u) of ELEMENTS
ATOMIC_MASSES = (12.011, 15.999, 24.305, 28.085, 32.06, 40.078, 47.867, 51.996, 55.845, 58.933, 58.693)

#: temperature grid of the partition-function tables (K)
PF_T_GRID = np.geomspace(1500.0, 60000.0, 121)

_SYMBOL_INDEX = {e: i for i, e in enumerate(ELEMENTS)}
_Z_INDEX = {z: i for i, z in enumerate(ATOMIC_NUMBERS)}


def element_index(symbol_or_z) -> int | None:
    """Index into ELEMENTS for a symbol ('Fe') or atomic number (26); None if not modelled."""
    if isinstance(symbol_or_z, str):
        return _SYMBOL_INDEX.get(symbol_or_z.capitalize())
    return _Z_INDEX.get(int(symbol_or_z))


def ion_label(el: int, stage: int) -> str:
    return f"{ELEMENTS[el]} {ROMAN[stage]}"


class AtomicData(NamedTuple):
    """Atomic data as arrays (float64 unless noted).

    chi : [n_el, N_STAGES-1] ionisation energy of stage j -> j+1, eV
    mass : [n_el] atomic mass, u
    pf_t : [n_T] temperature grid, K
    pf_meta, pf_nonmeta : [n_el, N_STAGES, n_T] partition-function parts (see module doc)
    zeta_t : [n_zT] temperature grid of zeta, K
    zeta : [n_el, N_STAGES, n_zT] recombination-to-ground fraction of stage j+1 -> j (1 if unknown)
    wl : [n_lines] line wavelength, Angstrom (air above 2000 A), sorted ascending
    gf : [n_lines] g_lower * f_lu
    e_low, e_up : [n_lines] lower / upper level energy above the ion ground, eV
    el, stage : [n_lines] int32 element index and ion stage (0 = neutral)
    meta : [n_lines] 1.0 if the lower level is metastable else 0.0
    source : [n_lines] int32 index into the provenance's ``sources`` list
    lower, upper : [n_lines] int32 index of the line's lower / upper level in the level table
    lev_el, lev_stage : [n_levels] int32 element index and ion stage of each level
    lev_energy : [n_levels] energy above the ion's ground level, eV (ascending within an ion)
    lev_g : [n_levels] statistical weight
    lev_meta : [n_levels] 1.0 if metastable else 0.0
    lev_origin : [n_levels] int32 REFERENCE / DERIVED_G / DERIVED_RULE / DERIVED_GUESSED of
        :mod:`lumina_jax.atomic.levels`

    Levels are sorted by (element, stage, energy); every ion I-V has at least its ground level.
    ``e_low``, ``e_up`` and ``meta`` repeat the level table's values for the lines' levels.
    """

    chi: np.ndarray
    mass: np.ndarray
    pf_t: np.ndarray
    pf_meta: np.ndarray
    pf_nonmeta: np.ndarray
    zeta_t: np.ndarray
    zeta: np.ndarray
    wl: np.ndarray
    gf: np.ndarray
    e_low: np.ndarray
    e_up: np.ndarray
    el: np.ndarray
    stage: np.ndarray
    meta: np.ndarray
    source: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    lev_el: np.ndarray
    lev_stage: np.ndarray
    lev_energy: np.ndarray
    lev_g: np.ndarray
    lev_meta: np.ndarray
    lev_origin: np.ndarray

    @property
    def n_lines(self) -> int:
        return int(np.shape(self.wl)[0])

    @property
    def n_levels(self) -> int:
        return int(np.shape(self.lev_energy)[0])

    def select(self, mask) -> "AtomicData":
        """Keep the lines where ``mask`` is true (ion data unchanged)."""
        mask = np.asarray(mask, dtype=bool)
        return self._replace(**{f: np.asarray(getattr(self, f))[mask] for f in LINE_FIELDS})

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for f in self._fields:
            a = np.ascontiguousarray(np.asarray(getattr(self, f)))
            h.update(f.encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]

    def lines_per_ion(self) -> dict[str, int]:
        out = {}
        el, st = np.asarray(self.el), np.asarray(self.stage)
        for e in range(len(ELEMENTS)):
            for s in range(N_STAGES):
                n = int(np.sum((el == e) & (st == s)))
                if n:
                    out[ion_label(e, s)] = n
        return out


LINE_FIELDS = ("wl", "gf", "e_low", "e_up", "el", "stage", "meta", "source", "lower", "upper")


@dataclasses.dataclass
class Levels:
    """One ion's level list: energies (eV above ground), statistical weights, parity (0 even, 1 odd, -1 unknown)."""

    energy: np.ndarray
    g: np.ndarray
    parity: np.ndarray

    def metastable_threshold(self) -> float:
        """Energy (eV) of the lowest level whose parity differs from the ground level's (inf if none known)."""
        if len(self.energy) == 0:
            return np.inf
        order = np.argsort(self.energy)
        e, p = self.energy[order], self.parity[order]
        p0 = p[0]
        if p0 < 0:
            return np.inf
        other = (p >= 0) & (p != p0)
        return float(e[other].min()) if other.any() else np.inf


def partition_tables(levels: Levels | None, t_grid=PF_T_GRID, ground_g: float = 1.0):
    """(U_meta[n_T], U_nonmeta[n_T]) from a level list; a single level of weight ``ground_g`` if None."""
    if levels is None or len(levels.energy) == 0:
        return np.full(len(t_grid), float(ground_g)), np.zeros(len(t_grid))
    e_x = levels.metastable_threshold()
    boltz = levels.g[None, :] * np.exp(-levels.energy[None, :] / (K_EV * t_grid[:, None]))
    meta = levels.energy < e_x
    return boltz[:, meta].sum(1), boltz[:, ~meta].sum(1)


def _ion_levels(levels: dict, el: int, stage: int):
    """Reference levels of one ion as arrays (energy ascending); one level of weight 1 if none."""
    lv = levels.get((el, stage))
    if lv is None or len(lv.energy) == 0:
        return np.zeros(1), np.ones(1), np.zeros(1, int) - 1
    o = np.argsort(lv.energy, kind="stable")
    return np.asarray(lv.energy, float)[o], np.asarray(lv.g, float)[o], np.asarray(lv.parity, int)[o]


def assemble(lines: dict, levels: dict, chi: np.ndarray, *, zeta=None, zeta_t=None,
             t_grid=PF_T_GRID, wl_range=(500.0, 30000.0)) -> AtomicData:
    """Build the level-resolved :class:`AtomicData` from merged line columns and reference levels.

    lines : dict of arrays wl (air A), gf, e_low (eV), el, stage[, source, and where a source gives
        them g_low, g_up, e_up (NaN = unknown), tol_low (eV, precision of e_low; default TOL_LEVEL)]
    levels : {(el, stage): Levels} reference (NIST) level lists
    chi : [n_el, N_STAGES-1] ionisation energies, eV

    Every line gets a lower and an upper level (:func:`lumina_jax.atomic.levels.resolve_ion`);
    derived levels join the reference levels of their ion, so the partition functions are sums
    over the whole level table.  A level is metastable when it lies below the first level of the
    ion's opposite parity (the parity rule of the module doc; derived levels by their energy).
    """
    from lumina_jax.atomic import levels as lvmod

    n_el = len(ELEMENTS)
    wl = np.asarray(lines["wl"], float)
    keep = ((wl >= wl_range[0]) & (wl <= wl_range[1]) & (np.asarray(lines["gf"]) > 0)
            & (np.asarray(lines["stage"]) < N_STAGES - 1))
    n_all = len(wl)
    nan = np.full(n_all, np.nan)
    cols = {k: np.asarray(lines.get(k, nan), float)[keep] for k in ("wl", "gf", "e_low", "g_low", "g_up", "e_up")}
    cols["tol_low"] = np.asarray(lines.get("tol_low", np.full(n_all, lvmod.TOL_LEVEL)), float)[keep]
    cols["el"] = np.asarray(lines["el"]).astype(np.int32)[keep]
    cols["stage"] = np.asarray(lines["stage"]).astype(np.int32)[keep]
    cols["source"] = np.asarray(lines.get("source", np.zeros(n_all)), np.int32)[keep]
    lower = np.zeros(len(cols["wl"]), np.int64)
    upper = np.zeros_like(lower)
    lev = {k: [] for k in ("el", "stage", "energy", "g", "meta", "origin")}
    offset = 0
    for e in range(n_el):
        for s in range(N_STAGES):
            e_ref, g_ref, par = _ion_levels(levels, e, s)
            e_x = Levels(e_ref, g_ref, par).metastable_threshold()
            sel = np.where((cols["el"] == e) & (cols["stage"] == s))[0]
            sub = {k: cols[k][sel] for k in ("e_low", "wl", "g_low", "g_up", "e_up")}
            lo, up, new = lvmod.resolve_ion(e_ref, g_ref, sub, cols["tol_low"][sel])
            energy = np.concatenate([e_ref, new["energy"]])
            g = np.concatenate([g_ref, new["g"]])
            origin = np.concatenate([np.zeros(len(e_ref), int), new["origin"]])
            order = np.argsort(energy, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            lower[sel], upper[sel] = offset + rank[lo], offset + rank[up]
            energy, g, origin = energy[order], g[order], origin[order]
            lev["el"].append(np.full(len(energy), e))
            lev["stage"].append(np.full(len(energy), s))
            lev["energy"].append(energy)
            lev["g"].append(g)
            lev["meta"].append((energy < e_x - 1e-4).astype(float))
            lev["origin"].append(origin)
            offset += len(energy)
    lev = {k: np.concatenate(v) for k, v in lev.items()}
    lev["g"], lev["origin"] = lvmod.infer_g_from_selection_rules(lev["g"], lev["origin"], lower, upper)
    lev["g"] = lvmod.infer_guessed_g(lev["g"], lev["origin"], lower, upper)
    return from_tables(lev, cols, lower, upper, chi, zeta=zeta, zeta_t=zeta_t, t_grid=t_grid)


def from_tables(lev: dict, cols: dict, lower, upper, chi, *, zeta=None, zeta_t=None, t_grid=PF_T_GRID) -> AtomicData:
    """:class:`AtomicData` from a level table and lines that already carry level indices.

    lev : dict of [n_levels] arrays el, stage, energy (eV), g, meta (0/1), origin, sorted by
        (el, stage, energy) with every ion's ground level first
    cols : dict of [n_lines] arrays wl (air A), gf, el, stage[, source]
    lower, upper : [n_lines] level indices.  Partition functions are the sums over the level table
    (metastable / non-metastable parts); lines with lower == upper are dropped; lines are sorted by wl.
    """
    n_el = len(ELEMENTS)
    lower, upper = np.asarray(lower, np.int64), np.asarray(upper, np.int64)
    cols = {k: np.asarray(v) for k, v in cols.items()}
    cols.setdefault("source", np.zeros(len(lower), np.int32))
    ok = lower != upper
    cols = {k: v[ok] for k, v in cols.items()}
    lower, upper = lower[ok], upper[ok]
    order = np.argsort(cols["wl"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    lower, upper = lower[order], upper[order]
    # partition functions: sums over the level table, metastable and non-metastable parts
    pf_meta = np.zeros((n_el, N_STAGES, len(t_grid)))
    pf_non = np.zeros_like(pf_meta)
    energy, g, meta = (np.asarray(lev[k], float) for k in ("energy", "g", "meta"))
    boltz = g[None, :] * np.exp(-energy[None, :] / (K_EV * np.asarray(t_grid)[:, None]))
    ion = np.asarray(lev["el"]) * N_STAGES + np.asarray(lev["stage"])
    for part, m in ((pf_meta, meta > 0), (pf_non, meta == 0)):
        flat = np.stack([np.bincount(ion[m], weights=boltz[t, m], minlength=n_el * N_STAGES)
                         for t in range(len(t_grid))])
        part[:] = flat.T.reshape(n_el, N_STAGES, len(t_grid))
    if zeta is None:
        zeta_t = np.array([1000.0, 100000.0])
        zeta = np.ones((n_el, N_STAGES, 2))
    return AtomicData(
        chi=np.asarray(chi, float), mass=np.asarray(ATOMIC_MASSES, float), pf_t=np.asarray(t_grid, float),
        pf_meta=pf_meta, pf_nonmeta=pf_non, zeta_t=np.asarray(zeta_t, float), zeta=np.asarray(zeta, float),
        wl=cols["wl"].astype(float), gf=cols["gf"].astype(float), e_low=energy[lower], e_up=energy[upper],
        el=cols["el"].astype(np.int32), stage=cols["stage"].astype(np.int32), meta=meta[lower],
        source=cols["source"].astype(np.int32), lower=lower.astype(np.int32), upper=upper.astype(np.int32),
        lev_el=np.asarray(lev["el"], np.int32), lev_stage=np.asarray(lev["stage"], np.int32), lev_energy=energy,
        lev_g=g, lev_meta=meta, lev_origin=np.asarray(lev["origin"], np.int32),
    )


C_CGS = 2.99792458e10  # cm/s
H_CGS = 6.62607015e-27  # erg s
#: 8 pi^2 e^2 / (m_e c^3) in cgs: A_ul = A_CONST nu^2 gf / g_u
A_CONST = 8.0 * np.pi**2 * (4.80320471e-10) ** 2 / (9.1093837015e-28 * C_CGS**3)
#: 4 pi^2 e^2 / (m_e c): B_lu = B_CONST f_lu / (h nu) (mean-intensity convention, TARDIS/LUMINA)
B_CONST = 4.0 * np.pi**2 * (4.80320471e-10) ** 2 / (9.1093837015e-28 * C_CGS)


def line_coefficients(atomic: AtomicData) -> dict:
    """Radiative coefficients of every line from gf and the levels' g (cgs).

    nu [Hz] from the vacuum wavelength; f_lu = gf / g_l; f_ul = gf / g_u;
    A_ul = 8 pi^2 e^2 nu^2 gf / (m_e c^3 g_u) [s^-1]; B_lu = 4 pi^2 e^2 f_lu / (m_e c h nu);
    B_ul = B_lu g_l / g_u (Einstein B in the mean-intensity convention of TARDIS and LUMINA,
    so that A_ul = (2 h nu^3 / c^2) B_ul).
    """
    wl_vac = air_to_vacuum(np.asarray(atomic.wl))
    nu = C_CGS / (wl_vac * 1e-8)
    gf = np.asarray(atomic.gf)
    g_l = np.asarray(atomic.lev_g)[np.asarray(atomic.lower)]
    g_u = np.asarray(atomic.lev_g)[np.asarray(atomic.upper)]
    f_lu = gf / g_l
    b_lu = B_CONST * f_lu / (H_CGS * nu)
    return {"nu": nu, "wl_vac": wl_vac, "f_lu": f_lu, "f_ul": gf / g_u, "A_ul": A_CONST * nu**2 * gf / g_u,
            "B_lu": b_lu, "B_ul": b_lu * g_l / g_u}


# ------------------------------------------------------------------------------ storage
def save_npz(path, atomic: AtomicData, provenance: dict) -> None:
    """Write atomic data + provenance (JSON string) to a compressed .npz file."""
    arrays = {f: np.asarray(getattr(atomic, f)) for f in atomic._fields}
    arrays["provenance_json"] = np.frombuffer(json.dumps(provenance).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


def load_npz(path) -> tuple[AtomicData, dict]:
    from lumina_jax.errors import DataFileError

    try:
        with np.load(path) as z:
            data = AtomicData(**{f: z[f] for f in AtomicData._fields})
            prov = json.loads(bytes(z["provenance_json"]).decode()) if "provenance_json" in z else {}
    except (OSError, KeyError, ValueError) as exc:
        raise DataFileError(f"cannot read atomic data {path}: {exc}; rebuild it with `lumina-jax atomic build`") from None
    return data, prov
