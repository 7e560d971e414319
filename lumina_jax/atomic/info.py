"""Summaries of atomic data: lines per ion and coverage of the key SN Ia features."""

from __future__ import annotations

import numpy as np

from lumina_jax.atomic.data import AtomicData, element_index, ion_label
from lumina_jax.params import ELEMENTS

#: (label, element, stage, air wavelengths of the main components, E_low eV)
KEY_FEATURES = [
    ("Si II 6347/6371", "Si", 1, [6347.10, 6371.37], 8.12),
    ("Si II 5958/5979", "Si", 1, [5957.56, 5978.93], 10.07),
    ("Si II 4128/4131", "Si", 1, [4128.07, 4130.89], 9.84),
    ("S II 5454 (W)", "S", 1, [5453.86], 13.70),
    ("S II 5640 (W)", "S", 1, [5639.98, 5647.02], 14.07),
    ("Ca II H&K 3934/3968", "Ca", 1, [3933.66, 3968.47], 0.0),
    ("Ca II IR 8498/8542/8662", "Ca", 1, [8498.02, 8542.09, 8662.14], 1.69),
    ("Mg II 4481", "Mg", 1, [4481.13, 4481.33], 8.86),
    ("O I 7772-7775", "O", 0, [7771.94, 7774.17, 7775.39], 9.15),
    ("Fe II 4924/5018/5169", "Fe", 1, [4923.93, 5018.44, 5169.03], 2.89),
    ("Fe III 4420", "Fe", 2, [4419.60], 8.24),
    ("Fe III 5129/5156", "Fe", 2, [5127.39, 5156.11], 8.65),
    ("Si III 4553/4568/4575", "Si", 2, [4552.62, 4567.84, 4574.76], 19.02),
    ("C II 6578/6583", "C", 1, [6578.05, 6582.88], 14.45),
]
#: blanketing windows: lines of the ion with log gf - 0.504 E_low > -4 (about as strong per ion as Si II 6355)
WINDOWS = [
    ("Ti II 4300-4600", "Ti", 1, 4300, 4600),
    ("Cr II 4500-4900", "Cr", 1, 4500, 4900),
    ("Co II 3500-4600", "Co", 1, 3500, 4600),
    ("Ni II 3500-4500", "Ni", 1, 3500, 4500),
    ("Fe II 3000-10000", "Fe", 1, 3000, 10000),
    ("Fe III 3000-10000", "Fe", 2, 3000, 10000),
    ("Co III 3500-6000", "Co", 2, 3500, 6000),
]


def coverage(atomic: AtomicData) -> dict[str, str]:
    """{feature: 'yes' | 'part' | 'mult' | '-' (or a line count for blanketing windows)}.

    'yes': every component found within 1.5 A and 0.3 eV; 'part': some; 'mult': one line of the
    ion inside the multiplet span (+-15 A) with the right E_low (an LS multiplet).
    """
    wl, el, st, el_e = (np.asarray(atomic.wl), np.asarray(atomic.el), np.asarray(atomic.stage),
                        np.asarray(atomic.e_low))
    gf = np.asarray(atomic.gf)
    out = {}
    for label, sym, stage, comps, elow in KEY_FEATURES:
        sel = (el == element_index(sym)) & (st == stage)
        w, e = wl[sel], el_e[sel]
        hits = [bool(np.any((np.abs(w - c) < 1.5) & (np.abs(e - elow) < 0.3))) for c in comps]
        if all(hits):
            out[label] = "yes"
        elif any(hits):
            out[label] = "part"
        else:
            m = (w > min(comps) - 15) & (w < max(comps) + 15) & (np.abs(e - elow) < 0.3)
            out[label] = "mult" if m.any() else "-"
    for label, sym, stage, lo, hi in WINDOWS:
        sel = (el == element_index(sym)) & (st == stage) & (wl > lo) & (wl < hi)
        strong = np.log10(np.maximum(gf[sel], 1e-300)) - 0.504 * el_e[sel] > -4
        out[label] = str(int(strong.sum()))
    return out


def identity(atomic: AtomicData, weight=None) -> dict:
    """Level identity of the lines, per ion and in total.

    For each ion: levels (reference / derived), lines whose two levels are both reference levels
    (``matched``), that use a derived level with a g from a source (``derived``), or a derived
    level whose g had to be guessed (``g_guessed``; ``levels_g_rule``: derived levels whose g the
    selection rule fixed), and -- with ``weight`` [n_lines], e.g. each
    line's blocking ``sum_shells (1 - e^-tau)`` at a reference plasma state -- the fraction of the
    weight in each class.  ``full`` = matched + derived (energy and g of both levels from data).
    """
    from lumina_jax.atomic.levels import DERIVED_GUESSED, DERIVED_RULE, MATCHED, MISSING, REFERENCE, line_identity

    ident = line_identity(np.asarray(atomic.lev_origin), np.asarray(atomic.lower), np.asarray(atomic.upper))
    el, st = np.asarray(atomic.el), np.asarray(atomic.stage)
    lev_el, lev_st, origin = np.asarray(atomic.lev_el), np.asarray(atomic.lev_stage), np.asarray(atomic.lev_origin)
    w = None if weight is None else np.asarray(weight, float)

    def block(sel, lsel):
        n = int(sel.sum())
        out = {"levels": int(lsel.sum()), "levels_reference": int((lsel & (origin == REFERENCE)).sum()),
               "levels_g_rule": int((lsel & (origin == DERIVED_RULE)).sum()),
               "levels_g_guessed": int((lsel & (origin == DERIVED_GUESSED)).sum()), "lines": n}
        for name, k in (("matched", MATCHED), ("derived", 1), ("g_guessed", MISSING)):
            out[f"lines_{name}"] = int((sel & (ident == k)).sum())
        out["line_fraction_full"] = round((out["lines_matched"] + out["lines_derived"]) / n, 4) if n else None
        if w is not None:
            tot = w[sel].sum()
            for name, k in (("matched", MATCHED), ("derived", 1), ("g_guessed", MISSING)):
                out[f"opacity_{name}"] = round(float(w[sel & (ident == k)].sum() / tot), 4) if tot > 0 else None
            out["opacity_fraction_full"] = (round(float(w[sel & (ident != MISSING)].sum() / tot), 4)
                                            if tot > 0 else None)
            out["opacity_share"] = round(float(tot / w.sum()), 4) if w.sum() > 0 else None
        return out

    per_ion = {}
    for e in range(len(ELEMENTS)):
        for s in range(4):
            sel = (el == e) & (st == s)
            if sel.any():
                per_ion[ion_label(e, s)] = block(sel, (lev_el == e) & (lev_st == s))
    return {"total": block(np.ones(len(el), bool), np.ones(len(lev_el), bool)), "per_ion": per_ion}


def summary(atomic: AtomicData, provenance: dict | None = None, weight=None) -> dict:
    """JSON-able summary: totals, lines per ion, level identity, key-feature coverage, provenance."""
    wl = np.asarray(atomic.wl)
    return {
        "n_lines": atomic.n_lines,
        "n_levels": atomic.n_levels,
        "level_identity": identity(atomic, weight),
        "wavelength_range_A": [float(wl.min()), float(wl.max())] if len(wl) else None,
        "lines_per_ion": atomic.lines_per_ion(),
        "key_features": coverage(atomic),
        "fingerprint": atomic.fingerprint(),
        "provenance": provenance or {},
    }
