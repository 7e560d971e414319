"""Campaign store: format contract, done-only reading, atomic checkpoints, clear errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lumina_jax.errors import DataFileError
from lumina_jax.params import load_space
from runners.design import lhs_design
from runners.store import DONE, FAILED, PENDING, CampaignStore, load_training_set, provenance, store_info


def _store(path, n=10, n_wave=7, stage=1):
    space = load_space(stage)
    return CampaignStore.create(path, space=space, design=lhs_design(space, n, seed=1),
                                wavelength=np.linspace(3000.0, 9000.0, n_wave), backend="synth", seed=1,
                                config={"n_models": n}, max_attempts=2, prov=provenance(None))


def test_layout_matches_the_contract(tmp_path):
    p = tmp_path / "s.h5"
    s = _store(p)
    with h5py.File(p, "r") as f:  # the design is on disk before any job ran
        assert f.attrs["format"] == "lumina-jax-campaign" and f.attrs["format_version"] == 3
        assert f.attrs["stage"] == 1 and f.attrs["backend"] == "synth" and f.attrs["seed"] == 1
        for k in ("space_json", "config_hash", "binary_path", "binary_sha256", "host", "created", "lumina_jax_version"):
            assert k in f.attrs
        assert f["design"].shape == (10, 15) and f["design"].dtype == np.float64
        assert f["status"].dtype == np.int8 and (f["status"][...] == PENDING).all()
        assert f["attempts"].dtype == np.int32
        assert f["spectra"].shape == (10, 7) and np.isnan(f["spectra"][...]).all()
        assert f["fail_reason"].asstr()[0] == "" and f["worker"].asstr()[0] == ""
        assert f["mc_seed"].dtype == np.int64 and (f["mc_seed"][...] == -1).all()
        for k in ("l_requested", "l_spectrum", "lum_ratio", "l_emitted", "escape_fraction", "t_inner"):
            assert f[k].shape == (10,) and np.isnan(f[k][...]).all()
        np.testing.assert_array_equal(f["design"][...], s.design)
        assert f.userblock_size == 512  # the seal: the checksum of the rest of the file
    assert p.read_bytes().startswith(b"lumina-jax campaign store\nsha256 ")
    assert load_training_set(p).theta.shape == (0, 15)


def test_only_done_rows_are_data_and_checkpoints_are_atomic(tmp_path, monkeypatch):
    p = tmp_path / "s.h5"
    s = _store(p)
    s.record_success(2, np.full(7, 2.0), elapsed_s=1.0, worker="w")
    s.record_failure(3, kind="timeout", reason="timeout after 5 s", elapsed_s=5.0, worker="w")
    s.record_success(5, np.full(7, 5.0), elapsed_s=1.0, worker="w")
    assert load_training_set(p).ids.size == 0  # nothing durable before a checkpoint
    s.checkpoint()
    ts = load_training_set(p, stage=1)
    assert ts.ids.tolist() == [2, 5]
    np.testing.assert_array_equal(ts.spectra, [[2.0] * 7, [5.0] * 7])
    np.testing.assert_array_equal(ts.theta, s.design[[2, 5]])
    assert ts.space.names == load_space(1).names

    # a crash in the middle of the next checkpoint leaves the previous one intact
    s.record_success(7, np.full(7, 7.0), elapsed_s=1.0, worker="w")
    before = p.read_bytes()

    class Boom(Exception):
        pass

    real_file = h5py.File

    def exploding(name, mode="r", *a, **k):
        f = real_file(name, mode, *a, **k)
        if mode == "r+":
            f["spectra"][7] = np.full(7, 7.0)  # half-written: data in, then the writer dies
            f.close()
            raise Boom
        return f

    monkeypatch.setattr(h5py, "File", exploding)
    with pytest.raises(Boom):
        s.checkpoint()
    monkeypatch.setattr(h5py, "File", real_file)
    assert p.read_bytes() == before and load_training_set(p).ids.tolist() == [2, 5]
    re = CampaignStore.open(p)  # reopening removes the stale temp file
    assert not s.tmp_path.exists()
    assert re.status[3] == FAILED and re.fail_kind[3] == "timeout" and re.attempts[3] == 1
    assert re.todo().tolist() == [0, 1, 3, 4, 6, 7, 8, 9]  # pending + retryable failed
    assert re.todo(max_attempts=1).tolist() == [0, 1, 4, 6, 7, 8, 9]
    with pytest.raises(RuntimeError):
        re.record_success(2, np.ones(7), elapsed_s=0, worker="w")  # done jobs never run again
    info = store_info(p)
    assert info["counts"] == {"pending": 7, "done": 2, "failed": 1}
    assert info["failure_kinds"] == {"timeout": 1} and info["failure_reasons"] == {"timeout after 5 s": 1}


def test_reader_errors(tmp_path):
    from runners.store import seal

    with pytest.raises(DataFileError, match="not found"):
        load_training_set(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(DataFileError, match="not a readable HDF5"):
        load_training_set(junk)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(DataFileError, match="not a lumina-jax campaign store"):
        load_training_set(foreign)
    p = tmp_path / "s.h5"
    _store(p)
    with pytest.raises(DataFileError, match="stage-1 models, stage 2 was requested"):
        load_training_set(p, stage=2)
    with h5py.File(p, "r+") as f:  # a done row without data is corruption, never read as data
        f["status"][0] = DONE
    with pytest.raises(DataFileError, match="do not match the checksum"):  # changed behind the store's back
        load_training_set(p)
    seal(p)  # as if written so by a faulty writer: the content checks still refuse it
    with pytest.raises(DataFileError, match="non-finite"):
        load_training_set(p)
    with h5py.File(p, "r+") as f:
        del f["spectra"]
    seal(p)
    with pytest.raises(DataFileError, match="missing dataset"):
        load_training_set(p)
    with pytest.raises(DataFileError, match="already exists"):
        _store(p)


def test_diagnostics_are_stored_per_attempt(tmp_path):
    p = tmp_path / "s.h5"
    s = _store(p)
    s.record_failure(1, kind="invalid_output", reason="dim", elapsed_s=1.0, worker="w",
                     diagnostics={"mc_seed": 2**62 - 1, "lum_ratio": 0.2, "escape_fraction": 0.4})
    s.record_success(2, np.ones(7), elapsed_s=1.0, worker="w", diagnostics={"mc_seed": 5, "lum_ratio": 1.01,
                                                                            "l_emitted": None})
    s.checkpoint()
    re = CampaignStore.open(p)
    assert re.diagnostics["mc_seed"][[0, 1, 2]].tolist() == [-1, 2**62 - 1, 5]  # 62-bit seeds survive exactly
    assert re.diagnostics["lum_ratio"][1] == 0.2 and re.diagnostics["escape_fraction"][1] == 0.4
    assert np.isnan(re.diagnostics["l_emitted"][2]) and np.isnan(re.diagnostics["t_inner"][1])
    re.record_success(1, np.ones(7), elapsed_s=1.0, worker="w", diagnostics={"mc_seed": 6})
    assert np.isnan(re.diagnostics["lum_ratio"][1])  # a new attempt replaces every figure of the last one
    with pytest.raises(KeyError, match="unknown diagnostics bogus"):
        re.record_success(3, np.ones(7), elapsed_s=1.0, worker="w", diagnostics={"bogus": 1})
    info = store_info(p)
    assert info["diagnostics_done"]["lum_ratio"] == {"median": 1.01, "min": 1.01, "max": 1.01, "n": 1}


def test_version1_store_is_read_and_upgraded_on_resume(tmp_path):
    from runners.store import seal

    p = tmp_path / "old.h5"
    s = _store(p)
    s.record_success(2, np.full(7, 2.0), elapsed_s=1.0, worker="w")
    s.checkpoint()
    old = tmp_path / "v1.h5"  # the layout before the diagnostics (and the seal) existed
    with h5py.File(p, "r") as a, h5py.File(old, "w") as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v
        for k in a:
            if k not in ("mc_seed", "l_requested", "l_spectrum", "lum_ratio", "l_emitted", "escape_fraction",
                         "t_inner"):
                a.copy(a[k], b, name=k)
        b.attrs["format_version"] = 1
    old.replace(p)
    ts = load_training_set(p, stage=1)
    assert ts.ids.tolist() == [2] and (ts.spectra == 2.0).all()
    assert store_info(p)["counts"]["done"] == 1
    re = CampaignStore.open(p)
    assert (re.diagnostics["mc_seed"] == -1).all() and np.isnan(re.diagnostics["lum_ratio"]).all()
    re.record_success(4, np.full(7, 4.0), elapsed_s=1.0, worker="w", diagnostics={"mc_seed": 77, "lum_ratio": 0.9})
    re.checkpoint()
    assert p.read_bytes().startswith(b"lumina-jax campaign store\n")  # upgraded: sealed
    with h5py.File(p, "r") as f:
        assert f.attrs["format_version"] == 3
        assert f["mc_seed"][...].tolist() == [-1] * 4 + [77] + [-1] * 5 and f["lum_ratio"][4] == 0.9
    assert load_training_set(p).ids.tolist() == [2, 4]
    with h5py.File(p, "r+") as f:
        f.attrs["format_version"] = 4
    seal(p)
    with pytest.raises(DataFileError, match="unsupported store format_version 4 \\(this version reads 1, 2, 3\\)"):
        load_training_set(p)


def test_two_runs_creating_the_same_store_never_both_succeed(tmp_path, monkeypatch):
    """Both runs pass the "does not exist" check before either has written (an injected delay):
    one creates the store, the other stops with a DataFileError, and the file holds the
    winner's design (before: both succeeded and the second silently replaced the first)."""
    import threading
    import time

    p = tmp_path / "s.h5"
    write = CampaignStore._write_full

    def slow_write(self):
        time.sleep(0.4)
        write(self)

    monkeypatch.setattr(CampaignStore, "_write_full", slow_write)
    space = load_space(1)
    results = {}

    def create(seed):
        try:
            results[seed] = CampaignStore.create(p, space=space, design=lhs_design(space, 6, seed=seed),
                                                 wavelength=np.linspace(3000.0, 9000.0, 5), backend="synth",
                                                 seed=seed, config={"n_models": 6}, max_attempts=1,
                                                 prov=provenance(None)).design
        except DataFileError as exc:
            results[seed] = exc

    threads = [threading.Thread(target=create, args=(seed,)) for seed in (1, 2)]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for t in threads:
        t.join()
    won = [s for s, r in results.items() if isinstance(r, np.ndarray)]
    lost = [r for r in results.values() if isinstance(r, DataFileError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert "another runner" in str(lost[0]) or "already exists" in str(lost[0])
    np.testing.assert_array_equal(load_training_set(p).space.lower, space.lower)
    np.testing.assert_array_equal(CampaignStore.open(p).design, results[won[0]])
    assert not (tmp_path / "s.h5.tmp").exists()


def test_two_generate_runs_on_one_new_store(tmp_path, monkeypatch):
    """`generate` twice at once into the same new --out: one campaign, one clear error."""
    import threading
    import time

    from runners.campaign import GenerateOptions, generate

    write = CampaignStore._write_full

    def slow_write(self):
        time.sleep(0.4)
        write(self)

    monkeypatch.setattr(CampaignStore, "_write_full", slow_write)
    out = tmp_path / "camp.h5"
    outcome = {}

    def run(seed):
        opts = GenerateOptions(stage=1, out=out, n_models=8, seed=seed, batch_size=4,
                               synth_factory="runners.analytic:AnalyticSynth")
        try:
            store, _ = generate(opts)
            outcome[seed] = store.design.copy()
        except DataFileError as exc:
            outcome[seed] = exc

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (3, 4)]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for t in threads:
        t.join()
    won = [s for s, r in outcome.items() if isinstance(r, np.ndarray)]
    assert len(won) == 1 and sum(isinstance(r, DataFileError) for r in outcome.values()) == 1, outcome
    ts = load_training_set(out)
    assert ts.ids.size == 8
    np.testing.assert_array_equal(ts.theta, lhs_design(ts.space, 8, won[0]))
