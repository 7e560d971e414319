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

    @property
    def n_lines(self) -> int:
        return int(np.shape(self.wl)[0])

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


LINE_FIELDS = ("wl", "gf", "e_low", "e_up", "el", "stage", "meta", "source")


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


def assemble(lines: dict, levels: dict, chi: np.ndarray, *, zeta=None, zeta_t=None,
             t_grid=PF_T_GRID, wl_range=(500.0, 30000.0)) -> AtomicData:
    """Build :class:`AtomicData` from merged line columns and per-ion level lists.

    lines : dict of arrays wl (A), gf, e_low (eV), el, stage[, e_up, meta]
    levels : {(el, stage): Levels}
    chi : [n_el, N_STAGES-1] ionisation energies, eV
    """
    n_el = len(ELEMENTS)
    pf_meta = np.zeros((n_el, N_STAGES, len(t_grid)))
    pf_non = np.zeros_like(pf_meta)
    e_x = np.full((n_el, N_STAGES), np.inf)
    for e in range(n_el):
        for s in range(N_STAGES):
            lv = levels.get((e, s))
            pf_meta[e, s], pf_non[e, s] = partition_tables(lv, t_grid)
            if lv is not None:
                e_x[e, s] = lv.metastable_threshold()
    wl = np.asarray(lines["wl"], float)
    keep = (wl >= wl_range[0]) & (wl <= wl_range[1]) & (np.asarray(lines["gf"]) > 0) & (np.asarray(lines["stage"]) < N_STAGES - 1)
    cols = {k: np.asarray(v)[keep] for k, v in lines.items()}
    order = np.argsort(cols["wl"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    el = cols["el"].astype(np.int32)
    st = cols["stage"].astype(np.int32)
    e_low = cols["e_low"].astype(float)
    e_up = cols.get("e_up")
    if e_up is None:
        e_up = e_low + HC_EV_A / air_to_vacuum(cols["wl"])
    meta = cols.get("meta")
    if meta is None:
        meta = (e_low < e_x[el, st] - 1e-4).astype(float)
    if zeta is None:
        zeta_t = np.array([1000.0, 100000.0])
        zeta = np.ones((n_el, N_STAGES, 2))
    return AtomicData(
        chi=np.asarray(chi, float), mass=np.asarray(ATOMIC_MASSES, float), pf_t=np.asarray(t_grid, float),
        pf_meta=pf_meta, pf_nonmeta=pf_non, zeta_t=np.asarray(zeta_t, float), zeta=np.asarray(zeta, float),
        wl=cols["wl"].astype(float), gf=cols["gf"].astype(float), e_low=e_low, e_up=np.asarray(e_up, float),
        el=el, stage=st, meta=np.asarray(meta, float),
        source=np.asarray(cols.get("source", np.zeros(len(el))), np.int32),
    )


def air_to_vacuum(wl_air):
    """Air -> vacuum wavelength (A) above 2000 A (Morton 2000 / Ciddor refractive index)."""
    wl = np.asarray(wl_air, float)
    s2 = (1e4 / wl) ** 2
    n = 1 + 0.00008336624212083 + 0.02408926869968 / (130.1065924522 - s2) + 0.0001599740894897 / (38.92568793293 - s2)
    return np.where(wl > 2000.0, wl * n, wl)


def vacuum_to_air(wl_vac):
    """Vacuum -> air wavelength (A) above 2000 A (Morton 2000)."""
    wl = np.asarray(wl_vac, float)
    s2 = (1e4 / wl) ** 2
    n = 1 + 0.0000834254 + 0.02406147 / (130 - s2) + 0.00015998 / (38.9 - s2)
    return np.where(wl > 2000.0, wl / n, wl)


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
