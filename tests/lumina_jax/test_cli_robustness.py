"""Robustness of the command line: hypothesis-generated bad files and arguments.

Every case runs the real entry point (``lumina_jax.cli.main``, in-process) and must exit with
code 2 and exactly one ``error: ...`` line on stderr, no traceback, and leave every file that
existed before byte-for-byte unchanged (SHA-256 before and after) with no new file beside them.
Commands: ``simulate``, ``ejecta``, ``infer --observed``, ``dataset info``, ``emulator report``
and ``ffi box3d``.  The expensive work behind each command (building the synthesizer, the MAP
search, training) is replaced by a sentinel, so a bad input that slipped through to it fails
the test instead of running for minutes.

``dataset info`` and ``train`` must agree on every corrupted store: both accept it or both
refuse it (they share one integrity check, ``runners.store.read_store``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lumina_jax  # noqa: F401  (x64)
from lumina_jax.cli import main

REPO = Path(__file__).resolve().parents[2]
SUITE = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GOOD = {"log_L": 42.975, "v_inner": 10000.0, "log_rho_0": -13.097, "density_exp": -7.0, "T_e_ratio": 0.9,
        "v_core": 10000.0, "v_wall": 16000.0, "X_Fe_core": 0.5, "X_Si_wall": 0.4, "v_break": 20000.0,
        "density_exp_outer": -7.0, "t_exp": 19.0, "X_Fe_wall": 0.1, "X_Ni": 0.1, "X_Fe_outer": 0.05}


class Reached(Exception):
    """The command got past its checks to the expensive work: a bad input was not caught."""


def _boom(*a, **k):
    raise Reached("the expensive work started")


def run_main(args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``lumina-jax ARGS`` through the real entry point."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["lumina-jax", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


CASES: dict[str, int] = {}


def check_refused(folder: Path, args, command: str) -> str:
    """Run ``args`` in ``folder``; assert the bad-input contract; return the error line."""
    CASES[command] = CASES.get(command, 0) + 1
    before = snapshot(folder)
    code, _, err = run_main(args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, (args, err[-2000:])
    assert code == 2, (args, code, err[-1000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, err[-1000:])
    assert snapshot(folder) == before, (args, "files changed or appeared")
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def report_case_count():
    yield
    if CASES:
        sys.__stderr__.write(f"\nCLI robustness suite: {sum(CASES.values())} cases {dict(sorted(CASES.items()))}\n")


@contextlib.contextmanager
def workdir():
    with tempfile.TemporaryDirectory(prefix="lj-robust-") as d:
        yield Path(d)


# ------------------------------------------------------------------ shared strategies
junk_bytes = st.one_of(
    st.binary(min_size=1, max_size=3000),
    st.integers(1, 70000).map(lambda n: b"\x00" * n),
    st.text(max_size=500).map(lambda t: (t or "x").encode("utf-8", "surrogatepass") if "\x00" not in t else b"x"),
    st.sampled_from([b"\x89HDF\r\n\x1a\n" + b"garbage" * 50, b"SIMPLE  = T" + b" " * 100, b"\x1f\x8b\x08" + b"z" * 40,
                     b"{", b"[]", b"null", b"\xff\xfe\x00x"]),
)


def json_value():
    return st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                  st.text(max_size=8)),
                        lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids,
                                                                                           max_size=4)),
                        max_leaves=8)


@st.composite
def bad_params(draw):
    """Parameter-file content that no stage-1 command may accept."""
    kind = draw(st.sampled_from(["junk", "json", "mutate"]))
    if kind == "junk":
        return draw(junk_bytes)
    if kind == "json":
        v = draw(json_value())
        if isinstance(v, dict) and set(GOOD) <= set(v):
            v = [v]
        return json.dumps(v).encode()
    d = dict(GOOD)
    name = draw(st.sampled_from(sorted(GOOD)))
    how = draw(st.sampled_from(["drop", "text", "bool", "null", "huge", "nan", "unknown", "list"]))
    text = None
    if how == "drop":
        del d[name]
    elif how == "text":
        d[name] = draw(st.text(max_size=5))
    elif how == "bool":
        d[name] = draw(st.booleans())
    elif how == "null":
        d[name] = None
    elif how == "huge":
        d[name] = draw(st.sampled_from([1e30, -1e30, 1e6, -1e6]))
    elif how == "nan":
        text = json.dumps(d).replace(json.dumps(d[name]), draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])), 1)
    elif how == "unknown":
        d[draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in GOOD))] = 1.0
    else:
        d[name] = [d[name]]
    return (text or json.dumps(d)).encode()


bad_stage = st.one_of(st.integers().filter(lambda n: n not in (1, 2, 3)).map(str),
                      st.sampled_from(["abc", "1.5", "", "one", "nan"]))


# ------------------------------------------------------------------------- simulate
@pytest.fixture(scope="module")
def no_synthesizer():
    from lumina_jax import synth

    mp = pytest.MonkeyPatch()
    mp.setattr(synth.Synthesizer, "default", staticmethod(_boom))
    yield
    mp.undo()


@st.composite
def simulate_case(draw):
    """(files {name: bytes}, args) of a `simulate` call that must be refused."""
    files = {"good.json": json.dumps(GOOD).encode(), "old.csv": b"wavelength_A,L\n1,2\n", "old.png": b"\x89PNG old"}
    args = ["simulate", "--stage", "1", "--params", F("good.json"), "--out", F("new.csv")]
    kind = draw(st.sampled_from(["params", "stage", "out", "plot", "config"]))
    if kind == "params":
        files["p.json"] = draw(bad_params())
        args[4] = F("p.json")
    elif kind == "stage":
        args[2] = draw(bad_stage)
    elif kind == "out":
        args[6] = F(draw(st.sampled_from(["old.csv", "good.json", ".", "old.csv/x.csv", "good.json/sub/x.csv"])))
    elif kind == "plot":
        args += ["--plot", F(draw(st.sampled_from(["old.png", "new.csv", "p.xyz", ".", "nodir/p.png", "p",
                                                   "good.json"])))]
    else:
        files["bad.yaml"] = draw(st.sampled_from([b"{", b"- 1\n- 2\n", b"no_such_setting: 3\n", b"\x00\x01"]))
        args += ["--config", F(draw(st.sampled_from(["bad.yaml", "missing.yaml", "."])))]
    return files, args


def _write(folder: Path, files: dict) -> None:
    for name, content in files.items():
        (folder / name).write_bytes(content)


class F(str):
    """A file argument, relative to the case's folder."""


