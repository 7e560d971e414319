import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from lumina_jax.errors import ParameterError, UserError
from lumina_jax.params import (ParameterSpace, label, load_space, next_box_hits, relaxed_ranges, transfer_best,
                               union_ranges)

STAGE1_NAMES = [
    "log_L", "v_inner", "log_rho_0", "density_exp", "T_e_ratio", "v_core", "v_wall", "X_Fe_core",
    "X_Si_wall", "v_break", "density_exp_outer", "t_exp", "X_Fe_wall", "X_Ni", "X_Fe_outer",
]


def test_dimensions_and_names():
    s1, s2, s3 = load_space(1), load_space(2), load_space(3)
    assert list(s1.names) == STAGE1_NAMES
    assert (s1.dim, s2.dim, s3.dim) == (15, 63, 135)
    assert s2.names[:15] == s1.names and s3.names[:15] == s1.names
    # stage-2 species order and ranges of the original pipeline
    assert s2.names[15:23] == tuple(f"X_{sp}_z0" for sp in ("Fe", "Si", "S", "Ca", "Ni", "Mg", "Ti", "Cr"))
    i = s2.index("X_Ni_z5")
    assert (s2.lows[i], s2.highs[i]) == (0.001, 0.40)
    assert s3.names[-1] == "X_Cr_z14"
    assert load_space(3, parametrisation="knots", n_knots=4).dim == 15 + 8 * 4
    assert load_space(3, parametrisation="knots", n_knots=2).dim == 15 + 8 * 2
    for bad in (0, 1, -3, 16, 2.5):  # 0 used to become the config's 4, -3 a 15-D space
        with pytest.raises(UserError, match="n_knots must be an integer from 2 to the 15"):
            load_space(3, parametrisation="knots", n_knots=bad)


def test_stage1_prior_ranges_match_original():
    s = load_space(1)
    expected = {"log_L": (42.5, 43.5), "v_inner": (7000, 15000), "log_rho_0": (-14.0, -12.3),
                "density_exp": (-10, -4), "t_exp": (10, 28), "X_Ni": (0.005, 0.25), "X_Fe_outer": (0.001, 0.15)}
    for n, (lo, hi) in expected.items():
        i = s.index(n)
        assert (s.lows[i], s.highs[i]) == (lo, hi)


def test_relaxed_ranges_seed_example():
    s = relaxed_ranges({"log_L": 43.10, "v_inner": 11500.0}, load_space(1))
    assert s.lows[0] == pytest.approx(43.00) and s.highs[0] == pytest.approx(43.20)
    assert s.lows[1] == pytest.approx(10350.0) and s.highs[1] == pytest.approx(12650.0)
    # parameters absent from best keep the full prior
    assert (s.lows[2], s.highs[2]) == (s.prior_lows[2], s.prior_highs[2])


def test_relaxed_ranges_clip_to_prior_and_chain_into_stage2():
    s1 = load_space(1)
    best = s1.to_dict(s1.from_unit(np.full(15, 0.5)))
    best["log_L"] = 42.52  # near the lower edge: clipped
    s2 = relaxed_ranges(best, load_space(2))
    i = s2.index("log_L")
    assert s2.lows[i] == 42.5 and s2.highs[i] == pytest.approx(42.62)
    j = s2.index("X_Fe_z3")  # new in stage 2: full prior
    assert (s2.lows[j], s2.highs[j]) == (0.001, 0.85)


@given(u=st.lists(st.floats(0, 1), min_size=63, max_size=63), margin=st.floats(0.01, 0.5))
def test_relaxed_range_contains_best_and_lies_in_prior(u, margin):
    space = load_space(2)
    best = space.from_unit(np.asarray(u))
    r = relaxed_ranges(best, space, margin=margin)
    assert np.all(r.lower <= best + 1e-9) and np.all(best <= r.upper + 1e-9)
    assert np.all(r.lower >= np.asarray(space.prior_lows)) and np.all(r.upper <= np.asarray(space.prior_highs))
    assert np.all(r.lower < r.upper)


def test_unit_transform_roundtrip():
    s = load_space(3)
    u = np.random.default_rng(0).random((5, s.dim))
    np.testing.assert_allclose(s.to_unit(s.from_unit(u)), u, atol=1e-12)


def test_validation_messages():
    s = load_space(1)
    theta = s.from_unit(np.full(15, 0.5))
    with pytest.raises(ParameterError, match="unknown parameter"):
        s.from_dict({**s.to_dict(theta), "bogus": 1.0})
    d = s.to_dict(theta)
    del d["t_exp"]
    with pytest.raises(ParameterError, match="missing parameter.*t_exp"):
        s.from_dict(d)
    bad = theta.copy()
    bad[s.index("v_inner")] = 20000
    with pytest.raises(ParameterError, match="v_inner = 20000 is outside"):
        s.check(bad)
    bad = theta.copy()
    bad[0] = np.nan
    with pytest.raises(ParameterError, match="non-finite"):
        s.check(bad)
    bad = theta.copy()
    bad[s.index("v_core")], bad[s.index("v_wall")] = 16000, 13000
    with pytest.raises(ParameterError, match="v_core = 16000 must be below v_wall"):
        s.check(bad)
    bad = theta.copy()
    bad[s.index("v_inner")], bad[s.index("v_break")] = 14000, 12000
    with pytest.raises(ParameterError, match="v_break .* outside the ejecta"):
        s.check(bad)
    with pytest.raises(ParameterError, match="expects 15 parameters"):
        s.check(theta[:3])


