"""A whole campaign: validate the inputs, create or resume the store, build the workers, run.

:func:`generate` is what ``lumina-jax generate`` calls.  Every user-fixable problem
(unknown backend, missing binary, a missing or broken reference directory, unwritable
output, an existing store without ``--resume``, a store of another stage / backend / binary /
reference directory with ``--resume``) raises a :class:`~lumina_jax.errors.UserError`
*before* any file is created or changed.  Settings that will run but give poor models are
reported once, at the start, through ``on_warning``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import warnings
from pathlib import Path
from typing import Awaitable, Callable

from lumina_jax.errors import DataFileError, ParameterError, UserError
from lumina_jax.params import ParameterSpace, load_space
from lumina_jax.workflows import chaining
from runners.design import lhs_design
from runners.executors import Executor
from runners.queue import Progress, run_queue
from runners.store import CampaignStore, provenance, read_attrs, sha256_file

BACKENDS = ("synth", "lumina")
EXECUTORS = ("inprocess", "dask")


@dataclasses.dataclass
class GenerateOptions:
    """Options of ``lumina-jax generate`` (see the CLI help for each)."""

    stage: int
    out: Path
    backend: str = "synth"
    n_models: int | None = None
    resume: bool = False
    from_dir: Path | None = None
    relax: str = chaining.DEFAULT_RELAX  # the rule that builds the box around --from
    seed: int = 0
    checkpoint_every: int = 100
    max_attempts: int = 3
    timeout_s: float = 600.0
    # lumina
    lumina_bin: Path | None = None
    lumina_cpu_bin: Path | None = None
    lumina_ref: Path | None = None  # a reference directory, or "auto": make_reference(space, DIR) writes one
    make_reference: Callable | None = None  # (space, folder) -> folder; the physics lives with the caller
    gpus: tuple[int, ...] = ()
    jobs_per_gpu: int = 1
    gpu_threads: int = 1
    cpu_workers: int | None = None
    cpu_threads: int | None = None
    work_dir: Path | None = None
    keep_workdirs: bool = False
    lumina_settings: object | None = None  # runners.backends.lumina.LuminaSettings
    # synth
    batch_size: int = 256
    synth_workers: int = 1  # 2 overlaps device evaluation with storing (GPU); on a CPU 1 is faster (bench_runner)
    synth_factory: str = "lumina_jax.synth:Synthesizer.default"
    synth_config: str | None = None  # YAML of the synthesizer (default lumina_jax/configs/synth.yaml)
    abort_after: int = 20
    # where the jobs run: "inprocess" (this process's workers) or "dask" (runners.cluster)
    executor: str = "inprocess"
    scheduler: str | None = None  # --scheduler ADDRESS of a running Dask scheduler
    cluster: str | None = None  # --cluster local[:N] | slurm | pbs
    cluster_config: Path | None = None  # --cluster-config FILE.yaml (jobqueue / LocalCluster arguments)
    max_in_flight: int | None = None  # Dask tasks in flight (default: 2 x the cluster's worker threads)


# ------------------------------------------------------------------------ inputs
def campaign_space(stage: int, from_dir=None, relax: str = chaining.DEFAULT_RELAX) -> ParameterSpace:
    """The sampling box: the stage's full prior, or the box that the rule ``relax`` builds
    around a previous stage's result (``lumina_jax.workflows.chaining.stage_box``, the box the
    next stage's fit samples)."""
    chaining.check_relax(relax)
    if from_dir is None:
        if relax != chaining.DEFAULT_RELAX:
            raise UserError(f"--relax {relax} applies only with --from RESULTS_DIR")
        return load_space(stage)
    try:
        return chaining.stage_box(stage, Path(from_dir), relax=relax)[0]
    except (DataFileError, ParameterError, UserError) as exc:
        raise type(exc)(f"--from: {exc}") from None


def check_output(out: Path, resume: bool) -> Path:
    out = Path(out).expanduser()
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out / 'campaign.h5'}")
    if not parent.is_dir():
        raise UserError(f"--out: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out: directory {parent} is not writable")
    if resume:
        if not out.exists():
            raise UserError(f"--resume: {out} does not exist")
        if not os.access(out, os.R_OK):
            raise UserError(f"--resume: {out} is not readable")
    elif out.exists():
        raise UserError(f"{out} already exists: pass --resume to continue it, or choose another --out")
    return out.resolve()


