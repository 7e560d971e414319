"""Spectral emulator: MLP from parameters to PCA coefficients of preprocessed spectra, with a
calibrated per-wavelength uncertainty.

Public API::

    from lumina_jax.emulator import load_emulator
    emu = load_emulator("lumina_jax/checkpoints/stage1.h5", stage=1)
    flux = emu.spectrum(theta)                   # [n_wave], pure / jit / vmap / grad
    flux, sigma = emu.spectrum_and_sigma(theta)  # calibrated 1-sigma emulator error
    obs = emu.preprocess(wavelength, flux_obs, mask=None)

See ``docs/emulator.md``.
"""

from lumina_jax.emulator._checkpoint import (
    FORMAT as FORMAT,
    FORMAT_VERSION as FORMAT_VERSION,
    load_emulator as load_emulator,
    save_emulator as save_emulator,
    theta_hashes as theta_hashes,
)
from lumina_jax.emulator._data import TrainingSet as TrainingSet, load_training_set as load_training_set
from lumina_jax.emulator._model import (
    DEFAULT_HIDDEN as DEFAULT_HIDDEN,
    Emulator as Emulator,
    EmulatorOnBins as EmulatorOnBins,
    EmulatorNet as EmulatorNet,
    EmulatorSettings as EmulatorSettings,
    init_emulator as init_emulator,
)
from lumina_jax.emulator._report import evaluate as evaluate
from lumina_jax.emulator._sobolev import sobolev_targets as sobolev_targets
from lumina_jax.emulator._training import (
    JvpData as JvpData,
    TrainConfig as TrainConfig,
    load_train_config as load_train_config,
    prepare_spectra as prepare_spectra,
    train_emulator as train_emulator,
)

__all__ = [
    "Emulator",
    "EmulatorOnBins",
    "EmulatorNet",
    "EmulatorSettings",
    "JvpData",
    "TrainConfig",
    "TrainingSet",
    "evaluate",
    "init_emulator",
    "load_emulator",
    "load_train_config",
    "load_training_set",
    "prepare_spectra",
    "save_emulator",
    "sobolev_targets",
    "train_emulator",
]
