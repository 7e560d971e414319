"""HDF5 io: round trip in the Rhea/Emu layout and clear errors for bad files."""

import warnings

import h5py
import numpy as np
import pytest

from box3d_jax import io
from box3d_jax.errors import DataFileError
from box3d_jax.synthetic import random_initial_states


def _states(n=5, seed=0):
    return random_initial_states(np.random.default_rng(seed), n, max_flux_factor=0.9)


def test_round_trip_and_file_layout(tmp_path):
    Fi, Ff = _states(), _states(seed=1)
    sd = np.abs(Ff) * 1e-3
    g = np.linspace(1e9, 2e9, 5)
    p = io.write_dataset(tmp_path / "d.h5", Fi, Ff, sd, g)
    with h5py.File(p) as h5:
        assert h5[io.INITIAL].shape == (5, 4, 2, 3)
        assert int(h5["nf"][()]) == 3
        # file axis order [sim, xyzt, ν/ν̄, flavor]: N of ν̄_μ in row 2
        assert h5[io.INITIAL][2, 3, 1, 1] == Fi[2, 1, 1, 3]
    ds = io.read_dataset(p, require_final=True)
    np.testing.assert_array_equal(ds.F4_initial, Fi)
    np.testing.assert_array_equal(ds.F4_final, Ff)
    np.testing.assert_array_equal(ds.F4_final_stddev, sd)
    np.testing.assert_array_equal(ds.growth_rate, g)
    assert ds.n == 5 and ds.nf == 3
    assert ds.select(np.array([True, False, True, False, False])).F4_final.shape == (2, 2, 3, 4)
    only = io.read_dataset(io.write_dataset(tmp_path / "i.h5", Fi))
    assert only.F4_final is None and only.growth_rate is None
    with pytest.raises(DataFileError, match="missing dataset 'F4_final"):
        io.read_dataset(tmp_path / "i.h5", require_final=True)


def _raw(tmp_path, **datasets):
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as h5:
        for k, v in datasets.items():
            h5.create_dataset(k, data=v)
    return p


def test_errors(tmp_path):
    good = np.moveaxis(_states(), -1, 1)  # file layout [n, 4, 2, 3]
    with pytest.raises(DataFileError, match="no such file"):
        io.read_dataset(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataFileError, match="not a readable HDF5"):
        io.read_dataset(tmp_path / "junk.h5")
    with pytest.raises(DataFileError, match="missing dataset 'F4_initial"):
        io.read_dataset(_raw(tmp_path, x=np.zeros(3)))
    with pytest.raises(DataFileError, match=r"shape \[5, 2, 3, 4\]"):
        io.read_dataset(_raw(tmp_path, **{io.INITIAL: np.moveaxis(good, 1, -1)}))
    neg = good.copy()
    neg[3, 3, 0, 2] = -1.0
    with pytest.raises(DataFileError, match="negative number densities .*row 3"):
        io.read_dataset(_raw(tmp_path, **{io.INITIAL: neg}))
    ff = good.copy()
    ff[1, 2, 1, 0] = 2.0 * ff[1, 3, 1, 0]
    with pytest.raises(DataFileError, match=r"flux factors \|F\|/N > 1 .*row 1"):
        io.read_dataset(_raw(tmp_path, **{io.INITIAL: ff}))
    nan = good.copy()
    nan[4, 0, 0, 0] = np.nan
    with pytest.raises(DataFileError, match="non-finite"):
        io.read_dataset(_raw(tmp_path, **{io.INITIAL: nan}))
    with pytest.raises(DataFileError, match="growthRate"):
        io.read_dataset(_raw(tmp_path, **{io.INITIAL: good, io.GROWTH: np.ones(4)}))
    with pytest.raises(DataFileError, match="F4_final"):
        io.read_dataset(_raw(tmp_path, **{io.INITIAL: good, io.FINAL: good[:3]}))
    with pytest.raises(DataFileError, match="'nf'"):
        io.read_dataset(_raw(tmp_path, **{io.INITIAL: good, "nf": 2}))


def test_max_flux_factor():
    F = np.zeros((2, 2, 3, 4))
    F[..., 3] = 1.0
    F[0, 1, 2, 0] = 0.95
    F[1, 0, 0, 3] = 0.0
    np.testing.assert_allclose(io.max_flux_factor(F), [0.95, 0.0])


def test_empty_file_is_refused(tmp_path):
    empty = np.zeros((0, 4, 2, 3))
    with pytest.raises(DataFileError, match="has no rows"):
        io.read_dataset(_raw(tmp_path, **{io.INITIAL: empty}))
    assert io.max_flux_factor(np.zeros((0, 2, 3, 4))).shape == (0,)
    io.check_F4(np.zeros((0, 2, 3, 4)), io.INITIAL)  # nothing to complain about


def test_huge_scale_read_without_overflow(tmp_path):
    Fi = _states()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy overflow warning would fail the test
        ds = io.read_dataset(io.write_dataset(tmp_path / "big.h5", Fi * 1e162))
        np.testing.assert_allclose(io.max_flux_factor(ds.F4_initial), io.max_flux_factor(Fi), rtol=1e-14)
        np.testing.assert_allclose(io.flux_norm(np.array([3e200, 4e200, 0.0])), 5e200, rtol=1e-15)
        assert io.flux_norm(np.array([3e-200, 4e-200, 0.0])) == pytest.approx(5e-200, rel=1e-15)
    too_big = np.zeros((2, 4, 2, 3))
    too_big[:, 3] = 5e307  # each N finite, their sum (3e308) overflows
    with pytest.raises(DataFileError, match="row 0 overflows float64"):
        io.read_dataset(_raw(tmp_path, **{io.INITIAL: too_big}))
