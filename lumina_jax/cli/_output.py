"""What the commands write: strict JSON on stdout and outputs that never overwrite silently.

* :func:`dumps_json` (:func:`lumina_jax.strict_json.dumps`) -- ``json.dumps`` that writes non-finite numbers (NaN, +-inf) as ``null``
  (strict JSON, which ``jq`` and JavaScript parsers accept) and numpy scalars / arrays as
  plain numbers / lists.
* :func:`refuse_overwrite` -- the common ``--force`` rule: an output path that already exists
  stops the command with one error line unless the user asked to overwrite it.
* :func:`check_out_file`, :func:`check_out_dir`, :func:`check_plot_path` -- every output a
  command will write is checked before any long work: not an input, not existing (unless
  ``--force``), in a directory that exists (or can be created) and is writable.
* :func:`write_atomic` -- write a file through a temporary name and a rename, so that an
  interrupted command never leaves a half-written output.
"""

from __future__ import annotations

import os
from pathlib import Path

from lumina_jax.errors import UserError
from lumina_jax.strict_json import dumps as dumps_json  # noqa: F401 (the commands import it from here)


def refuse_overwrite(path, *, force: bool, what: str = "output", hint: str = "pass --force to overwrite it") -> None:
    """Stop with a :class:`UserError` when ``path`` exists (a file, or a non-empty directory)
    and ``force`` is false.  An empty directory counts as free."""
    p = Path(path)
    if force or not p.exists():
        return
    if p.is_dir() and not any(p.iterdir()):
        return
    kind = "directory" if p.is_dir() else "file"
    raise UserError(f"{what} {kind} {p} already exists; {hint}")


def same_file(a, b) -> bool:
    """True when ``a`` and ``b`` name the same existing file (an output that would clobber its input)."""
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_plot_path(path, *, option: str = "--plot", force: bool = False, inputs=()) -> None:
    """Stop with a :class:`UserError` unless ``path`` names a figure file matplotlib can write
    (``.png``, ``.pdf``, ``.svg``, ...) in an existing, writable directory, that is none of
    ``inputs`` and does not exist (unless ``force``) -- checked before any long work."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{option} {p} is a directory; give a file name such as {p / 'figure.png'}")
    for src in inputs:
        if src is not None and (same_file(p, src) or Path(src) == p):
            raise UserError(f"{option} {p} is also {src}; give the figure its own file name")
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    ext = p.suffix.lower().lstrip(".")
    if ext not in formats:
        raise UserError(f"{option} {p}: unknown figure format {p.suffix or '(none)'!r}; use one of "
                        + ", ".join("." + f for f in sorted(formats)))
    if not p.parent.exists() or not p.parent.is_dir():
        raise UserError(f"{option} {p}: directory {p.parent} does not exist")
    refuse_overwrite(p, force=force, what=option)
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {p}: directory {p.parent} is not writable")


def check_out_file(out: Path, *, force: bool, inputs=(), option: str = "--out", make_parent: bool = False) -> None:
    """Stop before any work if the output file ``out`` is one of ``inputs``, a directory, exists
    (unless ``force``) or cannot be written; ``make_parent`` creates its missing directories."""
    out = Path(out)
    for src in inputs:
        if src is not None and same_file(out, src):
            raise UserError(f"{option} {out} is the input file {src}; writing it would destroy the input -- "
                            "choose another output file")
    if out.is_dir():
        raise UserError(f"{option} {out} is a directory; give a file name")
    refuse_overwrite(out, force=force, what=option)
    parent = out.parent
    if make_parent and not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise UserError(f"{option} {out}: cannot create directory {parent} ({exc.strerror})") from None
    if not parent.is_dir():
        why = f"{parent} is not a directory" if parent.exists() else f"directory {parent} does not exist"
        raise UserError(f"{option} {out}: {why}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out}: directory {parent} is not writable")


def check_in_file(path, *, option: str, what: str = "file", text: bool = False) -> None:
    """Stop with one line unless ``path`` (when given) is an existing, readable regular file --
    UTF-8 text when ``text`` (a YAML or JSON input) -- before any work."""
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise UserError(f"{option} {p}: {what} not found")
    if p.is_dir():
        raise UserError(f"{option} {p} is a directory; give the {what}")
    try:
        data = p.read_bytes() if text else None
        if not text:
            with open(p, "rb"):
                pass
    except OSError as exc:
        raise UserError(f"{option} {p}: cannot read it ({exc.strerror})") from None
    if text:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{option} {p} is not a text file (the {what} must be UTF-8 text)") from None


def _first_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out_dir(path, *, force: bool, option: str = "--out", what: str = "results",
                  hint: str = "pass --force to overwrite its results or choose another --out") -> None:
    """Stop before any work unless the output directory ``path`` can be written: a file there
    is refused, a non-empty directory needs ``force``, and the directory (or, when it does not
    exist yet, its nearest existing parent, in which it will be created) must be writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {p} is a file; {what} need a directory")
    refuse_overwrite(p, force=force, what=what, hint=hint)
    base = _first_existing(p)
    if not base.is_dir():
        raise UserError(f"{option} {p}: {base} is a file, so the directory cannot be created there")
    if not os.access(base, os.W_OK | os.X_OK):
        where = "directory" if base == Path(os.path.abspath(p)) else "parent directory"
        raise UserError(f"{option} {p}: {where} {base} is not writable")


def write_atomic(path, write, *, suffix: str | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``
    (the temporary file is removed if ``write`` fails or is interrupted)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix if suffix is not None else path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
