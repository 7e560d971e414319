"""LUMINA-SN backend: one subprocess of the external binary per job.

Per job (``lumina_sn.md`` sections 2-5, 8):

* a fresh working directory ``WORK/job_<index>_a<attempt>/`` with ``model/`` holding
  symlinks to every file of the reference directory (``--lumina-ref``) except the six
  per-model files, which are written from the parameter vector via
  :func:`lumina_jax.ejecta.build_ejecta` (:func:`write_model_files`);
* ``<binary> model <n_packets> <n_iters> <rotation|real> [nlte]`` started with
  ``asyncio.create_subprocess_exec(..., start_new_session=True)`` in the working directory
  (LUMINA writes fixed file names into its CWD), stdout+stderr streamed into
  ``LOGS/job_<index>_a<attempt>.log`` (no pipe to drain);
* an environment built explicitly: ``OMP_NUM_THREADS`` always set by the worker (an
  inherited value is a known cause of hangs), ``CUDA_VISIBLE_DEVICES`` = the worker's GPU
  (empty for CPU workers), inherited ``LUMINA_*`` variables dropped and the configured ones
  set (``LUMINA_SPEC_RANGE`` always, so the output grid is known);
* a per-job timeout that SIGKILLs the whole process group (and the group is also killed
  after a normal exit, so no stray child survives); where util-linux ``setpriv`` exists the
  binary is started through ``setpriv --pdeathsig KILL`` so it dies if the runner itself is
  killed (no orphan keeps a GPU busy after a crash of the runner);
* classification: timeout, signal (negative return code, or 128+N from a wrapper shell,
  e.g. 139 = SIGSEGV, LUMINA's reaction to a missing input), exit_code, missing_output,
  invalid_output (header, numeric, grid, finite, non-negative, mostly positive).

The spectrum is converted from LUMINA's erg/s/cm to erg/s/Angstrom (/1e8).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lumina_jax.errors import UserError
from lumina_jax.params import ATOMIC_NUMBERS, ParameterSpace
from runners.executors import Executor, Job, Outcome, validate_spectrum

#: Files LUMINA regenerates per model (never linked from the reference directory).
PER_MODEL_FILES = ("config.json", "geometry.csv", "density.csv", "abundances.csv",
                   "electron_densities.csv", "plasma_state.csv")
#: Atomic-data files LUMINA needs in the reference directory (it segfaults without them).
REQUIRED_REF_FILES = ("atom_masses.csv", "line_list.csv", "levels.csv", "ionization_energies.csv",
                      "macro_atom_references.csv", "macro_atom_data.csv", "line2macro_level_upper.npy",
                      "transition_probabilities.npy")
OUTPUT_FILES = {"rotation": "lumina_spectrum_rotation.csv", "real": "lumina_spectrum.csv",
                "formal": "lumina_spectrum_formal.csv"}
SIGMA_SB = 5.670374419e-5  # erg cm^-2 s^-1 K^-4
AMU = 1.66053906660e-24  # g
KM = 1.0e5


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
    min_positive_fraction: float = 0.5

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


def check_reference(path) -> Reference:
    """Validate a reference directory once, before any job (missing files make LUMINA segfault)."""
    if path is None:
        raise UserError("--backend lumina needs --lumina-ref DIR (LUMINA's reference/atomic-data directory)")
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise UserError(f"LUMINA reference directory not found: {p}")
    names = sorted(f.name for f in p.iterdir() if f.is_file())
    missing = [f for f in REQUIRED_REF_FILES if f not in names]
    if missing:
        raise UserError(f"LUMINA reference directory {p} lacks {', '.join(missing)}")
    rho0 = ne0 = None
    try:
        if "density.csv" in names and "electron_densities.csv" in names:
            rho0 = float(_read_named_csv(p / "density.csv")["rho"][0])
            ne0 = float(_read_named_csv(p / "electron_densities.csv")["n_e"][0])
    except (KeyError, ValueError, IndexError):
        rho0 = ne0 = None
    return Reference(p, tuple(n for n in names if n not in PER_MODEL_FILES), rho0, ne0)


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


def job_seed(campaign_seed: int, index: int) -> int:
    """Per-model Monte Carlo seed (lumina-ml used one seed for every model)."""
    return int((int(campaign_seed) * 1_000_003 + 7919 * int(index) + 23111963) % 2_147_483_647)


def parse_spectrum(path: Path, settings: LuminaSettings) -> tuple[np.ndarray | None, str]:
    """(L_lambda [n] erg/s/Angstrom, "") or (None, reason) for LUMINA's spectrum CSV."""
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
    why = validate_spectrum(flux, n_wave=expected.size, min_positive_fraction=settings.min_positive_fraction)
    if why:
        return None, f"{path.name}: {why}"
    return flux, ""


