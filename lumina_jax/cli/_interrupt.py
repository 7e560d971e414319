"""Ctrl-C for the commands: stop within a second or two, with one line saying what was kept.

:func:`installed` (used by :func:`lumina_jax.cli.main` around every command) puts three
things in place and takes them away again afterwards:

* a SIGINT handler that records the interrupt and raises :class:`KeyboardInterrupt` in the
  main thread (as Python's own handler does), so ``finally`` blocks and the commands'
  own handlers (``generate`` checkpoints its store) run;
* a watchdog thread, woken by the C-level signal handler through ``signal.set_wakeup_fd``
  even while the main thread sits in compiled code (XLA compilation, a jitted loop).  If
  the command has not ended :data:`GRACE_S` seconds after the signal -- a callback of
  JAX's swallowed the exception, or the main thread is stuck in C -- the watchdog prints the
  line and ends the process with exit code 130;
* :func:`critical`: a block (writing a results directory, updating a checkpoint in place)
  that the interrupt waits for, so that it never leaves a half-written file.

Commands say what an interrupt at the current point keeps with :func:`kept`
(default: :data:`DEFAULT_KEPT`); :func:`report` prints ``interrupted: <what was kept>``
once.  The exit code of an interrupted command is 130.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

#: seconds the command has after Ctrl-C to stop by itself before the watchdog ends the process
GRACE_S = 0.5
#: a critical block (an atomic write) may hold the watchdog back this long at most
CRITICAL_MAX_S = 30.0
DEFAULT_KEPT = "no output was written"


class _State:
    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        self.kept = DEFAULT_KEPT
        self.interrupted = False
        self.signalled_at = None  # time.monotonic() of the first SIGINT
        self.reported = False
        self.critical = 0
        self.pending = False  # a SIGINT arrived inside a critical block


_state = _State()


def kept(message: str) -> None:
    """What an interrupt from now on keeps, e.g. ``"results written to DIR; no plots"``."""
    _state.kept = message


def interrupted() -> bool:
    """Whether Ctrl-C (SIGINT) reached this command."""
    return _state.interrupted


def report(message: str | None = None) -> None:
    """Print ``interrupted: <message or what was kept>`` on stderr, once per command."""
    with _state.lock:
        _state.interrupted = True
        if _state.reported:
            return
        _state.reported = True
        try:
            sys.stderr.write(f"interrupted: {message or _state.kept}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed stderr must not hide the exit code
            pass


@contextlib.contextmanager
def critical():
    """A block that Ctrl-C does not cut short: the interrupt is raised when it ends."""
    with _state.lock:
        _state.critical += 1
    try:
        yield
    finally:
        with _state.lock:
            _state.critical -= 1
            fire = _state.critical == 0 and _state.pending
            if fire:
                _state.pending = False
        if fire:
            raise KeyboardInterrupt


def exit_now(code: int = 130) -> None:
    """End an interrupted command at once: flush stdout / stderr and ``os._exit``.  Python's
    normal exit would first tear down JAX and XLA (seconds, during which no other thread --
    the watchdog included -- can run); an interrupted command has nothing left to clean up."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _on_sigint(signum, frame):
    with _state.lock:
        again = _state.interrupted  # a second Ctrl-C: the first is being handled (or the watchdog will)
        _state.interrupted = True
        if _state.signalled_at is None:
            _state.signalled_at = time.monotonic()
        if _state.critical:
            _state.pending = True
            return
    if not again:
        raise KeyboardInterrupt


def _watchdog(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:  # the write end was closed: the command ended
            return
        if signal.SIGINT in data:
            break
    with _state.lock:
        if _state.signalled_at is None:
            _state.signalled_at = time.monotonic()
        _state.interrupted = True
        start = _state.signalled_at
    while True:
        time.sleep(0.02)
        now = time.monotonic()
        if now < start + GRACE_S:
            continue
        if _state.critical and now < start + GRACE_S + CRITICAL_MAX_S:
            continue
        break
    report()
    exit_now(130)


@contextlib.contextmanager
def installed():
    """Install the handler and the watchdog for one command (main thread only; otherwise a no-op).

    A process started with SIGINT ignored keeps ignoring it: a shell running ``lumina-jax ... &``
    without job control ignores it in the background job so that Ctrl-C at the terminal stops
    only the foreground command (:func:`lumina_jax._runtime.install_startup_interrupt` does the same)."""
    _state.reset()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:  # started with Ctrl-C ignored (a script's `cmd &`): keep it so
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # pragma: no cover - not the main thread of the main interpreter
        os.close(read_fd)
        os.close(write_fd)
        yield
        return
    signal.signal(signal.SIGINT, _on_sigint)
    thread = threading.Thread(target=_watchdog, args=(read_fd,), name="lumina-jax-interrupt", daemon=True)
    thread.start()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        signal.set_wakeup_fd(previous_fd)
        if not _state.interrupted:
            os.close(write_fd)  # ends the watchdog
            thread.join(timeout=1.0)
            os.close(read_fd)
        # after Ctrl-C the watchdog stays armed: it ends the process if leaving it takes too long
