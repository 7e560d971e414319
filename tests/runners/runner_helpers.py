"""Test helpers: a stand-in LUMINA executable and reference directory written by the tests.

The stand-in has LUMINA's command line (``BIN MODEL_DIR N_PACKETS N_ITERS MODE [nlte]``),
reads the per-model files the runner writes, segfaults when one is missing (as LUMINA
does), honours ``LUMINA_SPEC_RANGE`` and writes ``lumina_spectrum.csv`` /
``lumina_spectrum_rotation.csv`` (header ``wavelength_angstrom,flux``, L_lambda in
erg/s/cm) into its working directory.  The spectrum is a blackbody sphere,
``4 pi r_in^2 * pi B_lambda(T_inner)``, computed from config.json and geometry.csv.

Per-job behaviour comes from the JSON file named by ``FAKE_LUMINA_MODES``:
``{"<job index>": "mode"}`` or ``{"<job index>": ["mode attempt 1", "mode attempt 2", ...]}``
(the job index and attempt are read from the working directory name ``job_<i>_a<k>``).
Modes: normal, slow (spawns a child, then sleeps), crash (SIGSEGV), exit139, nonzero,
garbage, nan, badgrid, nooutput.  ``FAKE_LUMINA_SLEEP`` delays normal runs;
``FAKE_LUMINA_JOBLOG`` gets one line ``<index> <tag>`` per *completed* normal run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lumina_jax.params import load_space

FAKE_LUMINA = r'''#!{python}
import json, math, os, re, signal, subprocess, sys, time

model_dir = sys.argv[1]
n_packets, n_iters, mode_arg = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print("fake-lumina", " ".join(sys.argv[1:]), flush=True)
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

def bb(lam):
    x = lam * 1e-8
    b = 2 * H * C**2 / x**5 / math.expm1(min(H * C / (x * K * T), 700.0))
    return "%.10e" % (4 * math.pi * r_in**2 * math.pi * b)

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
    print("CUDA error: out of memory", flush=True)
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
    write("lumina_spectrum.csv", bb)
    write("lumina_spectrum_rotation.csv", bb)
    if os.environ.get("FAKE_LUMINA_JOBLOG"):
        fd = os.open(os.environ["FAKE_LUMINA_JOBLOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, ("%d %s\n" % (index, os.environ.get("FAKE_LUMINA_TAG", ""))).encode())
        os.close(fd)
print("done", flush=True)
'''

REF_FILES = ("atom_masses.csv", "line_list.csv", "levels.csv", "ionization_energies.csv",
             "macro_atom_references.csv", "macro_atom_data.csv", "line2macro_level_upper.npy",
             "transition_probabilities.npy", "tau_sobolev.npy", "zeta_data.npy")


@pytest.fixture
def fake_lumina(tmp_path) -> Path:
    """Path of the stand-in LUMINA executable."""
    p = tmp_path / "bin" / "fake_lumina"
    p.parent.mkdir()
    p.write_text(FAKE_LUMINA.replace("{python}", sys.executable))
    p.chmod(0o755)
    return p


@pytest.fixture
def lumina_ref(tmp_path) -> Path:
    """A reference directory with placeholder atomic files (+ density / n_e for the n_e guess)."""
    d = tmp_path / "ref"
    d.mkdir()
    for f in REF_FILES:
        (d / f).write_text("placeholder\n")
    (d / "density.csv").write_text("shell_id,rho\n0,1.0e-13\n1,0.9e-13\n")
    (d / "electron_densities.csv").write_text("shell_id,n_e\n0,2.0e10\n1,1.8e10\n")
    return d


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

