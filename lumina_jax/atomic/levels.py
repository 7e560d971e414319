"""Level identity of every line: match lines to reference (NIST) levels, derive the rest.

Each line arrives with its ion, lower-level energy ``e_low`` (eV), air wavelength ``wl`` (A) and,
where the source gives them, the statistical weights ``g_low`` / ``g_up`` and the upper energy
``e_up`` (NaN where unknown).  :func:`resolve_levels` gives every line a lower and an upper level
of one per-ion level table, in three steps:

1. **Ritz match** against the reference levels of the ion: among the reference levels within
   ``tol_low`` of ``e_low`` (and of ``g_low`` when known), take the one for which a reference
   level lies at ``E_l + h c / lambda_vac`` within ``TOL_PAIR`` eV (and of ``g_up`` when known);
   the transition energy, known to the wavelength's precision, fixes the pair even where the
   source quotes ``e_low`` to 0.01 eV only (linemake).
2. **Nearest level**: a level of a line with no Ritz pair is matched alone to the nearest
   reference level with the source's g (when known) within ``tol_low`` (lower level) or
   ``TOL_LEVEL`` eV (upper level, from the matched lower level's energy + h nu).
3. **Derived levels**: the remaining levels are placed at the source's energy (upper:
   ``E_l + h c / lambda_vac``) and merged within ``TOL_MERGE`` eV per ion; their weight g comes
   from the source (GES ``g_up``, Kurucz J, TLUSTY term weights), or from another line that
   reaches the same merged level with a known g.
4. **Selection rule** (:func:`infer_g_from_selection_rules`): a derived level still without a g
   whose lines join it to levels of known J can only have a J allowed by the electric-dipole rule
   (Delta J = 0, +-1, no 0 - 0) towards every one of them; where that leaves a single J, g = 2J + 1.
   Otherwise g is guessed equal to the partner level's (Delta J = 0) and the line's identity is
   counted as *missing*.

The identity of a line is ``MATCHED`` (both levels reference levels), ``DERIVED`` (a derived
level with a g from a source or the selection rule) or ``MISSING`` (a guessed g);
:func:`lumina_jax.atomic.info.identity` reports the counts and the opacity they carry.
"""

from __future__ import annotations

import numpy as np

from lumina_jax.atomic.air import air_to_vacuum

HC_EV_A = 12398.419843320026  # h c, eV A

TOL_PAIR = 5e-4  # eV: transition-energy tolerance of a Ritz match (0.2 A at 5000 A)
TOL_LEVEL = 1e-3  # eV: single-level match (GES/NIST energy scales agree to ~2e-4 eV)
TOL_MERGE = 1e-3  # eV: derived levels of one ion closer than this are one level
N_CANDIDATES = 8  # lower-level candidates examined per line

#: origin of a level: a reference level, derived with a g from a source, derived with the g the
#: selection rule leaves, derived with a guessed g
REFERENCE, DERIVED_G, DERIVED_RULE, DERIVED_GUESSED = 0, 1, 2, 3
ORIGIN_NAMES = ("reference", "derived", "derived, g from the selection rule", "derived, g guessed")
#: identity of a line
MATCHED, DERIVED, MISSING = 0, 1, 2


def _nearest(sorted_e, x):
    """Index of the nearest value of ``sorted_e`` to each ``x`` and the distance."""
    n = len(sorted_e)
    if n == 0:
        return np.zeros(len(x), int), np.full(len(x), np.inf)
    i = np.clip(np.searchsorted(sorted_e, x), 1, max(n - 1, 1)) if n > 1 else np.zeros(len(x), int)
    if n == 1:
        return i, np.abs(sorted_e[0] - x)
    left = np.abs(sorted_e[i - 1] - x) <= np.abs(sorted_e[i] - x)
    j = np.where(left, i - 1, i)
    return j, np.abs(sorted_e[j] - x)


def _g_ok(g_ref, g_src):
    """True where the source's g is unknown (NaN) or equals the reference g."""
    return np.isnan(g_src) | (np.abs(g_ref - g_src) < 0.5)


