"""LUMINA-SN backend: one subprocess of the external binary per job.

Per job (``lumina_sn.md`` sections 2-5, 8):

* a fresh working directory ``WORK/job_<index>_a<attempt>/`` (``_r2``, ``_r3``... appended for
  a later run of the same attempt, e.g. after its worker was lost: :meth:`LuminaExecutor.claim_run`)
  with ``model/`` holding
  symlinks to every file of the reference directory (``--lumina-ref``) except the six
  per-model files, which are written from the parameter vector via
  :func:`lumina_jax.ejecta.build_ejecta` (:func:`write_model_files`);
* ``<binary> model <n_packets> <n_iters> <rotation|real> [nlte]`` started with
  ``asyncio.create_subprocess_exec(..., start_new_session=True)`` in the working directory
  (LUMINA writes fixed file names into its CWD), stdout+stderr streamed into
  ``LOGS/<working directory name>.log`` (no pipe to drain);
* an environment built explicitly: ``OMP_NUM_THREADS`` always set by the worker (an
  inherited value is a known cause of hangs), ``CUDA_VISIBLE_DEVICES`` = the worker's GPU
  (empty for CPU workers), inherited ``LUMINA_*`` variables dropped and the configured ones
  set (``LUMINA_SPEC_RANGE`` always, so the output grid is known);
* a per-job timeout that SIGKILLs the whole process group (and the group is also killed
  after a normal exit, so no stray child survives); on Linux with util-linux ``setpriv`` the
  binary dies with the process that started it, even if that one is SIGKILLed
  (:func:`die_with_parent`): no orphan keeps a GPU busy, or finishes a run that a Dask
  scheduler already started again elsewhere;
* a per-attempt Monte Carlo seed (:func:`job_seed`) in ``config.json``;
* classification: timeout, signal (negative return code, or 128+N from a wrapper shell,
  e.g. 139 = SIGSEGV, LUMINA's reaction to a missing input), exit_code, missing_output,
  invalid_output (header, numeric, grid, finite, non-negative, not all zero, luminosity and
  escape fraction physical: :func:`judge_spectrum`);
* diagnostics per attempt from the spectrum and LUMINA's stdout (:func:`parse_stdout`):
  seed, requested / emitted luminosity, escape fraction, T_inner.

The spectrum is converted from LUMINA's erg/s/cm to erg/s/Angstrom (/1e8).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lumina_jax.errors import UserError
from lumina_jax.params import ATOMIC_NUMBERS, ParameterSpace
from runners.backends import lumina_ref
from runners.executors import Executor, Job, Outcome, band_luminosity, luminosity_problem, validate_spectrum

#: Files LUMINA regenerates per model (never linked from the reference directory).
PER_MODEL_FILES = ("config.json", "geometry.csv", "density.csv", "abundances.csv",
                   "electron_densities.csv", "plasma_state.csv")
OUTPUT_FILES = {"rotation": "lumina_spectrum_rotation.csv", "real": "lumina_spectrum.csv",
                "formal": "lumina_spectrum_formal.csv"}
SIGMA_SB = 5.670374419e-5  # erg cm^-2 s^-1 K^-4
AMU = 1.66053906660e-24  # g
KM = 1.0e5
H_PLANCK, C_LIGHT, K_BOLTZMANN = 6.62607015e-27, 2.99792458e10, 1.380649e-16  # cgs
#: LUMINA keeps T_inner fixed in its first 3 iterations and updates it after each later one
HOLD_ITERATIONS = 3
#: per-attempt seeds are below this: LUMINA reads the seed with C ``atol`` (a signed 64-bit long)
#: and seeds packet p of iteration k with ``seed + 1e6 k + p`` (GPU) / ``seed + 1000 k + thread``
#: (CPU), which stays below 2**63 for k <= 1000 iterations and p < 2**61 packets
SEED_LIMIT = 2**62
#: at most this many problems of a broken reference directory are named in the error
MAX_REF_PROBLEMS = 5


@dataclasses.dataclass(frozen=True)
class LuminaSettings:
    """Everything that decides what a LUMINA job computes (stored in the config hash)."""

    n_packets: int = 200_000
    n_iters: int = 10
    spectrum: str = "rotation"  # rotation | real | formal (HEAD only)
    nlte: bool = False
    nlte_start_iter: int = 0
    spec_range: tuple[float, float, int] = (500.0, 20000.0, 2000)
    extra_env: tuple[tuple[str, str], ...] = ()  # e.g. (("LUMINA_DYNAMIC_TRANSPROB", "1"),)
    #: accepted emitted / requested luminosity (spectrum over the grid, and stdout's L_emitted)
    lum_range: tuple[float, float] = (0.5, 2.0)
    #: lowest accepted escape fraction of the last iteration (from stdout, when printed)
    min_escape_fraction: float = 0.05

    @classmethod
    def from_dict(cls, d: dict) -> "LuminaSettings":
        """Settings from a store's ``config_json`` (keys this version does not know are ignored,
        missing ones take their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("spec_range", "lum_range"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if "extra_env" in kw:
            kw["extra_env"] = tuple(tuple(x) for x in kw["extra_env"])
        return cls(**kw)

    @property
    def edges(self) -> np.ndarray:
        """Bin edges [n + 1] Angstrom of LUMINA's spectrum grid."""
        lo, hi, n = self.spec_range
        return np.linspace(lo, hi, int(n) + 1)

    @property
    def wavelength(self) -> np.ndarray:
        """Bin centres [n] Angstrom of LUMINA's spectrum grid."""
        lo, hi, n = self.spec_range
        return lo + (np.arange(int(n)) + 0.5) * (hi - lo) / int(n)

    def env(self) -> dict[str, str]:
        out = {"LUMINA_SPEC_RANGE": f"{self.spec_range[0]:g},{self.spec_range[1]:g},{int(self.spec_range[2])}"}
        if self.nlte:
            out["LUMINA_NLTE"] = "1"
            if self.nlte_start_iter > 0:
                out["LUMINA_NLTE_START_ITER"] = str(int(self.nlte_start_iter))
        out.update(dict(self.extra_env))
        return out

    def argv_tail(self) -> list[str]:
        mode = "rotation" if self.spectrum == "rotation" else "real"
        return [str(int(self.n_packets)), str(int(self.n_iters)), mode] + (["nlte"] if self.nlte else [])


def check_binary(path) -> Path:
    """An existing executable file, else a UserError."""
    if path is None:
        raise UserError("--backend lumina needs --lumina-bin PATH (the LUMINA-SN binary)")
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"LUMINA binary not found: {p}")
    if not p.is_file() or not os.access(p, os.X_OK):
        raise UserError(f"LUMINA binary is not an executable file: {p}")
    return p.resolve()


