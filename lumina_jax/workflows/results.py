"""Results directories read back: summary.json and posterior.nc, posterior draws, and the
fit they describe (its emulator, box, likelihood data and best-fit nuisances) rebuilt for
plots and checks.  ``write_netcdf`` / ``read_netcdf``: the InferenceData file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lumina_jax.errors import DataFileError, UserError
from lumina_jax.inference.diagnostics import _az

#: every figure :func:`~lumina_jax.workflows.plots.make_plots` may write into a results directory
PLOT_FILES = ("corner.png", "spectrum_fit.png", "trace.png", "rank.png", "synth_vs_emulator.png",
              "abundance_profile.png")


def write_netcdf(idata, path: Path) -> None:
    """Atomic write: to a temporary name, then rename."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    idata.to_netcdf(str(tmp))
    tmp.replace(path)


def read_netcdf(path: Path):
    return _az().from_netcdf(str(path))


#: what the commands that read a results directory need of its summary.json
SUMMARY_KEYS = ("stage", "free", "fixed", "space", "likelihood", "nuisance_best_fit", "diagnostics", "residual_rms")


#: summary.json format: 2 records the typed configuration (``config``, with its own format
#: version) and the convergence criteria; 1 (no ``format_version`` key) is read as well.
FORMAT_VERSION = 2