def _ritz(e_ref, g_ref, e_low, g_low, g_up, de_line, tol_low):
    """Best (lower, upper) reference pair per line, or -1 where none is within the tolerances."""
    n_l = len(e_low)
    lo = np.full(n_l, -1)
    up = np.full(n_l, -1)
    if len(e_ref) == 0 or n_l == 0:
        return lo, up
    start = np.searchsorted(e_ref, e_low - tol_low)
    best = np.full(n_l, np.inf)
    for k in range(N_CANDIDATES):
        c = start + k
        valid = c < len(e_ref)
        cc = np.minimum(c, len(e_ref) - 1)
        d_low = np.abs(e_ref[cc] - e_low)
        valid &= (d_low <= tol_low) & _g_ok(g_ref[cc], g_low)
        u, d_pair = _nearest(e_ref, e_ref[cc] + de_line)
        valid &= (d_pair <= TOL_PAIR) & _g_ok(g_ref[u], g_up) & (u != cc)
        cost = d_pair / TOL_PAIR + d_low / tol_low
        better = valid & (cost < best)
        best = np.where(better, cost, best)
        lo = np.where(better, cc, lo)
        up = np.where(better, u, up)
    return lo, up


def _single(e_ref, g_ref, e, g, tol):
    """Nearest reference level within ``tol`` (eV) whose g agrees with a known ``g``, else -1."""
    if len(e_ref) == 0:
        return np.full(len(e), -1)
    start = np.searchsorted(e_ref, e - tol)
    best = np.full(len(e), -1)
    best_d = np.full(len(e), np.inf)
    for k in range(N_CANDIDATES):
        c = np.minimum(start + k, len(e_ref) - 1)
        d = np.abs(e_ref[c] - e)
        ok = (start + k < len(e_ref)) & (d <= tol) & _g_ok(g_ref[c], g) & (d < best_d)
        best = np.where(ok, c, best)
        best_d = np.where(ok, d, best_d)
    return best


def resolve_ion(e_ref, g_ref, lines: dict, tol_low: np.ndarray):
    """Level identity of one ion's lines.

    e_ref, g_ref : [n_ref] reference level energies (eV, ascending) and weights
    lines : dict of [n] arrays e_low (eV), wl (air A), g_low, g_up, e_up (NaN if unknown)
    tol_low : [n] lower-energy tolerance of each line's source (eV)
    Returns (lower [n], upper [n]) indices into the ion's level table = the reference levels
    followed by the derived ones, and the derived levels as a dict of arrays energy, g (NaN where
    no source gives it), origin.
    """

    e_low = np.asarray(lines["e_low"], float)
    g_low = np.asarray(lines["g_low"], float)
    g_up = np.asarray(lines["g_up"], float)
    de_line = HC_EV_A / air_to_vacuum(np.asarray(lines["wl"], float))
    e_up_src = np.asarray(lines["e_up"], float)
    e_up_guess = np.where(np.isnan(e_up_src), e_low + de_line, e_up_src)
    lo, up = _ritz(e_ref, g_ref, e_low, g_low, g_up, de_line, tol_low)
    miss = lo < 0
    lo[miss] = _single(e_ref, g_ref, e_low[miss], g_low[miss], tol_low[miss])
    # upper alone: from the matched lower's reference energy where there is one
    base = np.where(lo >= 0, e_ref[np.maximum(lo, 0)] if len(e_ref) else e_low, e_low)
    e_up_alone = np.where(np.isnan(e_up_src), base + de_line, e_up_src)
    up[miss] = _single(e_ref, g_ref, e_up_alone[miss], g_up[miss], np.full(int(miss.sum()), TOL_LEVEL))
    # derived levels: (energy, g or NaN) of every unmatched lower / upper
    need_lo, need_up = lo < 0, up < 0
    cand_e = np.concatenate([e_low[need_lo], np.where(lo >= 0, e_up_alone, e_up_guess)[need_up]])
    cand_g = np.concatenate([g_low[need_lo], g_up[need_up]])
    n_ref = len(e_ref)
    if len(cand_e) == 0:
        return lo, up, {"energy": np.zeros(0), "g": np.zeros(0), "origin": np.zeros(0, int)}
    order = np.argsort(cand_e, kind="stable")
    es = cand_e[order]
    cluster_sorted = np.concatenate([[0], np.cumsum(np.diff(es) > TOL_MERGE)])
    cluster = np.empty_like(cluster_sorted)
    cluster[order] = cluster_sorted
    n_new = int(cluster_sorted[-1]) + 1
    energy = np.zeros(n_new)
    np.add.at(energy, cluster, cand_e)
    energy /= np.bincount(cluster, minlength=n_new)
    g = np.full(n_new, np.nan)
    known = ~np.isnan(cand_g)
    # the g of a merged level: the first known g among its lines
    first = np.unique(cluster[known], return_index=True)
    g[first[0]] = cand_g[known][first[1]]
    origin = np.where(np.isnan(g), DERIVED_GUESSED, DERIVED_G)
    n_lo = int(need_lo.sum())
    lo[need_lo] = n_ref + cluster[:n_lo]
    up[need_up] = n_ref + cluster[n_lo:]
    return lo, up, {"energy": energy, "g": g, "origin": origin.astype(int)}


