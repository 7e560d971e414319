"""``lumina-jax generate`` / ``dataset info`` end to end, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lumina_jax.cli import app, main
from lumina_jax.params import load_space, relaxed_ranges, transfer_best
from runners.analytic import AnalyticSynth
from runners.store import load_training_set

runner = CliRunner()
STANDIN = ["--synth-factory", "runners.analytic:AnalyticSynth"]


def _main(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["lumina-jax", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_synth_campaign_fills_a_stage1_store(tmp_path):
    out = tmp_path / "s1.h5"
    r = runner.invoke(app, ["generate", "--stage", "1", "--n-models", "150", "--backend", "synth", "--out", str(out),
                            "--batch-size", "32", "--checkpoint-every", "50", "--seed", "4", "--json", *STANDIN])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["counts"] == {"pending": 0, "done": 150, "failed": 0}
    ts = load_training_set(out, stage=1)
    assert ts.theta.shape == (150, 15) and ts.ids.tolist() == list(range(150))
    synth = AnalyticSynth(load_space(1))  # independent evaluation of the same design
    np.testing.assert_allclose(ts.spectra, np.asarray(synth.batch(ts.theta)), rtol=1e-12)
    np.testing.assert_array_equal(ts.wavelength, synth.wavelength)
    r = runner.invoke(app, ["dataset", "info", str(out), "--json"])
    info = json.loads(r.output)
    assert info["counts"]["done"] == 150 and info["attrs"]["backend"] == "synth" and info["attrs"]["stage"] == 1
    r = runner.invoke(app, ["dataset", "info", str(out)])
    assert r.exit_code == 0 and "done 150" in r.output
    # resuming a finished store runs nothing and changes no data
    before = load_training_set(out)
    r = runner.invoke(app, ["generate", "--stage", "1", "--backend", "synth", "--out", str(out), "--resume", "--json"])
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1])["n_run"] == 0
    np.testing.assert_array_equal(load_training_set(out).spectra, before.spectra)


def test_real_synthesizer_campaign(tmp_path):
    out = tmp_path / "real.h5"
    r = runner.invoke(app, ["generate", "--stage", "1", "--n-models", "8", "--backend", "synth", "--out", str(out),
                            "--batch-size", "4", "--json"])
    assert r.exit_code == 0, r.output
    ts = load_training_set(out, stage=1)
    assert ts.ids.size == 8 and np.isfinite(ts.spectra).all() and (ts.spectra >= 0).all()


def test_from_previous_stage_samples_relaxed_ranges(tmp_path):
    s1 = load_space(1)
    best = dict(zip(s1.names, (s1.lower + s1.upper) / 2))
    best["v_core"], best["v_wall"] = 11000.0, 16000.0
    res = tmp_path / "stage1_results"
    res.mkdir()
    (res / "summary.json").write_text(json.dumps({"best_fit": best, "stage": 1}))
    out = tmp_path / "s2.h5"
    r = runner.invoke(app, ["generate", "--stage", "2", "--n-models", "20", "--out", str(out), "--from", str(res),
                            "--quiet", *STANDIN])
    assert r.exit_code == 0, r.output
    ts = load_training_set(out, stage=2)
    s2 = load_space(2)
    box = relaxed_ranges(transfer_best(best, s1, s2), s2)
    assert ts.space.lows == box.lows and ts.space.highs == box.highs
    assert (ts.theta >= box.lower).all() and (ts.theta <= box.upper).all()
    i = s2.names.index("log_L")
    assert box.highs[i] - box.lows[i] == pytest.approx(0.2)  # +-10 % of the log_L prior width around 43.0


def test_bad_input_gives_one_line_errors_and_touches_nothing(tmp_path, monkeypatch, capsys, fake_lumina, lumina_ref):
    import shutil

    broken = Path(shutil.copytree(lumina_ref, tmp_path / "broken_ref"))
    (broken / "levels.csv").unlink()
    out = tmp_path / "keep.h5"
    r = runner.invoke(app, ["generate", "--stage", "1", "--n-models", "5", "--out", str(out), "--quiet", *STANDIN])
    assert r.exit_code == 0, r.output
    before = out.read_bytes()
    listing = sorted(p.name for p in tmp_path.iterdir())
    base = ["generate", "--stage", "1", "--n-models", "5"]
    lum = ["--backend", "lumina", "--lumina-bin", fake_lumina, "--lumina-ref", lumina_ref]
    cases = [
        ([*base, "--backend", "gpu-magic", "--out", tmp_path / "n1.h5"], "unknown backend 'gpu-magic'"),
        ([*base, "--backend", "lumina", "--lumina-bin", tmp_path / "no-such-lumina", "--lumina-ref", lumina_ref,
          "--out", tmp_path / "n2.h5"], "LUMINA binary not found"),
        ([*base, "--backend", "lumina", "--lumina-bin", fake_lumina, "--lumina-ref", tmp_path / "noref",
          "--out", tmp_path / "n3.h5"], "reference directory not found"),
        ([*base, "--backend", "lumina", "--lumina-bin", fake_lumina, "--lumina-ref", broken,
          "--out", tmp_path / "n8.h5"], "is not usable (1 problem): levels.csv: missing file"),
        ([*base, *lum, "--lum-range", "2,1", "--out", tmp_path / "n9.h5"], "--lum-range needs 0 <= LOW < HIGH"),
        ([*base, *lum, "--out", tmp_path / "no-dir" / "x.h5"], "does not exist"),
        ([*base, *STANDIN, "--out", out], "already exists: pass --resume"),
        (["generate", "--stage", "2", "--resume", "--out", out], "holds a stage-1 campaign, --stage 2 given"),
        (["generate", "--stage", "1", "--resume", "--out", out, *lum], "was made with --backend synth"),
        (["generate", "--stage", "1", "--resume", "--out", tmp_path / "absent.h5"], "does not exist"),
        ([*base, "--stage", "7", "--out", tmp_path / "n4.h5"], "stage must be 1, 2 or 3"),
        (["generate", "--stage", "1", "--out", tmp_path / "n5.h5"], "--n-models K"),
        ([*base, "--out", tmp_path / "n6.h5", "--synth-factory", "no_such_module:make"], "cannot import"),
    ]
    for args, words in cases:
        code, err = _main(monkeypatch, capsys, *args)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, (words, err)
    monkeypatch.setattr("os.access", lambda *a, **k: False)  # (root ignores permission bits)
    code, err = _main(monkeypatch, capsys, *base, *STANDIN, "--out", tmp_path / "n7.h5")
    assert code == 2 and "is not writable" in err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no store, work or log dir was created


def test_resume_refuses_another_lumina_binary(tmp_path, monkeypatch, capsys, fake_lumina, lumina_ref):
    out = tmp_path / "l.h5"
    args = ["generate", "--stage", "1", "--n-models", "3", "--backend", "lumina", "--lumina-bin", fake_lumina,
            "--lumina-ref", lumina_ref, "--out", out, "--spec-range", "500,20000,100", "--quiet"]
    code, err = _main(monkeypatch, capsys, *args)
    assert code == 0, err
    before = out.read_bytes()
    other = tmp_path / "other_lumina"
    other.write_text(fake_lumina.read_text() + "\n# another build\n")
    other.chmod(0o755)
    code, err = _main(monkeypatch, capsys, "generate", "--stage", "1", "--backend", "lumina", "--resume", "--out",
                      out, "--lumina-bin", other, "--lumina-ref", lumina_ref)
    assert code == 2 and "is not the binary the store was made with" in err
    assert out.read_bytes() == before


def test_resume_refuses_another_reference_directory(tmp_path, monkeypatch, capsys, fake_lumina, lumina_ref):
    out = tmp_path / "l.h5"
    args = ["generate", "--stage", "1", "--n-models", "2", "--backend", "lumina", "--lumina-bin", fake_lumina,
            "--lumina-ref", lumina_ref, "--out", out, "--spec-range", "500,20000,100", "--quiet", "--max-attempts", "1"]
    monkeypatch.setenv("FAKE_LUMINA_MODES", str(tmp_path / "modes.json"))
    (tmp_path / "modes.json").write_text(json.dumps({"1": "crash"}))  # leaves job 1 for the resume
    code, err = _main(monkeypatch, capsys, *args)
    assert code == 0, err
    from runners.backends.lumina_ref import reference_hash
    from runners.store import read_attrs

    assert read_attrs(out)["lumina_ref_sha256"] == reference_hash(lumina_ref)
    before = out.read_bytes()
    other = Path(shutil.copytree(lumina_ref, tmp_path / "other_ref"))
    tau = np.load(other / "tau_sobolev.npy")
    np.save(other / "tau_sobolev.npy", tau + 0.5)  # other atomic data, still a valid reference
    resume = ["generate", "--stage", "1", "--backend", "lumina", "--resume", "--out", out, "--lumina-bin", fake_lumina,
              "--max-attempts", "2", "--quiet", "--lumina-ref"]
    code, err = _main(monkeypatch, capsys, *resume, other)
    assert code == 2 and "is not the reference directory the store was made with" in err and err.count("\n") == 1
    assert out.read_bytes() == before
    same = Path(shutil.copytree(lumina_ref, tmp_path / "moved_ref"))  # same contents elsewhere: the same data
    (tmp_path / "modes.json").write_text("{}")
    code, err = _main(monkeypatch, capsys, *resume, same)
    assert code == 0, err
    assert load_training_set(out).ids.tolist() == [0, 1]


def test_exit_code_3_when_no_job_succeeds(tmp_path, monkeypatch, capsys, fake_lumina, lumina_ref):
    out = tmp_path / "bad.h5"
    (tmp_path / "modes.json").write_text(json.dumps({"0": "crash", "1": "nonzero"}))
    monkeypatch.setenv("FAKE_LUMINA_MODES", str(tmp_path / "modes.json"))
    code, err = _main(monkeypatch, capsys, "generate", "--stage", "1", "--n-models", "2", "--backend", "lumina",
                      "--lumina-bin", fake_lumina, "--lumina-ref", lumina_ref, "--out", out, "--quiet",
                      "--max-attempts", "2", "--spec-range", "500,20000,100")
    assert code == 3, err
    assert "error: none of the 2 jobs run succeeded (signal x1, exit_code x1)" in err
    info = json.loads(runner.invoke(app, ["dataset", "info", str(out), "--json"]).output)
    assert info["counts"] == {"pending": 0, "done": 0, "failed": 2}  # written before the exit
    # retries that succeed: exit 0; then a finished store resumed runs nothing: exit 0
    (tmp_path / "modes.json").write_text("{}")
    code, err = _main(monkeypatch, capsys, "generate", "--stage", "1", "--backend", "lumina", "--resume", "--out",
                      out, "--lumina-bin", fake_lumina, "--lumina-ref", lumina_ref, "--quiet", "--max-attempts", "3")
    assert code == 0, err
    assert json.loads(runner.invoke(app, ["dataset", "info", str(out), "--json"]).output)["counts"]["done"] == 2
    code, err = _main(monkeypatch, capsys, "generate", "--stage", "1", "--backend", "lumina", "--resume", "--out",
                      out, "--lumina-bin", fake_lumina, "--lumina-ref", lumina_ref, "--quiet", "--max-attempts", "3")
    assert code == 0 and "none of" not in err


def test_few_iterations_are_warned_about_once(tmp_path, monkeypatch, capsys, fake_lumina, lumina_ref):
    code, err = _main(monkeypatch, capsys, "generate", "--stage", "1", "--n-models", "3", "--backend", "lumina",
                      "--lumina-bin", fake_lumina, "--lumina-ref", lumina_ref, "--out", tmp_path / "f.h5", "--quiet",
                      "--n-iters", "3", "--spec-range", "500,20000,100")
    assert code == 0, err
    assert err.count("warning: --n-iters 3: LUMINA holds T_inner fixed") == 1
    code, err = _main(monkeypatch, capsys, "generate", "--stage", "1", "--n-models", "3", "--backend", "lumina",
                      "--lumina-bin", fake_lumina, "--lumina-ref", lumina_ref, "--out", tmp_path / "g.h5", "--quiet",
                      "--n-iters", "6", "--spec-range", "500,20000,100")
    assert code == 0 and "warning" not in err


def test_a_campaign_started_with_ctrl_c_ignored_keeps_ignoring_it():
    """Started with SIGINT ignored (a shell script's `lumina-jax generate ... &`), the campaign's
    event loop does not take Ctrl-C back; SIGTERM it still turns into a cancellation."""
    import asyncio
    import signal

    from runners.campaign import _run_with_signals

    seen = {}

    async def body():
        seen.update(INT=signal.getsignal(signal.SIGINT), TERM=signal.getsignal(signal.SIGTERM))

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    term = signal.getsignal(signal.SIGTERM)
    try:
        asyncio.run(_run_with_signals(body))
        assert seen["INT"] is signal.SIG_IGN and seen["TERM"] is not term
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGINT, before)


def test_from_previous_stage_with_union_rule_samples_the_union_box(tmp_path, monkeypatch, capsys):
    s1 = load_space(1)
    best = dict(zip(s1.names, (s1.lower + s1.upper) / 2))
    best["v_core"], best["v_wall"] = 11000.0, 16000.0
    iv = {n: {"q0.15": v, "q99.85": v} for n, v in best.items()}
    iv["log_L"] = {"q0.15": 42.6, "q99.85": 43.4}  # wider than +-10 % of the prior width
    res = tmp_path / "stage1_results"
    res.mkdir()
    (res / "summary.json").write_text(json.dumps({"best_fit": best, "stage": 1, "intervals": iv}))
    out = tmp_path / "s2.h5"
    r = runner.invoke(app, ["generate", "--stage", "2", "--n-models", "20", "--out", str(out), "--from", str(res),
                            "--relax", "union", "--quiet", *STANDIN])
    assert r.exit_code == 0, r.output
    ts = load_training_set(out, stage=2)
    i = ts.space.names.index("log_L")
    assert (ts.space.lows[i], ts.space.highs[i]) == pytest.approx((42.6, 43.4))
    assert (ts.theta >= ts.space.lower).all() and (ts.theta <= ts.space.upper).all()
    # a resumed campaign keeps its box; a rule without --from means nothing
    for args, msg in ((["--out", out, "--resume", "--relax", "union"], "--from and --relax only apply to a new"),
                      (["--out", tmp_path / "x.h5", "--n-models", "5", "--relax", "union"],
                       "--relax union applies only with --from")):
        code, err = _main(monkeypatch, capsys, "generate", "--stage", "2", *args, *STANDIN)
        assert code == 2 and msg in err, err
    (res / "summary.json").write_text(json.dumps({"best_fit": best, "stage": 1}))
    code, err = _main(monkeypatch, capsys, "generate", "--stage", "2", "--n-models", "5", "--out", tmp_path / "y.h5",
                      "--from", res, "--relax", "union", *STANDIN)
    assert code == 2 and "--relax union needs the previous posterior's 99.7 % interval" in err, err
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()