def load_results(results_dir):
    """(summary dict, InferenceData) of a results directory; a corrupt, foreign or truncated
    summary.json or posterior.nc raises :class:`DataFileError`."""
    d = Path(results_dir)
    if not (d / "summary.json").is_file() or not (d / "posterior.nc").is_file():
        raise DataFileError(f"{d} is not a complete results directory (needs summary.json and posterior.nc)")
    try:
        summary = json.loads((d / "summary.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(f"{d / 'summary.json'} is not readable JSON ({exc})") from None
    missing = [k for k in SUMMARY_KEYS if k not in summary] if isinstance(summary, dict) else list(SUMMARY_KEYS)
    if missing:
        raise DataFileError(f"{d / 'summary.json'} is not a summary written by `lumina-jax infer` (missing "
                            f"{', '.join(missing)})")
    version = summary.get("format_version", 1)
    if not (isinstance(version, int) and 1 <= version <= FORMAT_VERSION):
        raise DataFileError(f"{d / 'summary.json'} has format version {version!r}; this lumina-jax reads versions "
                            f"1-{FORMAT_VERSION} (a newer lumina-jax wrote it?)")
    try:
        idata = read_netcdf(d / "posterior.nc")
        for group in ("posterior", "constant_data", "observed_data"):
            getattr(idata, group)
    except Exception as exc:  # noqa: BLE001  (netCDF4 / h5py / xarray raise many kinds on a damaged file)
        raise DataFileError(f"{d / 'posterior.nc'} is unreadable, truncated or not written by `lumina-jax infer` "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return summary, idata


def posterior_array(idata, names) -> np.ndarray:
    """[chains * draws, len(names)] from the posterior group."""
    return np.stack([np.asarray(idata.posterior[n]).reshape(-1) for n in names], axis=-1)


def full_theta_draws(summary, idata, n: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """``n`` random posterior draws as full parameter vectors [n, dim] and their nuisances."""
    names = json.loads(idata.attrs["parameter_names"])
    free = summary["free"]
    flat = posterior_array(idata, free)
    rng = np.random.default_rng(seed)
    pick = rng.choice(flat.shape[0], size=min(n, flat.shape[0]), replace=False)
    base = np.asarray(idata.constant_data["fixed_theta"])
    th = np.repeat(base[None], len(pick), axis=0)
    for j, f in enumerate(free):
        th[:, names.index(f)] = flat[pick, j]
    nuis = {k: np.asarray(idata.posterior[k]).reshape(-1)[pick] for k in idata.posterior.data_vars
            if k in ("log_scale", "f_sys") or k.startswith("poly_")}
    return th, nuis


def space_of(summary, emu):
    """The sampling box stored in a summary (rebuilt on the emulator's space if not a standard stage)."""
    from lumina_jax.params import ParameterSpace

    try:
        return ParameterSpace.from_json(summary["space"])
    except (UserError, KeyError, TypeError):
        try:
            ps = summary["space"]["parameters"]
            return emu.space.with_bounds([p["low"] for p in ps], [p["high"] for p in ps])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"the results' summary.json holds no usable sampling box ({exc!r})") from None


def emulator_and_space(summary, checkpoint=None):
    """The fit's emulator (``checkpoint`` or the one the summary records) and its sampling box;
    an emulator of another stage or parametrisation is refused, as ``infer`` refuses it."""
    from lumina_jax.workflows import loaders
    from lumina_jax.workflows.chaining import check_emulator_stage

    path = str(checkpoint) if checkpoint else summary.get("checkpoint")
    if not path or path.startswith("("):
        raise UserError("no emulator checkpoint recorded in the results; pass --checkpoint")
    emu = loaders.get_emulator(path)
    try:
        stage = int(summary["stage"])
    except (TypeError, ValueError):
        raise UserError(f"the results' summary.json has no valid stage ({summary['stage']!r})") from None
    check_emulator_stage(emu.space, stage)
    space = space_of(summary, emu)
    if tuple(emu.space.names) != tuple(space.names):
        raise UserError(f"the emulator's parameters ({emu.space.dim}) are not the fit's ({space.dim}); pass the "
                        "--checkpoint the results were fitted with")
    return emu, space


def synthesizer_or_none(space):
    """The synthesizer of ``space``, or None where it cannot be built (plots then skip it)."""
    from lumina_jax.workflows import loaders

    try:
        return loaders.get_synthesizer(space)
    except UserError:
        return None


def load_fit(results_dir, checkpoint=None, *, synthesizer=None):
    """A fitted problem rebuilt from its results directory: (summary, idata, setup, likelihood
    data, wavelength, best-fit nuisances, emulator, synthesizer); ``synthesizer`` replaces the
    default one of the fit's space."""
    import jax.numpy as jnp

    from lumina_jax.inference.likelihood import make_likelihood_data
    from lumina_jax.inference.density import make_setup
    from lumina_jax.workflows import loaders

    summary, idata = load_results(results_dir)
    emu, space = emulator_and_space(summary, checkpoint)
    lk = summary["likelihood"]
    setup = make_setup(space, free=summary["free"], fixed=summary["fixed"], n_poly=lk["n_poly"],
                       f_sys_range=tuple(lk["f_sys_range"]), ordering_softness=float(lk.get("ordering_softness", 0.0)),
                       box_link=lk.get("box_link", "logit"),
                       # results that do not record the f_sys prior used the log-uniform one
                       f_sys_prior=lk.get("f_sys_prior", "log-uniform"), f_sys_scale=float(lk.get("f_sys_scale", 0.2)))
    obs = idata.observed_data
    wave = np.asarray(idata.constant_data["wavelength"])
    # the fit's emulator-error model, from what its summary recorded
    corr = lk.get("emulator_corr_length")
    use_basis = lk.get("emulator_rank") is not None and not corr and emu.error_basis is not None
    emu_basis = np.asarray(emu.error_basis, float) if use_basis else None
    data = make_likelihood_data(wave, obs["flux"], obs["sigma_obs"], np.asarray(obs["mask"]).astype(bool),
                                corr_length=corr, emu_basis=emu_basis, stride=int(lk.get("stride", 1)),
                                emu_rank=lk.get("emulator_rank"),
                                emu_var_scale=float(lk.get("emulator_error_cov_scale") or 1.0) if use_basis else 1.0)
    nb = summary["nuisance_best_fit"]
    nuis = {"log_scale": float(nb["log_scale"]), "f_sys": float(nb["f_sys"])}
    if "poly" in nb:
        nuis["poly"] = jnp.asarray(nb["poly"])
    return summary, idata, setup, data, wave, nuis, emu, synthesizer or loaders.get_synthesizer(space)
