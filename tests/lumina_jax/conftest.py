"""Fixtures shared by the lumina_jax tests."""

import pytest


@pytest.fixture(scope="session")
def small_emulator_files(tmp_path_factory):
    """(checkpoint, campaign store) of a small untrained stage-1 emulator (sealed, as `train`
    writes it) and 6 finished models on its grid: for tests of what reads them."""
    import jax
    import numpy as np

    from lumina_jax.emulator import EmulatorSettings, init_emulator, save_emulator
    from lumina_jax.emulator._data import write_store
    from lumina_jax.params import load_space

    d = tmp_path_factory.mktemp("small_emulator")
    space = load_space(1)
    emu = init_emulator(space, EmulatorSettings(hidden=(8, 8), n_components=4, n_sigma=2), jax.random.PRNGKey(0))
    ckpt = save_emulator(emu, d / "emu.h5")
    rng = np.random.default_rng(1)
    theta = np.asarray(space.from_unit(rng.uniform(0.05, 0.95, size=(6, space.dim))))
    g = np.asarray(emu.wavelength)
    store = write_store(d / "store.h5", space, theta, g, 1e39 * (1.0 + 0.1 * rng.uniform(size=(6, g.size))))
    return ckpt, store
