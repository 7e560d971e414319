"""lumina-jax: differentiable SN Ia spectral inference in JAX.

Physics runs in float64 (Boltzmann and Saha factors span > 300 decades and the
Sobolev optical depths of weak lines underflow float32), so importing the package
enables ``jax_enable_x64``.  Machine-learning code (the emulator) casts its arrays
to float32 explicitly, where that precision is enough.
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
