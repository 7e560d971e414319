"""Emulator checkpoints are never trusted blindly: a seal (whole-file checksum) verified before
HDF5 reads the file, finite arrays, and clear messages for the files people pass by mistake."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from lumina_jax.cli import app
from lumina_jax.emulator import load_emulator, save_emulator
from lumina_jax.emulator._data import write_store
from lumina_jax.errors import DataFileError, UserError
from lumina_jax.params import load_space

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "lumina_jax" / "checkpoints" / "stage1_synth.h5"


@pytest.fixture
def small(small_emulator_files):
    """(checkpoint, campaign store of 6 finished models on its grid) -- an untrained network."""
    return small_emulator_files


def _dataset_range(path, name):
    with h5py.File(path, "r") as f:
        return f[name].id.get_offset(), f[name].id.get_storage_size()


def test_random_bytes_in_the_weights_of_a_copy_of_the_shipped_checkpoint_are_refused(tmp_path):
    """200 KB of random bytes over the weights of a copy of lumina_jax/checkpoints/stage1_synth.h5 (they
    were accepted: the MAP printed `log posterior nan`, sampling ran, then a traceback)."""
    copy = tmp_path / "stage1_copy.h5"
    shutil.copy(SHIPPED, copy)
    off, size = _dataset_range(copy, "weights/params/dense_1/kernel")
    assert size >= 300_000
    with open(copy, "r+b") as fh:
        fh.seek(off + 50_000)
        fh.write(np.random.default_rng(7).bytes(200_000))
    with pytest.raises(DataFileError, match="corrupt emulator checkpoint"):
        load_emulator(copy)
    r = CliRunner().invoke(app, ["infer", "--checkpoint", str(copy), "--out", str(tmp_path / "r")])
    assert isinstance(r.exception, DataFileError) and "corrupt emulator checkpoint" in str(r.exception)
    assert not (tmp_path / "r").exists()


def test_a_flipped_bit_anywhere_in_a_sealed_checkpoint_is_refused(tmp_path, small):
    ckpt, _ = small
    assert ckpt.read_bytes().startswith(b"lumina-jax emulator checkpoint\nsha256 ")
    load_emulator(ckpt)  # intact: loads
    size = ckpt.stat().st_size
    for k, at in enumerate(np.linspace(600, size - 1, 7).astype(int).tolist() + [40]):  # data, metadata, the seal
        bad = tmp_path / f"b{k}.h5"
        data = bytearray(ckpt.read_bytes())
        data[at] ^= 0x10
        bad.write_bytes(bytes(data))
        with pytest.raises(DataFileError, match="corrupt emulator checkpoint|not a readable"):
            load_emulator(bad)


def test_non_finite_weights_of_an_unsealed_checkpoint_are_refused(tmp_path, small):
    ckpt, _ = small
    old = tmp_path / "old.h5"  # a checkpoint written before seals existed (no user block)
    with h5py.File(ckpt, "r") as a, h5py.File(old, "w") as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v
        for k in a:
            a.copy(a[k], b, name=k)
    load_emulator(old)
    with h5py.File(old, "r+") as f:
        name = sorted(n for n in f["weights/params"].keys())[0]
        group = f["weights/params"][name]
        arr = group["kernel"][...]
        arr.flat[3] = np.nan
        group["kernel"][...] = arr
    with pytest.raises(DataFileError, match="non-finite values in its weights"):
        load_emulator(old)


def test_files_passed_by_mistake_get_a_message_that_says_so(tmp_path, small):
    ckpt, store = small
    with pytest.raises(DataFileError, match="is a campaign store \\(training data\\), not an emulator checkpoint"):
        load_emulator(store)
    with pytest.raises(DataFileError, match="is a directory; give the checkpoint file"):
        load_emulator(tmp_path)
    for args, words in ((["infer", "--checkpoint", str(store)], "is a campaign store"),
                        (["infer", "--checkpoint", str(tmp_path)], "is a directory"),
                        (["emulator", "report", str(store), "--data", str(store)], "is a campaign store")):
        r = CliRunner().invoke(app, args + (["--out", str(tmp_path / "r")] if args[0] == "infer" else []))
        assert isinstance(r.exception, UserError) and words in str(r.exception), (args, r.exception)
        assert "DataFileError" not in str(r.exception) and "not found" not in str(r.exception)


def test_calibration_keeps_the_seal(tmp_path, small):
    from lumina_jax.emulator._checkpoint import write_error_cov_scale

    ckpt = Path(shutil.copy(small[0], tmp_path / "c.h5"))
    write_error_cov_scale(ckpt, 1.7, {"n_models": 3})
    assert load_emulator(ckpt).error_cov_scale == pytest.approx(1.7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]


def test_report_and_calibrate_on_a_store_without_finished_models(tmp_path, small):
    """`emulator report --all` on a store with no finished models said "pass --all"."""
    ckpt, store = small
    space = load_space(1)
    empty = write_store(tmp_path / "empty.h5", space, np.asarray(space.from_unit(np.full((3, 15), 0.5))),
                        np.arange(2000.0, 10000.1, 5.0), np.full((3, 1601), np.nan), status=np.zeros(3, np.int8))
    for extra in ([], ["--all"]):
        r = CliRunner().invoke(app, ["emulator", "report", str(ckpt), "--data", str(empty), *extra])
        assert isinstance(r.exception, UserError) and "has no finished models" in str(r.exception)
        assert "--all" not in str(r.exception)


def test_calibrate_names_an_empty_store(tmp_path, small):
    """`emulator calibrate` on a store with no finished models leaked numpy's "need at least one
    array to concatenate"."""
    import dataclasses
    import json

    ckpt, _ = small
    emu = load_emulator(ckpt)
    emu = dataclasses.replace(emu, error_basis=np.ones((emu.wavelength.size, 2), np.float32) * 0.1,
                              metadata_json=json.dumps({"config": {"val_fraction": 0.2, "test_fraction": 0.1,
                                                                   "seed": 0}}))
    c = save_emulator(emu, tmp_path / "c.h5")
    space = load_space(1)
    empty = write_store(tmp_path / "empty.h5", space, np.asarray(space.from_unit(np.full((3, 15), 0.5))),
                        np.arange(2000.0, 10000.1, 5.0), np.full((3, 1601), np.nan), status=np.zeros(3, np.int8))
    r = CliRunner().invoke(app, ["emulator", "calibrate", str(c), "--data", str(empty)])
    assert isinstance(r.exception, UserError) and "no finished models" in str(r.exception), r.exception
    assert "concatenate" not in str(r.exception)
