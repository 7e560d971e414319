"""Observed spectra: reading, validation, rest frame, extinction, resampling and masks.

Everything here runs once per fit, at the boundary, in NumPy.  Bad input raises
:class:`lumina_jax.errors.DataFileError` with a one-line reason.

Pipeline (:func:`prepare_observation`)::

    read file (CSV / ASCII / FITS, optional error column, units from header or arguments)
      -> Milky-Way extinction correction (observed frame, Fitzpatrick 1999, R_V = 3.1)
      -> rest frame  (lambda_rest = lambda_obs / (1 + z); F_lambda scaled by (1 + z))
      -> host extinction correction (rest frame)
      -> flux-conserving resampling onto the model grid (bin averages; partial bins -> NaN)
      -> masks (telluric bands in the observed frame, trimmed edges, a wavelength window)
      -> refused when more than half of the fitted bins have flux <= 0 (MAX_NONPOSITIVE_FRAC)
      -> the emulator's own preprocessing (emu.preprocess), noise propagated by Monte Carlo

Units: wavelength in Angstrom, nm or micron; flux density per wavelength
(``erg/s/cm2/A``, ``W/m2/nm``, ...), per frequency (``Jy``, ``mJy``, ``erg/s/cm2/Hz``,
converted to F_lambda) or already normalised (``normalised``/``arbitrary``).  The overall
scale never matters (the likelihood normalises), but F_nu vs F_lambda changes the shape.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lumina_jax.errors import DataFileError

#: Telluric absorption bands in the observed frame [Angstrom]: O2 B band, O2 A band.
TELLURIC_BANDS: tuple[tuple[float, float], ...] = ((6860.0, 6890.0), (7590.0, 7700.0))
#: Minimum number of usable model-grid bins after masking (at 5 A per bin: 500 A).
MIN_USABLE_BINS = 100
#: Largest fraction of the fitted model-grid bins whose (resampled) flux may be <= 0: a spectrum
#: negative over most of the window is a bad reduction or a sign error, not a supernova.
MAX_NONPOSITIVE_FRAC = 0.5
C_ANGSTROM_PER_S = 2.99792458e18

_WAVE_UNITS = {"angstrom": 1.0, "aa": 1.0, "a": 1.0, "ang": 1.0, "nm": 10.0, "um": 1e4, "micron": 1e4}
# flux-unit name -> (kind, factor to erg/s/cm2/A or erg/s/cm2/Hz)
_FLUX_UNITS = {
    "erg/s/cm2/a": ("flam", 1.0),
    "erg_s_cm2_angstrom": ("flam", 1.0),
    "erg/s/cm^2/a": ("flam", 1.0),
    "erg/s/cm2/angstrom": ("flam", 1.0),
    "flam": ("flam", 1.0),
    "w/m2/nm": ("flam", 100.0),  # 1 W/m2/nm = 100 erg/s/cm2/A
    "erg/s/cm2/hz": ("fnu", 1.0),
    "fnu": ("fnu", 1.0),
    "jy": ("fnu", 1e-23),
    "mjy": ("fnu", 1e-26),
    "normalised": ("flam", 1.0),
    "normalized": ("flam", 1.0),
    "arbitrary": ("flam", 1.0),
    "relative": ("flam", 1.0),
}


@dataclasses.dataclass(frozen=True)
class ObservedSpectrum:
    """A 1-D spectrum in F_lambda, sorted, finite; wavelength in Angstrom.

    wavelength: [n] Angstrom; flux: [n] F_lambda (any scale); error: [n] 1-sigma or None.
    frame: "observed" or "rest".
    """

    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray | None = None
    frame: str = "observed"
    source: str = ""


@dataclasses.dataclass(frozen=True)
class Observation:
    """An observed spectrum on the model grid after the emulator's preprocessing.

    wavelength: [n_wave] model grid (rest frame, Angstrom); flux: [n_wave] preprocessed
    flux (0 where not used); sigma: [n_wave] preprocessed 1-sigma noise (0 when the file
    had no errors); mask: [n_wave] bool, True for bins used in the likelihood.
    """

    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    has_errors: bool
    meta: dict

    @property
    def n_used(self) -> int:
        return int(self.mask.sum())


# ----------------------------------------------------------------------------- reading
def _unit_from_name(name: str, table: dict, what: str, path) -> str | None:
    key = name.strip().lower().replace(" ", "")
    if key in table:
        return key
    for k in sorted(table, key=len, reverse=True):
        if key.endswith("_" + k) or key.endswith("[" + k + "]") or key.endswith("(" + k + ")"):
            return k
    return None


def _parse_header(cols: Sequence[str], path) -> tuple[int, int, int | None, str | None, str | None]:
    """Find wavelength / flux / error columns and units from a CSV header."""
    low = [c.strip().lower() for c in cols]

    def find(prefixes):
        for i, c in enumerate(low):
            if any(c.startswith(p) for p in prefixes):
                return i
        return None

    iw = find(("wave", "lam", "wl"))
    i_f = find(("flux", "f_lambda", "flam", "fnu", "f_nu"))
    ie = find(("err", "sigma", "unc", "flux_err", "e_flux", "noise"))
    if ie is not None and ie == i_f:
        ie = None
    if iw is None or i_f is None:
        raise DataFileError(f"{path}: cannot identify wavelength and flux columns in header {list(cols)}")
    wunit = None
    m = re.search(r"(angstrom|aa|ang|nm|um|micron)\b", low[iw].replace("_", " "))
    if m:
        wunit = m.group(1)
    funit = _unit_from_name(low[i_f], _FLUX_UNITS, "flux", path)
    return iw, i_f, ie, wunit, funit


def read_spectrum(path: str | Path, *, wave_unit: str | None = None, flux_unit: str | None = None,
                  error_column: bool | None = None) -> ObservedSpectrum:
    """Read a spectrum file: CSV with header, whitespace ASCII (2 or 3 columns) or FITS.

    Units come from the header (e.g. ``wavelength_angstrom``, ``flux_erg_s_cm2_angstrom``)
    or the arguments; a header unit that is not recognised and not overridden is an error.
    Headerless ASCII files are read as Angstrom and F_lambda unless told otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"observed spectrum not found: {path}")
    if not path.is_file():
        raise DataFileError(f"observed spectrum {path} is not a file")
    suffix = "".join(path.suffixes).lower()
    kind = _sniff(path)
    if kind == "fits" or suffix.endswith((".fits", ".fit", ".fits.gz", ".fit.gz")):
        w, f, e, wu, fu = _read_fits(path)
    else:
        w, f, e, wu, fu = _read_text(path)
    if error_column is False:
        e = None
    wu = (wave_unit or wu or "angstrom").lower()
    fu = (flux_unit or fu or "erg/s/cm2/a").lower()
    if wu not in _WAVE_UNITS:
        raise DataFileError(f"{path}: unknown wavelength unit {wu!r}; use one of {sorted(_WAVE_UNITS)}")
    if fu not in _FLUX_UNITS:
        raise DataFileError(f"{path}: unknown flux unit {fu!r}; use one of {sorted(_FLUX_UNITS)}")
    w = w * _WAVE_UNITS[wu]
    kind, fac = _FLUX_UNITS[fu]
    f = f * fac
    if e is not None:
        e = e * fac
    if kind == "fnu":  # F_lambda = F_nu c / lambda^2
        conv = C_ANGSTROM_PER_S / w**2
        f = f * conv
        e = e * conv if e is not None else None
    spec = ObservedSpectrum(w, f, e, "observed", str(path))
    validate_spectrum(spec)
    return spec