@dataclasses.dataclass(frozen=True)
class Reference:
    """A validated LUMINA reference directory."""

    path: Path
    files: tuple[str, ...]  # files to link into every model directory
    rho0: float | None  # reference density of shell 0 (g/cm^3), for the n_e guess
    ne0: float | None  # reference electron density of shell 0 (cm^-3)


def check_reference(path, *, n_shells: int | None = None, elements: Sequence[int] | None = None) -> Reference:
    """Validate a reference directory once, before any job (LUMINA segfaults or silently misreads
    on a missing file, column or shape): :func:`runners.backends.lumina_ref.check_reference`;
    a UserError names up to ``MAX_REF_PROBLEMS`` problems."""
    if path is None:
        raise UserError("--backend lumina needs --lumina-ref DIR (LUMINA's reference/atomic-data directory)")
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise UserError(f"LUMINA reference directory not found: {p}")
    problems = lumina_ref.check_reference(p, n_shells=n_shells, elements=elements)
    if problems:
        more = len(problems) - MAX_REF_PROBLEMS
        listed = "; ".join(" ".join(q.split()) for q in problems[:MAX_REF_PROBLEMS])
        listed += f"; and {more} more" if more > 0 else ""
        raise UserError(f"LUMINA reference directory {p} is not usable ({len(problems)} problem"
                        f"{'s' if len(problems) > 1 else ''}): {listed}")
    names = sorted(f.name for f in p.iterdir() if f.is_file())
    rho0 = ne0 = None
    try:
        if "density.csv" in names and "electron_densities.csv" in names:
            rho0 = float(_read_named_csv(p / "density.csv")["rho"][0])
            ne0 = float(_read_named_csv(p / "electron_densities.csv")["n_e"][0])
    except (KeyError, ValueError, IndexError):
        rho0 = ne0 = None
    return Reference(p, tuple(n for n in names if n not in PER_MODEL_FILES), rho0, ne0)


