"""Two posteriors of one fit compared: per parameter and jointly (classifier two-sample test).

Per parameter: the median shift in units of the reference's standard deviation and the ratio
of the central 68 % widths.  Jointly: the accuracy of a k-nearest-neighbour classifier told to
separate the two sets of draws (coordinates scaled by the reference's sd), on held-out halves;
0.5 means indistinguishable, 1.0 disjoint (Lopez-Paz & Oquab 2017's C2ST).
"""

from __future__ import annotations

import numpy as np


def knn_c2st(a, b, *, k: int = 15, n_max: int = 2000, seed: int = 0) -> float:
    """Held-out accuracy of a ``k``-NN classifier between draws ``a [n, d]`` and ``b [m, d]``
    (``n_max`` of each, half to train, half to test)."""
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b), n_max)
    a = np.asarray(a)[rng.choice(len(a), n, replace=False)]
    b = np.asarray(b)[rng.choice(len(b), n, replace=False)]
    h = n // 2
    xtr = np.concatenate([a[:h], b[:h]])
    ytr = np.r_[np.zeros(h), np.ones(h)]
    xte = np.concatenate([a[h:], b[h:]])
    yte = np.r_[np.zeros(n - h), np.ones(n - h)]
    d2 = (np.sum(xte**2, 1)[:, None] + np.sum(xtr**2, 1)[None, :] - 2.0 * xte @ xtr.T)
    nn = np.argpartition(d2, k, axis=1)[:, :k]
    pred = ytr[nn].mean(axis=1) > 0.5
    return float(np.mean(pred == yte))


def compare(draws, ref, names) -> dict:
    """``draws``, ``ref``: ``[n, d]`` physical draws of the parameters ``names`` (``ref`` the
    reference, e.g. NUTS).  Returns per-parameter shift / width ratio and the joint C2ST."""
    draws, ref = np.asarray(draws, float), np.asarray(ref, float)
    q = np.percentile(draws, [16, 50, 84], axis=0)
    r = np.percentile(ref, [16, 50, 84], axis=0)
    sd = ref.std(axis=0)
    per = {}
    for j, n in enumerate(names):
        per[n] = {"median": float(q[1, j]), "median_ref": float(r[1, j]), "sd_ref": float(sd[j]),
                  "shift_in_ref_sd": float((q[1, j] - r[1, j]) / sd[j]),
                  "width_ratio": float((q[2, j] - q[0, j]) / (r[2, j] - r[0, j]))}
    shifts = np.array([v["shift_in_ref_sd"] for v in per.values()])
    widths = np.array([v["width_ratio"] for v in per.values()])
    return {"per_parameter": per, "max_abs_shift": float(np.max(np.abs(shifts))),
            "median_abs_shift": float(np.median(np.abs(shifts))),
            "width_ratio_range": [float(widths.min()), float(widths.max())],
            "n_within_0.5sd": int(np.sum(np.abs(shifts) <= 0.5)),
            "n_width_within_30pc": int(np.sum(np.abs(widths - 1) <= 0.3)),
            "c2st_accuracy": knn_c2st(draws / sd, ref / sd)}
