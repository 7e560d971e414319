"""Training sets for the emulator: the finished rows of a campaign store.

The store format and its reader belong to :mod:`runners.store` (one source of truth);
this module re-exports them and offers :func:`write_store`, which writes a complete store
through the same code (for tests and for spectra made outside the campaign runner).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lumina_jax.params import ParameterSpace
from runners.store import TrainingSet, load_training_set  # noqa: F401  (re-exported)


def write_store(path, space: ParameterSpace, theta, wavelength, spectra, status=None, *,
                backend: str = "external") -> Path:
    """Write a campaign store from arrays: ``theta [N, dim]``, ``spectra [N, n_wave]`` erg/s/Å.

    ``status`` [N] (0 pending, 1 done, 2 failed; default all done): only done rows are stored
    as data.  Returns the path."""
    from runners.store import CampaignStore, provenance

    theta = np.asarray(theta, np.float64)
    spectra = np.asarray(spectra, np.float64)
    status = np.ones(len(theta), np.int8) if status is None else np.asarray(status, np.int8)
    store = CampaignStore.create(path, space=space, design=theta, wavelength=wavelength, backend=backend,
                                 seed=0, config={"source": "write_store"}, max_attempts=1,
                                 prov=provenance())
    for i, s in enumerate(status):
        if s == 1:
            store.record_success(i, spectra[i], elapsed_s=0.0, worker="external")
        elif s == 2:
            store.record_failure(i, kind="external", reason="marked failed", elapsed_s=0.0, worker="external")
    store.checkpoint()
    return Path(path)


def load_training_sets(paths, *, stage=None) -> TrainingSet:
    """Finished rows of one or more campaign stores of the same parameter space and grid.

    Stores of one campaign design can be added to (e.g. a second seed); they must share the
    space (names and bounds) and the wavelength grid.  ``ids`` are made unique by offsetting
    each store's rows by the sizes of the stores before it."""
    from lumina_jax.errors import DataFileError

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise DataFileError("no campaign store given")
    sets = [load_training_set(p, stage=stage) for p in paths]
    first = sets[0]
    offset = 0
    ids = []
    for p, ts in zip(paths, sets):
        if ts.space.names != first.space.names or ts.space.fingerprint() != first.space.fingerprint():
            raise DataFileError(f"{p} samples another parameter space than {paths[0]} "
                                "(names or bounds differ); train on stores of one space")
        if ts.wavelength.shape != first.wavelength.shape or not np.allclose(ts.wavelength, first.wavelength):
            raise DataFileError(f"{p} has another wavelength grid than {paths[0]}")
        ids.append(ts.ids + offset)
        offset += int(ts.ids.max()) + 1 if ts.ids.size else 0
    if len(sets) == 1:
        return first
    return TrainingSet(space=first.space, theta=np.concatenate([t.theta for t in sets]),
                       wavelength=first.wavelength, spectra=np.concatenate([t.spectra for t in sets]),
                       ids=np.concatenate(ids))