def reference_sha256(ref: Reference) -> str:
    """sha256 of the reference files LUMINA reads (:func:`runners.backends.lumina_ref.reference_hash`)."""
    return lumina_ref.reference_hash(ref.path)


def _read_named_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path) as fh:
        header = fh.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return {h: data[:, i] for i, h in enumerate(header)}


# ------------------------------------------------------------------ per-model files
def model_files(ej, ref: Reference, *, n_packets: int, n_iters: int, seed: int) -> dict[str, str]:
    """Contents of LUMINA's six per-model files for one :class:`~lumina_jax.ejecta.Ejecta`."""
    v_in = np.asarray(ej.v_inner) * KM  # cm/s
    v_out = np.asarray(ej.v_outer) * KM
    v_mid = np.asarray(ej.v_mid) * KM
    t = float(ej.t_exp)
    rho = np.asarray(ej.rho)
    X = np.asarray(ej.X)
    lum = float(ej.luminosity)
    n = v_in.size
    r_in, r_out = v_in * t, v_out * t
    t_inner = (lum / (4.0 * np.pi * SIGMA_SB * r_in[0] ** 2)) ** 0.25
    if ref.rho0 and ref.ne0:
        n_e = ref.ne0 * rho / ref.rho0
    else:  # fully ionised, A/Z = 2: only LUMINA's initial guess
        n_e = rho / (2.0 * AMU)
    w = 0.5 * (1.0 - np.sqrt(1.0 - (v_in[0] / v_mid) ** 2))
    t_rad = t_inner * (v_in[0] / v_mid) ** 0.45
    ids = range(n)
    cfg = {"time_explosion_s": t, "T_inner_K": t_inner, "luminosity_inner_erg_s": lum,
           "n_packets": int(n_packets), "n_iterations": int(n_iters), "seed": int(seed),
           "T_e_T_rad_ratio": float(ej.t_e_ratio), "n_shells": n}
    files = {
        "config.json": json.dumps(cfg, indent=1),
        "geometry.csv": "shell_id,r_inner,r_outer,v_inner,v_outer\n" + "".join(
            f"{i},{r_in[i]:.10e},{r_out[i]:.10e},{v_in[i]:.10e},{v_out[i]:.10e}\n" for i in ids),
        "density.csv": "shell_id,rho\n" + "".join(f"{i},{rho[i]:.10e}\n" for i in ids),
        "electron_densities.csv": "shell_id,n_e\n" + "".join(f"{i},{n_e[i]:.10e}\n" for i in ids),
        "plasma_state.csv": "shell_id,W,T_rad\n" + "".join(f"{i},{w[i]:.10e},{t_rad[i]:.10e}\n" for i in ids),
        "abundances.csv": "atomic_number," + ",".join(str(i) for i in ids) + "\n" + "".join(
            f"{z}," + ",".join(f"{X[i, k]:.10e}" for i in ids) + "\n" for k, z in enumerate(ATOMIC_NUMBERS)),
    }
    return files


