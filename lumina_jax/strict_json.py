"""Strict JSON: non-finite numbers (NaN, +-inf) written as ``null`` (which ``jq`` and JavaScript
parsers accept) and numpy scalars / arrays as plain numbers / lists.  Used for everything the
package writes as JSON: command output, coverage files, summaries."""

from __future__ import annotations

import json
import math

import numpy as np


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


def dumps(obj, *, indent: int | None = None, default=str) -> str:
    """``obj`` as strict JSON: NaN / inf become ``null``; numpy types become Python ones."""
    return json.dumps(_clean(obj), indent=indent, default=default, allow_nan=False)