#: bytes read to recognise a file's format before parsing it
SNIFF_BYTES = 4096


def _sniff(path: Path) -> str:
    """``"fits"`` or ``"text"`` from the first bytes of ``path``; anything else (empty, HDF5,
    binary with NUL bytes) is refused at once, before a large file is read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise DataFileError(f"cannot read the observed spectrum {path}: {exc.strerror}") from None
    if not head:
        raise DataFileError(f"{path}: empty file")
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.startswith(b"\x1f\x8b"):  # gzip: a compressed FITS file (astropy reads it), or an error there
        return "fits" if str(path).lower().endswith(".gz") else "binary"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        raise DataFileError(f"{path} is an HDF5 file (a campaign store or a checkpoint?), not a spectrum; give a "
                            "CSV / ASCII table or a FITS file")
    if b"\x00" in head:
        raise DataFileError(f"{path} is a binary file (it holds NUL bytes), not a CSV / ASCII or FITS spectrum")
    return "text"


def _read_text(path: Path):
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataFileError(f"{path}: not a text file (CSV/ASCII) and not FITS") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataFileError(f"{path}: empty file")
    delim = "," if "," in lines[0] else None
    first = lines[0].split(delim)
    header = None
    try:
        [float(x) for x in first]
        body = lines
    except ValueError:
        header, body = first, lines[1:]
    if not body:
        raise DataFileError(f"{path}: no data rows, only the header line {lines[0][:60]!r}")
    rows = []
    for k, ln in enumerate(body):
        parts = ln.split(delim)
        try:
            rows.append([float(x) if x.strip() else np.nan for x in parts])
        except ValueError:
            raise DataFileError(f"{path}: line {k + 1 + (header is not None)} is not numeric: {ln[:60]!r}") from None
    ncol = {len(r) for r in rows}
    if len(ncol) != 1:
        raise DataFileError(f"{path}: rows have different numbers of columns {sorted(ncol)}")
    arr = np.asarray(rows, dtype=float)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise DataFileError(f"{path}: need at least two columns (wavelength, flux)")
    wu = fu = None
    if header is not None:
        iw, i_f, ie, wu, fu = _parse_header(header, path)
        if fu is None and not re.fullmatch(r"(flux|f_lambda|flam)", header[i_f].strip().lower()):
            raise DataFileError(f"{path}: unknown flux unit in column {header[i_f]!r}; pass flux_unit")
    else:
        iw, i_f, ie = 0, 1, (2 if arr.shape[1] >= 3 else None)
    e = arr[:, ie] if ie is not None else None
    return arr[:, iw], arr[:, i_f], e, wu, fu


def _read_fits(path: Path):
    try:
        from astropy.io import fits
    except ImportError:  # pragma: no cover
        raise DataFileError("reading FITS needs astropy (pip install astropy)") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. astropy's "File may have been truncated": the error says it
            return _read_fits_hdus(path, fits)
    except DataFileError:
        raise
    except (OSError, TypeError, ValueError, IndexError, KeyError) as exc:  # corrupt or truncated
        raise DataFileError(f"{path}: unreadable FITS file, truncated or corrupt ({exc})") from None


def _read_fits_hdus(path: Path, fits):
    """(wavelength, flux, error, wave unit, flux unit) of the first binary table or 1-D image."""
    with fits.open(path) as hdul:
        for hdu in hdul:
            if isinstance(hdu, fits.BinTableHDU):
                cols = list(hdu.columns.names)
                iw, i_f, ie, wu, fu = _parse_header(cols, path)
                data = hdu.data
                w = np.asarray(data[cols[iw]], float).ravel()
                f = np.asarray(data[cols[i_f]], float).ravel()
                e = np.asarray(data[cols[ie]], float).ravel() if ie is not None else None
                tu = hdu.columns[iw].unit
                wu = wu or (str(tu).lower() if tu else None)
                return w, f, e, wu, fu
        hdu = hdul[0]
        if hdu.data is None or hdu.data.ndim != 1:
            raise DataFileError(f"{path}: no 1-D spectrum (binary table or 1-D image) found")
        h = hdu.header
        n = hdu.data.size
        crval, cdelt = h.get("CRVAL1"), h.get("CDELT1", h.get("CD1_1"))
        crpix = h.get("CRPIX1", 1.0)
        if crval is None or cdelt is None:
            raise DataFileError(f"{path}: 1-D image without CRVAL1/CDELT1 wavelength keywords")
        w = crval + (np.arange(n) + 1 - crpix) * cdelt
        wu = str(h.get("CUNIT1", "angstrom")).lower()
        e = None
        if len(hdul) > 1 and hdul[1].data is not None and np.shape(hdul[1].data) == (n,):
            e = np.asarray(hdul[1].data, float)
            if str(hdul[1].header.get("EXTNAME", "")).upper() in ("VAR", "VARIANCE"):
                e = np.sqrt(np.clip(e, 0, None))
        return w, np.asarray(hdu.data, float), e, wu, None


def validate_spectrum(spec: ObservedSpectrum) -> None:
    """Raise DataFileError for unusable spectra; see the module docstring for the rules."""
    w, f, e, src = spec.wavelength, spec.flux, spec.error, spec.source or "spectrum"
    if w.ndim != 1 or f.shape != w.shape:
        raise DataFileError(f"{src}: wavelength and flux must be 1-D arrays of equal length")
    if w.size < 10:
        raise DataFileError(f"{src}: only {w.size} points; need at least 10")
    if not np.all(np.isfinite(w)):
        raise DataFileError(f"{src}: non-finite wavelength values")
    nan_f = int(np.sum(~np.isfinite(f)))
    if nan_f:
        raise DataFileError(f"{src}: {nan_f} NaN/inf flux value(s); remove or mask them first")
    dw = np.diff(w)
    if np.any(dw == 0):
        i = int(np.flatnonzero(dw == 0)[0])
        raise DataFileError(f"{src}: duplicate wavelength {w[i]:g} (rows {i + 1} and {i + 2})")
    if np.any(dw < 0):
        i = int(np.flatnonzero(dw < 0)[0])
        raise DataFileError(f"{src}: wavelengths not sorted ({w[i]:g} then {w[i + 1]:g}); sort the file")
    if w[0] <= 0:
        raise DataFileError(f"{src}: non-positive wavelength {w[0]:g}")
    if not np.any(f > 0):
        raise DataFileError(f"{src}: flux is zero or negative everywhere")
    if e is not None:
        if e.shape != w.shape or not np.all(np.isfinite(e)):
            raise DataFileError(f"{src}: error column has NaN/inf values or the wrong length")
        if np.any(e < 0):
            raise DataFileError(f"{src}: negative flux errors")


# ----------------------------------------------------------------------- corrections
def to_rest_frame(spec: ObservedSpectrum, z: float) -> ObservedSpectrum:
    """lambda_rest = lambda_obs / (1+z); F_lambda,rest = (1+z) F_lambda,obs (scale irrelevant)."""
    if not -0.01 < z < 5:
        raise DataFileError(f"redshift z = {z} is out of range (-0.01, 5)")
    err = spec.error * (1 + z) if spec.error is not None else None
    return dataclasses.replace(spec, wavelength=spec.wavelength / (1 + z), flux=spec.flux * (1 + z),
                               error=err, frame="rest")


def correct_extinction(spec: ObservedSpectrum, ebv: float, r_v: float = 3.1) -> ObservedSpectrum:
    """Divide out dust extinction A(lambda) for E(B-V) = ``ebv`` (Fitzpatrick 1999 law).

    Uses ``dust_extinction`` (Gordon et al., astropy-affiliated).  F99 is defined over
    1150 A-3.3 micron; wavelengths outside are an error.
    """
    if ebv == 0:
        return spec
    if not 0 <= ebv < 5:
        raise DataFileError(f"E(B-V) = {ebv} is out of range [0, 5)")
    try:
        import astropy.units as u
        from dust_extinction.parameter_averages import F99
    except ImportError:  # pragma: no cover
        raise DataFileError("extinction correction needs dust_extinction (pip install dust_extinction)") from None
    w = spec.wavelength
    if w.min() < 1150 or w.max() > 33000:
        raise DataFileError("extinction law F99 covers 1150-33000 A only")
    ext = F99(Rv=r_v).extinguish(w * u.AA, Ebv=ebv)  # transmission
    err = spec.error / ext if spec.error is not None else None
    return dataclasses.replace(spec, flux=spec.flux / ext, error=err)


# ------------------------------------------------------------------------- resampling
def _edges(w: np.ndarray) -> np.ndarray:
    mid = 0.5 * (w[1:] + w[:-1])
    return np.concatenate([[w[0] - (mid[0] - w[0])], mid, [w[-1] + (w[-1] - mid[-1])]])


def resample_flux_conserving(w_in, f_in, w_out, err_in=None):
    """Bin-average a spectrum onto new bin centres, conserving integrated flux.

    Each input pixel is a top-hat over its bin; an output bin gets the overlap-weighted mean
    F_out = sum_i o_ij F_i / sum_i o_ij (o_ij = overlap length).  Output bins not fully
    covered by the input are NaN.  Errors: sigma_out = sqrt(sum o_ij^2 sigma_i^2) / sum o_ij
    (independent pixels).  Shapes: w_in, f_in, err_in [n_in]; w_out [n_out] -> [n_out].
    """
    w_in, f_in, w_out = (np.asarray(x, float) for x in (w_in, f_in, w_out))
    ein, eout = _edges(w_in), _edges(w_out)
    lo_out, hi_out = eout[:-1], eout[1:]
    # cumulative integral of the top-hat spectrum at the input edges
    cum = np.concatenate([[0.0], np.cumsum(f_in * np.diff(ein))])
    integ = np.interp(hi_out, ein, cum) - np.interp(lo_out, ein, cum)
    width = hi_out - lo_out
    out = integ / width
    covered = (lo_out >= ein[0]) & (hi_out <= ein[-1])
    out = np.where(covered, out, np.nan)
    if err_in is None:
        return out, None
    # variance needs squared overlaps: loop over the (few) input pixels touching each bin
    var = np.full(w_out.shape, np.nan)
    j0 = np.clip(np.searchsorted(ein, lo_out, side="right") - 1, 0, len(w_in) - 1)
    j1 = np.clip(np.searchsorted(ein, hi_out, side="left") - 1, 0, len(w_in) - 1)
    e2 = np.asarray(err_in, float) ** 2
    for k in np.flatnonzero(covered):
        idx = np.arange(j0[k], j1[k] + 1)
        ov = np.clip(np.minimum(ein[idx + 1], hi_out[k]) - np.maximum(ein[idx], lo_out[k]), 0, None)
        var[k] = np.sum(ov**2 * e2[idx]) / np.sum(ov) ** 2
    return out, np.sqrt(var)


def _unit_hint(wavelength, model_wavelength) -> str:
    """A hint for the error of data that miss the model grid: the wavelengths fit it in nm or micron."""
    lo, hi = float(np.min(wavelength)), float(np.max(wavelength))
    m_lo, m_hi = float(np.min(model_wavelength)), float(np.max(model_wavelength))
    for unit, factor in (("nm", _WAVE_UNITS["nm"]), ("um", _WAVE_UNITS["um"])):
        a, b = max(lo * factor, m_lo), min(hi * factor, m_hi)
        if b - a > 0.25 * (m_hi - m_lo):
            return f"; the wavelengths look like {unit}: pass --wave-unit {unit}"
    return ""


def band_mask(wavelength, bands) -> np.ndarray:
    """True where ``wavelength`` lies outside every (lo, hi) band."""
    w = np.asarray(wavelength)
    keep = np.ones(w.shape, bool)
    for lo, hi in bands:
        keep &= ~((w >= lo) & (w <= hi))
    return keep


# ---------------------------------------------------------------------------- prepare
def prepare_observation(
    spec: ObservedSpectrum,
    model_wavelength: np.ndarray,
    preprocess: Callable,
    *,
    redshift: float = 0.0,
    ebv_mw: float = 0.0,
    ebv_host: float = 0.0,
    r_v_host: float = 3.1,
    window: tuple[float, float] | None = None,
    telluric: bool = False,
    edge_trim: float = 0.0,
    extra_masks: Sequence[tuple[float, float]] = (),
    n_noise_draws: int = 64,
    seed: int = 0,
    norm_window: tuple[float, float] | None = None,
) -> Observation:
    """Turn an observed spectrum into the likelihood's data (see the module docstring).

    ``preprocess(wavelength, flux, mask)`` is the emulator's preprocessing; observational
    errors are pushed through it by Monte Carlo (``n_noise_draws`` noisy copies; the bin
    standard deviation is the preprocessed sigma).  ``window`` (rest frame, A) limits the
    fitted range; ``telluric`` masks :data:`TELLURIC_BANDS` (observed frame); ``edge_trim``
    removes that many A at each end of the data.  ``norm_window`` (A), the window over which
    ``preprocess`` normalises, only makes the error clearer when the data miss it.
    """
    validate_spectrum(spec)
    meta = {"source": spec.source, "redshift": redshift, "ebv_mw": ebv_mw, "ebv_host": ebv_host,
            "window": list(window) if window else None, "telluric": telluric, "edge_trim": edge_trim}
    obs_lo, obs_hi = spec.wavelength[0], spec.wavelength[-1]
    s = correct_extinction(spec, ebv_mw) if ebv_mw else spec
    s = to_rest_frame(s, redshift) if redshift else dataclasses.replace(s, frame="rest")
    s = correct_extinction(s, ebv_host, r_v_host) if ebv_host else s
    mw = np.asarray(model_wavelength, float)
    flux, err = resample_flux_conserving(s.wavelength, s.flux, mw, s.error)
    keep = np.isfinite(flux)
    if edge_trim:
        lo, hi = obs_lo / (1 + redshift) + edge_trim, obs_hi / (1 + redshift) - edge_trim
        keep &= (mw >= lo) & (mw <= hi)
    if telluric:
        keep &= band_mask(mw * (1 + redshift), TELLURIC_BANDS)
    if extra_masks:
        keep &= band_mask(mw, extra_masks)
    if window is not None:
        lo, hi = window
        if not lo < hi:
            raise DataFileError(f"window [{lo}, {hi}] is empty")
        keep &= (mw >= lo) & (mw <= hi)
    if keep.sum() < MIN_USABLE_BINS:
        raise DataFileError(
            f"{spec.source or 'spectrum'}: only {int(keep.sum())} model-grid bins overlap the data "
            f"(rest frame {s.wavelength[0]:.4g}-{s.wavelength[-1]:.4g} A vs model "
            f"{mw[0]:.0f}-{mw[-1]:.0f} A after masks); need at least {MIN_USABLE_BINS}"
            + _unit_hint(s.wavelength, mw))
    frac_neg = float(np.mean(flux[keep] <= 0))
    if frac_neg > MAX_NONPOSITIVE_FRAC:
        raise DataFileError(
            f"{spec.source or 'spectrum'}: flux is zero or negative in {100 * frac_neg:.1f} % of the fitted "
            f"{mw[keep][0]:.0f}-{mw[keep][-1]:.0f} A bins (at most {100 * MAX_NONPOSITIVE_FRAC:.0f} % allowed); "
            "check the flux column, its sign and the background subtraction")
    filled = np.where(np.isfinite(flux), flux, 0.0)
    y = np.asarray(preprocess(mw, filled, keep), float)
    if y.shape != mw.shape:
        raise DataFileError(f"preprocessing returned shape {y.shape}, expected {mw.shape}")
    if not np.any(np.isfinite(y[keep])):
        nw = f" ({norm_window[0]:.0f}-{norm_window[1]:.0f} A)" if norm_window else ""
        raise DataFileError(
            f"{spec.source or 'spectrum'}: the fitted data (rest frame {mw[keep][0]:.0f}-{mw[keep][-1]:.0f} A) do not "
            f"cover the emulator's normalisation window{nw}, over which every spectrum is scaled; fit a spectrum "
            "that covers it")
    keep &= np.isfinite(y)
    if not np.any(y[keep] > 0):
        raise DataFileError(f"{spec.source or 'spectrum'}: flux is zero or negative in the fitted range")
    sigma = np.zeros_like(y)
    has_err = err is not None
    if has_err:
        rng = np.random.default_rng(seed)
        e = np.where(np.isfinite(err), err, 0.0)
        draws = np.stack([np.asarray(preprocess(mw, filled + rng.standard_normal(mw.shape) * e, keep), float)
                          for _ in range(n_noise_draws)])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins (no coverage) stay NaN
            sigma = np.nanstd(draws, axis=0)
        keep &= np.isfinite(sigma)
    if keep.sum() < MIN_USABLE_BINS:
        raise DataFileError(f"{spec.source or 'spectrum'}: fewer than {MIN_USABLE_BINS} usable bins after preprocessing")
    meta.update(n_used=int(keep.sum()), fit_range=[float(mw[keep][0]), float(mw[keep][-1])])
    return Observation(mw, np.where(keep, y, 0.0), np.where(keep, sigma, 0.0), keep, has_err, meta)


def load_observation(path, model_wavelength, preprocess, *, wave_unit=None, flux_unit=None, **kw) -> Observation:
    """:func:`read_spectrum` followed by :func:`prepare_observation`."""
    spec = read_spectrum(path, wave_unit=wave_unit, flux_unit=flux_unit)
    return prepare_observation(spec, model_wavelength, preprocess, **kw)


def observation_from_model(wavelength, flux, model_wavelength, preprocess, *, noise_frac: float = 0.0, seed: int = 0,
                           window: tuple[float, float] | None = None, source: str = "mock") -> Observation:
    """A mock observation from a model spectrum (e.g. the synthesizer's L_lambda).

    Gaussian noise of ``noise_frac`` x the local flux is added before preprocessing and
    passed as the error column, so the likelihood knows the noise level.
    """
    w = np.asarray(wavelength, float)
    f = np.asarray(flux, float)
    err = None
    if noise_frac > 0:
        rng = np.random.default_rng(seed)
        err = noise_frac * np.abs(f) + 1e-12 * np.max(np.abs(f))
        f = f + rng.standard_normal(f.shape) * err
    spec = ObservedSpectrum(w, f, err, "rest", source)
    return prepare_observation(spec, model_wavelength, preprocess, window=window, seed=seed + 1)


def observation_from_prediction(prediction, model_wavelength, preprocess, *, noise_frac: float = 0.0, seed: int = 0,
                                window: tuple[float, float] | None = None, source: str = "mock") -> Observation:
    """A mock whose noise-free preprocessed flux is exactly ``prediction`` (an emulator's output,
    already normalised and smoothed, ``[n_wave]`` on ``model_wavelength``), for self-consistency checks.

    Passing such a prediction through :func:`observation_from_model` would smooth and normalise
    it a second time (0.2-1.6 % RMS, up to ~5 emulator sigmas at line cores, for the stage-1
    emulator).  Here the noise is drawn in flux space around ``prediction`` as there, pushed
    through ``preprocess``, and only its effect -- preprocessed noisy minus preprocessed clean
    -- is added to ``prediction``; sigma and mask are those of the noisy mock."""
    p = np.asarray(prediction, float)
    w = np.asarray(model_wavelength, float)
    if p.shape != w.shape or not np.all(np.isfinite(p)):
        raise DataFileError(f"prediction must be {w.shape} finite values on the model grid, got shape {p.shape}")
    clean = observation_from_model(w, p, w, preprocess, window=window, source=source)
    noisy = observation_from_model(w, p, w, preprocess, noise_frac=noise_frac, seed=seed, window=window, source=source)
    mask = clean.mask & noisy.mask
    y = np.where(mask, p + noisy.flux - clean.flux, 0.0)
    return dataclasses.replace(noisy, flux=y, sigma=np.where(mask, noisy.sigma, 0.0), mask=mask,
                               meta={**noisy.meta, "n_used": int(mask.sum()), "mean": "prediction (not re-preprocessed)"})