def job_seed(campaign_seed: int, index: int, attempt: int) -> int:
    """LUMINA's Monte Carlo seed of one attempt of one job, in [0, ``SEED_LIMIT``).

    The top 62 bits of sha256("campaign_seed/index/attempt"): deterministic, different for
    every attempt (a retry does not replay its failure) and, spread over 2**62, the packet-seed
    ranges ``[seed, seed + 1e6 n_iters + n_packets)`` of different jobs, attempts and campaigns
    do not overlap (chance ~1e-3 for 10^4 jobs of 10^7 seeds each)."""
    text = f"lumina-jax/job-seed/{int(campaign_seed)}/{int(index)}/{int(attempt)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 2


def parse_spectrum(path: Path, settings: LuminaSettings) -> tuple[np.ndarray | None, str]:
    """(L_lambda [n] erg/s/Angstrom, "") or (None, reason) for LUMINA's spectrum CSV.

    Checks the form (header, numbers, grid = ``LUMINA_SPEC_RANGE``) and finite, non-negative,
    not all zero values; empty bins are fine (few packets); :func:`judge_spectrum` judges the
    physics."""
    try:
        with open(path) as fh:
            header = fh.readline().strip().replace(" ", "")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable {path.name}: {exc}"
    if header != "wavelength_angstrom,flux":
        return None, f"{path.name}: unexpected header {header[:60]!r}"
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"{path.name}: not numeric ({str(exc).splitlines()[0][:80]})"
    expected = settings.wavelength
    if data.shape != (expected.size, 2):
        return None, f"{path.name}: expected {expected.size} rows of 2 columns, got shape {data.shape}"
    bin_width = (settings.spec_range[1] - settings.spec_range[0]) / int(settings.spec_range[2])
    if not np.all(np.isfinite(data[:, 0])) or np.max(np.abs(data[:, 0] - expected)) > 0.01 * bin_width:
        return None, f"{path.name}: wavelength grid differs from LUMINA_SPEC_RANGE {settings.spec_range}"
    flux = data[:, 1] / 1.0e8  # erg/s/cm -> erg/s/Angstrom
    why = validate_spectrum(flux, n_wave=expected.size, min_positive_fraction=0.0)
    if why:
        return None, f"{path.name}: {why}"
    return flux, ""


_NUM = r"([-+]?(?:nan|inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))"
_ITERATION = re.compile(r"---\s*Iteration\s+(\d+)\s*/\s*(\d+)\s*---", re.I)
_ESCAPED = re.compile(r"Escaped:\s*\d+\s*\(\s*" + _NUM + r"\s*%\s*\)", re.I)
_T_INNER = re.compile(r"^\s*T_inner:\s*" + _NUM + r"\s*K", re.I | re.M)
_L_EMITTED = re.compile(r"L_em(?:itted)?\s*[=:]\s*" + _NUM, re.I)
_L_REQUESTED = re.compile(r"L_req(?:uested)?\s*[=:]\s*" + _NUM, re.I)


@dataclasses.dataclass(frozen=True)
class StdoutFigures:
    """LUMINA's last iteration as printed on stdout (None: not printed).

    escape_fraction: escaped / all packets (0-1); t_inner: K, the inner-boundary temperature
    the iteration ran with; l_emitted, l_requested: erg/s (printed from the 4th iteration on,
    with the T_inner update); iteration, n_iterations: 1-based number of the last iteration
    header and the count it names."""

    escape_fraction: float | None = None
    t_inner: float | None = None
    l_emitted: float | None = None
    l_requested: float | None = None
    iteration: int | None = None
    n_iterations: int | None = None


def _last(pattern: re.Pattern, text: str) -> float | None:
    found = pattern.findall(text)
    return float(found[-1]) if found else None