# ----------------------------------------------------------------------- process
def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL`` (util-linux) when available: the binary dies with the runner.

    Done by a wrapper exec'ed before the binary rather than a ``preexec_fn`` (which would force
    a plain fork of the multithreaded runner -- JAX threads -- and run Python in the child)."""
    exe = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [exe, "--pdeathsig", "KILL", "--"] if exe else []


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


def _log_tail(path: Path, n_chars: int = 200) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:n_chars] if lines else ""


@functools.lru_cache(maxsize=1)
def _jit_build_ejecta():
    """One jitted ``build_ejecta`` shared by all workers (compiled once per space)."""
    import jax

    from lumina_jax.ejecta import build_ejecta

    return jax.jit(build_ejecta, static_argnums=1)


class LuminaExecutor(Executor):
    """One LUMINA worker: a GPU worker (``gpu`` given) or a CPU worker (``omp_threads``)."""

    max_batch = 1

    def __init__(self, *, binary: Path, ref: Reference, space: ParameterSpace, settings: LuminaSettings,
                 work_root: Path, log_dir: Path, timeout_s: float, campaign_seed: int,
                 gpu: int | None = None, omp_threads: int = 1, keep_workdirs: bool = False):
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
        self._prefix = _pdeathsig_prefix()

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

    def prepare(self, job: Job) -> Path:
        """Create the job's working directory and model directory; return the working dir."""
        work = self.work_root / f"job_{job.index:06d}_a{job.attempt}"
        if work.exists():
            shutil.rmtree(work)
        model = work / "model"
        model.mkdir(parents=True)
        for name in self.ref.files:
            os.symlink(self.ref.path / name, model / name)
        files = model_files(self._ejecta(job.theta), self.ref, n_packets=self.settings.n_packets,
                            n_iters=self.settings.n_iters, seed=job_seed(self.campaign_seed, job.index))
        for name, text in files.items():
            (model / name).write_text(text)
        return work

    async def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        return [await self.run_one(job) for job in jobs]

    async def run_one(self, job: Job) -> Outcome:
        t0 = time.monotonic()
        elapsed = lambda: time.monotonic() - t0  # noqa: E731
        try:
            work = self.prepare(job)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"job_{job.index:06d}_a{job.attempt}.log"
        except Exception as exc:  # noqa: BLE001 - a broken job directory is this job's failure
            return Outcome.failure(job, "error", f"could not prepare the job directory: {exc}", elapsed(), self.name)
        cmd = [str(self.binary), str(work / "model"), *self.settings.argv_tail()]
        env = self.environment()
        with open(log_path, "wb") as log:
            log.write(
                (f"# job {job.index} attempt {job.attempt} worker {self.name}\n# cwd {work}\n# cmd {' '.join(cmd)}\n"
                 f"# env OMP_NUM_THREADS={env['OMP_NUM_THREADS']} CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} "
                 + " ".join(f"{k}={v}" for k, v in sorted(self.settings.env().items())) + "\n").encode())
            log.flush()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._prefix, *cmd, cwd=str(work), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                return Outcome.failure(job, "error", f"could not start {self.binary}: {exc}", elapsed(), self.name)
            try:
                rc = await asyncio.wait_for(proc.wait(), timeout=self.timeout_s)
            except asyncio.TimeoutError:
                _kill_group(proc.pid)
                await proc.wait()
                log.write(f"\n# runner: killed process group after the {self.timeout_s:g} s timeout\n".encode())
                return Outcome.failure(job, "timeout", f"timeout after {self.timeout_s:g} s (process group killed)",
                                       elapsed(), self.name)
            except asyncio.CancelledError:
                _kill_group(proc.pid)
                await asyncio.shield(proc.wait())
                raise
            finally:
                _kill_group(proc.pid)
        outcome = self.classify(job, rc, work, log_path, elapsed())
        if outcome.ok and not self.keep_workdirs:
            shutil.rmtree(work, ignore_errors=True)
        return outcome

    def classify(self, job: Job, rc: int, work: Path, log_path: Path, elapsed_s: float) -> Outcome:
        tail = _log_tail(log_path)
        last = f"; last output: {tail}" if tail else ""
        if rc < 0:
            return Outcome.failure(job, "signal", f"killed by {_signal_name(-rc)}{last}", elapsed_s, self.name)
        if rc > 128 and (rc - 128) in {s.value for s in signal.Signals}:
            return Outcome.failure(job, "signal", f"exit code {rc} = 128 + {_signal_name(rc - 128)}{last}",
                                   elapsed_s, self.name)
        if rc != 0:
            return Outcome.failure(job, "exit_code", f"exit code {rc}{last}", elapsed_s, self.name)
        out = work / OUTPUT_FILES[self.settings.spectrum]
        if not out.is_file():
            return Outcome.failure(job, "missing_output", f"exit 0 but no {out.name} was written{last}",
                                   elapsed_s, self.name)
        flux, why = parse_spectrum(out, self.settings)
        if flux is None:
            return Outcome.failure(job, "invalid_output", why, elapsed_s, self.name)
        return Outcome(job.index, True, flux, elapsed_s=elapsed_s, worker=self.name)