def _check_writable_dir(path: Path, option: str) -> None:
    """A directory the run will create or fill: not a file, and its nearest existing ancestor writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {p} is a file, not a directory")
    base = p
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{option} {p}: {base} is not a writable directory")


# ---------------------------------------------------------------------- planning
@dataclasses.dataclass
class Plan:
    """Everything validated, nothing written yet."""

    opts: GenerateOptions
    space: ParameterSpace
    config: dict
    prov: dict
    wavelength: object
    make_executors: Callable[[ParameterSpace], list[Executor]]
    resume_attrs: dict | None
    warnings: list[str] = dataclasses.field(default_factory=list)  # one line each, shown once at the start
    #: --executor dask: where the tasks run, what a worker builds (space -> runners.cluster task) and,
    #: for a local cluster, its worker specs (() -> runners.cluster.local_workers(...))
    cluster: object | None = None
    make_task: Callable | None = None
    local_workers: Callable | None = None


def plan(opts: GenerateOptions) -> Plan:
    """Validate every input and prepare the workers; raises UserError, writes nothing."""
    if opts.backend not in BACKENDS:
        raise UserError(f"unknown backend {opts.backend!r}; choose one of: {', '.join(BACKENDS)}")
    if opts.checkpoint_every < 1:
        raise UserError("--checkpoint-every must be >= 1")
    if opts.max_attempts < 1:
        raise UserError("--max-attempts must be >= 1")
    if opts.timeout_s <= 0:
        raise UserError("--timeout must be > 0 seconds")
    cluster = _check_executor(opts)
    load_space(opts.stage)  # validates the stage number
    out = check_output(opts.out, opts.resume)
    opts.out = out

    resume_attrs = None
    if opts.resume:
        if opts.from_dir is not None or opts.relax != chaining.DEFAULT_RELAX:
            raise UserError("--from and --relax only apply to a new campaign: a resumed one keeps the design "
                            "in its store")
        resume_attrs = read_attrs(out)
        if int(resume_attrs["stage"]) != int(opts.stage):
            raise DataFileError(f"--resume: {out} holds a stage-{resume_attrs['stage']} campaign, --stage {opts.stage} given")
        if resume_attrs["backend"] != opts.backend:
            raise DataFileError(f"--resume: {out} was made with --backend {resume_attrs['backend']}, "
                                f"not {opts.backend} (spectra of two backends must not be mixed)")
        space = ParameterSpace.from_json(resume_attrs["space_json"])
        cfg = json.loads(resume_attrs["config_json"])
        if opts.n_models is not None and int(opts.n_models) != int(cfg["n_models"]):
            raise UserError(f"--resume: {out} has {cfg['n_models']} models, --n-models {opts.n_models} given")
    else:
        if opts.n_models is None or opts.n_models < 1:
            raise UserError("--n-models K (>= 1) is required for a new campaign")
        space = campaign_space(opts.stage, opts.from_dir, opts.relax)
        cfg = None

    p = (_plan_lumina if opts.backend == "lumina" else _plan_synth)(opts, space, cfg, resume_attrs)
    p.cluster = cluster
    return p


def _check_executor(opts: GenerateOptions):
    """The validated cluster of ``--executor dask`` (a runners.cluster.ClusterSpec), else None."""
    if opts.executor not in EXECUTORS:
        raise UserError(f"unknown executor {opts.executor!r}; choose one of: {', '.join(EXECUTORS)}")
    given = [o for o, v in (("--scheduler", opts.scheduler), ("--cluster", opts.cluster),
                            ("--cluster-config", opts.cluster_config), ("--max-in-flight", opts.max_in_flight))
             if v is not None]
    if opts.executor == "inprocess":
        if given:
            raise UserError(f"{', '.join(given)} need --executor dask")
        return None
    if opts.max_in_flight is not None and opts.max_in_flight < 1:
        raise UserError("--max-in-flight must be >= 1")
    from runners.cluster import parse_cluster

    spec = parse_cluster(opts.scheduler, opts.cluster, opts.cluster_config)
    if spec.kind != "local" and (opts.gpus or opts.cpu_workers is not None):
        raise UserError("--gpus and --cpu-workers choose the workers of this process or of --cluster local; on "
                        f"{spec.describe()} each worker runs the GPU binary when its CUDA_VISIBLE_DEVICES is set, "
                        "else the CPU binary")
    return spec


def auto_reference(opts: GenerateOptions, space) -> Path:
    """``--lumina-ref auto``: the reference directory ``STEM.ref`` beside the store, written by
    ``opts.make_reference(space, folder)`` unless it exists (a resume reuses it; the store's
    reference hash then guards against a changed one)."""
    stem = opts.out.name[:-3] if opts.out.name.endswith(".h5") else opts.out.name
    folder = opts.out.parent / f"{stem}.ref"
    if folder.exists():
        return folder
    if opts.make_reference is None:
        raise UserError("--lumina-ref auto: no reference writer given (lumina_jax.lumina_export.campaign_reference)")
    if not opts.out.parent.is_dir():
        raise UserError(f"directory {opts.out.parent} of the store does not exist")
    return Path(opts.make_reference(space, folder))


def _plan_lumina(opts, space, cfg, resume_attrs) -> Plan:
    from lumina_jax.params import ATOMIC_NUMBERS
    from runners.backends.lumina import (HOLD_ITERATIONS, LuminaExecutor, LuminaSettings, check_binary,
                                         check_reference, reference_sha256)

    binary = check_binary(opts.lumina_bin)
    cpu_binary = check_binary(opts.lumina_cpu_bin) if opts.lumina_cpu_bin else binary
    ref_path = opts.lumina_ref
    if ref_path is not None and str(ref_path) == "auto":
        ref_path = auto_reference(opts, space)
    ref = check_reference(ref_path, n_shells=space.ejecta.n_shells, elements=ATOMIC_NUMBERS)
    gpus = tuple(int(g) for g in opts.gpus)
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise UserError(f"--gpus must be distinct non-negative device numbers, got {','.join(map(str, gpus))}")
    n_cpu = opts.cpu_workers if opts.cpu_workers is not None else (0 if gpus else 1)
    if n_cpu < 0:
        raise UserError("--cpu-workers must be >= 0")
    local_n = _local_cluster_size(opts)  # None: no local cluster; 0: --cluster local
    if local_n:
        if opts.cpu_workers is not None:
            raise UserError("give the CPU workers of a local cluster once: --cluster local:N or --cpu-workers M")
        n_cpu = local_n  # --cluster local:N: N CPU worker processes
    if (opts.executor != "dask" or local_n is not None) and not gpus and n_cpu == 0:
        raise UserError("no LUMINA workers: give --gpus 0,1,... and/or --cpu-workers M (>= 1)")
    cpu_threads = opts.cpu_threads or max(1, (os.cpu_count() or 1) // max(n_cpu, 1))
    sha, cpu_sha = sha256_file(binary), sha256_file(cpu_binary)
    ref_sha = reference_sha256(ref)
    if cfg is None:
        settings = opts.lumina_settings or LuminaSettings()
        cfg = {"backend": "lumina", "stage": space.stage, "n_models": int(opts.n_models), "seed": int(opts.seed),
               "space_fingerprint": space.fingerprint(), "binary_sha256": sha, "cpu_binary_sha256": cpu_sha,
               "lumina_ref_sha256": ref_sha, "lumina_settings": dataclasses.asdict(settings)}
    else:
        settings = LuminaSettings.from_dict(cfg["lumina_settings"])
        for what, old, new, path in (("--lumina-bin", cfg["binary_sha256"], sha, binary),
                                     ("--lumina-cpu-bin", cfg["cpu_binary_sha256"], cpu_sha, cpu_binary)):
            if old != new:
                raise DataFileError(f"--resume: {path} (sha256 {new[:12]}) is not the binary the store was made "
                                    f"with (sha256 {old[:12]}); models of two LUMINA builds must not be mixed")
        old_ref = cfg.get("lumina_ref_sha256") or resume_attrs.get("lumina_ref_sha256")
        if old_ref and old_ref != ref_sha:
            raise DataFileError(
                f"--resume: --lumina-ref {ref.path} (sha256 {ref_sha[:12]}) is not the reference directory the store "
                f"was made with ({resume_attrs.get('lumina_ref', '?')}, sha256 {old_ref[:12]}); models of two sets "
                "of atomic data must not be mixed")
    notes = []
    if settings.n_iters <= HOLD_ITERATIONS + 1:
        notes.append(
            f"--n-iters {settings.n_iters}: LUMINA holds T_inner fixed for its first {HOLD_ITERATIONS} iterations and "
            f"updates it only after each later one, so with <= {HOLD_ITERATIONS + 1} iterations the spectrum (last "
            "iteration) is made at the initial T_inner and the requested luminosity is not honoured; models may fail "
            f"the luminosity check (--lum-range {settings.lum_range[0]:g},{settings.lum_range[1]:g}); "
            "use more iterations (default 10)")
    prov = provenance(binary)
    prov["cpu_binary_path"], prov["cpu_binary_sha256"] = str(cpu_binary), cpu_sha
    prov["lumina_ref"], prov["lumina_ref_sha256"] = str(ref.path), ref_sha
    stem = opts.out.name[:-3] if opts.out.name.endswith(".h5") else opts.out.name
    work_root = Path(opts.work_dir).resolve() if opts.work_dir else opts.out.parent / f"{stem}.work"
    _check_writable_dir(work_root, "--work-dir")
    log_dir = opts.out.parent / f"{stem}.logs"

    def make(space_: ParameterSpace) -> list[Executor]:
        common = dict(ref=ref, space=space_, settings=settings, work_root=work_root, log_dir=log_dir,
                      timeout_s=opts.timeout_s, campaign_seed=int(cfg["seed"]), keep_workdirs=opts.keep_workdirs)
        exs: list[Executor] = []
        for g in gpus:
            for k in range(max(1, opts.jobs_per_gpu)):
                name = f"gpu{g}" if opts.jobs_per_gpu <= 1 else f"gpu{g}.{k}"
                exs.append(LuminaExecutor(binary=binary, gpu=g, omp_threads=opts.gpu_threads, **common).named(name))
        for k in range(n_cpu):
            exs.append(LuminaExecutor(binary=cpu_binary, gpu=None, omp_threads=cpu_threads, **common).named(f"cpu{k}"))
        return exs

    def task(space_: ParameterSpace):
        from runners.cluster import LuminaTask, new_token

        return LuminaTask(new_token(), binary, cpu_binary, ref, space_, settings, work_root, log_dir,
                          float(opts.timeout_s), int(cfg["seed"]), keep_workdirs=opts.keep_workdirs,
                          gpu_threads=opts.gpu_threads,
                          cpu_threads=cpu_threads if local_n is not None or opts.cpu_threads else None)

    def workers():
        from runners.cluster import local_workers

        return local_workers(n_cpu, gpus, max(1, opts.jobs_per_gpu), cpu_env={"CUDA_VISIBLE_DEVICES": ""})

    return Plan(opts, space, cfg, prov, settings.wavelength, make, resume_attrs, notes, make_task=task,
                local_workers=workers if local_n is not None else None)


def _local_cluster_size(opts: GenerateOptions) -> int | None:
    """``--cluster local[:N]`` -> N (0 when not given), else None (no local cluster)."""
    if opts.executor != "dask" or not opts.cluster or opts.cluster.split(":")[0] != "local":
        return None
    _, _, n = opts.cluster.partition(":")
    return int(n) if n else 0


def _plan_synth(opts, space, cfg, resume_attrs) -> Plan:
    from runners.backends.synth import SynthExecutor, make_forward

    factory = cfg["synth_factory"] if cfg is not None else opts.synth_factory
    synth_config = cfg.get("synth_config") if cfg is not None else (
        str(Path(opts.synth_config).resolve()) if opts.synth_config else None)
    if opts.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    fn, wavelength, desc = make_forward(space, factory, synth_config)
    if cfg is None:
        cfg = {"backend": "synth", "stage": space.stage, "n_models": int(opts.n_models), "seed": int(opts.seed),
               "space_fingerprint": space.fingerprint(), "synth_factory": factory, "synth": desc,
               "synth_config": synth_config,
               "n_wave": int(wavelength.size)}
    elif int(cfg["n_wave"]) != wavelength.size:
        raise DataFileError(f"--resume: the synthesizer now has {wavelength.size} wavelengths, the store {cfg['n_wave']}")
    prov = provenance(None)
    prov["synth"] = desc

    def make(space_: ParameterSpace) -> list[Executor]:
        return [SynthExecutor(fn, wavelength, batch_size=opts.batch_size, name=f"synth{k}")
                for k in range(max(1, opts.synth_workers))]

    def task(space_: ParameterSpace):
        from runners.cluster import SynthTask, new_token

        return SynthTask(new_token(), space_, factory, synth_config, int(opts.batch_size))

    local_n = _local_cluster_size(opts)

    def workers():  # --cluster local[:N]: N synthesizer processes (default --synth-workers)
        from runners.cluster import local_workers

        return local_workers(local_n or max(1, opts.synth_workers))

    return Plan(opts, space, cfg, prov, wavelength, make, resume_attrs, make_task=task,
                local_workers=workers if local_n is not None else None)


# ----------------------------------------------------------------------- running
def open_store(p: Plan) -> CampaignStore:
    """Create the store (design first) or open it for resuming."""
    o = p.opts
    if o.resume:
        store = CampaignStore.open(o.out, lock=True)  # locked before it is read
        import numpy as np

        if not np.allclose(store.wavelength, np.asarray(p.wavelength)):
            raise DataFileError(f"--resume: {o.out} has another wavelength grid than this backend produces")
        if o.max_attempts != int(store.attrs.get("max_attempts", o.max_attempts)):
            store.attrs["max_attempts"] = int(o.max_attempts)
        return store
    design = lhs_design(p.space, int(o.n_models), int(o.seed))
    return CampaignStore.create(o.out, space=p.space, design=design, wavelength=p.wavelength, backend=o.backend,
                                seed=int(o.seed), config=p.config, max_attempts=o.max_attempts, prov=p.prov,
                                keep_lock=True)  # locked before the name is checked, held while it runs


def generate(opts: GenerateOptions, *, on_start: Callable[[CampaignStore], None] | None = None,
             on_progress: Callable[[Progress], None] | None = None,
             on_warning: Callable[[str], None] | None = None,
             on_message: Callable[[str], None] | None = None) -> tuple[CampaignStore, Progress]:
    """Validate, create/resume the store, run every remaining job, checkpoint; return (store, counters).

    Each of the plan's warnings goes once to ``on_warning`` (default ``warnings.warn``) before
    any job runs.  SIGTERM and Ctrl-C stop the workers (killing running subprocesses),
    checkpoint, and raise KeyboardInterrupt; rerun with ``resume=True`` to continue.
    With ``executor="dask"`` the jobs run on a Dask cluster (:mod:`runners.cluster`) and
    ``on_message`` gets its status lines (the dashboard's address).
    """
    p = plan(opts)
    for note in p.warnings:
        (on_warning or (lambda m: warnings.warn(m, stacklevel=3)))(note)
    queue_kw = dict(checkpoint_every=opts.checkpoint_every, max_attempts=opts.max_attempts,
                    abort_after=opts.abort_after, on_progress=on_progress)
    if p.cluster is not None:
        return asyncio.run(_run_with_signals(lambda: _run_on_cluster(p, on_start, on_message, queue_kw)))
    store = open_store(p)  # holds the store's lock
    try:
        executors = p.make_executors(store.space)
        if on_start is not None:
            on_start(store)
        prog = asyncio.run(_run_with_signals(lambda: run_queue(store, executors, **queue_kw)))
    finally:
        store.release_lock()
    return store, prog


async def _run_on_cluster(p: Plan, on_start, on_message, queue_kw) -> tuple[CampaignStore, Progress]:
    """Start / reach the Dask cluster, then open the store and run the queue with Dask slots
    (the cluster first: a scheduler that cannot be reached leaves no new store behind)."""
    from runners.cluster import connect, slots

    workers = p.local_workers() if p.local_workers is not None else None
    async with connect(p.cluster, workers=workers, log=on_message or (lambda m: None)) as conn:
        store = open_store(p)  # holds the store's lock
        try:
            task = p.make_task(store.space)
            executors = slots(conn, task, resources=p.cluster.resources, max_in_flight=p.opts.max_in_flight)
            if on_start is not None:
                on_start(store)
            prog = await run_queue(store, executors, **queue_kw)
        finally:
            store.release_lock()
    return store, prog


async def _run_with_signals(body: Callable[[], Awaitable]):
    """Await ``body()`` with SIGTERM / SIGINT turned into a cancellation (then KeyboardInterrupt)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopped = []
    # the loop's signal handling replaces the Python-level handlers and the wakeup fd, and its
    # removal restores Python's defaults: put back what the caller had (the CLI's Ctrl-C handler)
    previous = {}
    wakeup_fd = None
    try:
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        wakeup_fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(wakeup_fd)
    except ValueError:  # not the main thread: the loop installs nothing either
        previous, wakeup_fd = {}, None

    def stop(signum):
        stopped.append(signum)
        task.cancel()

    for s in (signal.SIGTERM, signal.SIGINT):
        if previous.get(s) is signal.SIG_IGN:  # ignored by whoever started the process (a script's `cmd &`): keep it so
            continue
        try:
            loop.add_signal_handler(s, stop, s)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        return await body()
    except asyncio.CancelledError:
        if stopped:
            raise KeyboardInterrupt from None
        raise
    finally:
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(s)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)
        if wakeup_fd is not None:
            signal.set_wakeup_fd(wakeup_fd)
