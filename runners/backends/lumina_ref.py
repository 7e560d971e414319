"""LUMINA-SN reference directory: file format table, validator, writer and content hash.

A *reference directory* is what the LUMINA-SN binary takes as its first argument
(``lumina REF_DIR N_PACKETS N_ITERS MODE``).  This module knows that directory's file format
only -- no physics: every array is produced by the caller.

Format facts this module encodes (LUMINA-SN at commit 835c64e, ``src/lumina_atomic.c``,
``src/lumina_main.c``, ``src/lumina_plasma.c``, ``src/lumina_transport.c``):

* CSV columns are located by **name** in the header line (a field matches after its
  leading spaces are removed; fields end at ``,``/``\\r``/``\\n``; quotes are not
  understood); values are parsed with C ``atof`` (junk reads as 0, silently) and integer
  columns are ``(int)`` casts of that double.  Lines, newline included, must fit in 4095
  bytes (``abundances.csv``: 8191); blank lines are skipped.
* ``.npy`` files: only ``<f8`` and ``<i8`` are read correctly (``<i4`` is read as if it
  were 8 bytes wide: garbage; every other dtype is read as raw float64); npy format 1.0 or
  2.0; only the first two dimensions of the shape are parsed.
* ``atomic_number`` is the real Z in every file; ``ion_number`` is the ion charge
  (0 = neutral).  In ``ionization_energies.csv`` and ``zeta_ions.csv`` the row
  ``(Z, k)`` belongs to the ionisation k -> k+1 (k = 0: neutral -> singly ionised).
* The element set is **defined by atom_masses.csv**: elements absent from it are dropped
  without a message (their abundance rows are skipped, their lines get tau = 0).
* Levels are addressed by global row index of ``levels.csv`` (= row of
  ``macro_atom_references.csv``); lines by row index of ``line_list.csv`` (sorted by
  ``nu`` descending).  The block of level ``i`` is the rows
  ``block_references[i] .. block_references[i+1]-1`` of ``macro_atom_data.csv`` and of
  ``transition_probabilities.npy`` (the last block ends at the row count of
  ``transition_probabilities.npy``).

The reference tables of the format are :data:`REFERENCE_SPEC` (one :class:`RefFile` per
file the binary reads).  :func:`check_reference` lists every problem of a directory,
:func:`write_reference` writes one atomically, :func:`reference_hash` fingerprints one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: Elements (real Z) a reference directory must define by default: C O Mg Si S Ca Ti Cr Fe Co Ni.
DEFAULT_ELEMENTS: tuple[int, ...] = (6, 8, 12, 14, 16, 20, 22, 24, 26, 27, 28)
#: LUMINA reads only the first 4095 bytes of config.json.
MAX_CONFIG_BYTES = 4095
#: Longest CSV line (newline included) LUMINA's 4096-byte fgets buffer reads in one piece.
MAX_CSV_LINE = 4095
#: Same for abundances.csv (8192-byte buffer).
MAX_ABUNDANCE_LINE = 8191
#: LUMINA's end-of-run comparison table is a fixed 30-element array per quantity.
MAX_SHELLS = 30
#: Transition probabilities of one level block must sum to 1 (or be all zero) within this.
BLOCK_SUM_TOL = 1e-6
#: Relative tolerance of wavelength_cm * nu = c (air/vacuum wavelengths differ by ~3e-4).
WAVELENGTH_NU_RTOL = 1e-3
#: Relative tolerance of r = v * time_explosion_s in geometry.csv.
GEOMETRY_RTOL = 1e-6
_C_CGS = 2.99792458e10  # cm/s, only for the wavelength_cm <-> nu unit check


@dataclasses.dataclass(frozen=True)
class RefFile:
    """One file the LUMINA-SN binary reads from the reference directory.

    kind
        ``"csv"``, ``"npy"`` or ``"json"``.
    columns
        csv: the columns LUMINA reads by name (in the order the writer puts them first);
        json: the keys LUMINA needs.
    int_columns
        csv: the subset of ``columns`` that LUMINA casts to int (written as integers).
    optional
        json: keys LUMINA reads when present.
    rows
        csv: the count symbol the number of data rows defines or must equal
        (``n_shells``, ``n_lines``, ``n_levels``, ``n_transitions``, ``n_zeta_ions``,
        ``n_zeta_temps``, ``n_elements``, ``n_ionization``).
    dtype, shape
        npy: required dtype string (``"<f8"``/``"<i8"``) and shape as count symbols; C order.
    """

    name: str
    kind: str
    columns: tuple[str, ...] = ()
    int_columns: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    rows: str | None = None
    dtype: str | None = None
    shape: tuple[str, ...] = ()
    description: str = ""


REFERENCE_SPEC: tuple[RefFile, ...] = (
    RefFile("config.json", "json",
            columns=("time_explosion_s", "T_inner_K", "luminosity_inner_erg_s",
                     "n_packets", "n_iterations", "seed"),
            optional=("T_e_T_rad_ratio",),
            description="flat JSON object, keys found by substring; s, K (initial T_inner), "
                        "erg/s (requested emergent L); n_packets/n_iterations/seed integers; "
                        "T_e_T_rad_ratio default 0.9; at most 4095 bytes"),
    RefFile("geometry.csv", "csv", columns=("shell_id", "r_inner", "r_outer", "v_inner", "v_outer"),
            int_columns=("shell_id",), rows="n_shells",
            description="one row per shell, inner to outer; r in cm, v in cm/s; "
                        "its row count defines n_shells"),
    RefFile("density.csv", "csv", columns=("shell_id", "rho"), int_columns=("shell_id",),
            rows="n_shells", description="mass density per shell, g/cm^3"),
    RefFile("electron_densities.csv", "csv", columns=("shell_id", "n_e"), int_columns=("shell_id",),
            rows="n_shells", description="electron density per shell, cm^-3 (iteration 0 and "
                                         "initial guess)"),
    RefFile("plasma_state.csv", "csv", columns=("shell_id", "W", "T_rad"), int_columns=("shell_id",),
            rows="n_shells", description="initial dilution factor and T_rad [K]; also re-read "
                                         "positionally as 'shell_id,W,T_rad' (this column order)"),
    RefFile("abundances.csv", "csv", columns=("atomic_number",), int_columns=("atomic_number",),
            rows="n_elements",
            description="header 'atomic_number,0,1,...,n_shells-1'; one row per element of "
                        "atom_masses.csv: integer Z then the mass fraction in every shell"),
    RefFile("atom_masses.csv", "csv", columns=("atomic_number", "mass_amu"),
            int_columns=("atomic_number",), rows="n_elements",
            description="defines the element set; ascending Z (the order levels.csv is grouped "
                        "in); mass in amu"),
    RefFile("line_list.csv", "csv",
            columns=("atomic_number", "ion_number", "level_number_lower", "level_number_upper",
                     "f_lu", "wavelength_cm", "A_ul", "B_lu", "B_ul", "nu"),
            int_columns=("atomic_number", "ion_number", "level_number_lower", "level_number_upper"),
            rows="n_lines",
            description="one row per line sorted by nu [Hz] descending; wavelength_cm [cm]; "
                        "A_ul [1/s]; B in TARDIS units; other columns (line_id, wavelength, "
                        "f_ul) are ignored"),
    RefFile("levels.csv", "csv",
            columns=("atomic_number", "ion_number", "level_number", "energy_eV", "g", "metastable"),
            int_columns=("atomic_number", "ion_number", "level_number", "g", "metastable"),
            rows="n_levels",
            description="one row per level sorted by (Z, ion, level_number); energy in eV; "
                        "metastable 0/1"),
    RefFile("ionization_energies.csv", "csv",
            columns=("atomic_number", "ion_number", "ionization_energy_eV"),
            int_columns=("atomic_number", "ion_number"), rows="n_ionization",
            description="row (Z, k): energy [eV] of k -> k+1; k = 0..n-1 per element gives "
                        "ion stages 0..n"),
    RefFile("zeta_ions.csv", "csv", columns=("atomic_number", "ion_number"),
            int_columns=("atomic_number", "ion_number"), rows="n_zeta_ions",
            description="row (Z, k) labels zeta_data row for the k -> k+1 ratio; missing -> zeta=1"),
    RefFile("zeta_temps.csv", "csv", columns=("temperature",), rows="n_zeta_temps",
            description="strictly increasing temperature grid [K] of zeta_data"),
    RefFile("zeta_data.npy", "npy", dtype="<f8", shape=("n_zeta_ions", "n_zeta_temps"),
            description="zeta(T), linear interpolation, clamped at the grid ends"),
    RefFile("tau_sobolev.npy", "npy", dtype="<f8", shape=("n_lines", "n_shells"),
            description="Sobolev optical depths used in iteration 0 only (wrong shape: zeros)"),
    RefFile("transition_probabilities.npy", "npy", dtype="<f8", shape=("n_transitions", "n_shells"),
            description="macro-atom branching per transition and shell, each level block sums "
                        "to 1 (or is all zero); its row count is LUMINA's n_transitions"),
    RefFile("macro_atom_references.csv", "csv", columns=("block_references",),
            int_columns=("block_references",), rows="n_levels",
            description="one row per level in levels.csv order: first macro_atom_data row of "
                        "the level's block (non-decreasing, starts at 0)"),
    RefFile("macro_atom_data.csv", "csv",
            columns=("transition_type", "destination_level_idx", "lines_idx"),
            int_columns=("transition_type", "destination_level_idx", "lines_idx"),
            rows="n_transitions",
            description="one row per transition grouped by source level: type -1 emission, "
                        "0 internal down, 1 internal up; destination = levels.csv row; "
                        "lines_idx = line_list.csv row"),
    RefFile("line2macro_level_upper.npy", "npy", dtype="<i8", shape=("n_lines",),
            description="levels.csv row of each line's upper level (macro-atom activation)"),
)

SPEC_BY_NAME: dict[str, RefFile] = {f.name: f for f in REFERENCE_SPEC}
#: Names of all files the binary reads.
REFERENCE_FILES: tuple[str, ...] = tuple(f.name for f in REFERENCE_SPEC)

_FLOAT_CONFIG_KEYS = ("time_explosion_s", "T_inner_K", "luminosity_inner_erg_s", "T_e_T_rad_ratio")
_INT_CONFIG_KEYS = ("n_packets", "n_iterations", "seed")
_ATOF = re.compile(r"\s*([+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan))", re.I)
_ATOI = re.compile(r"\s*([+-]?\d+)")


# ----------------------------------------------------------------------------------------
# reading helpers (LUMINA's semantics where they matter)
# ----------------------------------------------------------------------------------------

def _header_fields(raw: bytes) -> list[str]:
    """Header field names as LUMINA matches them (leading spaces dropped, stop at CR/LF)."""
    end = len(raw)
    for stop in (b"\n", b"\r"):
        i = raw.find(stop)
        if 0 <= i < end:
            end = i
    text = raw[:end].decode("utf-8", errors="replace")
    return [f.lstrip(" ") for f in text.split(",")]


def _max_line_length(raw: bytes) -> int:
    buf = np.frombuffer(raw, dtype=np.uint8)
    cuts = np.concatenate(([-1], np.flatnonzero(buf == 10), [len(raw) - 1]))
    return int(np.max(np.diff(cuts))) if len(raw) else 0


def _read_csv(path: Path, spec: RefFile, problems: list[str]) -> dict[str, np.ndarray] | None:
    """Required columns of one CSV as float64 arrays (None when unusable; problems appended)."""
    name = spec.name
    try:
        raw = path.read_bytes()
    except OSError as e:
        problems.append(f"{name}: cannot read ({e})")
        return None
    if not raw.strip():
        problems.append(f"{name}: empty file")
        return None
    longest = _max_line_length(raw)
    if longest > MAX_CSV_LINE:
        problems.append(f"{name}: a line has {longest} bytes; LUMINA reads lines of at most "
                        f"{MAX_CSV_LINE} bytes and splits longer ones")
    fields = _header_fields(raw)
    index = {}
    for i, f in enumerate(fields):
        index.setdefault(f, i)
    missing = [c for c in spec.columns if c not in index]
    if missing:
        problems.append(f"{name}: missing column(s) {', '.join(missing)} (header: "
                        f"{','.join(fields)[:200]})")
        return None
    cols = [index[c] for c in spec.columns]
    body = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    if not body.strip():
        problems.append(f"{name}: no data rows")
        return None
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, dtype=np.float64,
                          ndmin=2, comments=None, encoding="utf-8")
    except (ValueError, IndexError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        problems.append(f"{name}: unparsable numbers ({msg[:200]})")
        return None
    out = {c: np.ascontiguousarray(data[:, k]) for k, c in enumerate(spec.columns)}
    for c in spec.columns:
        v = out[c]
        bad = ~np.isfinite(v)
        if bad.any():
            problems.append(f"{name}: column {c} has {int(bad.sum())} non-finite value(s) "
                            f"(first at data row {int(np.argmax(bad))})")
        elif c in spec.int_columns and np.any(v != np.round(v)):
            problems.append(f"{name}: column {c} must hold integers")
    return out


def _read_npy(path: Path, spec: RefFile, problems: list[str]) -> np.ndarray | None:
    """The array (memory-mapped) after header checks; None when unreadable."""
    name = spec.name
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                problems.append(f"{name}: npy format version {version} (LUMINA reads 1.0/2.0)")
                return None
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one problem line
        problems.append(f"{name}: not a readable .npy file ({type(e).__name__}: {str(e)[:150]})")
        return None
    if dtype.str != spec.dtype:
        extra = " (LUMINA reads <i4 as if 8 bytes wide)" if dtype.str == "<i4" else ""
        problems.append(f"{name}: dtype {dtype.str} ({dtype.name}); LUMINA needs {spec.dtype} "
                        f"({np.dtype(spec.dtype).name}){extra}")
    if fortran and len(shape) > 1:
        problems.append(f"{name}: Fortran order; write C order (np.ascontiguousarray)")
    return arr


def _check_shape(name: str, arr: np.ndarray, dims: tuple[str, ...], counts: dict[str, int],
                 problems: list[str]) -> bool:
    if any(d not in counts for d in dims):
        return False
    want = tuple(counts[d] for d in dims)
    if tuple(arr.shape) != want:
        spelled = " x ".join(f"{d}={counts[d]}" for d in dims)
        problems.append(f"{name}: shape {tuple(arr.shape)} != [{spelled}]")
        return False
    return True


def _level_keys(z, ion, level) -> np.ndarray:
    """One sortable int64 key per (Z, ion, level) triple."""
    z = np.asarray(z, dtype=np.int64)
    ion = np.asarray(ion, dtype=np.int64)
    level = np.asarray(level, dtype=np.int64)
    return (z << 48) + (ion << 32) + level


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


# ----------------------------------------------------------------------------------------
# validator
# ----------------------------------------------------------------------------------------

def check_reference(ref_dir, *, n_shells: int | None = None,
                    elements: tuple[int, ...] | None = None) -> list[str]:
    """Every problem of a LUMINA reference directory, one human-readable line each.

    An empty list means the directory holds every file LUMINA-SN reads, in the layout its
    loaders expect, with consistent counts and indices.  ``n_shells`` (if given) must equal
    the rows of geometry.csv; ``elements`` (default :data:`DEFAULT_ELEMENTS`) must equal the
    Z set of atom_masses.csv.  Counts are derived from the CSVs: n_shells = rows of
    geometry.csv, n_lines = rows of line_list.csv, n_levels = rows of levels.csv,
    n_transitions = rows of macro_atom_data.csv.  Large .npy files are memory-mapped.
    """
    ref = Path(ref_dir)
    want_elements = tuple(DEFAULT_ELEMENTS if elements is None else elements)
    if not ref.is_dir():
        return [f"{ref}: not a directory"]
    problems: list[str] = []
    csv: dict[str, dict[str, np.ndarray]] = {}
    npy: dict[str, np.ndarray] = {}
    for spec in REFERENCE_SPEC:
        path = ref / spec.name
        if not path.is_file():
            problems.append(f"{spec.name}: missing file (LUMINA crashes or runs with garbage)")
            continue
        if spec.kind == "csv" and spec.name != "abundances.csv":
            table = _read_csv(path, spec, problems)
            if table is not None:
                csv[spec.name] = table
        elif spec.kind == "npy":
            arr = _read_npy(path, spec, problems)
            if arr is not None:
                npy[spec.name] = arr

    counts: dict[str, int] = {}
    for spec in REFERENCE_SPEC:
        if spec.kind == "csv" and spec.name in csv and spec.rows:
            n = len(next(iter(csv[spec.name].values())))
            if spec.rows in counts:
                if n != counts[spec.rows]:
                    problems.append(f"{spec.name}: {n} data rows != {spec.rows}={counts[spec.rows]}")
            else:
                counts[spec.rows] = n
    for key, minimum in (("n_shells", 1), ("n_lines", 1), ("n_levels", 1), ("n_elements", 1),
                         ("n_zeta_temps", 1)):
        if key in counts and counts[key] < minimum:
            problems.append(f"{key} = {counts[key]}: LUMINA needs at least {minimum}")

    ns = counts.get("n_shells")
    if n_shells is not None and ns is not None and ns != n_shells:
        problems.append(f"geometry.csv: {ns} shells, expected {n_shells}")
    if ns is not None and ns > MAX_SHELLS:
        problems.append(f"geometry.csv: {ns} shells > {MAX_SHELLS}: LUMINA's final comparison "
                        f"table reads past its {MAX_SHELLS}-element arrays")

    cfg = _check_config(ref / "config.json", problems)
    t_exp = cfg.get("time_explosion_s") if cfg else None
    _check_shells(csv, t_exp if isinstance(t_exp, (int, float)) and t_exp > 0 else None, problems)
    elem_z = _check_elements(csv, want_elements, problems)
    if ns is not None and ref.joinpath("abundances.csv").is_file():
        _check_abundances(ref / "abundances.csv", ns, elem_z, problems)
    level_keys = _check_levels(csv, elem_z, problems)
    line_lo, line_up = _check_lines(csv, elem_z, level_keys, problems)
    _check_zeta(csv, npy, counts, problems)

    for name in ("tau_sobolev.npy", "transition_probabilities.npy", "zeta_data.npy",
                 "line2macro_level_upper.npy"):
        if name not in npy:
            continue
        spec = SPEC_BY_NAME[name]
        dims = spec.shape
        if name == "transition_probabilities.npy" and "n_transitions" not in counts:
            dims = ()
        if dims and not _check_shape(name, npy[name], dims, counts, problems):
            npy.pop(name)
    for name in ("tau_sobolev.npy", "transition_probabilities.npy"):
        if name in npy:
            arr = np.asarray(npy[name])
            if arr.dtype.kind == "f":
                bad = ~np.isfinite(arr)
                if bad.any():
                    problems.append(f"{name}: {int(bad.sum())} non-finite value(s)")
                elif (arr < 0).any():
                    problems.append(f"{name}: {int((arr < 0).sum())} negative value(s)")

    _check_macro_atom(csv, npy, counts, line_lo, line_up, problems)
    _check_line2macro(npy, counts, line_up, problems)
    return problems


def _check_config(path: Path, problems: list[str]) -> dict | None:
    if not path.is_file():
        return None
    raw = path.read_bytes()
    if len(raw) > MAX_CONFIG_BYTES:
        problems.append(f"config.json: {len(raw)} bytes > {MAX_CONFIG_BYTES} (LUMINA reads only "
                        f"the first {MAX_CONFIG_BYTES})")
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"config.json: not valid JSON ({e})")
        return None
    if not isinstance(cfg, dict):
        problems.append("config.json: not a JSON object")
        return None
    text = raw[:MAX_CONFIG_BYTES].decode("utf-8", errors="replace")
    spec = SPEC_BY_NAME["config.json"]
    for key in spec.columns + spec.optional:
        if key not in cfg:
            if key in spec.columns:
                problems.append(f"config.json: missing key {key!r}")
            continue
        value = cfg[key]
        is_int_key = key in _INT_CONFIG_KEYS
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"config.json: {key} must be a number, got {value!r}")
            continue
        if not math.isfinite(value):
            problems.append(f"config.json: {key} = {value!r} is not finite")
            continue
        if is_int_key and not isinstance(value, int):
            problems.append(f"config.json: {key} must be a JSON integer (LUMINA parses it with "
                            f"atoi), got {value!r}")
            continue
        # what LUMINA's substring search + atof/atoi actually sees
        pos = text.find(f'"{key}"')
        colon = text.find(":", pos) if pos >= 0 else -1
        m = (_ATOI if is_int_key else _ATOF).match(text, colon + 1) if colon >= 0 else None
        seen = (int(m.group(1)) if is_int_key else float(m.group(1))) if m else None
        if seen is None or not (seen == value or (not is_int_key
                                                 and math.isclose(seen, value, rel_tol=1e-15))):
            problems.append(f"config.json: LUMINA's key search reads {key} = {seen!r}, "
                            f"not {value!r}")
        if key in ("time_explosion_s", "T_inner_K", "luminosity_inner_erg_s", "T_e_T_rad_ratio",
                   "n_packets", "n_iterations") and value <= 0:
            problems.append(f"config.json: {key} = {value!r} must be > 0")
        if key == "seed" and not 0 <= value < 2**63:
            problems.append(f"config.json: seed = {value!r} outside [0, 2^63)")
    return cfg


def _check_shells(csv: dict, t_exp: float | None, problems: list[str]) -> None:
    for name in ("geometry.csv", "density.csv", "electron_densities.csv", "plasma_state.csv"):
        t = csv.get(name)
        if t is None:
            continue
        sid = t["shell_id"]
        if not np.array_equal(sid, np.arange(len(sid))):
            problems.append(f"{name}: shell_id must be 0..{len(sid) - 1} in order")
    g = csv.get("geometry.csv")
    if g is not None:
        ri, ro = g["r_inner"], g["r_outer"]
        if np.any(ri <= 0) or np.any(ro <= ri):
            problems.append("geometry.csv: need 0 < r_inner < r_outer in every shell")
        if len(ri) > 1 and np.any(ri[1:] != ro[:-1]):
            k = _first(ri[1:] != ro[:-1])
            problems.append(f"geometry.csv: shells not contiguous (r_inner[{k + 1}] != "
                            f"r_outer[{k}])")
        if np.any(g["v_outer"] <= g["v_inner"]):
            problems.append("geometry.csv: need v_inner < v_outer in every shell")
        if t_exp is not None:
            with np.errstate(all="ignore"):
                off = ((np.abs(ri - g["v_inner"] * t_exp) > GEOMETRY_RTOL * np.abs(ri))
                       | (np.abs(ro - g["v_outer"] * t_exp) > GEOMETRY_RTOL * np.abs(ro)))
            if off.any():
                problems.append(f"geometry.csv: r != v * time_explosion_s in {int(off.sum())} shell(s) "
                                f"(first: shell {_first(off)}); LUMINA moves packets with r and t_exp "
                                f"(beta = r / (c t_exp)) and rescales epochs with v")
    for name, col, strict in (("density.csv", "rho", False), ("electron_densities.csv", "n_e", False),
                              ("plasma_state.csv", "T_rad", True), ("plasma_state.csv", "W", False)):
        t = csv.get(name)
        if t is None:
            continue
        bad = (t[col] <= 0) if strict else (t[col] < 0)
        if bad.any():
            problems.append(f"{name}: {col} must be {'> 0' if strict else '>= 0'} "
                            f"({int(bad.sum())} shell(s) violate it)")


def _check_elements(csv: dict, want: tuple[int, ...], problems: list[str]) -> np.ndarray | None:
    t = csv.get("atom_masses.csv")
    if t is None:
        return None
    z = t["atomic_number"].astype(np.int64)
    have, target = set(z.tolist()), set(int(x) for x in want)
    if have != target:
        problems.append(f"atom_masses.csv: element set {sorted(have)} != expected {sorted(target)} "
                        f"(missing {sorted(target - have)}, extra {sorted(have - target)}); "
                        f"LUMINA silently drops elements it has no mass for")
    if len(z) > 1 and np.any(np.diff(z) <= 0):
        problems.append("atom_masses.csv: atomic_number must be strictly ascending (LUMINA maps "
                        "levels.csv blocks in this row order)")
    if np.any(t["mass_amu"] <= 0):
        problems.append("atom_masses.csv: mass_amu must be > 0")
    return z


def _check_abundances(path: Path, ns: int, elem_z, problems: list[str]) -> None:
    raw = path.read_bytes()
    if _max_line_length(raw) > MAX_ABUNDANCE_LINE:
        problems.append(f"abundances.csv: a line is longer than {MAX_ABUNDANCE_LINE} bytes")
    lines = [ln for ln in raw.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    want = "atomic_number," + ",".join(str(i) for i in range(ns))
    if not lines or lines[0].strip() != want:
        got = lines[0][:120] if lines else ""
        problems.append(f"abundances.csv: header must be 'atomic_number,0,1,...,{ns - 1}' "
                        f"({ns} shells), got {got!r}")
    rows_z = []
    for k, ln in enumerate(lines[1:], start=1):
        parts = ln.strip().split(",")
        if not re.fullmatch(r"\s*[+-]?\d+\s*", parts[0]):
            problems.append(f"abundances.csv: row {k}: atomic_number {parts[0]!r} is not an "
                            f"integer literal (LUMINA reads it with strtol)")
            continue
        if len(parts) != ns + 1:
            problems.append(f"abundances.csv: row {k} has {len(parts) - 1} values, expected {ns}")
            continue
        try:
            vals = np.array([float(p) for p in parts[1:]])
        except ValueError:
            problems.append(f"abundances.csv: row {k}: unparsable numbers")
            continue
        if not np.all(np.isfinite(vals)) or np.any(vals < 0):
            problems.append(f"abundances.csv: row {k}: fractions must be finite and >= 0")
        rows_z.append(int(parts[0]))
    if elem_z is not None:
        have = set(elem_z.tolist())
        dup = sorted({z for z in rows_z if rows_z.count(z) > 1})
        if dup:
            problems.append(f"abundances.csv: duplicate rows for Z {dup}")
        missing, extra = sorted(have - set(rows_z)), sorted(set(rows_z) - have)
        if missing:
            problems.append(f"abundances.csv: no row for Z {missing} (LUMINA uses 0)")
        if extra:
            problems.append(f"abundances.csv: rows for Z {extra} not in atom_masses.csv "
                            f"(LUMINA ignores them)")


def _check_levels(csv: dict, elem_z, problems: list[str]) -> np.ndarray | None:
    lv = csv.get("levels.csv")
    if lv is None:
        return None
    z, ion, lvl = (lv[c].astype(np.int64) for c in ("atomic_number", "ion_number", "level_number"))
    keys = _level_keys(z, ion, lvl)
    sorted_ok = True
    if len(keys) > 1 and np.any(np.diff(keys) <= 0):
        k = _first(np.diff(keys) <= 0)
        problems.append(f"levels.csv: not sorted by (atomic_number, ion_number, level_number) "
                        f"without duplicates (data rows {k} and {k + 1})")
        sorted_ok = False
    if np.any(ion < 0) or np.any(lvl < 0):
        problems.append("levels.csv: negative ion_number or level_number")
    if np.any(lv["g"] < 1):
        problems.append("levels.csv: g must be >= 1")
    if np.any((lv["metastable"] != 0) & (lv["metastable"] != 1)):
        problems.append("levels.csv: metastable must be 0 or 1")
    if np.any(lv["energy_eV"] < 0):
        problems.append("levels.csv: energy_eV must be >= 0")
    if elem_z is not None:
        outside = ~np.isin(z, elem_z)
        if outside.any():
            problems.append(f"levels.csv: {int(outside.sum())} level(s) of elements not in "
                            f"atom_masses.csv (Z {sorted(set(z[outside].tolist()))}); LUMINA's "
                            f"level offsets then point at the wrong rows")
        ioniz = csv.get("ionization_energies.csv")
        if ioniz is not None:
            iz = ioniz["atomic_number"].astype(np.int64)
            ii = ioniz["ion_number"].astype(np.int64)
            n_stage = {int(e): int(np.sum(iz == e)) for e in elem_z}
            for e in elem_z.tolist():
                got = np.sort(ii[iz == e])
                if not np.array_equal(got, np.arange(len(got))):
                    problems.append(f"ionization_energies.csv: Z={e}: ion_number must be "
                                    f"0..{len(got) - 1} once each, got {got.tolist()[:12]}")
            top = np.array([n_stage.get(int(e), -1) for e in z.tolist()], dtype=np.int64)
            over = (ion > top) & (top >= 0)  # levels of unknown elements are reported above
            if over.any():
                problems.append(f"levels.csv: {int(over.sum())} level(s) of ion stages beyond "
                                f"the ionization_energies.csv table (LUMINA knows stages "
                                f"0..n_ionization(Z) only)")
    return keys if sorted_ok else None


def _check_lines(csv: dict, elem_z, level_keys, problems: list[str]):
    """Checks of line_list.csv; returns levels.csv rows of each line's lower/upper level."""
    ll = csv.get("line_list.csv")
    if ll is None:
        return None, None
    nu = ll["nu"]
    if np.any(nu <= 0):
        problems.append("line_list.csv: nu must be > 0")
    if len(nu) > 1 and np.any(np.diff(nu) > 0):
        k = _first(np.diff(nu) > 0)
        problems.append(f"line_list.csv: not sorted by nu descending (data row {k + 1} has "
                        f"nu={float(nu[k + 1])!r} > {float(nu[k])!r})")
    wl = ll["wavelength_cm"]
    with np.errstate(all="ignore"):
        off = np.abs(wl * nu / _C_CGS - 1.0) > WAVELENGTH_NU_RTOL
    if off.any():
        k = _first(off)
        problems.append(f"line_list.csv: wavelength_cm * nu != c in {int(off.sum())} row(s) "
                        f"(data row {k}: {float(wl[k])!r} cm, {float(nu[k])!r} Hz); wavelength_cm must be in cm")
    for c in ("f_lu", "A_ul", "B_lu", "B_ul"):
        if np.any(ll[c] < 0):
            problems.append(f"line_list.csv: {c} must be >= 0")
    z = ll["atomic_number"].astype(np.int64)
    if elem_z is not None:
        outside = ~np.isin(z, elem_z)
        if outside.any():
            problems.append(f"line_list.csv: {int(outside.sum())} line(s) of elements not in "
                            f"atom_masses.csv (LUMINA gives them tau = 0)")
    if level_keys is None:
        return None, None
    ion = ll["ion_number"].astype(np.int64)
    rows = []
    for col in ("level_number_lower", "level_number_upper"):
        k = _level_keys(z, ion, ll[col].astype(np.int64))
        pos = np.clip(np.searchsorted(level_keys, k), 0, len(level_keys) - 1)
        found = level_keys[pos] == k
        if not found.all():
            i = _first(~found)
            problems.append(f"line_list.csv: {int((~found).sum())} line(s) whose {col} is not in "
                            f"levels.csv (first: data row {i}, Z={z[i]}, ion={ion[i]}, "
                            f"level={int(ll[col][i])}); LUMINA gives them tau = 0")
        rows.append(np.where(found, pos, -1))
    lo, up = rows
    same = (lo == up) & (lo >= 0)
    if same.any():
        problems.append(f"line_list.csv: {int(same.sum())} line(s) with lower == upper level")
    return lo, up


