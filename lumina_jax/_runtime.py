"""XLA:CPU settings applied on package import, before the JAX backend starts.

``--xla_cpu_enable_concurrency_optimized_scheduler=false``: with jaxlib 0.10 the CPU
runtime's concurrency-optimised thunk schedule deadlocks (every thread parked, 0 % CPU, the
call never returns) on some programs that vmap while-loops around our Woodbury likelihood:
a vmapped L-BFGS polish of the MAP hung every time, NUTS vmapped over coverage injections
and a batched synthesizer campaign hung after minutes to an hour.  The default schedule
completes them, and on the 2-core CPU it costs nothing measurable (value-and-gradient of
the stage-1 log density: 0.25-0.27 ms either way).  ``tests/lumina_jax/test_runtime.py``
runs the program that hung.

Opt out with ``LUMINA_JAX_XLA_DEFAULTS=1``, or set the flag yourself in ``XLA_FLAGS``.

``LUMINA_JAX_SINGLE_THREAD=1`` also runs XLA:CPU's operations on one thread
(:data:`SINGLE_THREAD_FLAGS`).  On a machine whose cores are all taken by other work (a
LUMINA campaign, ``check coverage`` shards, a second fit), XLA's intra-op thread pool waits for
descheduled threads at every operation: the SN 2011fe stage-1 MAP search took 895 s with
LUMINA-SN on the other of two cores, and 44 s with this setting.
``box3d_jax._runtime`` sets the same flag (box3d_jax imports nothing from lumina_jax).

In the ``lumina-jax`` process only, Ctrl-C during start-up (importing JAX takes seconds) ends
it with one line and exit code 130 (:func:`install_startup_interrupt`).

The command line (not the library) also turns on JAX's persistent compilation cache
(:func:`configure_compilation_cache`): a rerun of ``lumina-jax infer --stage 1`` took 69 s
instead of 143 s on one core, with the same draws.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FLAGS = {"--xla_cpu_enable_concurrency_optimized_scheduler": "false"}
#: added by ``LUMINA_JAX_SINGLE_THREAD=1``: XLA:CPU operations on one thread
SINGLE_THREAD_FLAGS = {"--xla_cpu_multi_thread_eigen": "false", "intra_op_parallelism_threads": "1"}


def configure_xla_cpu() -> None:
    """Add our defaults to ``XLA_FLAGS`` unless the user opted out or chose the flag; with
    ``LUMINA_JAX_SINGLE_THREAD=1`` also :data:`SINGLE_THREAD_FLAGS`."""
    flags = os.environ.get("XLA_FLAGS", "")
    wanted = {}
    if os.environ.get("LUMINA_JAX_XLA_DEFAULTS", "") in ("", "0"):
        wanted.update(FLAGS)
    if os.environ.get("LUMINA_JAX_SINGLE_THREAD", "") not in ("", "0"):
        wanted.update(SINGLE_THREAD_FLAGS)
    for name, value in wanted.items():
        if name not in flags:
            flags = f"{flags} {name}={value}".strip()
    os.environ["XLA_FLAGS"] = flags


def is_cli_process(argv=None, orig_argv=None) -> bool:
    """Whether this process is the ``lumina-jax`` command (the console script, or
    ``python -m lumina_jax``), not a program that imports the library."""
    argv = sys.argv if argv is None else argv
    orig = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv and os.path.basename(argv[0]).removesuffix(".exe") == "lumina-jax":
        return True
    return any(a == "-m" and b == "lumina_jax" for a, b in zip(orig, orig[1:]))


def _startup_sigint(signum, frame) -> None:  # pragma: no cover - exercised in a subprocess
    try:
        sys.stderr.write("interrupted: during start-up, nothing was done\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


def install_startup_interrupt() -> None:
    """Ctrl-C while the command starts (importing JAX takes seconds): one line, exit code 130,
    no traceback.  Only in the ``lumina-jax`` process; the command's own handler replaces it
    (``lumina_jax.cli._interrupt``).  Importing the library elsewhere changes no signal handler.
    A process started with SIGINT ignored (a background job of a shell script) is left so."""
    import signal
    import threading

    if not is_cli_process() or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _startup_sigint)


CACHE_MAX_BYTES = 1 << 30  # least-recently-used entries are evicted beyond 1 GiB
CACHE_MIN_COMPILE_S = 0.5  # programs compiled faster than this are not stored
_OFF = ("0", "off", "false", "no", "none")


def cache_root(environ=None) -> Path:
    """The package's cache folder: ``$LUMINA_JAX_CACHE`` or the platformdirs user cache
    (``~/.cache/lumina-jax`` on Linux); atomic data and compiled programs live below it."""
    env = (os.environ if environ is None else environ).get("LUMINA_JAX_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lumina-jax"))


def configure_compilation_cache(environ=None) -> str | None:
    """Point JAX's persistent compilation cache at ``cache_root()/xla`` (call before the first
    compilation; the CLI does, importing the library does not).

    ``LUMINA_JAX_XLA_CACHE=0`` (or off / false / no) switches it off; a
    ``JAX_COMPILATION_CACHE_DIR``, ``JAX_COMPILATION_CACHE_MAX_SIZE`` or
    ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` the user set wins.  The folder is capped at
    :data:`CACHE_MAX_BYTES` (least-recently-used entries evicted); programs compiled in under
    :data:`CACHE_MIN_COMPILE_S` are not stored.  A folder that cannot be created or written
    leaves the cache off (compilation works as without it).  Returns the folder in use, or None."""
    import jax

    environ = os.environ if environ is None else environ
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    if environ.get("LUMINA_JAX_XLA_CACHE", "").strip().lower() in _OFF:
        return None
    path = cache_root(environ) / "xla"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in environ:
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return str(path)
