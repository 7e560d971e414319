"""LUMINA reference directories: writer round trip, validator, hash, and (optionally) the real binary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from runners.backends.lumina_ref import (DEFAULT_ELEMENTS, REFERENCE_FILES, REFERENCE_SPEC, check_reference,
                                         reference_hash, write_reference)

N_SHELLS = 3
C_CGS = 2.99792458e10


def tiny_tables() -> dict:
    """A complete 11-element reference: per element ions 0 and 1, two levels and one line each.

    22 lines, 44 levels, 66 macro-atom transitions, 3 shells.  The numbers are arbitrary but of
    plausible size so that the real binary can run on them.
    """
    elements = np.array(DEFAULT_ELEMENTS)
    n_el = len(elements)
    n_ions = 2 * n_el
    # line k belongs to ion k (element k // 2, ion_number k % 2); wavelengths increase with k,
    # so nu decreases: the line list is sorted by nu descending as LUMINA needs
    lam_aa = 3000.0 + 250.0 * np.arange(n_ions)
    nu = C_CGS / (lam_aa * 1e-8)
    z_ion = np.repeat(elements, 2)
    ion = np.tile([0, 1], n_el)
    e_up = 12398.419843320026 / lam_aa
    g_lo, g_up = 2, 4
    f_lu = np.full(n_ions, 0.3)
    a_ul = 0.667e16 * (g_lo / g_up) * f_lu / lam_aa**2
    b_lu = 1.0e10 * f_lu / nu
    lines = {
        "atomic_number": z_ion, "ion_number": ion,
        "level_number_lower": np.zeros(n_ions, np.int64), "level_number_upper": np.ones(n_ions, np.int64),
        "f_lu": f_lu, "wavelength_cm": lam_aa * 1e-8, "A_ul": a_ul, "B_lu": b_lu,
        "B_ul": b_lu * g_lo / g_up, "nu": nu,
        "line_id": np.arange(n_ions) + 1000, "wavelength": lam_aa, "f_ul": f_lu * g_lo / g_up,
    }
    levels = {
        "atomic_number": np.repeat(z_ion, 2), "ion_number": np.repeat(ion, 2),
        "level_number": np.tile([0, 1], n_ions),
        "energy_eV": np.ravel(np.column_stack([np.zeros(n_ions), e_up])),
        "g": np.tile([g_lo, g_up], n_ions), "metastable": np.tile([1, 0], n_ions),
    }
    lower, upper = 2 * np.arange(n_ions), 2 * np.arange(n_ions) + 1
    # level blocks in levels.csv order: lower level -> [internal up]; upper -> [emission, internal down]
    ttype, dest, lidx, prob = [], [], [], []
    for k in range(n_ions):
        ttype += [1, -1, 0]
        dest += [upper[k], lower[k], lower[k]]
        lidx += [k, k, k]
        prob += [1.0, 0.8, 0.2]
    block_refs = np.arange(n_ions)[:, None] * 3 + np.array([0, 1])[None, :]
    t = 19.0 * 86400.0
    v = np.array([1.1e9, 1.5e9, 2.0e9, 2.5e9])
    zeta_t = np.arange(2000.0, 40001.0, 2000.0)
    return {
        "config.json": {"time_explosion_s": t, "T_inner_K": 10000.0, "luminosity_inner_erg_s": 2.0e43,
                        "n_packets": 300, "n_iterations": 2, "seed": 23111963, "T_e_T_rad_ratio": 0.9},
        "geometry.csv": {"shell_id": np.arange(N_SHELLS), "r_inner": v[:-1] * t, "r_outer": v[1:] * t,
                         "v_inner": v[:-1], "v_outer": v[1:]},
        "density.csv": {"shell_id": np.arange(N_SHELLS), "rho": np.array([3e-14, 1e-14, 3e-15])},
        "electron_densities.csv": {"shell_id": np.arange(N_SHELLS), "n_e": np.array([1e9, 3e8, 1e8])},
        "plasma_state.csv": {"shell_id": np.arange(N_SHELLS), "W": np.array([0.4, 0.2, 0.1]),
                             "T_rad": np.array([11000.0, 10000.0, 9000.0])},
        "abundances.csv": {"atomic_number": elements, "mass_fractions": np.full((n_el, N_SHELLS), 1.0 / n_el)},
        "atom_masses.csv": {"atomic_number": elements, "mass_amu": 2.0 * elements + 0.5},
        "line_list.csv": lines,
        "levels.csv": levels,
        "ionization_energies.csv": {"atomic_number": z_ion, "ion_number": ion,
                                    "ionization_energy_eV": np.tile([7.0, 15.0], n_el)},
        "zeta_ions.csv": {"atomic_number": z_ion, "ion_number": ion},
        "zeta_temps.csv": {"temperature": zeta_t},
        "zeta_data.npy": np.full((n_ions, len(zeta_t)), 0.3) + 0.01 * np.arange(len(zeta_t)),
        "tau_sobolev.npy": np.where(np.arange(n_ions)[:, None] % 2 == 0, 1.0, 0.01) * np.ones((1, N_SHELLS)),
        "transition_probabilities.npy": np.repeat(np.array(prob)[:, None], N_SHELLS, axis=1),
        "macro_atom_references.csv": {"atomic_number": levels["atomic_number"], "ion_number": levels["ion_number"],
                                      "source_level_number": levels["level_number"],
                                      "block_references": block_refs.ravel()},
        "macro_atom_data.csv": {"transition_type": np.array(ttype), "destination_level_idx": np.array(dest),
                                "lines_idx": np.array(lidx)},
        "line2macro_level_upper.npy": upper.astype(np.int64),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    ref = tmp_path_factory.mktemp("tiny") / "ref"
    write_reference(ref, tiny_tables())
    return ref


@pytest.fixture
def copy(tiny, tmp_path) -> Path:
    dst = tmp_path / "ref"
    shutil.copytree(tiny, dst)
    return dst


def test_spec_lists_every_file_once():
    assert len(REFERENCE_FILES) == len(set(REFERENCE_FILES)) == 18
    for f in REFERENCE_SPEC:
        assert f.kind in ("csv", "npy", "json")
        if f.kind == "npy":
            assert f.dtype in ("<f8", "<i8") and f.shape


def test_tiny_reference_is_valid_and_exact(tiny):
    assert check_reference(tiny) == []
    assert check_reference(tiny, n_shells=N_SHELLS) == []
    assert sorted(p.name for p in tiny.iterdir()) == sorted(REFERENCE_FILES)
    t = tiny_tables()
    assert (tiny / "abundances.csv").read_text().splitlines()[0] == "atomic_number,0,1,2"
    assert (tiny / "abundances.csv").read_text().splitlines()[1].startswith("6,")
    header = (tiny / "line_list.csv").read_text().splitlines()[0].split(",")
    assert header[:10] == list(REFERENCE_SPEC[7].columns) and header[10:] == ["line_id", "wavelength", "f_ul"]
    nu = np.loadtxt(tiny / "line_list.csv", delimiter=",", skiprows=1, usecols=header.index("nu"))
    np.testing.assert_array_equal(nu, t["line_list.csv"]["nu"])  # exact float round trip
    l2m = np.load(tiny / "line2macro_level_upper.npy")
    assert l2m.dtype.str == "<i8" and l2m.flags.c_contiguous
    tp = np.load(tiny / "transition_probabilities.npy")
    assert tp.dtype.str == "<f8" and tp.shape == (66, N_SHELLS)
    cfg = json.loads((tiny / "config.json").read_text())
    assert cfg["n_packets"] == 300 and isinstance(cfg["seed"], int)
    assert check_reference(tiny, n_shells=4) == [f"geometry.csv: {N_SHELLS} shells, expected 4"]


def _edit_csv(path: Path, fn) -> None:
    rows = [ln.split(",") for ln in path.read_text().splitlines()]
    path.write_text("\n".join(",".join(r) for r in fn(rows)) + "\n")


def _drop_column(name):
    def fn(rows):
        i = rows[0].index(name)
        return [r[:i] + r[i + 1:] for r in rows]
    return fn


def _set_cell(row, name, value):
    def fn(rows):
        rows[row][rows[0].index(name)] = value
        return rows
    return fn


def _swap_rows(a, b):
    def fn(rows):
        rows[a], rows[b] = rows[b], rows[a]
        return rows
    return fn


def _npy(name, fn):
    def mutate(ref):
        np.save(ref / name, fn(np.load(ref / name)))
    return mutate


def _csv(name, fn):
    return lambda ref: _edit_csv(ref / name, fn)


def _drop_elements(rows):
    return [r for r in rows if r[0] not in ("12", "22", "24")]


BROKEN = {
    "missing file": (lambda ref: (ref / "levels.csv").unlink(), r"levels\.csv: missing file"),
    "missing column": (_csv("line_list.csv", _drop_column("f_lu")), r"line_list\.csv: missing column.*f_lu"),
    "wrong shape": (_npy("tau_sobolev.npy", lambda a: a[:, :2].copy()), r"tau_sobolev\.npy: shape \(22, 2\)"),
    "unsorted nu": (_csv("line_list.csv", _swap_rows(3, 4)), r"line_list\.csv: not sorted by nu descending"),
    "8 elements": (_csv("atom_masses.csv", _drop_elements), r"atom_masses\.csv: element set .*missing \[12, 22, 24\]"),
    "int32 npy": (_npy("line2macro_level_upper.npy", lambda a: a.astype(np.int32)),
                  r"line2macro_level_upper\.npy: dtype <i4"),
    "float32 npy": (_npy("tau_sobolev.npy", lambda a: a.astype(np.float32)), r"tau_sobolev\.npy: dtype <f4"),
    "Fortran npy": (_npy("transition_probabilities.npy", np.asfortranarray),
                    r"transition_probabilities\.npy: Fortran order"),
    "block reference out of range": (_csv("macro_atom_references.csv", _set_cell(44, "block_references", "70")),
                                     r"macro_atom_references\.csv: block_references out of range"),
    "references row count": (_csv("macro_atom_references.csv", lambda rows: rows[:-1]),
                             r"macro_atom_references\.csv: 43 data rows != n_levels=44"),
    "block references not monotone": (_csv("macro_atom_references.csv", _set_cell(4, "block_references", "2")),
                                      r"block_references not monotone"),
    "destination out of range": (_csv("macro_atom_data.csv", _set_cell(1, "destination_level_idx", "44")),
                                 r"destination_level_idx out of range"),
    "lines_idx off by one": (_csv("macro_atom_data.csv", _set_cell(5, "lines_idx", "2")),
                             r"macro_atom_data\.csv: 1 transition\(s\) inconsistent"),
    "line2macro 1-based": (_npy("line2macro_level_upper.npy", lambda a: a + 1),
                           r"line2macro_level_upper\.npy: 1 entr\(y/ies\) out of range"),
    "block sums": (_npy("transition_probabilities.npy", lambda a: a * 0.5), r"do not sum to 1"),
    "unparsable number": (_csv("density.csv", _set_cell(2, "rho", "1e-14x")), r"density\.csv: unparsable numbers"),
    "non-finite": (_csv("plasma_state.csv", _set_cell(1, "W", "nan")), r"plasma_state\.csv: column W has 1 non-finite"),
    "row count": (_csv("density.csv", lambda rows: rows[:-1]), r"density\.csv: 2 data rows != n_shells=3"),
    "abundance header": (_csv("abundances.csv", _set_cell(0, "2", "3")),
                         r"abundances\.csv: header must be 'atomic_number,0,1,...,2'"),
    "abundance Z as float": (_csv("abundances.csv", _set_cell(1, "atomic_number", "6.0")),
                             r"abundances\.csv: row 1: atomic_number '6\.0' is not an integer literal"),
    "levels unsorted": (_csv("levels.csv", _swap_rows(1, 2)), r"levels\.csv: not sorted"),
    "config key": (lambda ref: (ref / "config.json").write_text(json.dumps({"T_inner_K": 1e4})),
                   r"config\.json: missing key 'seed'"),
    "config float count": (lambda ref: (ref / "config.json").write_text(
        (ref / "config.json").read_text().replace('"n_packets": 300', '"n_packets": 3e2')),
        r"config\.json: n_packets must be a JSON integer"),
    "config too big": (lambda ref: (ref / "config.json").write_text(
        json.dumps({**json.loads((ref / "config.json").read_text()), "pad": "x" * 5000})),
        r"config\.json: \d+ bytes > 4095"),
    "radius not v t": (_csv("geometry.csv", _set_cell(2, "r_inner", "2.0e15")),
                       r"geometry\.csv: r != v \* time_explosion_s in 1 shell"),
    "wavelength in Angstrom": (_csv("line_list.csv", _set_cell(1, "wavelength_cm", "3000.0")),
                               r"wavelength_cm \* nu != c"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_reference_is_rejected(copy, case):
    mutate, pattern = BROKEN[case]
    mutate(copy)
    problems = check_reference(copy)
    assert problems, case
    assert any(re.search(pattern, p) for p in problems), problems


def test_not_a_directory(tmp_path):
    assert check_reference(tmp_path / "nope") == [f"{tmp_path / 'nope'}: not a directory"]
    problems = check_reference(tmp_path)
    assert len(problems) == len(REFERENCE_FILES) and all("missing file" in p for p in problems)


def test_element_set_parameter(tiny):
    assert any("element set" in p for p in check_reference(tiny, elements=(6, 8)))


def test_hash_ignores_location_and_mtime_and_follows_symlinks(tiny, copy, tmp_path):
    h = reference_hash(tiny)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    os.utime(copy / "levels.csv", (1.0, 1.0))
    assert reference_hash(copy) == h
    links = tmp_path / "links"
    links.mkdir()
    for name in REFERENCE_FILES:
        (links / name).symlink_to(tiny / name)
    (links / "unrelated.txt").write_text("not read by LUMINA")
    assert reference_hash(links) == h
    _edit_csv(copy / "density.csv", _set_cell(1, "rho", "3.0000000000000001e-14"))
    assert reference_hash(copy) != h
    (copy / "density.csv").unlink()
    with pytest.raises(FileNotFoundError):
        reference_hash(copy)


def test_writer_is_atomic_and_refuses_bad_content(tmp_path):
    ref = tmp_path / "ref"
    bad = tiny_tables()
    bad["line2macro_level_upper.npy"] = bad["line2macro_level_upper.npy"] + 100
    with pytest.raises(ValueError, match="line2macro_level_upper"):
        write_reference(ref, bad)
    assert list(tmp_path.iterdir()) == []  # neither the directory nor a temporary one is left
    with pytest.raises(KeyError, match="levels.csv"):
        write_reference(ref, {k: v for k, v in tiny_tables().items() if k != "levels.csv"})
    lines = dict(tiny_tables()["line_list.csv"])
    del lines["nu"]
    with pytest.raises(KeyError, match="nu"):
        write_reference(ref, {**tiny_tables(), "line_list.csv": lines})
    with pytest.raises(TypeError, match="line2macro"):
        write_reference(ref, {**tiny_tables(), "line2macro_level_upper.npy": np.arange(22.0)})
    write_reference(ref, tiny_tables())
    with pytest.raises(FileExistsError):
        write_reference(ref, tiny_tables())
    t = tiny_tables()
    t["config.json"]["seed"] = 7
    write_reference(ref, t, overwrite=True)
    assert json.loads((ref / "config.json").read_text())["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref"]
    # validate=False writes content the checker rejects (used to build test fixtures)
    write_reference(tmp_path / "raw", bad, validate=False)
    assert any("line2macro" in p for p in check_reference(tmp_path / "raw"))


def test_real_binary_runs_the_tiny_reference(tiny, tmp_path):
    binary = os.environ.get("LUMINA_BIN")
    if not binary:
        pytest.skip("LUMINA_BIN not set: no LUMINA-SN binary to run")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMINA_")}
    env.update(OMP_NUM_THREADS="1", LUMINA_SPEC_RANGE="2000,10000,200")
    proc = subprocess.run([binary, str(tiny), "300", "2", "real"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for expected in ("Geometry: 3 shells", "Lines: 22 total", "Line order: DESCENDING (correct)",
                     "tau_sobolev: [22 x 3] (expect [22 x 3])", "transition_probabilities: [66 x 3]",
                     "Macro-atom: 44 levels, 66 transitions", "line2macro_level_upper: 22 entries",
                     "Elements: 11 (6,8,12,14,16,20,22,24,26,27,28)", "Level offsets built: 44 total levels mapped",
                     "--- Iteration 2/2 ---"):
        assert expected in out, expected
    assert not re.search(r"ERROR|WARNING|MACRO BUG", proc.stderr + out), proc.stderr[-2000:]
    assert re.search(r"Escaped: \d+ \(\d+\.\d\d%\)", out)
    spec = np.loadtxt(work / "lumina_spectrum.csv", delimiter=",", skiprows=1)
    assert (work / "lumina_spectrum.csv").read_text().startswith("wavelength_angstrom,flux\n")
    assert spec.shape == (200, 2) and np.all(np.isfinite(spec)) and np.all(spec[:, 1] >= 0)
    assert np.count_nonzero(spec[:, 1]) > 20
    state = np.loadtxt(work / "lumina_plasma_state.csv", delimiter=",", skiprows=1)
    assert state.shape == (N_SHELLS, 3) and np.all(np.isfinite(state))
