"""Test helpers: a stand-in LUMINA executable and reference directory written by the tests.

The stand-in has LUMINA's command line (``BIN MODEL_DIR N_PACKETS N_ITERS MODE [nlte]``),
reads the per-model files the runner writes, segfaults when one is missing (as LUMINA
does), honours ``LUMINA_SPEC_RANGE`` and writes ``lumina_spectrum.csv`` /
``lumina_spectrum_rotation.csv`` (header ``wavelength_angstrom,flux``, L_lambda in
erg/s/cm) into its working directory.  The spectrum is a blackbody sphere,
``4 pi r_in^2 * pi B_lambda(T_inner)``, computed from config.json and geometry.csv.
Its stdout has the lines of LUMINA-SN's ``lumina_main.c`` the runner parses: per iteration
``--- Iteration k/n ---``, ``Packets: N/N done. Escaped: E (P%), Reabsorbed: ...`` (41.50 %)
and ``T_inner: T K (hold iteration k/3)`` for the first three iterations, then
``T_inner: T K -> T' K (L_em=..., L_req=...)`` with L_em = the blackbody's luminosity
(= the requested one).

Per-job behaviour comes from the JSON file named by ``FAKE_LUMINA_MODES``:
``{"<job index>": "mode"}`` or ``{"<job index>": ["mode attempt 1", "mode attempt 2", ...]}``
(the job index and attempt are read from the working directory name ``job_<i>_a<k>``).
Modes: normal, slow (spawns a child, then sleeps), crash (SIGSEGV), exit139, nonzero
(prints an ERROR line, then more output, exit 3), garbage, nan, badgrid, nooutput,
sparse (the blackbody's luminosity in every 10th bin, the others 0: a few-packet Monte Carlo
histogram), dim (spectrum and L_em x 0.2), noescape (stdout escape fraction 0.50 %).
``FAKE_LUMINA_SLEEP`` delays normal runs; ``FAKE_LUMINA_JOBLOG`` gets one line
``<index> <tag>`` per *completed* normal run; ``FAKE_LUMINA_SEEDLOG`` one line
``<index> <attempt> <seed>`` per run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lumina_jax.params import ATOMIC_NUMBERS, load_space

FAKE_LUMINA = r'''#!{python}
import json, math, os, re, signal, subprocess, sys, time

model_dir = sys.argv[1]
n_packets, n_iters, mode_arg = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print("LUMINA-SN stand-in", " ".join(sys.argv[1:]), flush=True)
print("env OMP_NUM_THREADS=%s CUDA_VISIBLE_DEVICES=%s LUMINA_SPEC_RANGE=%s LUMINA_DYNAMIC_TRANSPROB=%s" % (
    os.environ.get("OMP_NUM_THREADS"), os.environ.get("CUDA_VISIBLE_DEVICES"),
    os.environ.get("LUMINA_SPEC_RANGE"), os.environ.get("LUMINA_DYNAMIC_TRANSPROB")), flush=True)
need = ["config.json", "geometry.csv", "density.csv", "abundances.csv", "electron_densities.csv",
        "plasma_state.csv", "atom_masses.csv", "line_list.csv", "levels.csv"]
for f in need:
    if not os.path.exists(os.path.join(model_dir, f)):
        print("ERROR: Cannot open %s" % f, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
m = re.search(r"job_(\d+)_a(\d+)", os.path.abspath(model_dir))
index, attempt = int(m.group(1)), int(m.group(2))
modes = {}
if os.environ.get("FAKE_LUMINA_MODES"):
    with open(os.environ["FAKE_LUMINA_MODES"]) as fh:
        modes = json.load(fh)
mode = modes.get(str(index), "normal")
if isinstance(mode, list):
    mode = mode[min(attempt, len(mode)) - 1]
cfg = json.load(open(os.path.join(model_dir, "config.json")))
if os.environ.get("FAKE_LUMINA_SEEDLOG"):
    fd = os.open(os.environ["FAKE_LUMINA_SEEDLOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, ("%d %d %d\n" % (index, attempt, cfg["seed"])).encode())
    os.close(fd)
with open(os.path.join(model_dir, "geometry.csv")) as fh:
    fh.readline()
    r_in = float(fh.readline().split(",")[1])
lo, hi, n = os.environ.get("LUMINA_SPEC_RANGE", "500,20000,2000").split(",")
lo, hi, n = float(lo), float(hi), int(n)
H, C, K = 6.62607015e-27, 2.99792458e10, 1.380649e-16
T = cfg["T_inner_K"]

def write(name, flux_fn, rows=n):
    with open(name, "w") as fh:
        fh.write("wavelength_angstrom,flux\n")
        for i in range(rows):
            lam = lo + (i + 0.5) * (hi - lo) / n
            fh.write("%.6f,%s\n" % (lam, flux_fn(lam)))

scale = 0.2 if mode == "dim" else 1.0

def bb(lam):
    x = lam * 1e-8
    b = 2 * H * C**2 / x**5 / math.expm1(min(H * C / (x * K * T), 700.0))
    return "%.10e" % (scale * 4 * math.pi * r_in**2 * math.pi * b)

def sparse(lam):
    i = int((lam - lo) / ((hi - lo) / n))
    return "%.10e" % (10.0 * float(bb(lam))) if i % 10 == 0 else "0.000000e+00"

def iterations():
    """LUMINA's per-iteration stdout (lumina_main.c), T_inner held for 3 iterations."""
    esc = 0.005 if mode == "noescape" else 0.415
    L = cfg["luminosity_inner_erg_s"]
    for it in range(n_iters):
        print("\n--- Iteration %d/%d ---" % (it + 1, n_iters))
        ne = int(round(esc * n_packets))
        print("  Packets: %d/%d done. Escaped: %d (%.2f%%), Reabsorbed: %d (%.2f%%)" % (
            n_packets, n_packets, ne, 100.0 * ne / n_packets, n_packets - ne, 100.0 * (n_packets - ne) / n_packets))
        print("  Shell  W_LUMINA   T_rad_LUM  nubar/j")
        print("    0    0.412345   %.2f K   1.2345e+15" % (0.9 * T))
        if it >= 3:
            print("  T_inner: %.2f K -> %.2f K (L_em=%.3e, L_req=%.3e)" % (T, T, scale * L, L))
        else:
            print("  T_inner: %.2f K (hold iteration %d/3)" % (T, it + 1))
    print("\n============================================================")
    print("Final Results")
    print("T_inner final: %.2f K (TARDIS: 10521.52 K, err: %.2f%%)" % (T, (T - 10521.52) / 10521.52 * 100))
    sys.stdout.flush()