def test_budget_overflow_is_reported():
    s = load_space(2)
    theta = s.from_unit(np.full(s.dim, 0.9))
    from lumina_jax.ejecta import check_parameters

    assert s.check(theta) is None
    warnings = check_parameters(theta, s)
    assert warnings and "renormalised" in warnings[0]


def test_json_roundtrip_and_fingerprint():
    s = relaxed_ranges({"log_L": 43.1}, load_space(2))
    s2 = ParameterSpace.from_json(s.to_json())
    assert s2 == s and s2.fingerprint() == s.fingerprint()
    assert s.fingerprint() != load_space(2).fingerprint()
    assert hash(s) == hash(s2)  # usable as a jit static argument


def test_bad_config_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("stage: 1\nparameters:\n  - {name: a, low: 2, high: 1, kind: log}\n")
    with pytest.raises(UserError, match="low 2.0 must be < high 1.0"):
        load_space(p)
    p.write_text("stage: [1\n")
    with pytest.raises(UserError, match="malformed YAML"):
        load_space(p)
    with pytest.raises(UserError, match="stage must be 1, 2 or 3"):
        load_space(7)


def test_transfer_best_maps_stage2_zones_to_stage3_by_velocity():
    s2, s3 = load_space(2), load_space(3)
    best = s2.to_dict(s2.from_unit(np.full(63, 0.5)))
    for z in range(6):
        best[f"X_Si_z{z}"] = 0.1 * (z + 1)
    mapped = transfer_best(best, s2, s3)
    # stage-3 zone 0 centre 7600 km/s lies in stage-2 zone 0 (7000-10000); zone 14 centre 24400 in zone 5
    assert mapped["X_Si_z0"] == pytest.approx(0.1)
    assert mapped["X_Si_z14"] == pytest.approx(0.6)
    # stage-3 zone 5 spans 13000-14200 (centre 13600): stage-2 zone 2 (13000-16000)
    assert mapped["X_Si_z5"] == pytest.approx(0.3)
    assert mapped["log_L"] == best["log_L"]
    json.dumps(mapped)


def test_every_stage_parameter_has_a_label_with_its_unit():
    for stage, par in ((1, None), (2, None), (3, None), (3, "knots")):
        space = load_space(stage, parametrisation=par)
        for n, u in zip(space.names, space.units):
            lab = space.label(n)
            assert lab == label(n) and lab.endswith("]") and " [" in lab, (n, lab)
            assert lab.endswith("[dimensionless]") == (u == ""), (n, u, lab)
    assert label("v_inner") == "$v_\\mathrm{inner}$ [km/s]"
    assert label("X_Ni_z3") == "$X_{^{56}\\mathrm{Ni}}$ zone 3 [dimensionless]"
    assert label("a", "") == "a [dimensionless]" and label("v", "km/s") == "v [km/s]"
    with pytest.raises(ParameterError, match="no unit known for parameter 'f_sys'"):
        label("f_sys")


def test_next_box_hits_by_hand():
    s1, s2 = load_space(1), load_space(2)
    best = s1.to_dict(s1.from_unit(np.full(15, 0.5)))  # log_L 43.0 (log: +-0.1 of the 1.0 width)
    truth = dict(best, log_L=43.15, v_inner=best["v_inner"] * 1.05)  # v_inner linear: +-10 % of its value
    hits = next_box_hits(truth, best, s1, s2)
    assert hits["names"] == list(s1.names)  # stage 1 carries its 15 globals into stage 2
    inside = dict(zip(hits["names"], hits["margin"]))
    assert not inside["log_L"] and inside["v_inner"] and sum(hits["margin"]) == 14
    assert hits["union"] is None
    # the posterior-aware box: the hull with the interval [42.8, 43.2] of log_L holds 43.15
    lo, hi = dict(best, log_L=42.8), dict(best, log_L=43.2)
    hits = next_box_hits(truth, best, s1, s2, interval=(lo, hi))
    assert all(hits["union"])
    ratio = dict(zip(hits["names"], hits["width_ratio"]))
    assert ratio["log_L"] == pytest.approx(0.4 / 0.2) and ratio["v_inner"] == pytest.approx(1.0)


def test_union_ranges_is_the_hull_clipped_to_the_prior():
    s1 = load_space(1)
    best = s1.to_dict(s1.from_unit(np.full(15, 0.5)))
    u = union_ranges(best, {"log_L": 42.0}, {"log_L": 43.05}, s1)  # 42.0 lies below the prior's 42.5
    i = s1.index("log_L")
    assert (u.lows[i], u.highs[i]) == (42.5, pytest.approx(43.1))
    j = s1.index("t_exp")  # no interval given: the +-10 % box
    r = relaxed_ranges(best, s1)
    assert (u.lows[j], u.highs[j]) == (r.lows[j], r.highs[j])
    with pytest.raises(ParameterError, match="interval of log_L"):
        union_ranges(best, {"log_L": 43.2}, {"log_L": 43.0}, s1)


def test_next_box_hits_carry_stage2_zones_to_stage3():
    s2, s3 = load_space(2), load_space(3)
    best = s2.to_dict(s2.from_unit(np.full(63, 0.5)))
    truth = dict(best)
    truth["X_Si_z2"] = best["X_Si_z2"] * 1.2  # stage-2 zone 2 covers stage-3 zones 5-7: outside there
    hits = next_box_hits(truth, best, s2, s3)
    assert len(hits["names"]) == 135
    outside = {n for n, ok in zip(hits["names"], hits["margin"]) if not ok}
    assert outside == {n for n, v in transfer_best({"X_Si_z2": 1.0}, s2, s3).items()} != set()
