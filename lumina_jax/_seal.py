"""Whole-file checksums ("seals") of the HDF5 files we write: campaign stores and emulator checkpoints.

A sealed file is created with a :data:`USERBLOCK`-byte HDF5 *user block* (bytes at the start
that HDF5 skips).  After each complete write, :func:`seal` puts a magic line and the SHA-256 of
every byte after the block into it; :func:`check_seal` recomputes that digest *before* HDF5
reads the file.  A flipped bit or an overwritten block anywhere in a sealed file is therefore
refused without being parsed -- damaged HDF5 metadata can crash (SIGSEGV) or hang the HDF5
library, which a checksum stored inside the file could not prevent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lumina_jax.errors import DataFileError

USERBLOCK = 512


def _digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(USERBLOCK)
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def seal(path, magic: bytes) -> None:
    """Write ``magic`` and the checksum of everything after the user block into the user block
    of the closed file ``path`` (created with ``userblock_size=USERBLOCK``)."""
    text = magic + b"sha256 " + _digest(path).encode() + b"\n"
    if len(text) > USERBLOCK:
        raise ValueError("seal does not fit the user block")
    with open(path, "r+b") as fh:
        fh.write(text.ljust(USERBLOCK, b"\n"))


def is_sealed(path, magic: bytes) -> bool:
    """Whether ``path`` begins with the seal ``magic`` (its checksum is not verified)."""
    with open(path, "rb") as fh:
        return fh.read(len(magic)) == magic


def check_seal(path, magic: bytes, what: str) -> bool:
    """True when ``path`` is sealed with ``magic`` and its contents match; False when it carries
    no seal (a file written before seals existed, or one whose seal line itself is damaged:
    callers that require a seal refuse it).  :class:`DataFileError` when the contents do not
    match.  ``what`` names the file in the message ("corrupt emulator checkpoint")."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(USERBLOCK)
    if not head.startswith(magic):
        return False
    line = head[len(magic):].split(b"\n", 1)[0]
    if not line.startswith(b"sha256 ") or line[7:].decode("ascii", "replace") != _digest(path):
        raise DataFileError(f"{path}: {what}, its contents do not match the checksum written with them "
                            "(a damaged file: flipped bits or overwritten data)")
    return True
