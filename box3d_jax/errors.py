"""Exceptions for errors a user can fix (bad files, bad settings).

``lumina-jax ffi`` prints them as one ``error: ...`` line with exit code 2; programs that
import the package catch them like any ``ValueError`` / ``OSError``.
"""


class UserError(Exception):
    """Bad input at a boundary (command-line option, file, argument of a public function)."""


class ParameterError(UserError, ValueError):
    """A setting or array that does not fit what the closure or solver accepts."""


class DataFileError(UserError, OSError):
    """A missing, corrupt or inconsistent data file."""
