"""Exceptions for errors a user can fix; the CLI prints them as one line."""


class UserError(Exception):
    """Bad input at a boundary (CLI argument, file, parameter vector)."""


class ParameterError(UserError, ValueError):
    """A parameter vector or set of names that does not fit its parameter space."""


class DataFileError(UserError, OSError):
    """A missing, corrupt or inconsistent data file."""