def _in(folder: Path, args) -> list[str]:
    """File arguments (:class:`F`) -> paths in ``folder``; everything else as it is."""
    return [str(folder / a) if isinstance(a, F) else str(a) for a in args]


@SUITE
@given(case=simulate_case())
def test_simulate_refuses_bad_input(no_synthesizer, case):
    files, args = case
    with workdir() as d:
        _write(d, files)
        check_refused(d, _in(d, args), "simulate")


# --------------------------------------------------------------------------- ejecta
@st.composite
def ejecta_case(draw):
    files = {"good.json": json.dumps(GOOD).encode()}
    args = ["ejecta", "--stage", "1", "--params", F("good.json")]
    kind = draw(st.sampled_from(["params", "params", "stage", "parametrisation", "missing"]))
    if kind == "params":
        files["p.json"] = draw(bad_params())
        args[4] = F("p.json")
    elif kind == "stage":
        args[2] = draw(bad_stage)
    elif kind == "parametrisation":
        args += ["--parametrisation", draw(st.text(min_size=1, max_size=6).filter(
            lambda t: t.strip() not in ("full", "knots") and not t.startswith("-")))]
    else:
        args[4] = F(draw(st.sampled_from(["missing.json", "."])))
    return files, args


@SUITE
@given(case=ejecta_case())
def test_ejecta_refuses_bad_input(case):
    files, args = case
    with workdir() as d:
        _write(d, files)
        check_refused(d, _in(d, args), "ejecta")


