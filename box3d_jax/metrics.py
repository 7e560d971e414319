"""Error metrics for asymptotic-state predictions (reference note §7, Rhea conventions).

Per sample, e = (F4_pred − F4_true)/n_tot over the 24 components ``[2, 3, 4]``, with
n_tot the total number density of the *initial* state (conserved). Reported:

* ``rms``: sqrt(mean e²) over components and samples (Rhea's ``comparison_loss_fn``, sqrt);
* ``mean_abs_dNe``: mean |ΔN_e|/n_tot; ``mean_abs_dNebar``: mean |ΔN̄_e|/n_tot;
* ``max_error``: max |e| (Rhea's ``max_error``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["METRIC_NAMES", "prediction_errors", "compare_methods"]

METRIC_NAMES = ("rms", "mean_abs_dNe", "mean_abs_dNebar", "max_error")


def prediction_errors(F4_pred: np.ndarray, F4_true: np.ndarray, F4_initial: np.ndarray) -> dict[str, float]:
    """Metrics of one prediction; all arrays ``[n, 2, NF, 4]`` in the same units."""
    F4_pred, F4_true, F4_initial = (np.asarray(a, dtype=np.float64) for a in (F4_pred, F4_true, F4_initial))
    ntot = F4_initial[..., 3].sum(axis=(1, 2))
    e = (F4_pred - F4_true) / ntot[:, None, None, None]
    return {
        "rms": float(np.sqrt(np.mean(e**2))),
        "mean_abs_dNe": float(np.mean(np.abs(e[:, 0, 0, 3]))),
        "mean_abs_dNebar": float(np.mean(np.abs(e[:, 1, 0, 3]))),
        "max_error": float(np.max(np.abs(e))),
    }


def compare_methods(
    predictions: dict[str, np.ndarray], F4_true: np.ndarray, F4_initial: np.ndarray
) -> dict[str, dict[str, float]]:
    """``{method: metrics}`` for several predictions (e.g. no mixing, Box3D, Box3D + residual)."""
    return {name: prediction_errors(p, F4_true, F4_initial) for name, p in predictions.items()}