def _check_zeta(csv: dict, npy: dict, counts: dict, problems: list[str]) -> None:
    t = csv.get("zeta_temps.csv")
    if t is not None:
        temp = t["temperature"]
        if len(temp) > 1 and np.any(np.diff(temp) <= 0):
            problems.append("zeta_temps.csv: temperature must be strictly increasing")
    z = npy.get("zeta_data.npy")
    if z is not None and np.asarray(z).dtype.kind == "f" and not np.all(np.isfinite(z)):
        problems.append("zeta_data.npy: non-finite values")
    zi = csv.get("zeta_ions.csv")
    if zi is not None:
        keys = _level_keys(zi["atomic_number"], zi["ion_number"], 0)
        if len(np.unique(keys)) != len(keys):
            problems.append("zeta_ions.csv: duplicate (atomic_number, ion_number) rows "
                            "(LUMINA uses the first)")


def _check_macro_atom(csv: dict, npy: dict, counts: dict, line_lo, line_up,
                      problems: list[str]) -> None:
    refs_t, data_t = csv.get("macro_atom_references.csv"), csv.get("macro_atom_data.csv")
    tp = npy.get("transition_probabilities.npy")
    n_lines, n_levels = counts.get("n_lines"), counts.get("n_levels")
    n_trans = counts.get("n_transitions")
    refs_ok = False
    if refs_t is not None and n_trans is not None:
        br = refs_t["block_references"].astype(np.int64)
        if len(br) and br[0] != 0:
            problems.append(f"macro_atom_references.csv: block_references[0] = {br[0]}, must be 0")
        elif np.any(br < 0) or np.any(br > n_trans):
            k = _first((br < 0) | (br > n_trans))
            problems.append(f"macro_atom_references.csv: block_references out of range "
                            f"[0, n_transitions={n_trans}] ({int(((br < 0) | (br > n_trans)).sum())} "
                            f"row(s), first: data row {k} = {br[k]})")
        elif len(br) > 1 and np.any(np.diff(br) < 0):
            k = _first(np.diff(br) < 0)
            problems.append(f"macro_atom_references.csv: block_references not monotone "
                            f"(data row {k + 1} = {br[k + 1]} < data row {k} = {br[k]})")
        else:
            refs_ok = True
    if data_t is None:
        return
    tt = data_t["transition_type"].astype(np.int64)
    dest = data_t["destination_level_idx"].astype(np.int64)
    lidx = data_t["lines_idx"].astype(np.int64)
    bad_t = ~np.isin(tt, (-1, 0, 1))
    if bad_t.any():
        problems.append(f"macro_atom_data.csv: transition_type must be -1, 0 or 1 "
                        f"({int(bad_t.sum())} row(s) are not)")
    ok_dest = ok_line = True
    if n_levels is not None:
        bad = (dest < 0) | (dest >= n_levels)
        if bad.any():
            ok_dest = False
            problems.append(f"macro_atom_data.csv: destination_level_idx out of range "
                            f"[0, n_levels={n_levels}) in {int(bad.sum())} row(s) (first: data row "
                            f"{_first(bad)} = {dest[_first(bad)]})")
    if n_lines is not None:
        bad = (lidx < 0) | (lidx >= n_lines)
        if bad.any():
            ok_line = False
            problems.append(f"macro_atom_data.csv: lines_idx out of range [0, n_lines={n_lines}) "
                            f"in {int(bad.sum())} row(s) (first: data row {_first(bad)} = "
                            f"{lidx[_first(bad)]})")
    if not refs_ok:
        return
    br = refs_t["block_references"].astype(np.int64)
    size = np.diff(np.append(br, n_trans))
    source = np.repeat(np.arange(len(br)), size)
    # each transition must belong to the level it starts from (TARDIS macro-atom layout)
    if ok_line and ok_dest and line_lo is not None and line_up is not None and not bad_t.any():
        down = tt <= 0
        src_line = np.where(down, line_up[lidx], line_lo[lidx])
        dst_line = np.where(down, line_lo[lidx], line_up[lidx])
        wrong = (src_line != source) | (dst_line != dest)
        if wrong.any():
            k = _first(wrong)
            problems.append(f"macro_atom_data.csv: {int(wrong.sum())} transition(s) inconsistent "
                            f"with their line (emission/internal down must go from the line's "
                            f"upper to its lower level, internal up from lower to upper; first: "
                            f"data row {k}, block of level {source[k]}, type {tt[k]}, line {lidx[k]}, "
                            f"destination {dest[k]})")
    if tp is not None and tp.shape[0] == n_trans and tp.dtype.kind == "f":
        nonempty = np.flatnonzero(size > 0)
        if len(nonempty):
            sums = np.add.reduceat(np.asarray(tp), br[nonempty], axis=0)
            bad = ~((np.abs(sums - 1.0) <= BLOCK_SUM_TOL) | (sums == 0.0))
            if bad.any():
                lv, sh = np.argwhere(bad)[0]
                problems.append(f"transition_probabilities.npy: {int(bad.any(axis=1).sum())} level "
                                f"block(s) do not sum to 1 (first: level {nonempty[lv]}, shell "
                                f"{sh}, sum {float(sums[lv, sh])!r})")


