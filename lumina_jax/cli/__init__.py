"""The ``lumina-jax`` command line.

Each command group lives in its own module of this package and is registered
here; ``ffi`` is box3d_jax's own command line (:mod:`box3d_jax.cli`), mounted here.  Errors
that users can fix (bad files, bad parameters) are raised as
:class:`lumina_jax.errors.UserError` or :class:`box3d_jax.errors.UserError` (box3d_jax
imports nothing from lumina_jax) and printed as one line with exit code 2; never as a
traceback.
"""

from __future__ import annotations

import sys

import typer

import box3d_jax.cli as _ffi
from box3d_jax.errors import UserError as FFIUserError
from lumina_jax._runtime import configure_compilation_cache
from lumina_jax.errors import UserError

#: Exceptions printed as one ``error: ...`` line with exit code 2.
USER_ERRORS = (UserError, FFIUserError)

app = typer.Typer(
    name="lumina-jax",
    help="Differentiable SN Ia spectral inference (lumina_jax) and the Box3D FFI closure (box3d_jax).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- command registration: one module per command group ---------------------
from lumina_jax.cli import campaign as _campaign  # noqa: E402
from lumina_jax.cli import config as _config  # noqa: E402
from lumina_jax.cli import emulator as _emulator  # noqa: E402
from lumina_jax.cli import inference as _inference  # noqa: E402
from lumina_jax.cli import lumina as _lumina  # noqa: E402
from lumina_jax.cli import model as _model  # noqa: E402
from lumina_jax.cli import npe as _npe  # noqa: E402  (train-npe, check sbc; after inference)
from lumina_jax.cli import synth as _synth  # noqa: E402

for _module in (_model, _synth, _campaign, _lumina, _emulator, _inference, _npe, _config, _ffi):
    _module.register(app)


def _one_line(text) -> str:
    return " ".join(str(text).splitlines())


def _usage_error(exc) -> str:
    """A click usage error (unknown option, missing or malformed value) as one line."""
    msg = _one_line(exc.format_message())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        msg += f" (see `{ctx.command_path} --help`)"
    return msg


def main() -> None:
    """Console-script entry point: run the app; a user error (:data:`USER_ERRORS`) or a malformed
    command line is one ``error: ...`` line and exit code 2; Ctrl-C is one ``interrupted: ...``
    line (what was kept) and exit code 130 (:mod:`lumina_jax.cli._interrupt`).

    Turns on the persistent compilation cache first (``lumina_jax._runtime``; off with
    ``LUMINA_JAX_XLA_CACHE=0``)."""
    from typer._click import exceptions as click_exc
    from typer.exceptions import Abort

    from lumina_jax.cli import _interrupt

    code = 0
    with _interrupt.installed():
        try:
            configure_compilation_cache()
            rv = app(standalone_mode=False, prog_name="lumina-jax")  # typer.Exit(n) comes back as n
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except click_exc.NoArgsIsHelpError as exc:  # `lumina-jax dataset`: the group's help
            exc.show()
            code = 2
        except click_exc.ClickException as exc:
            if not _interrupt.interrupted():
                typer.secho(f"error: {_usage_error(exc)}", fg=typer.colors.RED, err=True)
            code = exc.exit_code
        except Abort:
            code = 1
        except USER_ERRORS as exc:
            if not _interrupt.interrupted():
                typer.secho(f"error: {_one_line(exc)}", fg=typer.colors.RED, err=True)
            code = 2
        except KeyboardInterrupt:
            code = 130
        except Exception:
            if not _interrupt.interrupted():
                raise
            # Ctrl-C raised inside a callback of compiled code comes back wrapped in another error
        if _interrupt.interrupted():
            _interrupt.report()
            _interrupt.exit_now(130)
    sys.exit(code)