# --------------------------------------------------------------------- infer --observed
INFER_CONFIG = """
mock:
  stage1: {a: 1.0, v: 11000.0, d: 0.5}
  noise_frac: 0.01
  seed: 3
likelihood: {n_poly: 1, f_sys_range: [0.001, 0.3], log_scale_sd: 0.5, poly_sd: 0.1}
priors: {}
observed: {}
sampler: {map_starts: 1, ridge: null}
convergence: {rhat_max: 1.01, max_divergent_frac: 0.01}
"""


@pytest.fixture(scope="module")
def toy_infer():
    """The toy emulator and synthesizer of the inference tests; the MAP search is the sentinel."""
    sys.path.insert(0, str(Path(__file__).parent / "inference"))
    from inference_toys import ToyEmulator, ToySynth, toy_space

    import lumina_jax.workflows.loaders as loaders
    from lumina_jax.workflows import fit

    sp = toy_space()
    mp = pytest.MonkeyPatch()
    mp.setattr(loaders, "get_emulator", lambda path: ToyEmulator(sp))
    mp.setattr(loaders, "get_synthesizer", lambda space, config=None: ToySynth(sp))
    mp.setattr(fit, "find_map", _boom)
    yield
    mp.undo()


def _csv(w, f, header="wavelength_angstrom,flux_erg_s_cm2_angstrom") -> bytes:
    rows = "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in zip(np.asarray(w, float), np.asarray(f, float)))
    return (header + "\n" + rows + "\n").encode()


def _toy_spectrum(w):
    x = np.asarray(w) / 6000.0
    return 1e-15 * x ** -1.0 * (1 - 0.5 * np.exp(-0.5 * ((np.asarray(w) - 6150.0) / 80.0) ** 2))


W_GOOD = np.arange(3000.0, 9000.0, 4.0)


@st.composite
def bad_spectrum(draw):
    kind = draw(st.sampled_from(["junk", "header", "few", "nan", "unsorted", "dup", "micron", "nm", "red", "neg",
                                 "unit", "fits", "columns", "text"]))
    w, f = W_GOOD.copy(), _toy_spectrum(W_GOOD)
    name = "obs.csv"
    if kind == "junk":
        return name, draw(junk_bytes)
    if kind == "header":
        return name, b"wavelength_angstrom,flux_erg_s_cm2_angstrom\n" * draw(st.integers(1, 3))
    if kind == "few":
        n = draw(st.integers(1, 9))
        return name, _csv(w[:n], f[:n])
    if kind == "nan":
        i = draw(st.integers(0, w.size - 1))
        f[i] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif kind == "unsorted":
        i = draw(st.integers(1, w.size - 1))
        w[[i - 1, i]] = w[[i, i - 1]]
    elif kind == "dup":
        i = draw(st.integers(1, w.size - 1))
        w[i] = w[i - 1]
    elif kind == "micron":
        w = w / 1e4
        return name, _csv(w, f, header="wavelength,flux")
    elif kind == "nm":
        return name, _csv(w / 10.0, f, header="wavelength,flux")
    elif kind == "red":  # only 9000-9700 A: misses the normalisation window
        w = np.arange(9000.0, 9700.0, 2.0)
        f = _toy_spectrum(w)
    elif kind == "neg":
        f = -np.abs(f) * draw(st.floats(0.0, 10.0))
    elif kind == "unit":
        return name, _csv(w, f, header="wavelength_angstrom,flux_" + draw(st.sampled_from(["furlong", "parsec",
                                                                                           "xyz"])))
    elif kind == "fits":
        return "obs.fits", draw(junk_bytes)
    elif kind == "columns":
        lines = _csv(w, f).decode().splitlines()
        i = draw(st.integers(1, len(lines) - 1))
        lines[i] = lines[i] + ",1.0"
        return name, ("\n".join(lines) + "\n").encode()
    else:
        lines = _csv(w, f).decode().splitlines()
        i = draw(st.integers(1, len(lines) - 1))
        lines[i] = draw(st.sampled_from(["abc,def", "1.0;2.0", "--", "1e400x,2"]))
        return name, ("\n".join(lines) + "\n").encode()
    return name, _csv(w, f)