def _check_line2macro(npy: dict, counts: dict, line_up, problems: list[str]) -> None:
    arr = npy.get("line2macro_level_upper.npy")
    n_levels = counts.get("n_levels")
    if arr is None or n_levels is None or arr.dtype.kind not in "iu":
        return
    a = np.asarray(arr, dtype=np.int64)
    bad = (a < 0) | (a >= n_levels)
    if bad.any():
        problems.append(f"line2macro_level_upper.npy: {int(bad.sum())} entr(y/ies) out of range "
                        f"[0, n_levels={n_levels}) (first: line {_first(bad)} = {a[_first(bad)]})")
        return
    if line_up is not None and len(line_up) == len(a):
        wrong = (line_up >= 0) & (a != line_up)
        if wrong.any():
            k = _first(wrong)
            problems.append(f"line2macro_level_upper.npy: {int(wrong.sum())} entr(y/ies) differ "
                            f"from the levels.csv row of the line's upper level (first: line {k}: "
                            f"{a[k]} != {line_up[k]})")


# ----------------------------------------------------------------------------------------
# hash
# ----------------------------------------------------------------------------------------

def reference_hash(ref_dir) -> str:
    """sha256 (hex) of the files LUMINA reads: sorted names, sizes and bytes.

    Independent of mtimes and of where the directory lives; symlinks are followed.
    Raises FileNotFoundError when one of the files is missing.
    """
    ref = Path(ref_dir)
    h = hashlib.sha256(b"lumina-reference-v1\0")
    for name in sorted(REFERENCE_FILES):
        path = ref / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (reference_hash needs every file LUMINA reads)")
        h.update(name.encode() + b"\0" + path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------
# writer
# ----------------------------------------------------------------------------------------

def _as_int_column(name: str, col: str, v: np.ndarray) -> np.ndarray:
    if v.dtype.kind in "iub":
        return v.astype(np.int64)
    if v.dtype.kind == "f" and np.all(np.isfinite(v)) and np.all(v == np.round(v)):
        return v.astype(np.int64)
    raise TypeError(f"{name}: column {col} must hold integers")


def _format_rows(columns: list[np.ndarray]) -> str:
    """CSV body; integers as integers, floats as the shortest exact repr (atof round-trips)."""
    fmt = ",".join("%d" if c.dtype.kind in "iu" else "%r" for c in columns) + "\n"
    lists = [c.tolist() for c in columns]
    return "".join(fmt % row for row in zip(*lists))


def _csv_text(spec: RefFile, table: Mapping[str, Any]) -> str:
    if not isinstance(table, Mapping):
        raise TypeError(f"{spec.name}: expected a mapping column name -> 1-d array")
    missing = [c for c in spec.columns if c not in table]
    if missing:
        raise KeyError(f"{spec.name}: missing column(s) {missing}")
    names = list(spec.columns) + [c for c in table if c not in spec.columns]
    cols = []
    n = None
    for c in names:
        if not isinstance(c, str) or not c or any(ch in c for ch in ",\r\n\"") or c != c.lstrip(" "):
            raise ValueError(f"{spec.name}: bad column name {c!r}")
        v = np.asarray(table[c])
        if v.ndim != 1:
            raise ValueError(f"{spec.name}: column {c} must be 1-d, got shape {v.shape}")
        if n is not None and len(v) != n:
            raise ValueError(f"{spec.name}: column {c} has {len(v)} rows, others {n}")
        n = len(v)
        if c in spec.int_columns:
            v = _as_int_column(spec.name, c, v)
        elif v.dtype.kind in "iub":
            v = v.astype(np.int64)
        elif v.dtype.kind == "f":
            v = v.astype(np.float64)
        else:
            raise TypeError(f"{spec.name}: column {c} must be numeric, got {v.dtype}")
        cols.append(v)
    return ",".join(names) + "\n" + _format_rows(cols)


def _abundances_text(table: Mapping[str, Any]) -> str:
    if not isinstance(table, Mapping) or "atomic_number" not in table or "mass_fractions" not in table:
        raise KeyError("abundances.csv: expected {'atomic_number': [n_el] ints, "
                       "'mass_fractions': [n_el, n_shells]}")
    z = _as_int_column("abundances.csv", "atomic_number", np.asarray(table["atomic_number"]))
    x = np.asarray(table["mass_fractions"], dtype=np.float64)
    if z.ndim != 1 or x.ndim != 2 or x.shape[0] != len(z):
        raise ValueError(f"abundances.csv: atomic_number {z.shape} / mass_fractions {x.shape} "
                         f"must be [n_el] / [n_el, n_shells]")
    header = "atomic_number," + ",".join(str(i) for i in range(x.shape[1])) + "\n"
    return header + _format_rows([z] + [x[:, k] for k in range(x.shape[1])])


def _config_text(cfg: Mapping[str, Any]) -> str:
    if not isinstance(cfg, Mapping):
        raise TypeError("config.json: expected a mapping")
    spec = SPEC_BY_NAME["config.json"]
    missing = [k for k in spec.columns if k not in cfg]
    if missing:
        raise KeyError(f"config.json: missing key(s) {missing}")
    out = {}
    for k, v in cfg.items():
        if isinstance(v, np.generic):
            v = v.item()
        if k in _INT_CONFIG_KEYS:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
                raise TypeError(f"config.json: {k} must be an integer, got {v!r}")
            v = int(v)
        elif k in _FLOAT_CONFIG_KEYS:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"config.json: {k} must be a number, got {v!r}")
            v = float(v)
        out[k] = v
    text = json.dumps(out, indent=2, allow_nan=False) + "\n"
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ValueError(f"config.json: {len(text.encode())} bytes > {MAX_CONFIG_BYTES}")
    return text