def parse_stdout(text: str) -> StdoutFigures:
    """The last iteration's figures from LUMINA's stdout (``lumina_main.c`` / ``lumina_cuda.cu``).

    Lines read (from the last ``--- Iteration k/n ---`` header on; the whole text if there
    is none): ``Escaped: N (P%)``, ``T_inner: T K ...`` (first number = the temperature the
    iteration ran with) and, in the update line ``T_inner: T K -> T' K (L_em=..., L_req=...)``,
    L_emitted / L_requested.  Unknown lines are ignored; a figure not printed is None."""
    heads = list(_ITERATION.finditer(text))
    block = text[heads[-1].start():] if heads else text
    esc = _last(_ESCAPED, block)
    return StdoutFigures(
        escape_fraction=None if esc is None else esc / 100.0,
        t_inner=_last(_T_INNER, block),
        l_emitted=_last(_L_EMITTED, block),
        l_requested=_last(_L_REQUESTED, block),
        iteration=int(heads[-1].group(1)) if heads else None,
        n_iterations=int(heads[-1].group(2)) if heads else None,
    )


def blackbody_share(edges: np.ndarray, t_kelvin: float, n_sub: int = 64) -> float:
    """Fraction of a blackbody's luminosity (sigma T^4) at ``t_kelvin`` [K] between ``edges[0]``
    and ``edges[-1]`` [Angstrom] (``n_sub`` midpoint samples per bin)."""
    lam = np.linspace(float(edges[0]), float(edges[-1]), (len(edges) - 1) * n_sub + 1)
    mid = 0.5 * (lam[1:] + lam[:-1]) * 1e-8  # cm
    x = np.minimum(H_PLANCK * C_LIGHT / (mid * K_BOLTZMANN * t_kelvin), 700.0)
    b = 2 * H_PLANCK * C_LIGHT**2 / mid**5 / np.expm1(x)  # erg/s/cm^2/sr/cm
    return float(np.sum(np.pi * b * np.diff(lam) * 1e-8) / (SIGMA_SB * t_kelvin**4))


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def judge_spectrum(flux: np.ndarray, settings: LuminaSettings, *, l_requested: float, t_inner: float,
                   figures: StdoutFigures) -> tuple[dict, str]:
    """(diagnostics, why the spectrum is unphysical or "") of a finite, non-negative spectrum.

    flux: L_lambda [n] erg/s/Angstrom; l_requested: erg/s (config.json); t_inner: K, the initial
    T_inner of config.json, used when stdout shows none.  ``lum_ratio`` = the spectrum summed over
    the grid / (l_requested x the share of a blackbody at the last T_inner inside the grid: ~0.98
    for the default 500-20000 Angstrom at 10^4 K); it and stdout's L_emitted / L_requested must lie
    in ``settings.lum_range``, stdout's escape fraction must be >= ``settings.min_escape_fraction``."""
    t_ref = figures.t_inner if _finite(figures.t_inner) and figures.t_inner > 0 else t_inner
    l_spec = band_luminosity(flux, settings.wavelength)
    share = blackbody_share(settings.edges, t_ref)
    ratio = l_spec / (l_requested * share) if l_requested > 0 and share > 0 else math.nan
    diag = {"l_spectrum": l_spec, "lum_ratio": ratio}
    problems = []
    esc = figures.escape_fraction
    if esc is not None and not esc >= settings.min_escape_fraction:
        problems.append(f"escape fraction {esc:.2%} (stdout) is below {settings.min_escape_fraction:.0%}")
    if figures.l_emitted is not None:
        l_req = figures.l_requested if _finite(figures.l_requested) and figures.l_requested > 0 else l_requested
        stdout_ratio = figures.l_emitted / l_req
        if not math.isfinite(stdout_ratio):
            problems.append(f"L_emitted (stdout) is {figures.l_emitted}")
        else:
            problems.append(luminosity_problem("L_emitted/L_requested of the last iteration (stdout)",
                                               stdout_ratio, settings.lum_range))
    problems.append(luminosity_problem(f"spectrum luminosity / requested (blackbody share of the grid "
                                       f"{share:.0%} at {t_ref:.0f} K)", ratio, settings.lum_range))
    return diag, "; ".join(p for p in problems if p)


# ----------------------------------------------------------------------- process
#: run by ``sh`` between setpriv and the binary: ``$1`` is the launcher's pid
_PARENT_CHECK = 'test "$PPID" = "$1" || exit 137; shift; exec "$@"'