@st.composite
def infer_case(draw):
    files = {"good.csv": _csv(W_GOOD, _toy_spectrum(W_GOOD)), "inf.yaml": INFER_CONFIG.encode()}
    args = ["infer", "--config", F("inf.yaml"), "--observed", F("good.csv"), "--out", F("res"), "--no-plots"]
    kind = draw(st.sampled_from(["file", "file", "file", "option"]))
    if kind == "file":
        name, content = draw(bad_spectrum())
        files[name] = content
        args[4] = F(name)
        return files, args
    option = draw(st.sampled_from([
        ("--redshift", st.sampled_from(["nan", "-0.5", "7", "inf", "x"])),
        ("--ebv-mw", st.sampled_from(["-0.1", "9", "nan", "x"])),
        ("--ebv-host", st.sampled_from(["-1", "12"])),
        ("--window", st.sampled_from(["5000,4000", "abc", "4000", "4000,4000", "1,2,3", "nan,5000"])),
        ("--wave-unit", st.text(min_size=1, max_size=5).filter(
            lambda t: t.lower() not in ("angstrom", "aa", "a", "ang", "nm", "um", "micron") and not t.startswith("-"))),
        ("--flux-unit", st.sampled_from(["furlong", "erg", "Jy/sr"])),
        ("--prior", st.sampled_from(["a", "a=1", "zz=1,2", "a=1,-2", "a=x,y", "=1,1"])),
        ("--sampler", st.sampled_from(["gibbs", "", "NUTS!"])),
        ("--stage", bad_stage),
        ("--chains", st.sampled_from(["0", "-3", "x"])),
        ("--mock-noise", st.sampled_from(["0", "-1", "nan"])),
        ("--seed", st.sampled_from(["-1", "x"])),
        ("--emulator-sigma", st.sampled_from(["sometimes", "x"])),
        ("--box-link", st.sampled_from(["tanh", "x"])),
        ("--out", st.sampled_from(["full", "good.csv", "good.csv/sub"]).map(F)),
    ]))
    args += [option[0], draw(option[1])]
    if option[0] == "--out":
        files["full/summary.json"] = b'{"my": "old fit"}'
    return files, args


@SUITE
@given(case=infer_case())
def test_infer_observed_refuses_bad_input(toy_infer, case):
    files, args = case
    with workdir() as d:
        for name, content in files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(content)
        check_refused(d, _in(d, args), "infer --observed")


# ------------------------------------------------------ dataset info / train (campaign stores)
@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    from lumina_jax.emulator._data import write_store
    from lumina_jax.params import load_space

    space = load_space(1)
    rng = np.random.default_rng(0)
    theta = np.asarray(space.from_unit(rng.uniform(0.05, 0.95, size=(12, space.dim))))
    wl = np.arange(2000.0, 10000.1, 20.0)
    spectra = 1e39 * (1.0 + rng.uniform(size=(12, wl.size)))
    status = np.array([1] * 8 + [0, 2, 1, 0], np.int8)
    return write_store(tmp_path_factory.mktemp("store") / "good.h5", space, theta, wl, spectra, status)


def _flip(path: Path, offset: int, bit: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ (1 << bit)]))


