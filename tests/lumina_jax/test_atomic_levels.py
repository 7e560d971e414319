"""Level identity (lumina_jax.atomic.levels) and the level-resolved default atomic data."""

import numpy as np
import pytest

from lumina_jax.atomic.air import air_to_vacuum
from lumina_jax.atomic.data import (HC_EV_A, Levels, assemble, element_index, line_coefficients,
                                   vacuum_to_air)
from lumina_jax.atomic.levels import DERIVED_G, DERIVED_GUESSED, MATCHED, REFERENCE, line_identity, resolve_ion

NAN = np.nan


def _lines(e_low, de, g_low=NAN, g_up=NAN, e_up=NAN):
    n = len(e_low)
    full = lambda x: np.broadcast_to(np.asarray(x, float), (n,)).copy()  # noqa: E731
    return {"e_low": np.asarray(e_low, float), "wl": vacuum_to_air(HC_EV_A / np.asarray(de, float)),
            "g_low": full(g_low), "g_up": full(g_up), "e_up": full(e_up)}


def test_ritz_pair_resolves_a_coarse_lower_energy():
    # two lower levels 0.006 eV apart; the source quotes e_low = 1.003 (between them, 0.01 eV precision);
    # only the 1.006 eV level has a level at E_l + h nu = 4.006 eV above it
    e_ref = np.array([0.0, 1.000, 1.006, 4.006])
    g_ref = np.array([2.0, 4.0, 6.0, 8.0])
    lo, up, new = resolve_ion(e_ref, g_ref, _lines([1.003], [3.000]), np.array([0.01]))
    assert (lo[0], up[0]) == (2, 3) and len(new["energy"]) == 0
    # a known g_low that only the 1.000 eV level has: no Ritz pair; the lower level matches alone
    # (within the source's precision) and the upper one is derived at 1.000 + 3.000 eV
    lo, up, new = resolve_ion(e_ref, g_ref, _lines([1.003], [3.000], g_low=4.0), np.array([0.01]))
    assert lo[0] == 1 and up[0] == 4
    np.testing.assert_allclose(new["energy"], [4.000], atol=1e-9)


def test_unknown_upper_levels_are_derived_merged_and_take_a_known_g():
    e_ref = np.array([0.0, 0.5])
    g_ref = np.array([1.0, 3.0])
    # two lines into the same unknown level at 3.0 eV (from 0 and 0.5 eV), one quoting g_up = 5;
    # a third into an unknown level at 3.5 eV with no g
    lines = _lines([0.0, 0.5, 0.0], [3.0, 2.5, 3.5], g_up=[5.0, NAN, NAN])
    lo, up, new = resolve_ion(e_ref, g_ref, lines, np.full(3, 1e-3))
    assert list(lo) == [0, 1, 0]
    assert up[0] == up[1] == 2 and up[2] == 3  # reference levels first, then the derived ones
    np.testing.assert_allclose(new["energy"], [3.0, 3.5], atol=1e-9)
    assert new["g"][0] == 5.0 and np.isnan(new["g"][1])
    assert list(new["origin"]) == [DERIVED_G, DERIVED_GUESSED]
    origin = np.concatenate([[REFERENCE, REFERENCE], new["origin"]])
    assert list(line_identity(origin, lo, up)) == [1, 1, 2]


def test_assemble_gives_a_consistent_level_table_and_guessed_g_from_the_partner():
    lv = Levels(np.array([0.0, 1.0]), np.array([2.0, 4.0]), np.array([0, 1]))
    lines = {"wl": vacuum_to_air(HC_EV_A / np.array([1.0, 2.5])), "gf": np.array([0.5, 0.1]),
             "e_low": np.array([0.0, 1.0]), "el": np.array([3, 3]), "stage": np.array([1, 1])}
    a = assemble(lines, {(3, 1): lv}, np.ones((11, 4)))
    si = (a.lev_el == 3) & (a.lev_stage == 1)
    np.testing.assert_allclose(a.lev_energy[si], [0.0, 1.0, 3.5], atol=1e-9)
    assert list(a.lev_origin[si]) == [REFERENCE, REFERENCE, DERIVED_GUESSED]
    assert a.lev_g[si][2] == 4.0  # Delta J = 0 guess: the lower level's g
    # every other ion has its ground level (weight 1) only
    assert a.n_levels == 3 + (11 * 5 - 1)
    assert list(line_identity(a.lev_origin, a.lower, a.upper)) == [2, MATCHED]  # sorted by wavelength


@pytest.fixture(scope="module")
def default_atomic(tmp_path_factory):
    import os

    from lumina_jax.atomic.build import build_composite

    with pytest.MonkeyPatch.context() as mp:  # the cache folder of this module only
        if "LUMINA_JAX_CACHE" not in os.environ:
            mp.setenv("LUMINA_JAX_CACHE", str(tmp_path_factory.mktemp("cache")))
        atomic, _ = build_composite()
    return atomic


