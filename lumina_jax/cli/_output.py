"""What the commands write: strict JSON on stdout and outputs that never overwrite silently.

* :func:`dumps_json` -- ``json.dumps`` that writes non-finite numbers (NaN, +-inf) as ``null``
  (strict JSON, which ``jq`` and JavaScript parsers accept) and numpy scalars / arrays as
  plain numbers / lists.
* :func:`refuse_overwrite` -- the common ``--force`` rule: an output path that already exists
  stops the command with one error line unless the user asked to overwrite it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from lumina_jax.errors import UserError


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def dumps_json(obj, *, indent: int | None = None, default=str) -> str:
    """``obj`` as strict JSON: NaN / inf become ``null``; numpy types become Python ones."""
    return json.dumps(_clean(obj), indent=indent, default=default, allow_nan=False)


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


def check_plot_path(path, *, option: str = "--plot") -> None:
    """Stop with a :class:`UserError` unless ``path`` names a figure file matplotlib can write
    (``.png``, ``.pdf``, ``.svg``, ...) in an existing directory -- checked before any long work."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{option} {p} is a directory; give a file name such as {p / 'figure.png'}")
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    ext = p.suffix.lower().lstrip(".")
    if ext not in formats:
        raise UserError(f"{option} {p}: unknown figure format {p.suffix or '(none)'!r}; use one of "
                        + ", ".join("." + f for f in sorted(formats)))
    if not p.parent.exists() or not p.parent.is_dir():
        raise UserError(f"{option} {p}: directory {p.parent} does not exist")


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