@st.composite
def corrupt_store(draw, template: Path):
    """(bytes of) a corrupted copy of ``template``: every one of them must be refused."""
    kind = draw(st.sampled_from(["flip", "flip", "flip", "nan", "status", "truncate", "junk", "foreign", "text"]))
    data = template.read_bytes()
    if kind == "junk":
        return draw(junk_bytes)
    if kind == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "text":
        return b"wavelength,flux\n1,2\n"
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.h5"
        p.write_bytes(data)
        if kind == "foreign":
            with h5py.File(p, "w") as f:
                f["x"] = np.arange(3)
                f.attrs["format"] = draw(st.sampled_from(["lumina-jax-emulator", "other", ""]))
        elif kind == "flip":  # a bit of a dataset that training reads, or of the seal line (the checksum)
            name = draw(st.sampled_from(["design", "status", "spectra", "wavelength", "attempts", "seal"]))
            if name == "seal":
                off, size = 0, len(b"lumina-jax campaign store\nsha256 ") + 64
            else:
                with h5py.File(p, "r") as f:
                    off, size = f[name].id.get_offset(), f[name].id.get_storage_size()
            _flip(p, off + draw(st.integers(0, size - 1)), draw(st.integers(0, 7)))
        elif kind == "nan":
            with h5py.File(p, "r+") as f:
                row = draw(st.sampled_from([0, 3, 7, 10]))
                f["spectra"][row, draw(st.integers(0, f["spectra"].shape[1] - 1))] = np.nan
        else:
            with h5py.File(p, "r+") as f:
                if draw(st.booleans()):
                    f["status"][draw(st.integers(0, 11))] = draw(st.sampled_from([3, -1, 7, 127]))
                else:
                    f["status"][draw(st.sampled_from([8, 11]))] = 1  # a pending row (NaN spectrum) marked done
        return p.read_bytes()


def _train_accepts(store: Path, out: Path) -> bool:
    """Whether `train` gets past reading ``store`` (training itself is the sentinel)."""
    import lumina_jax.emulator as emulator

    mp = pytest.MonkeyPatch()
    mp.setattr(emulator, "train_emulator", _boom)
    try:
        code, _, err = run_main(["train", "--data", store, "--out", out])
    except Reached:
        return True
    finally:
        mp.undo()
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return False


@SUITE
@given(data=st.data())
def test_dataset_info_refuses_corrupt_stores_and_agrees_with_train(good_store, data):
    content = data.draw(corrupt_store(good_store))
    with workdir() as d:
        p = d / "store.h5"
        p.write_bytes(content)
        line = check_refused(d, ["dataset", "info", p], "dataset info")
        assert not _train_accepts(p, d / "ckpt.h5"), f"train accepts a store that dataset info refuses ({line})"


def test_dataset_info_refuses_a_directory_and_a_missing_file():
    with workdir() as d:
        for target in (d, d / "missing.h5"):
            check_refused(d, ["dataset", "info", target], "dataset info")
            assert not _train_accepts(target, d / "ckpt.h5")


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(offset=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7))
def test_dataset_info_and_train_agree_on_any_flipped_bit(good_store, offset, bit):
    """A bit flipped anywhere in the file (metadata, free space, provenance strings included):
    whatever the outcome, `dataset info` and `train` reach the same verdict."""
    with workdir() as d:
        p = d / "store.h5"
        shutil.copy(good_store, p)
        _flip(p, int(offset * p.stat().st_size), bit)
        code, _, err = run_main(["dataset", "info", p, "--json"])
        assert "Traceback" not in err and code in (0, 2), err[-1500:]
        assert (code == 0) == _train_accepts(p, d / "ckpt.h5"), err


def test_dataset_info_and_train_agree_on_the_uncorrupted_store(good_store, tmp_path):
    code, out, err = run_main(["dataset", "info", good_store, "--json"])
    assert code == 0 and json.loads(out)["counts"] == {"pending": 2, "done": 9, "failed": 1}, err
    assert _train_accepts(good_store, tmp_path / "ckpt.h5")


# -------------------------------------------------------------------- emulator report
@pytest.fixture(scope="module")
def report_files(small_emulator_files):
    """A small (untrained) emulator checkpoint and a store of finished models on its grid."""
    return small_emulator_files


