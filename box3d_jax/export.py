"""Serialise the jitted Box3D (+ residual model) with ``jax.export`` for simulation codes.

The exported function maps a batch of four-fluxes to the asymptotic state:

    F4 [n, 2, 3, 4] float64 (ν/ν̄, e/μ/τ, x/y/z/N; cm⁻³)  ->  (F4' [n, 2, 3, 4], Γ [n] s⁻¹)

with a *symbolic* batch size n, the Lebedev rule and (optionally) the trained residual
parameters baked in as constants. Γ is the Box3D growth-rate proxy √2G_F/ħ·√(I₊I₋).

How a simulation code loads it
------------------------------
* Python host (e.g. a JAX or PyTorch driver)::

      from box3d_jax import export
      f = export.load("box3d_o17.jaxexport")       # jax.export.Exported
      F4_out, growth = f.call(F4_in)                # any n, float64

  (``jax.export.deserialize(path.read_bytes()).call(...)`` does the same without this package.)
* C/C++/Fortran codes: :func:`write_stablehlo` writes the StableHLO module (MLIR text);
  compile and run it with any PJRT client (XLA's ``PJRT_Client_Compile`` via the PJRT C
  API, as used by e.g. the ``xla`` C++ API or IREE's StableHLO importer). Input/output
  layout is row-major (C order) as above; Fortran callers pass the reversed shape
  ``(4, 3, 2, n)``.
The serialization format is versioned by JAX (backward compatible for >= 6 months).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax import export as jax_export

from box3d_jax import box3d as B
from box3d_jax.errors import DataFileError

__all__ = ["export_box3d", "serialize", "save", "load", "write_stablehlo"]


def export_box3d(
    order: int | None = None,
    *,
    method: str = B.DEFAULT_METHOD,
    width: float | None = None,
    params: Any = None,
    config: Any = None,
    platforms: tuple[str, ...] = ("cpu",),
) -> jax_export.Exported:
    """``jax.export`` the jitted Box3D (plus the residual model if ``params`` given).

    Args:
      order, method, width: Box3D quadrature (:func:`box3d_jax.box3d.build_box3d`; defaults:
        the converged "smooth" method); ignored when ``config`` is given (its baseline is used).
      params, config: residual-model parameters and :class:`~box3d_jax.residual.ResidualConfig`.
      platforms: lowering platforms, e.g. ``("cpu",)`` or ``("cpu", "cuda")``.

    Returns:
      The :class:`jax.export.Exported` function ``F4 [n, 2, 3, 4] -> (F4', growth [n])``.
    """
    if params is not None:
        from box3d_jax import residual as R

        if config is None:
            raise ValueError("config is required together with params")
        box = B.build_box3d(config.order, 3, method=config.method, width=config.width)

        def fn(F4):
            res = box(F4)
            return res.F4 + R.residual(params, F4, config), res.growth_rate

    else:
        box = B.build_box3d(order, 3, method=method, width=width)

        def fn(F4):
            res = box(F4)
            return res.F4, res.growth_rate

    (n,) = jax_export.symbolic_shape("n")
    spec = jax.ShapeDtypeStruct((n, 2, 3, 4), jnp.float64)
    return jax_export.export(jax.jit(fn), platforms=platforms)(spec)


def serialize(exported: jax_export.Exported) -> bytes:
    """Bytes of an exported function (``jax.export`` flatbuffer format)."""
    return bytes(exported.serialize())


def save(path: str | os.PathLike, exported: jax_export.Exported) -> Path:
    """Write :func:`serialize` output to ``path``."""
    path = Path(path)
    path.write_bytes(serialize(exported))
    return path


def load(path: str | os.PathLike) -> jax_export.Exported:
    """Read an exported Box3D; call it as ``load(path).call(F4)``."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    try:
        return jax_export.deserialize(bytearray(path.read_bytes()))
    except Exception as exc:
        raise DataFileError(f"{path}: not a jax.export serialization ({exc})") from None


def write_stablehlo(path: str | os.PathLike, exported: jax_export.Exported) -> Path:
    """Write the StableHLO module (MLIR text) for non-Python PJRT/IREE clients."""
    path = Path(path)
    path.write_text(exported.mlir_module())
    return path
