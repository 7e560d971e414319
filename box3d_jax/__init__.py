"""box3d_jax: Box3D maximum-entropy fast-flavor-instability closure in JAX.

Conservation laws are checked to round-off, so the package works in float64 and
enables ``jax_enable_x64`` on import.
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