def die_with_parent(argv: Sequence[str], parent_pid: int | None = None) -> list[str]:
    """``argv`` wrapped so that it is SIGKILLed when this process dies, even by SIGKILL (Linux).

    ``setpriv --pdeathsig KILL`` (util-linux) sets the parent-death signal, then ``sh`` checks
    that its parent is still ``parent_pid`` (default: this process) before exec'ing ``argv``:
    a launcher killed between fork and prctl would leave the signal bound to the new parent
    (init), i.e. never sent, so the run gives up (exit 137) instead of running orphaned.

    The signal comes when the *thread* that forked exits, not the process.  Every caller forks
    from the thread that then waits for the child: the event loop of
    :meth:`LuminaExecutor.run_one` awaits the exit (and kills the group if cancelled) and
    :func:`runners.cluster.run_command` blocks in ``communicate``; that thread thus outlives
    every normal run, and a Dask pool thread that ends has no child left.  Wrappers exec'ed
    before the binary rather than a ``preexec_fn``, which would force a plain fork of the
    multithreaded runner (JAX threads) and run Python in the child.  Without setpriv (not
    Linux, or no util-linux) ``argv`` is returned as is: no protection, no failure."""
    argv = [str(a) for a in argv]
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if not setpriv:
        return argv
    sh = shutil.which("sh")
    check = [sh, "-c", _PARENT_CHECK, "lumina-jax-guard", str(parent_pid or os.getpid())] if sh else []
    return [setpriv, "--pdeathsig", "KILL", "--", *check, *argv]


#: process groups of the LUMINA runs of this process now running (a Dask worker that closes kills them)
RUNNING_GROUPS: set[int] = set()
#: set once this process stops running jobs for good (a Dask worker closing, :func:`kill_running`)
STOPPING = threading.Event()


def kill_running() -> int:
    """Stop for good: SIGKILL every LUMINA process group this process is running, and any that
    :func:`track` registers later (a run may be forking while this runs); returns how many."""
    STOPPING.set()
    groups = list(RUNNING_GROUPS)
    for pid in groups:
        _kill_group(pid)
    return len(groups)


def track(pid: int) -> None:
    """Register a started process group; killed at once if this process is stopping.

    :func:`kill_running` sets ``STOPPING`` before it lists the groups and this adds before it
    checks, so a run that starts while the worker closes is killed by one or the other."""
    RUNNING_GROUPS.add(pid)
    if STOPPING.is_set():
        _kill_group(pid)


def untrack(pid: int) -> None:
    """Kill what is left of a finished run's process group and forget it."""
    _kill_group(pid)
    RUNNING_GROUPS.discard(pid)


