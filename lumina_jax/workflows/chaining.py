"""Stage chaining: stage N+1 samples a box around stage N's best fit.

Two rules (``relax``):

* ``margin`` (the default): the +-10 % relaxed box around the best fit,
  ``relaxed_ranges(transfer_best(best, ...))``;
* ``union``: per parameter the hull of that box and the previous posterior's central 99.7 %
  interval (``intervals[name]["q0.15"]`` to ``["q99.85"]`` of its summary), carried into the
  new stage's names the same way (:func:`lumina_jax.params.union_ranges`).

The box is exactly the one ``lumina-jax generate --from RESULTS_DIR --relax RULE`` trains the
next emulator in, and the emulator used by a stage must have been trained in a box that
contains it: :func:`check_emulator_box` rejects it otherwise, instead of letting the sampler
extrapolate (the original pipeline's stage-2 flaw).  Inactive parameters are fixed at the
previous best fit (or the box centre).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lumina_jax.errors import DataFileError, UserError
from lumina_jax.params import ParameterSpace, load_space, relaxed_ranges, transfer_best, union_ranges

#: the rules that build stage N+1's box from stage N's result (see the module docstring)
RELAX_RULES = ("margin", "union")
#: the pipeline's rule unless asked otherwise (the relaxation measurement in docs/inference.md)
DEFAULT_RELAX = "margin"
#: the default rule's margin: +-10 % around the best fit
MARGIN = 0.10
#: the summary's interval keys of the central 99.7 % that ``relax="union"`` adds
UNION_KEYS = ("q0.15", "q99.85")


def read_summary(results_dir) -> dict:
    """``RESULTS_DIR/summary.json`` validated to hold ``stage`` and ``best_fit``."""
    p = Path(results_dir) / "summary.json"
    if not p.is_file():
        raise DataFileError(f"{p} not found (expected a previous stage's results directory)")
    try:
        d = json.loads(p.read_text())
        d["stage"] = int(d["stage"])
        d["best_fit"] = {str(k): float(v) for k, v in d["best_fit"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataFileError(f"{p} must hold {{'stage': N, 'best_fit': {{name: value}}}} ({exc})") from None
    return d


def check_relax(relax: str) -> str:
    """``relax`` if it names a rule of :data:`RELAX_RULES`, else :class:`UserError`."""
    if relax not in RELAX_RULES:
        raise UserError(f"--relax must be one of {', '.join(RELAX_RULES)}, got {relax!r}")
    return relax


def union_interval(prev: dict) -> tuple[dict[str, float], dict[str, float]]:
    """The previous posterior's central 99.7 % interval ``(lo, hi)`` from a summary's
    ``intervals``; :class:`UserError` when the summary does not hold it."""
    iv = prev.get("intervals") or {}
    lo = {n: v.get(UNION_KEYS[0]) for n, v in iv.items() if isinstance(v, dict)}
    hi = {n: v.get(UNION_KEYS[1]) for n, v in iv.items() if isinstance(v, dict)}
    free = prev.get("free") or list(prev["best_fit"])  # fixed parameters have no interval: margin box
    missing = sorted(n for n in free if lo.get(n) is None or hi.get(n) is None)
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)" if len(missing) > 4 else "")
        raise UserError(f"--relax union needs the previous posterior's 99.7 % interval ({UNION_KEYS[0]}, "
                        f"{UNION_KEYS[1]} in the summary's intervals), which this result lacks for {shown}; "
                        f"fit the previous stage again with `lumina-jax infer`, or use --relax margin")
    try:
        return ({n: float(v) for n, v in lo.items() if v is not None},
                {n: float(v) for n, v in hi.items() if v is not None})
    except (TypeError, ValueError) as exc:
        raise DataFileError(f"the previous result's intervals are not numbers ({exc})") from None


def stage_box(stage: int, previous=None, *, margin: float = MARGIN, relax: str = DEFAULT_RELAX,
              parametrisation: str | None = None) -> tuple[ParameterSpace, dict[str, float]]:
    """(sampling space, fixed values of inactive parameters) for ``stage``.

    With ``previous`` (a results dir or a summary dict) the box is built by the rule
    ``relax`` around its best fit (see the module docstring); without, the stage's full prior.
    """
    check_relax(relax)
    base = load_space(stage, parametrisation=parametrisation)
    if previous is None:
        return base, {}
    prev = previous if isinstance(previous, dict) else read_summary(previous)
    if prev["stage"] > stage:
        raise UserError(f"cannot chain stage {stage} from a stage-{prev['stage']} result")
    if "space" in prev:
        prev_space = ParameterSpace.from_json(prev["space"])
    else:
        prev_space = load_space(prev["stage"])
    best = transfer_best(prev["best_fit"], prev_space, base)
    if not best:
        raise UserError(f"no parameter of the stage-{prev['stage']} best fit exists in stage {stage}")
    if relax == "union":
        lo, hi = union_interval(prev)
        space = union_ranges(best, transfer_best(lo, prev_space, base), transfer_best(hi, prev_space, base),
                             base, margin=margin)
    else:
        space = relaxed_ranges(best, base, margin=margin)
    fixed = {n: float(np.clip(best.get(n, 0.5 * (lo + hi)), lo, hi))
             for n, lo, hi in zip(space.names, space.lows, space.highs) if n in space.inactive}
    return space, fixed


def check_emulator_stage(emu_space: ParameterSpace, stage: int) -> None:
    """Raise :class:`UserError` unless the emulator was trained for ``stage``."""
    if emu_space.stage != stage:
        raise UserError(f"the emulator checkpoint is for stage {emu_space.stage}, not stage {stage}")


def check_emulator_box(emu_space: ParameterSpace, space: ParameterSpace, *, rtol: float = 1e-6,
                       check_box: bool = True, relax: str = DEFAULT_RELAX) -> None:
    """Raise :class:`UserError` unless the emulator was trained for ``space``'s stage and names,
    in a box containing ``space``'s bounds (within ``rtol`` of each width)."""
    check_emulator_stage(emu_space, space.stage)
    if not check_box:  # no chaining: the emulator's own space is the sampling box
        return
    if tuple(emu_space.names) != tuple(space.names):
        raise UserError(f"the emulator's parameters ({emu_space.dim}) do not match stage {space.stage}'s "
                        f"({space.dim}); was it trained for another parametrisation?")
    bad = []
    for n, lo, hi, elo, ehi in zip(space.names, space.lows, space.highs, emu_space.lows, emu_space.highs):
        if n in space.inactive:
            continue
        tol = rtol * max(hi - lo, ehi - elo)
        if lo < elo - tol or hi > ehi + tol:
            bad.append(f"{n} [{lo:g}, {hi:g}] not inside [{elo:g}, {ehi:g}]")
    if bad:
        shown = "; ".join(bad[:4]) + (f"; ... ({len(bad)} in all)" if len(bad) > 4 else "")
        raise UserError(f"the stage-{space.stage} emulator was trained in another box than the one sampled "
                        f"({shown}); train it on `lumina-jax generate --stage {space.stage} --from <previous "
                        f"results>{'' if relax == DEFAULT_RELAX else ' --relax ' + relax}` data")
