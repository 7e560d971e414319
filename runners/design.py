"""Campaign designs: seeded Latin-hypercube samples over a parameter space's current box.

The design is drawn once, written into the store before any job runs, and never
regenerated (resuming reads it back from the store).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import qmc

from lumina_jax.errors import ParameterError
from lumina_jax.params import ParameterSpace

MAX_ROUNDS = 64


def lhs_design(space: ParameterSpace, n: int, seed: int) -> np.ndarray:
    """``n`` points ``[n, dim]`` (float64, physical units) inside ``space``'s current bounds.

    Rounds of scrambled Latin-hypercube samples (``scipy.stats.qmc.LatinHypercube``, seeded
    by ``seed``) are mapped to the box with ``space.from_unit``; points failing
    ``space.valid_mask`` (inconsistent velocity orderings) are rejected and the first ``n``
    accepted points are kept, in draw order.  With no rejection the result is one exact
    Latin hypercube; rejection thins the strata uniformly (the accepted set is a uniform
    sample of the valid region).  Same ``(space, n, seed)`` -> identical design.
    """
    if int(n) != n or n < 1:
        raise ParameterError(f"the number of models must be a positive integer, got {n}")
    n = int(n)
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    n_kept = 0
    n_drawn = 0
    for _ in range(MAX_ROUNDS):
        rate = (n_kept / n_drawn) if n_drawn else 1.0
        need = n - n_kept
        m = max(need, math.ceil(need / max(rate, 0.05) * 1.1) + 8) if n_drawn else n
        u = qmc.LatinHypercube(d=space.dim, rng=rng).random(m)
        theta = np.asarray(space.from_unit(u), dtype=np.float64)
        ok = space.valid_mask(theta)
        kept.append(theta[ok])
        n_kept += int(ok.sum())
        n_drawn += m
        if n_kept >= n:
            return np.concatenate(kept)[:n]
    raise ParameterError(
        f"only {n_kept} of {n_drawn} points drawn in the box of stage {space.stage} are valid "
        "(velocity orderings); the sampling box is (nearly) empty of valid models"
    )
