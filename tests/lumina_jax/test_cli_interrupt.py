"""Ctrl-C: the command stops within 2 s with exit code 130 and one ``interrupted: ...`` line.

SIGINT is sent to a real ``lumina-jax`` process at start-up (while JAX is imported), during
the MAP search and at the start of sampling (progress bars on: their callbacks run inside
compiled code).  The fits use the toy model of the inference tests, so that the process
reaches each phase in seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LIMIT_S = 2.0

DRIVER = """
import os, sys
sys.path.insert(0, {toys!r})
from inference_toys import ToyEmulator, ToySynth, toy_space
import lumina_jax.workflows.loaders as loaders
space = toy_space()
loaders.get_emulator = lambda path: ToyEmulator(space)
loaders.get_synthesizer = lambda space_, config=None: ToySynth(space)
if os.environ.get("TEST_FAST_MAP"):  # reach the sampler in seconds: the MAP at the box centre
    import jax.numpy as jnp
    from lumina_jax.workflows import fit
    fit.find_map = lambda fm, key, n_starts=1: (jnp.zeros(fm.n_z), 0.0, None, None)
from lumina_jax.cli import main
sys.argv = ["lumina-jax"] + sys.argv[1:]
main()
"""

CONFIG = """
mock: {stage1: {a: 1.0, v: 11000.0, d: 0.5}, noise_frac: 0.01, seed: 3}
likelihood: {n_poly: 1, f_sys_range: [0.001, 0.3], log_scale_sd: 0.5, poly_sd: 0.1, emulator_sigma: varying}
priors: {}
observed: {}
sampler: {map_starts: 1, ridge: null}
convergence: {rhat_max: 1.01, max_divergent_frac: 0.01}
"""


# A child inherits ignored and blocked signals across exec.  Started by a shell script as a
# background job (`pytest &`), this process has SIGINT ignored, and so would the command, which
# then rightly ignores Ctrl-C; it runs as from a terminal instead: SIGINT at its default, then exec.
FOREGROUND = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
              "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); os.execv(sys.argv[1], sys.argv[1:])")


def _interrupt_at(cmd, trigger, env_extra=None, cwd=REPO):
    """Start ``cmd`` (Ctrl-C not ignored, whatever this process has); send SIGINT when ``trigger``
    (a line prefix, or a callable of the pid) says; return (exit code, seconds from the signal to
    the exit, output)."""
    env = dict(os.environ, LUMINA_JAX_XLA_CACHE="0", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO),
               **(env_extra or {}))
    proc = subprocess.Popen([sys.executable, "-c", FOREGROUND, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=cwd)
    lines: list[bytes] = []
    seen = threading.Event()

    def read():
        for raw in iter(proc.stdout.readline, b""):
            lines.append(raw)
            if isinstance(trigger, str) and trigger.encode() in raw:
                seen.set()
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    try:
        if callable(trigger):
            while not trigger(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            seen.wait(timeout=120)
        assert proc.poll() is None, b"".join(lines).decode(errors="replace")[-2000:]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    return code, elapsed, b"".join(lines).decode(errors="replace")


def _assert_one_line(code, elapsed, text, kept):
    out = [ln for ln in text.splitlines() if ln.strip()]
    said = [ln for ln in out if ln.startswith("interrupted")]
    assert code == 130, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    assert len(said) == 1 and said[0] == out[-1] and kept in said[0], text[-2000:]
    assert elapsed < LIMIT_S, f"stopped {elapsed:.2f} s after Ctrl-C"


def _jax_loading(pid: int) -> bool:
    """True once the process runs ``python -m lumina_jax`` and has mapped jaxlib's extension: it
    is importing JAX.  Between fork and exec the child is a copy of this test process, whose own
    jaxlib is mapped: a signal sent then is lost (the child's Python handler never runs), so the
    command line must already be the new one (the :data:`FOREGROUND` launcher's also names
    ``-m lumina_jax``, but it never maps jaxlib)."""
    try:
        if b"-m\0lumina_jax\0" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
        return "jaxlib" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the start-up phase")
def test_ctrl_c_at_start_up(tmp_path):
    code, elapsed, text = _interrupt_at([sys.executable, "-m", "lumina_jax", "infer", "--out", str(tmp_path / "r")],
                                        _jax_loading)
    _assert_one_line(code, elapsed, text, "")
    assert not (tmp_path / "r").exists()


@pytest.fixture
def driver(tmp_path):
    (tmp_path / "drv.py").write_text(DRIVER.format(toys=str(HERE / "inference")))
    (tmp_path / "inf.yaml").write_text(CONFIG)
    return [sys.executable, str(tmp_path / "drv.py"), "infer", "--config", str(tmp_path / "inf.yaml"),
            "--chains", "1", "--warmup", "50", "--samples", "50"]


def test_ctrl_c_during_the_map_search_and_at_the_start_of_sampling(tmp_path, driver):
    """Two runs at once (to halve the wall time): one interrupted in the MAP search (an existing
    results directory given with --force stays as it was), one when NUTS starts, with progress
    bars on -- they report through callbacks of compiled code, which used to swallow the
    interrupt (the run went on to exit 0 or 3)."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.json").write_text('{"my": "old fit"}')
    new = tmp_path / "new"
    runs = {"map": (driver + ["--out", str(old), "--force", "--json"], "MAP search:", None),
            "sampling": (driver + ["--out", str(new)], "sampling with nuts", {"TEST_FAST_MAP": "1"})}
    results = {}

    def go(name):
        cmd, trigger, env = runs[name]
        try:
            results[name] = _interrupt_at(cmd, trigger, env_extra=env)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[name] = exc

    threads = [threading.Thread(target=go, args=(name,)) for name in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, res in results.items():
        assert not isinstance(res, BaseException), (name, res)
    _assert_one_line(*results["map"], f"no results written ({old} unchanged)")
    assert sorted(p.name for p in old.iterdir()) == ["summary.json"]
    assert (old / "summary.json").read_text() == '{"my": "old fit"}'
    _assert_one_line(*results["sampling"], f"no results written ({new} not created)")
    assert not new.exists()


def test_a_command_started_with_ctrl_c_ignored_keeps_ignoring_it():
    """A shell script's `lumina-jax ... &` starts the command with SIGINT ignored, so that Ctrl-C
    at the terminal stops only the foreground job: the command must not take it back."""
    from lumina_jax.cli import _interrupt

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _interrupt.installed():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with _interrupt.installed():  # the usual case: the command's handler, then Python's again
            assert signal.getsignal(signal.SIGINT) is _interrupt._on_sigint
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_critical_block_defers_the_interrupt_to_its_end():
    """Inside `critical()` (writing a results directory) Ctrl-C waits; it is raised when the
    block ends, and the state says what was kept."""
    from lumina_jax.cli import _interrupt

    _interrupt._state.reset()
    _interrupt.kept("results written to R")
    done = []
    with pytest.raises(KeyboardInterrupt):
        with _interrupt.critical():
            _interrupt._on_sigint(signal.SIGINT, None)  # what the signal does: no exception here
            done.append("rest of the block")
    assert done == ["rest of the block"] and _interrupt.interrupted()
    _interrupt._state.reset()
    with pytest.raises(KeyboardInterrupt):  # outside a block: at once
        _interrupt._on_sigint(signal.SIGINT, None)
    _interrupt._on_sigint(signal.SIGINT, None)  # a second Ctrl-C while the first is handled: no second exception
    _interrupt._state.reset()