async def start_guarded(argv: Sequence[str], **kw) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec`` of ``argv`` in a new session (its own process group),
    bound to die with this process (:func:`die_with_parent`) and registered (:func:`track`).
    The caller awaits its exit and then calls :func:`untrack`."""
    proc = await asyncio.create_subprocess_exec(*die_with_parent(argv), start_new_session=True, **kw)
    track(proc.pid)
    return proc


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _log_excerpt(path: Path, n_chars: int = 200) -> str:
    """The binary's first line containing ``ERROR`` in the job log, else its last non-empty line
    (the runner's own ``# ...`` lines are skipped); "" if none."""
    last = ""
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                for line in raw.decode(errors="replace").split("\r"):
                    line = line.strip()
                    if not line or line.startswith("# "):
                        continue
                    if "ERROR" in line:
                        return f"output: {line[:n_chars]}"
                    last = line
    except OSError:
        return ""
    return f"last output: {last[:n_chars]}" if last else ""


def _read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _jit_build_ejecta():
    """One jitted ``build_ejecta`` shared by all workers (compiled once per space)."""
    import jax

    from lumina_jax.ejecta import build_ejecta

    return jax.jit(build_ejecta, static_argnums=1)


class LuminaExecutor(Executor):
    """One LUMINA worker: a GPU worker (``gpu`` given: a device number, or a Dask worker's own
    ``CUDA_VISIBLE_DEVICES`` list) or a CPU worker (``omp_threads``)."""

    max_batch = 1

    def __init__(self, *, binary: Path, ref: Reference, space: ParameterSpace, settings: LuminaSettings,
                 work_root: Path, log_dir: Path, timeout_s: float, campaign_seed: int,
                 gpu: int | str | None = None, omp_threads: int = 1, keep_workdirs: bool = False):
        self.binary = Path(binary)
        self.ref = ref
        self.space = space
        self.settings = settings
        self.work_root = Path(work_root)
        self.log_dir = Path(log_dir)
        self.timeout_s = float(timeout_s)
        self.campaign_seed = int(campaign_seed)
        self.gpu = gpu
        self.omp_threads = int(omp_threads)
        self.keep_workdirs = keep_workdirs
        if gpu is None:
            self.kind, self.name = "cpu", "cpu"
        else:
            self.kind, self.name = "gpu", f"gpu{gpu}"

    def named(self, name: str) -> "LuminaExecutor":
        self.name = name
        return self

    def environment(self) -> dict[str, str]:
        """The child's environment: inherited minus LUMINA_*, explicit threads / device."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUMINA_")}
        env["OMP_NUM_THREADS"] = str(self.omp_threads)
        env["CUDA_VISIBLE_DEVICES"] = "" if self.gpu is None else str(self.gpu)
        env.update(self.settings.env())
        return env

    def _ejecta(self, theta):
        return _jit_build_ejecta()(np.asarray(theta, dtype=np.float64), self.space)

    @staticmethod
    def run_name(job: Job, run: int = 1) -> str:
        """Name of the working directory and log of run ``run`` of ``job``'s attempt."""
        return f"job_{job.index:06d}_a{job.attempt}" + (f"_r{run}" if run > 1 else "")

    def claim_run(self, job: Job) -> tuple[int, Path]:
        """(run number, log path) of a new run of ``job``'s attempt: the first run whose log this
        call creates (``O_EXCL``).  An attempt runs more than once when its Dask worker was lost
        or a killed campaign resumes; logs are never deleted, so a later run never shares the
        working directory or log of a lost one, which may still be on disk or even running."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        run = 1
        while True:
            path = self.log_dir / f"{self.run_name(job, run)}.log"
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                return run, path
            except FileExistsError:
                run += 1

    def prepare(self, job: Job, run: int = 1) -> tuple[Path, dict]:
        """Create the working directory and model directory of run ``run`` of the job -> (working
        dir, config.json contents: the seed, requested luminosity and initial T_inner of this attempt)."""
        work = self.work_root / self.run_name(job, run)
        if work.exists():
            shutil.rmtree(work)
        model = work / "model"
        model.mkdir(parents=True)
        for name in self.ref.files:
            os.symlink(self.ref.path / name, model / name)
        files = model_files(self._ejecta(job.theta), self.ref, n_packets=self.settings.n_packets,
                            n_iters=self.settings.n_iters, seed=job_seed(self.campaign_seed, job.index, job.attempt))
        for name, text in files.items():
            (model / name).write_text(text)
        return work, json.loads(files["config.json"])

    async def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        return [await self.run_one(job) for job in jobs]

    async def run_one(self, job: Job) -> Outcome:
        t0 = time.monotonic()
        elapsed = lambda: time.monotonic() - t0  # noqa: E731
        if STOPPING.is_set():
            return Outcome.failure(job, "error", "not started: this worker is closing", elapsed(), self.name)
        try:
            run, log_path = self.claim_run(job)
            work, cfg = self.prepare(job, run)
        except Exception as exc:  # noqa: BLE001 - a broken job directory is this job's failure
            return Outcome.failure(job, "error", f"could not prepare the job directory: {exc}", elapsed(), self.name)
        seed = int(cfg["seed"])
        base = {"mc_seed": seed, "l_requested": float(cfg["luminosity_inner_erg_s"])}
        cmd = [str(self.binary), str(work / "model"), *self.settings.argv_tail()]
        env = self.environment()
        with open(log_path, "wb") as log:
            log.write(
                (f"# job {job.index} attempt {job.attempt} worker {self.name} seed {seed}\n# cwd {work}\n"
                 f"# cmd {' '.join(cmd)}\n"
                 f"# env OMP_NUM_THREADS={env['OMP_NUM_THREADS']} CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} "
                 + " ".join(f"{k}={v}" for k, v in sorted(self.settings.env().items())) + "\n").encode())
            log.flush()
            try:
                proc = await start_guarded(cmd, cwd=str(work), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                                           stderr=asyncio.subprocess.STDOUT)
            except OSError as exc:
                return Outcome.failure(job, "error", f"could not start {self.binary}: {exc}", elapsed(), self.name,
                                       base)
            try:
                rc = await asyncio.wait_for(proc.wait(), timeout=self.timeout_s)
            except asyncio.TimeoutError:
                _kill_group(proc.pid)
                await proc.wait()
                log.write(f"\n# runner: killed process group after the {self.timeout_s:g} s timeout\n".encode())
                return Outcome.failure(job, "timeout", f"timeout after {self.timeout_s:g} s (process group killed)",
                                       elapsed(), self.name, base)
            except asyncio.CancelledError:
                _kill_group(proc.pid)
                await asyncio.shield(proc.wait())
                raise
            finally:
                untrack(proc.pid)
            if rc != 0 and STOPPING.is_set():  # killed by kill_running: the attempt runs again elsewhere
                log.write(b"\n# runner: killed, this worker is closing (the attempt runs again elsewhere)\n")
                shutil.rmtree(work, ignore_errors=True)
                return Outcome.failure(job, "error", "killed: this worker is closing", elapsed(), self.name, base)
        outcome = self.classify(job, rc, work, log_path, elapsed(), cfg)
        if outcome.ok and not self.keep_workdirs:
            for r in range(1, run + 1):  # this run's directory and those of lost runs of the attempt
                shutil.rmtree(self.work_root / self.run_name(job, r), ignore_errors=True)
        return outcome

    def classify(self, job: Job, rc: int, work: Path, log_path: Path, elapsed_s: float, cfg: dict) -> Outcome:
        """The outcome of a finished attempt from its return code, output file and stdout log;
        ``cfg`` is the model's config.json (seed, requested luminosity, initial T_inner)."""
        figures = parse_stdout(_read_log(log_path))
        diag = {"mc_seed": int(cfg["seed"]), "l_requested": float(cfg["luminosity_inner_erg_s"]),
                "l_emitted": figures.l_emitted, "escape_fraction": figures.escape_fraction,
                "t_inner": figures.t_inner}

        def fail(kind: str, reason: str) -> Outcome:
            return Outcome.failure(job, kind, reason, elapsed_s, self.name, diag)

        excerpt = _log_excerpt(log_path)
        said = f"; {excerpt}" if excerpt else ""
        if rc < 0:
            return fail("signal", f"killed by {_signal_name(-rc)}{said}")
        if rc > 128 and (rc - 128) in {s.value for s in signal.Signals}:
            return fail("signal", f"exit code {rc} = 128 + {_signal_name(rc - 128)}{said}")
        if rc != 0:
            return fail("exit_code", f"exit code {rc}{said}")
        out = work / OUTPUT_FILES[self.settings.spectrum]
        if not out.is_file():
            return fail("missing_output", f"exit 0 but no {out.name} was written{said}")
        flux, why = parse_spectrum(out, self.settings)
        if flux is None:
            return fail("invalid_output", why)
        more, why = judge_spectrum(flux, self.settings, l_requested=float(cfg["luminosity_inner_erg_s"]),
                                   t_inner=float(cfg["T_inner_K"]), figures=figures)
        diag.update(more)
        if why:
            return fail("invalid_output", f"{out.name}: {why}")
        return Outcome(job.index, True, flux, elapsed_s=elapsed_s, worker=self.name, diagnostics=diag)