if mode == "slow":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
    open("child.pid", "w").write(str(child.pid))
    time.sleep(1000)
elif mode == "crash":
    print("ERROR: Column 'rho' not found", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
elif mode == "exit139":
    sys.exit(139)
elif mode == "nonzero":
    print("  Loading line list ...", flush=True)
    print("ERROR: CUDA error: out of memory (lumina_cuda.cu:1923)", flush=True)
    print("  freeing device memory", flush=True)
    sys.exit(3)
elif mode == "garbage":
    with open("lumina_spectrum_rotation.csv", "w") as fh:
        fh.write("wavelength_angstrom,flux\nfoo,bar\n\x00\x01 garbage\n")
elif mode == "nan":
    write("lumina_spectrum_rotation.csv", lambda lam: "nan")
elif mode == "badgrid":
    write("lumina_spectrum_rotation.csv", bb, rows=n // 2)
elif mode == "nooutput":
    pass
else:
    time.sleep(float(os.environ.get("FAKE_LUMINA_SLEEP", "0")))
    iterations()
    write("lumina_spectrum.csv", sparse if mode == "sparse" else bb)
    write("lumina_spectrum_rotation.csv", sparse if mode == "sparse" else bb)
    if os.environ.get("FAKE_LUMINA_JOBLOG"):
        fd = os.open(os.environ["FAKE_LUMINA_JOBLOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, ("%d %s\n" % (index, os.environ.get("FAKE_LUMINA_TAG", ""))).encode())
        os.close(fd)
print("done", flush=True)
'''


def tiny_reference_tables(n_shells: int = 30, elements=ATOMIC_NUMBERS) -> dict:
    """A small LUMINA reference directory's tables (``lumina_ref.write_reference`` input) that
    passes ``lumina_ref.check_reference``: per element two ion stages with two levels and one
    line each, macro-atom blocks (emission + internal down from the upper level, internal up
    from the lower one), 30 shells.  Made-up numbers, for the format only."""
    h, c, ev = 6.62607015e-27, 2.99792458e10, 1.602176634e-12
    el = np.array(elements, dtype=np.int64)
    lv = {"atomic_number": [], "ion_number": [], "level_number": [], "energy_eV": [], "g": [], "metastable": []}
    lines = []
    for z in el:
        for ion, de in ((0, 2.0 + 0.01 * z), (1, 3.0 + 0.01 * z)):
            for lvl, e in ((0, 0.0), (1, de)):
                for k, v in zip(lv, (z, ion, lvl, e, 2 * lvl + 1, int(lvl == 0))):
                    lv[k].append(v)
            lines.append((de * ev / h, z, ion))
    lines.sort(key=lambda t: -t[0])  # nu descending
    row = {(z, ion, lvl): i for i, (z, ion, lvl) in
           enumerate(zip(lv["atomic_number"], lv["ion_number"], lv["level_number"]))}
    nu = np.array([t[0] for t in lines])
    ll = {"atomic_number": np.array([t[1] for t in lines]), "ion_number": np.array([t[2] for t in lines]),
          "level_number_lower": np.zeros(len(lines), np.int64), "level_number_upper": np.ones(len(lines), np.int64),
          "f_lu": np.full(len(lines), 0.1), "wavelength_cm": c / nu, "A_ul": np.full(len(lines), 1e7),
          "B_lu": np.full(len(lines), 1e9), "B_ul": np.full(len(lines), 3e8), "nu": nu}
    up = np.array([row[(z, i, 1)] for _, z, i in lines])
    lo = np.array([row[(z, i, 0)] for _, z, i in lines])
    line_of_level = {int(r): k for k, r in enumerate(up)} | {int(r): k for k, r in enumerate(lo)}
    n_levels = len(lv["g"])
    ttype, dest, lidx, refs = [], [], [], []
    for level in range(n_levels):
        refs.append(len(ttype))
        k = line_of_level[level]
        if lv["level_number"][level] == 1:
            ttype += [-1, 0]
            dest += [int(lo[k])] * 2
            lidx += [k, k]
        else:
            ttype.append(1)
            dest.append(int(up[k]))
            lidx.append(k)
    tp = np.array([0.5 if t <= 0 else 1.0 for t in ttype])[:, None] * np.ones(n_shells)
    v = np.linspace(10000e5, 25000e5, n_shells + 1)
    t_exp = 19 * 86400.0
    shells = np.arange(n_shells)
    n_ion = 2 * len(el)
    return {
        "config.json": {"time_explosion_s": t_exp, "T_inner_K": 10000.0, "luminosity_inner_erg_s": 1e43,
                        "n_packets": 1000, "n_iterations": 5, "seed": 23111963, "T_e_T_rad_ratio": 0.9},
        "geometry.csv": {"shell_id": shells, "r_inner": v[:-1] * t_exp, "r_outer": v[1:] * t_exp,
                         "v_inner": v[:-1], "v_outer": v[1:]},
        "density.csv": {"shell_id": shells, "rho": 1e-13 * (v[:-1] / v[0]) ** -7},
        "electron_densities.csv": {"shell_id": shells, "n_e": 2e10 * (v[:-1] / v[0]) ** -7},
        "plasma_state.csv": {"shell_id": shells, "W": np.full(n_shells, 0.3), "T_rad": np.full(n_shells, 9000.0)},
        "abundances.csv": {"atomic_number": el, "mass_fractions": np.full((len(el), n_shells), 1.0 / len(el))},
        "atom_masses.csv": {"atomic_number": el, "mass_amu": 2.0 * el},
        "line_list.csv": ll,
        "levels.csv": lv,
        "ionization_energies.csv": {"atomic_number": np.repeat(el, 2), "ion_number": np.tile([0, 1], len(el)),
                                    "ionization_energy_eV": np.tile([8.0, 16.0], len(el))},
        "zeta_ions.csv": {"atomic_number": np.repeat(el, 2), "ion_number": np.tile([0, 1], len(el))},
        "zeta_temps.csv": {"temperature": np.array([2000.0, 40000.0])},
        "zeta_data.npy": np.full((n_ion, 2), 0.5),
        "tau_sobolev.npy": np.zeros((len(lines), n_shells)),
        "transition_probabilities.npy": tp,
        "macro_atom_references.csv": {"block_references": np.array(refs)},
        "macro_atom_data.csv": {"transition_type": np.array(ttype), "destination_level_idx": np.array(dest),
                                "lines_idx": np.array(lidx)},
        "line2macro_level_upper.npy": up.astype(np.int64),
    }


def write_tiny_reference(path: Path, **kw) -> Path:
    """Write :func:`tiny_reference_tables` to ``path`` (validated) and return it."""
    from runners.backends.lumina_ref import write_reference

    write_reference(path, tiny_reference_tables(**kw), elements=kw.get("elements", ATOMIC_NUMBERS))
    return path


@pytest.fixture
def fake_lumina(tmp_path) -> Path:
    """Path of the stand-in LUMINA executable."""
    p = tmp_path / "bin" / "fake_lumina"
    p.parent.mkdir()
    p.write_text(FAKE_LUMINA.replace("{python}", sys.executable))
    p.chmod(0o755)
    return p


@pytest.fixture(scope="session")
def _tiny_ref(tmp_path_factory) -> Path:
    return write_tiny_reference(tmp_path_factory.mktemp("tiny") / "ref")


@pytest.fixture
def lumina_ref(tmp_path, _tiny_ref) -> Path:
    """A valid 11-element, 30-shell reference directory (a copy per test: tests may break it);
    shell 0 has rho 1e-13 g/cm^3 and n_e 2e10 /cm^3 (the n_e guess scales from them)."""
    import shutil

    return Path(shutil.copytree(_tiny_ref, tmp_path / "ref"))


def blackbody_lambda(theta: np.ndarray, names, wavelength: np.ndarray) -> np.ndarray:
    """Independent expectation of the stand-in's spectrum, erg/s/Angstrom, from theta alone."""
    d = dict(zip(names, theta))
    r = d["v_inner"] * 1e5 * d["t_exp"] * 86400.0
    t = (10.0 ** d["log_L"] / (4 * np.pi * 5.670374419e-5 * r**2)) ** 0.25
    h, c, k = 6.62607015e-27, 2.99792458e10, 1.380649e-16
    x = wavelength * 1e-8
    b = 2 * h * c**2 / x**5 / np.expm1(np.minimum(h * c / (x * k * t), 700.0))
    return 4 * np.pi * r**2 * np.pi * b / 1e8


@pytest.fixture(scope="session")
def space1():
    return load_space(1)


def write_modes(path: Path, modes: dict) -> Path:
    import json

    path.write_text(json.dumps({str(k): v for k, v in modes.items()}))
    return path