@st.composite
def report_case(draw, ckpt: Path, store: Path):
    files = {"emu.h5": ckpt.read_bytes(), "store.h5": store.read_bytes(), "old.png": b"\x89PNG old"}
    args = ["emulator", "report", F("emu.h5"), "--data", F("store.h5")]
    kind = draw(st.sampled_from(["ckpt", "ckpt", "data", "data", "window", "plot"]))
    if kind == "ckpt":
        how = draw(st.sampled_from(["junk", "truncate", "store", "dir", "flip", "missing"]))
        if how == "junk":
            files["emu.h5"] = draw(junk_bytes)
        elif how == "truncate":
            files["emu.h5"] = files["emu.h5"][:draw(st.integers(0, len(files["emu.h5"]) - 1))]
        elif how == "store":
            args[2] = F("store.h5")
        elif how == "dir":
            args[2] = F(".")
        elif how == "missing":
            args[2] = F("none.h5")
        else:  # a bit of the network's weights, its PCA basis or its grid
            with tempfile.TemporaryDirectory() as t:
                p = Path(t) / "e.h5"
                p.write_bytes(files["emu.h5"])
                with h5py.File(p, "r") as f:
                    names = []
                    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.size else None)
                    name = draw(st.sampled_from(sorted(names)))
                    off, size = f[name].id.get_offset(), f[name].id.get_storage_size()
                _flip(p, off + draw(st.integers(0, size - 1)), draw(st.integers(0, 7)))
                files["emu.h5"] = p.read_bytes()
    elif kind == "data":
        files["bad.h5"] = draw(corrupt_store(store))
        args[4] = F("bad.h5")
    elif kind == "window":
        lo, hi = draw(st.sampled_from([("9000", "3000"), ("nan", "5000"), ("5000", "5000"), ("inf", "9000"),
                                       ("x", "9000")]))
        args += ["--wl-min", lo, "--wl-max", hi]
    else:
        args += ["--plot", F(draw(st.sampled_from(["old.png", "r.xyz", ".", "nodir/r.png", "emu.h5", "store.h5"])))]
    return files, args


@SUITE
@given(data=st.data())
def test_emulator_report_refuses_bad_input(report_files, data):
    files, args = data.draw(report_case(*report_files))
    with workdir() as d:
        _write(d, files)
        check_refused(d, _in(d, args), "emulator report")


# --------------------------------------------------------------------------- ffi box3d
FFI_TEMPLATE = REPO / "data" / "ffi_qke_32x110_test.h5"


@st.composite
def box3d_case(draw):
    initial = "F4_initial(1|ccm)"
    template = FFI_TEMPLATE.read_bytes()
    files = {"in.h5": template, "old.h5": b"old output"}
    args = ["ffi", "box3d", F("in.h5"), "--out", F("out.h5")]
    kind = draw(st.sampled_from(["junk", "values", "shape", "missing", "order", "out", "chunk"]))
    if kind == "junk":
        files["in.h5"] = draw(st.one_of(junk_bytes, st.integers(0, len(template) - 1).map(lambda n: template[:n])))
    elif kind in ("values", "shape", "missing"):
        with tempfile.TemporaryDirectory() as t:
            p = Path(t) / "in.h5"
            p.write_bytes(template)
            with h5py.File(p, "r+") as f:
                if kind == "values":  # a NaN / inf anywhere, or a negative density (N, index 3 of axis 1)
                    a = f[initial][...]
                    idx = tuple(draw(st.integers(0, s - 1)) for s in a.shape)
                    if draw(st.booleans()):
                        a[idx] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
                    else:
                        a[idx[0], 3, idx[2], idx[3]] = -abs(a[idx[0], 3, idx[2], idx[3]]) - 1.0
                    f[initial][...] = a
                elif kind == "shape":
                    a = f[initial][...]
                    del f[initial]
                    f[initial] = draw(st.sampled_from([a[:, :3], a[:, :, :1], a[0], a.reshape(a.shape[0], -1)]))
                else:
                    del f[initial]
            files["in.h5"] = p.read_bytes()
    elif kind == "order":
        args += ["--order", draw(st.sampled_from(["0", "4", "-1", "18", "x"]))]
    elif kind == "out":
        args[4] = F(draw(st.sampled_from(["old.h5", "in.h5", ".", "nodir/o.h5", "old.h5/o.h5"])))
    else:
        args += ["--chunk", draw(st.sampled_from(["0", "-5", "x"]))]
    return files, args


@SUITE
@given(case=box3d_case())
def test_ffi_box3d_refuses_bad_input(case):
    files, args = case
    with workdir() as d:
        _write(d, files)
        check_refused(d, _in(d, args), "ffi box3d")
