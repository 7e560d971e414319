"""XLA:CPU flag applied on package import, before the JAX backend starts.

``--xla_cpu_enable_concurrency_optimized_scheduler=false``: jaxlib 0.10's concurrency-optimised
CPU schedule can deadlock programs that vmap while-loops (see ``lumina_jax._runtime``), and the
QKE solver vmaps its time-stepping loops (``qke.evolve``, ``ffi solve --batch``).  The flag must be in ``XLA_FLAGS`` before the backend
starts, and either package may be the first or only one imported, so each sets it itself; this
copy is kept small and ``tests/lumina_jax/test_runtime.py`` checks that both agree.

Opt out with ``LUMINA_JAX_XLA_DEFAULTS=1`` (the distribution's switch, honoured by both
packages), or set the flag yourself in ``XLA_FLAGS``.
"""

from __future__ import annotations

import os

FLAGS = {"--xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def configure_xla_cpu() -> None:
    """Add :data:`FLAGS` to ``XLA_FLAGS`` unless the user opted out or chose the flag."""
    if os.environ.get("LUMINA_JAX_XLA_DEFAULTS", "") not in ("", "0"):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    for name, value in FLAGS.items():
        if name not in flags:
            flags = f"{flags} {name}={value}".strip()
    os.environ["XLA_FLAGS"] = flags