def test_default_data_coefficients_are_consistent(default_atomic):
    a = default_atomic
    c = line_coefficients(a)
    g_l, g_u = a.lev_g[a.lower], a.lev_g[a.upper]
    lam = air_to_vacuum(a.wl)
    # A_ul = 6.670e15 gf / (g_u lambda^2[A]) (Lucy/TARDIS numerical form), f g = gf, Einstein relations
    np.testing.assert_allclose(c["A_ul"], 6.6702e15 * a.gf / (g_u * lam**2), rtol=2e-4)
    np.testing.assert_allclose(c["f_lu"] * g_l, a.gf, rtol=1e-12)
    np.testing.assert_allclose(c["f_ul"] * g_u, a.gf, rtol=1e-12)
    np.testing.assert_allclose(c["B_ul"] * g_u, c["B_lu"] * g_l, rtol=1e-12)
    h, cc = 6.62607015e-27, 2.99792458e10
    np.testing.assert_allclose(c["A_ul"], 2 * h * c["nu"] ** 3 / cc**2 * c["B_ul"], rtol=1e-10)
    assert np.all(np.isfinite(a.lev_g)) and np.all(a.lev_g >= 1)


def test_default_data_levels_are_ordered_and_lines_fit_them(default_atomic):
    a = default_atomic
    key = a.lev_el.astype(np.int64) * 100 + a.lev_stage
    assert np.all(np.diff(key) >= 0)
    same = np.diff(key) == 0
    assert np.all(np.diff(a.lev_energy)[same] >= 0)
    starts = np.concatenate([[0], np.flatnonzero(~same) + 1])
    np.testing.assert_allclose(a.lev_energy[starts], 0.0, atol=1e-12)  # every ion starts at its ground level
    assert len(starts) == 11 * 5  # every ion I-V has levels
    assert np.all(a.lev_el[a.lower] == a.el) and np.all(a.lev_stage[a.upper] == a.stage)
    assert np.all(a.lev_energy[a.upper] > a.lev_energy[a.lower])
    # matched lines: the level difference is the photon energy (Ritz) to the match tolerances
    ident = line_identity(a.lev_origin, a.lower, a.upper)
    de = a.lev_energy[a.upper] - a.lev_energy[a.lower]
    hnu = HC_EV_A / air_to_vacuum(a.wl)
    m = ident == MATCHED
    assert np.median(np.abs(de - hnu)[m]) < 1e-3
    # the partition function includes the derived levels
    fe2 = (a.lev_el == element_index("Fe")) & (a.lev_stage == 1)
    assert fe2.sum() > 1027 and np.sum(a.lev_origin[fe2] == REFERENCE) == 1027


def _rule(g_known, edges):
    """Levels 0..k-1 of known g, then unknown derived levels; ``edges`` = (lower, upper) pairs."""
    from lumina_jax.atomic.levels import DERIVED_GUESSED, infer_g_from_selection_rules

    n_unknown = 1 + max(max(e) for e in edges) - len(g_known)
    g = np.concatenate([np.asarray(g_known, float), np.full(n_unknown, np.nan)])
    origin = np.concatenate([np.zeros(len(g_known), int), np.full(n_unknown, DERIVED_GUESSED)])
    lo, up = (np.array(x) for x in zip(*edges))
    return infer_g_from_selection_rules(g, origin, lo, up)


def test_selection_rule_fixes_g_where_one_j_is_left():
    from lumina_jax.atomic.levels import DERIVED_GUESSED, DERIVED_RULE

    # J = 1 and J = 3 partners: Delta J <= 1 towards both leaves J = 2 only
    g, origin = _rule([3.0, 7.0], [(0, 2), (1, 2)])
    assert g[2] == 5.0 and origin[2] == DERIVED_RULE
    # half-integer J (odd-electron ions): J = 1/2 and 5/2 leave J = 3/2
    g, _ = _rule([2.0, 6.0], [(0, 2), (1, 2)])
    assert g[2] == 4.0
    # a J = 0 partner alone: 0 - 0 is forbidden, so J = 1
    g, origin = _rule([1.0], [(0, 1)])
    assert g[1] == 3.0 and origin[1] == DERIVED_RULE
    # one partner of J = 2: J = 1, 2 or 3 -- not fixed, left to the guess
    g, origin = _rule([5.0], [(0, 1)])
    assert np.isnan(g[1]) and origin[1] == DERIVED_GUESSED
    # J = 0 and J = 3 partners allow no common J (two levels merged into one): not fixed
    g, origin = _rule([1.0, 7.0], [(0, 2), (1, 2)])
    assert np.isnan(g[2]) and origin[2] == DERIVED_GUESSED
    # a chain: level 3 is fixed (J = 2) by levels 0 and 1, then fixes level 4 with level 2 (J = 4)
    g, origin = _rule([3.0, 7.0, 9.0], [(0, 3), (1, 3), (3, 4), (2, 4)])
    assert g[3] == 5.0 and g[4] == 7.0 and list(origin[3:]) == [DERIVED_RULE, DERIVED_RULE]


def test_selection_rule_levels_count_as_full_identity():
    from lumina_jax.atomic.levels import DERIVED, DERIVED_GUESSED, DERIVED_RULE, MISSING

    origin = np.array([REFERENCE, DERIVED_RULE, DERIVED_GUESSED])
    assert list(line_identity(origin, np.array([0, 0]), np.array([1, 2]))) == [DERIVED, MISSING]
