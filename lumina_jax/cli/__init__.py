"""The ``lumina-jax`` command line.

Each command group lives in its own module of this package and is registered
here.  Errors that users can fix (bad files, bad parameters) are raised as
:class:`lumina_jax.errors.UserError` and printed as one line with exit code 2;
never as a traceback.
"""

from __future__ import annotations

import sys

import typer

from lumina_jax._runtime import configure_compilation_cache
from lumina_jax.errors import UserError

app = typer.Typer(
    name="lumina-jax",
    help="Differentiable SN Ia spectral inference (lumina_jax) and the Box3D FFI closure (box3d_jax).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- command registration: one module per command group ---------------------
from lumina_jax.cli import campaign as _campaign  # noqa: E402
from lumina_jax.cli import emulator as _emulator  # noqa: E402
from lumina_jax.cli import ffi as _ffi  # noqa: E402
from lumina_jax.cli import ffi_qke as _ffi_qke  # noqa: E402  (adds ffi solve/generate)
from lumina_jax.cli import inference as _inference  # noqa: E402
from lumina_jax.cli import lumina as _lumina  # noqa: E402
from lumina_jax.cli import model as _model  # noqa: E402
from lumina_jax.cli import synth as _synth  # noqa: E402

for _module in (_model, _synth, _campaign, _lumina, _emulator, _inference, _ffi, _ffi_qke):
    _module.register(app)


def main() -> None:
    """Console-script entry point: run the app, turn UserError into a one-line message.

    Turns on the persistent compilation cache first (``lumina_jax._runtime``; off with
    ``LUMINA_JAX_XLA_CACHE=0``)."""
    configure_compilation_cache()
    try:
        app()
    except UserError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
