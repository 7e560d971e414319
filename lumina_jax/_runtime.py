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
"""

from __future__ import annotations

import os

FLAGS = {"--xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def configure_xla_cpu() -> None:
    """Add our defaults to ``XLA_FLAGS`` unless the user opted out or chose the flag."""
    if os.environ.get("LUMINA_JAX_XLA_DEFAULTS", "") not in ("", "0"):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    for name, value in FLAGS.items():
        if name not in flags:
            flags = f"{flags} {name}={value}".strip()
    os.environ["XLA_FLAGS"] = flags
