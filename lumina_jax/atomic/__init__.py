"""Atomic data for the spectrum synthesizer (a pluggable pytree of arrays).

* :class:`AtomicData` -- the arrays the synthesizer needs (lines, partition functions,
  ionisation energies, zeta); :func:`load_atomic` reads the default cache, a ``.npz``, a
  TARDIS/carsus HDF5 file or a folder of Kurucz ``gfZZII`` files.
* :func:`load_default` / :func:`build_default` -- the offline default ("composite A") built from
  pip-installed packages into the user cache.
"""

from lumina_jax.atomic.build import build_default, cache_dir, default_path, load_atomic, load_default
from lumina_jax.atomic.data import N_STAGES, AtomicData, Levels, assemble, ion_label

__all__ = ["AtomicData", "Levels", "N_STAGES", "assemble", "build_default", "cache_dir", "default_path",
           "ion_label", "load_atomic", "load_default"]