def infer_g_from_selection_rules(g_level, origin, lower, upper, max_passes: int = 8):
    """Fix the g of derived levels (``origin == DERIVED_GUESSED``, g NaN) where the
    electric-dipole selection rule leaves one J: every line joining the level to a level of
    known J_k allows J in {J_k - 1, J_k, J_k + 1} (J >= 0; not J = 0 when J_k = 0), and the
    level's J must be allowed by all of them.  Passes repeat while newly fixed levels fix others.
    A level whose lines allow no common J (two levels merged into one) stays unknown.

    g_level, origin : [n_levels]; lower, upper : [n_lines] level indices.  Returns (g, origin)
    with ``g = 2J + 1`` and ``origin = DERIVED_RULE`` for the levels fixed here."""
    g = np.array(g_level, float)
    origin = np.array(origin, int)
    lower, upper = np.asarray(lower, np.int64), np.asarray(upper, np.int64)
    open_ = (origin == DERIVED_GUESSED) & np.isnan(g)
    a = np.concatenate([lower, upper])  # the level whose J is sought ...
    b = np.concatenate([upper, lower])  # ... and its partner on the same line
    for _ in range(max_passes):
        edge = open_[a] & ~np.isnan(g[b])
        if not edge.any():
            break
        two_j = np.round(g[b[edge]] - 1).astype(np.int64)  # 2 J of the partner (half-integers too)
        if two_j.max() > 60:
            raise ValueError("a level weight above 61 cannot be a J of these ions")
        bits = np.left_shift(np.uint64(1), two_j.astype(np.uint64))
        allowed = (np.left_shift(bits, np.uint64(2)) | np.right_shift(bits, np.uint64(2))
                   | np.where(two_j == 0, np.uint64(0), bits))  # 2J - 2, 2J + 2 (J >= 0), and 2J unless J = 0
        mask = np.full(len(g), np.iinfo(np.uint64).max, np.uint64)
        np.bitwise_and.at(mask, a[edge], allowed)
        lev = np.unique(a[edge])
        m = mask[lev]
        single = (m != 0) & ((m & (m - np.uint64(1))) == 0)
        if not single.any():
            break
        fixed = lev[single]
        g[fixed] = np.log2(m[single].astype(float)) + 1.0  # g = 2J + 1
        origin[fixed] = DERIVED_RULE
        open_[fixed] = False
    return g, origin


def infer_guessed_g(g_level, origin, lower, upper):
    """Fill the g of derived levels that no source gives: the partner level's g (Delta J = 0).

    Levels whose g is inferred this way keep ``origin == DERIVED_GUESSED``."""
    g = np.array(g_level, float)
    for _ in range(3):  # a chain of guessed levels settles in a few passes
        bad = np.isnan(g)
        if not bad.any():
            break
        for a, b in ((upper, lower), (lower, upper)):
            sel = bad[a] & ~np.isnan(g[b])
            g[a[sel]] = g[b[sel]]
    g[np.isnan(g)] = 2.0
    return g


def line_identity(origin_level, lower, upper):
    """MATCHED / DERIVED / MISSING per line from the origins of its two levels."""
    o = np.maximum(np.asarray(origin_level)[lower], np.asarray(origin_level)[upper])
    return np.where(o == REFERENCE, MATCHED, np.where(o == DERIVED_GUESSED, MISSING, DERIVED)).astype(np.int32)
