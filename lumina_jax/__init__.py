"""lumina-jax: differentiable SN Ia spectral inference in JAX.

Physics runs in float64 (Boltzmann and Saha factors span > 300 decades and the
Sobolev optical depths of weak lines underflow float32), so importing the package
enables ``jax_enable_x64``.  Machine-learning code (the emulator) casts its arrays
to float32 explicitly, where that precision is enough.

Before JAX starts its backend, the package sets one XLA:CPU flag that avoids a deadlock of
jaxlib 0.10's CPU runtime (see ``lumina_jax._runtime``).
"""

from lumina_jax._runtime import configure_xla_cpu, install_startup_interrupt

install_startup_interrupt()  # the lumina-jax command only: Ctrl-C while JAX is imported
configure_xla_cpu()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