def _npy_array(spec: RefFile, value: Any) -> np.ndarray:
    a = np.asarray(value)
    if spec.dtype == "<i8":
        if a.dtype.kind not in "iu":
            raise TypeError(f"{spec.name}: needs integers, got {a.dtype}")
        return np.ascontiguousarray(a, dtype="<i8")
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{spec.name}: needs real numbers, got {a.dtype}")
    return np.ascontiguousarray(a, dtype="<f8")


def _write_file(path: Path, data: bytes | str | np.ndarray) -> None:
    with open(path, "wb") as fh:
        if isinstance(data, np.ndarray):
            np.lib.format.write_array(fh, data, version=(1, 0), allow_pickle=False)
        else:
            fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_reference(ref_dir, tables: Mapping[str, Any], *, overwrite: bool = False,
                    validate: bool = True, elements: tuple[int, ...] | None = None) -> None:
    """Write a complete LUMINA reference directory from plain arrays.

    ``tables`` maps every name of :data:`REFERENCE_FILES` to its content:

    * ``"config.json"``: mapping key -> number (required keys of :data:`REFERENCE_SPEC`;
      n_packets / n_iterations / seed must be integral);
    * ``"abundances.csv"``: ``{"atomic_number": [n_el] ints, "mass_fractions":
      [n_el, n_shells]}`` (header ``atomic_number,0,...,n_shells-1`` is generated);
    * every other ``.csv``: mapping column name -> 1-d array, all of one length; the
      required columns come first, further columns follow in mapping order; integer columns
      are written as integers, floats as their shortest exact ``repr``;
    * every ``.npy``: an array, stored as C-order ``<f8`` (``<i8`` for
      line2macro_level_upper.npy, which must be given as integers), npy format 1.0.

    The files are written and fsynced into a sibling temporary directory, checked with
    :func:`check_reference` (``validate=True``; ``elements`` as there) and only then renamed
    to ``ref_dir``, so a crash never leaves a partial directory under that name.  An
    existing ``ref_dir`` raises FileExistsError unless ``overwrite``.  Invalid content
    raises ValueError listing the problems (nothing is left behind).
    """
    ref = Path(ref_dir)
    unknown = sorted(set(tables) - set(REFERENCE_FILES))
    missing = [n for n in REFERENCE_FILES if n not in tables]
    if unknown:
        raise KeyError(f"not files LUMINA reads: {unknown}")
    if missing:
        raise KeyError(f"missing tables: {missing}")
    if (ref.exists() or ref.is_symlink()) and not overwrite:
        raise FileExistsError(f"{ref} exists (pass overwrite=True to replace it)")
    contents: dict[str, str | np.ndarray] = {}
    for spec in REFERENCE_SPEC:
        value = tables[spec.name]
        if spec.name == "config.json":
            contents[spec.name] = _config_text(value)
        elif spec.name == "abundances.csv":
            contents[spec.name] = _abundances_text(value)
        elif spec.kind == "csv":
            contents[spec.name] = _csv_text(spec, value)
        else:
            contents[spec.name] = _npy_array(spec, value)

    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.parent / f".{ref.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, data in contents.items():
            _write_file(tmp / name, data)
        _fsync_dir(tmp)
        if validate:
            problems = check_reference(tmp, elements=elements)
            if problems:
                raise ValueError("invalid LUMINA reference:\n  " + "\n  ".join(problems))
        if ref.exists() or ref.is_symlink():
            old = ref.parent / f".{ref.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(ref, old)
            os.replace(tmp, ref)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        else:
            os.replace(tmp, ref)
        _fsync_dir(ref.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
