"""box3d_jax: Box3D maximum-entropy fast-flavor-instability closure in JAX.

Conservation laws are checked to round-off, so the package works in float64 and
enables ``jax_enable_x64`` on import.

Modules (import them directly; nothing heavy is imported here):
  lebedev     rule(order) -> (directions [n, 3], weights [n])  (Σw = 4π)
  maxent      minerbo_Z, minerbo_Z_approx, distribution(N, F, directions, weights)
  box3d       box3d(F4[..., 2, NF, 4]), box3d_info, build_box3d, layout converters
  invariants  27 Lorentz invariants (metric (−,+,+,+), time component last)
  residual    equivariant conservative Flax residual model, training, checkpoints, domain
  io          Rhea/Emu HDF5 files;  metrics: error metrics;  export: jax.export
  errors      UserError and subclasses: input a user can fix
  cli         the ``ffi`` commands (Typer), mounted by ``lumina-jax ffi``

The package imports nothing from lumina_jax.

``predict(F4, residual=None)``: Box3D (converged default), plus a residual model given as
a checkpoint directory or :class:`box3d_jax.residual.ResidualModel`.
See docs/box3d.md.
"""

from box3d_jax._runtime import configure_xla_cpu  # XLA:CPU flag before the backend starts

configure_xla_cpu()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"


def predict(F4, residual=None, **kwargs):
    """Box3D (+ residual model) for ``F4 [..., 2, 3, 4]``: :func:`box3d_jax.residual.predict`."""
    from box3d_jax.residual import predict as _predict

    return _predict(F4, residual, **kwargs)
