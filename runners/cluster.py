"""Campaigns and coverage checks on a Dask cluster (``--executor dask``).

The client -- the process running ``lumina-jax generate`` -- keeps the work queue and is the
only writer of the store (:mod:`runners.queue`, :mod:`runners.store`, unchanged).  Each of its
:class:`DaskExecutor` slots submits one batch of jobs as one Dask task and awaits the
outcomes; on the worker, :func:`run_batch` runs the batch with the backend's own executor,
built once per worker process and kept (:data:`_BUILT`):

* synth: :class:`runners.backends.synth.SynthExecutor`, one vmapped call per batch; the
  jitted function and its XLA compile cache stay warm across the worker's batches;
* lumina: :class:`runners.backends.lumina.LuminaExecutor`, one subprocess per job, with the
  same per-job working directories, logs, timeouts and failure classification as in-process.
  A worker whose environment has a non-empty ``CUDA_VISIBLE_DEVICES`` runs the GPU binary on
  those devices with ``--gpu-threads``; any other worker runs the CPU binary.

A worker lost mid-task (killed, retired, its batch job ended) does not fail the job: Dask's
scheduler runs the task again on another worker with the same attempt number (the same seed;
a working directory and log of its own: :meth:`runners.backends.lumina.LuminaExecutor.claim_run`),
and only the outcome that reaches the client is stored.  The lost worker's LUMINA runs die with it: killed when it
closes (:class:`StopJobsOnClose`), or by their parent-death signal when it is SIGKILLed
(:func:`runners.backends.lumina.die_with_parent`).  A task whose
workers die ``distributed.scheduler.allowed-failures`` + 1 times (default 4) is recorded as a
failed attempt (kind ``error``, reason ``KilledWorker``).

Clusters (:func:`parse_cluster`): an existing scheduler (``--scheduler ADDRESS``), a local
cluster of worker processes (``--cluster local[:N]``), or batch jobs through dask-jobqueue
(``--cluster slurm|pbs --cluster-config FILE.yaml``).  Dask is imported only here, and only
when a cluster is asked for (:func:`require_dask`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from lumina_jax.errors import UserError
from runners.executors import Executor, Job, Outcome

try:  # this module is imported only when a cluster is asked for; the plugin base needs distributed
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - require_dask() reports it
    _WorkerPlugin = object

EXTRA = "pip install -e .[cluster]"
CLUSTER_KINDS = ("local", "slurm", "pbs")
#: keys of a ``--cluster-config`` YAML file
CONFIG_KEYS = ("cluster", "jobs", "adapt", "resources")
#: seconds ``--scheduler`` waits for a first worker to join
WAIT_FOR_WORKERS_S = 600


def require_dask(option: str = "--executor dask"):
    """The ``distributed`` module, or a UserError naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise UserError(f"{option} needs dask[distributed], which is not installed: {EXTRA}") from None
    return distributed


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """Where the tasks run.  kind: ``scheduler`` (``address``), ``local`` (``n_workers`` processes,
    None: chosen by the caller), ``slurm`` / ``pbs`` (``config`` read from ``config_path``)."""

    kind: str
    address: str | None = None
    n_workers: int | None = None
    config: dict = dataclasses.field(default_factory=dict)
    config_path: str | None = None

    @property
    def resources(self) -> dict | None:
        """Dask resources each task asks for (``resources:`` of the config file), e.g. ``{"GPU": 1}``."""
        return dict(self.config["resources"]) if self.config.get("resources") else None

    def describe(self) -> str:
        if self.kind == "scheduler":
            return f"the Dask scheduler at {self.address}"
        if self.kind == "local":
            return f"a local Dask cluster of {self.n_workers} worker process(es)"
        return f"a {self.kind} cluster from {self.config_path}"


def read_cluster_config(path) -> dict:
    """Validated ``--cluster-config`` YAML (see docs/campaigns.md for the keys)."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--cluster-config {p} does not exist")
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"--cluster-config {p} is not readable YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"--cluster-config {p} must be a mapping with keys {', '.join(CONFIG_KEYS)}")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise UserError(f"--cluster-config {p}: unknown key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}")
    if not isinstance(cfg.get("cluster", {}), dict):
        raise UserError(f"--cluster-config {p}: 'cluster' must be a mapping of the cluster class's keyword arguments")
    jobs = cfg.get("jobs")
    if jobs is not None and not (isinstance(jobs, int) and jobs >= 1):
        raise UserError(f"--cluster-config {p}: 'jobs' must be an integer >= 1, got {jobs!r}")
    adapt = cfg.get("adapt")
    if adapt is not None and not (isinstance(adapt, dict) and set(adapt) <= {"minimum_jobs", "maximum_jobs"}
                                  and all(isinstance(v, int) and v >= 0 for v in adapt.values())):
        raise UserError(f"--cluster-config {p}: 'adapt' must be {{minimum_jobs: N, maximum_jobs: M}}, got {adapt!r}")
    if jobs is not None and adapt is not None:
        raise UserError(f"--cluster-config {p}: give 'jobs' or 'adapt', not both")
    res = cfg.get("resources")
    if res is not None and not (isinstance(res, dict) and all(isinstance(v, (int, float)) and v > 0
                                                              for v in res.values())):
        raise UserError(f"--cluster-config {p}: 'resources' must map names to positive amounts, e.g. {{GPU: 1}}")
    return cfg


def parse_cluster(scheduler: str | None, cluster: str | None, cluster_config=None) -> ClusterSpec:
    """``--scheduler ADDRESS`` | ``--cluster local[:N]`` | ``--cluster slurm|pbs --cluster-config FILE``
    -> a validated :class:`ClusterSpec` (Dask must be importable; jobqueue clusters need dask-jobqueue)."""
    if scheduler and cluster:
        raise UserError("give either --scheduler ADDRESS or --cluster, not both")
    if not scheduler and not cluster:
        raise UserError("--executor dask needs --scheduler ADDRESS or --cluster local[:N] | slurm | pbs")
    require_dask()
    if scheduler:
        if cluster_config is not None:
            raise UserError("--cluster-config applies to --cluster, not to --scheduler")
        addr = scheduler.strip()
        if "://" not in addr and ":" not in addr:
            raise UserError(f"--scheduler must be a scheduler address such as tcp://HOST:8786, got {scheduler!r}")
        return ClusterSpec("scheduler", address=addr)
    kind, _, count = cluster.strip().partition(":")
    if kind not in CLUSTER_KINDS:
        raise UserError(f"--cluster must be local, local:N, slurm or pbs, got {cluster!r}")
    cfg = read_cluster_config(cluster_config) if cluster_config is not None else {}
    if kind == "local":
        n = None
        if count:
            try:
                n = int(count)
            except ValueError:
                raise UserError(f"--cluster local:N needs a whole number of workers, got {cluster!r}") from None
            if n < 1:
                raise UserError(f"--cluster local:N needs N >= 1, got {cluster!r}")
        if cfg.get("jobs") is not None or cfg.get("adapt") is not None:
            raise UserError("--cluster local: 'jobs' and 'adapt' of --cluster-config apply to slurm / pbs only")
        return ClusterSpec("local", n_workers=n, config=cfg,
                           config_path=str(cluster_config) if cluster_config is not None else None)
    if count:
        raise UserError(f"--cluster {kind} takes no :N (the number of batch jobs is 'jobs' in --cluster-config)")
    if cluster_config is None:
        raise UserError(f"--cluster {kind} needs --cluster-config FILE.yaml (the batch jobs' queue, cores, memory, "
                        "walltime; see docs/campaigns.md)")
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        raise UserError(f"--cluster {kind} needs dask-jobqueue, which is not installed: {EXTRA}") from None
    if cfg.get("jobs") is None and cfg.get("adapt") is None:
        raise UserError(f"--cluster-config {cluster_config}: give 'jobs: N' (batch jobs to start) or "
                        "'adapt: {minimum_jobs: 0, maximum_jobs: M}'")
    return ClusterSpec(kind, config=cfg, config_path=str(cluster_config))


def local_workers(n_cpu: int, gpus: Sequence[int] = (), threads_per_gpu: int = 1,
                  cpu_env: dict | None = None) -> dict[str, dict]:
    """Worker specs of a local cluster: one process per GPU (``CUDA_VISIBLE_DEVICES=<gpu>``,
    ``threads_per_gpu`` concurrent tasks, resource ``GPU``) and ``n_cpu`` one-thread CPU
    processes (environment ``cpu_env``, e.g. ``{"CUDA_VISIBLE_DEVICES": ""}``)."""
    from distributed import Nanny

    quiet = {"silence_logs": logging.ERROR}
    specs = {}
    for g in gpus:
        specs[f"gpu{g}"] = {"cls": Nanny, "options": {"nthreads": int(threads_per_gpu), "name": f"gpu{g}",
                                                      "env": {"CUDA_VISIBLE_DEVICES": str(g)},
                                                      "resources": {"GPU": float(threads_per_gpu)}, **quiet}}
    for k in range(n_cpu):
        specs[f"cpu{k}"] = {"cls": Nanny, "options": {"nthreads": 1, "name": f"cpu{k}", "env": dict(cpu_env or {}),
                                                      **quiet}}
    return specs


def jobqueue_threads(spec: ClusterSpec) -> int:
    """Worker threads the batch jobs of a slurm / pbs config will bring (jobs x cores per job)."""
    cores = int(spec.config.get("cluster", {}).get("cores", 1))
    jobs = spec.config.get("jobs") or (spec.config.get("adapt") or {}).get("maximum_jobs", 1)
    return max(1, int(jobs) * cores)


@dataclasses.dataclass
class Connection:
    """An asynchronous Dask client (and the cluster this process started, if any)."""

    client: Any
    cluster: Any
    expected_threads: int

    @property
    def dashboard(self) -> str | None:
        try:
            return self.client.dashboard_link
        except Exception:  # noqa: BLE001 - no dashboard (bokeh missing) is fine
            return None


@contextlib.asynccontextmanager
async def connect(spec: ClusterSpec, *, workers: dict[str, dict] | None = None,
                  log: Callable[[str], None] = lambda m: None):
    """Start or reach the cluster inside the running event loop, yield a :class:`Connection`,
    close the client (and a cluster started here) on exit.  ``workers``: the local cluster's
    worker specs (:func:`local_workers`)."""
    distributed = require_dask()
    cluster = None
    kw = dict(spec.config.get("cluster") or {})
    if spec.kind == "scheduler":
        try:
            client = await distributed.Client(spec.address, asynchronous=True, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise UserError(f"cannot reach the Dask scheduler at {spec.address}: {exc}") from None
        info = client.scheduler_info()
        threads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())
        if threads == 0:
            log(f"waiting for workers to join {spec.address}")
            try:
                await client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
            except TimeoutError:
                await client.close()
                raise UserError(f"no worker joined the Dask scheduler at {spec.address} within "
                                f"{WAIT_FOR_WORKERS_S} s") from None
            threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
    elif spec.kind == "local":
        kw.setdefault("silence_logs", logging.ERROR)
        scheduler = {"cls": distributed.Scheduler,
                     "options": {"dashboard_address": kw.pop("dashboard_address", ":8787")}}
        cluster = await distributed.SpecCluster(workers=workers or {}, scheduler=scheduler, asynchronous=True,
                                                name="lumina-jax", **kw)
        client = await distributed.Client(cluster, asynchronous=True)
        threads = sum(int(w["options"].get("nthreads", 1)) for w in (workers or {}).values())
    else:
        import dask_jobqueue

        cls = dask_jobqueue.SLURMCluster if spec.kind == "slurm" else dask_jobqueue.PBSCluster
        try:
            cluster = await cls(asynchronous=True, **kw)
        except (TypeError, ValueError) as exc:
            raise UserError(f"--cluster-config {spec.config_path}: {cls.__name__} rejects 'cluster': {exc}") from None
        if spec.config.get("adapt") is not None:
            cluster.adapt(**spec.config["adapt"])
        else:
            cluster.scale(jobs=int(spec.config["jobs"]))
        client = await distributed.Client(cluster, asynchronous=True)
        threads = jobqueue_threads(spec)
    conn = Connection(client, cluster, max(1, threads))
    try:
        await client.register_plugin(StopJobsOnClose(), name=StopJobsOnClose.name)
        if conn.dashboard:
            log(f"Dask dashboard: {conn.dashboard}")
        yield conn
    finally:
        with _quiet_shutdown(), contextlib.suppress(Exception):
            await client.close()
            if cluster is not None:
                await cluster.close()


@contextlib.contextmanager
def _quiet_shutdown():
    """Mute Dask's and tornado's complaints while a cluster closes (workers already gone,
    close timeouts on a loaded machine): they say nothing about the campaign."""
    loggers = [logging.getLogger(n) for n in ("distributed", "tornado.application")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ------------------------------------------------------------------------ worker side
@dataclasses.dataclass(frozen=True)
class SynthTask:
    """What a worker needs to build the synthesizer executor (pickled with every task)."""

    token: str
    space: Any  # lumina_jax.params.ParameterSpace
    factory: str
    config: str | None
    batch_size: int

    @property
    def max_batch(self) -> int:
        return int(self.batch_size)

    def build(self, worker_name: str) -> Executor:
        from runners.backends.synth import SynthExecutor, make_forward

        fn, wavelength, _ = make_forward(self.space, self.factory, self.config)
        return SynthExecutor(fn, wavelength, batch_size=self.batch_size, name=worker_name)


@dataclasses.dataclass(frozen=True)
class LuminaTask:
    """What a worker needs to run LUMINA jobs: the same arguments as the in-process
    :class:`~runners.backends.lumina.LuminaExecutor`; every path must be on disk the workers see."""

    token: str
    binary: Path
    cpu_binary: Path
    ref: Any  # runners.backends.lumina.Reference
    space: Any
    settings: Any  # runners.backends.lumina.LuminaSettings
    work_root: Path
    log_dir: Path
    timeout_s: float
    campaign_seed: int
    keep_workdirs: bool = False
    gpu_threads: int = 1
    cpu_threads: int | None = None  # None: the worker's cores / its task threads
    max_batch: int = 1

    def build(self, worker_name: str) -> Executor:
        from runners.backends.lumina import LuminaExecutor

        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        common = dict(ref=self.ref, space=self.space, settings=self.settings, work_root=self.work_root,
                      log_dir=self.log_dir, timeout_s=self.timeout_s, campaign_seed=self.campaign_seed,
                      keep_workdirs=self.keep_workdirs)
        if devices:
            ex = LuminaExecutor(binary=self.binary, gpu=devices, omp_threads=self.gpu_threads, **common)
        else:
            threads = self.cpu_threads or max(1, _cores() // max(1, _worker_threads()))
            ex = LuminaExecutor(binary=self.cpu_binary, gpu=None, omp_threads=threads, **common)
        return ex.named(worker_name)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the batch job's allocation, not the node's cores
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _worker_threads() -> int:
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return 1


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "dask"


#: executors built in this worker process, by task token (kept: warm jit / compile caches)
_BUILT: dict[str, Executor] = {}
#: set when this worker process starts closing (its running jobs were killed)
_CLOSING = threading.Event()
#: times a batch whose worker closed under it is submitted again before it counts as a failed attempt
MAX_RESUBMITS = 10


class WorkerClosing(Exception):
    """The worker closed (retired, restarted, its batch job ended) while running the batch."""


class StopJobsOnClose(_WorkerPlugin):
    """Worker plugin: when the worker closes, kill its running LUMINA process groups and command
    subprocesses at once, and any that a task thread starts later (a retired or restarting
    worker would otherwise finish them first, while the scheduler already runs the same jobs
    elsewhere)."""

    name = "lumina-jax-stop-jobs"

    def teardown(self, worker) -> None:
        from distributed.core import Status

        from runners.backends.lumina import kill_running

        if worker.status not in (Status.closing, Status.closed, Status.failed):
            return  # the plugin was replaced, the worker goes on
        _CLOSING.set()
        kill_running()


def run_batch(task, jobs: list[Job]) -> list[Outcome]:
    """Run ``jobs`` on this worker with the backend executor of ``task`` (built once per process).

    Raises :class:`WorkerClosing` instead of returning failures caused by the worker closing."""
    ex = _BUILT.get(task.token)
    if ex is None:
        ex = _BUILT[task.token] = task.build(_worker_name())
    outcomes = asyncio.run(ex.run(jobs))
    if _CLOSING.is_set() and not all(o.ok for o in outcomes):
        raise WorkerClosing(f"worker {_worker_name()} closed while running jobs {[j.index for j in jobs]}")
    return outcomes


# ------------------------------------------------------------------------ client side
class DaskExecutor(Executor):
    """One slot of the client's work queue: each :meth:`run` is one Dask task (one batch)."""

    kind = "dask"

    def __init__(self, client, task, *, name: str, resources: dict | None = None):
        self.client = client
        self.task = task
        self.name = name
        self.max_batch = int(task.max_batch)
        self.resources = resources

    async def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        from distributed import KilledWorker

        jobs = list(jobs)
        what = type(self.task).__name__.lower().removesuffix("task")
        more = f"+{len(jobs) - 1}" if len(jobs) > 1 else ""
        for _ in range(MAX_RESUBMITS):
            key = f"{what}-job{jobs[0].index}{more}-a{jobs[0].attempt}-{uuid.uuid4().hex[:8]}"
            fut = self.client.submit(run_batch, self.task, jobs, key=key, pure=False, resources=self.resources)
            try:
                return await fut
            except WorkerClosing:
                continue  # not the model's failure: run the same attempt again on another worker
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await fut.cancel()
                raise
            except KilledWorker as exc:
                return [Outcome.failure(j, "error", f"KilledWorker: every Dask worker that ran this job died ({exc})"
                                        [:300], 0.0, self.name) for j in jobs]
            finally:
                fut.release()
        return [Outcome.failure(j, "error", f"the worker closed under this job {MAX_RESUBMITS} times", 0.0, self.name)
                for j in jobs]


def slots(conn: Connection, task, *, resources: dict | None = None,
          max_in_flight: int | None = None) -> list[DaskExecutor]:
    """The work queue's executors on a cluster: ``max_in_flight`` slots (default twice the
    cluster's worker threads, so that each worker has its next task waiting)."""
    n = max_in_flight or max(2, 2 * conn.expected_threads)
    return [DaskExecutor(conn.client, task, name=f"slot{k}", resources=resources) for k in range(n)]


def new_token() -> str:
    """A fresh id for one campaign run's worker-side executors."""
    return uuid.uuid4().hex


# ------------------------------------------------------------------------ fan-out of commands
def run_command(argv: list[str]) -> tuple[int, str]:
    """Run ``python -m lumina_jax ARGV`` on this worker (dies with the worker) -> (exit code, output tail)."""
    from runners.backends.lumina import STOPPING, die_with_parent, track, untrack

    if STOPPING.is_set():
        raise WorkerClosing(f"worker {_worker_name()} is closing: lumina-jax {' '.join(argv[:2])} not started")
    proc = subprocess.Popen(die_with_parent([sys.executable, "-m", "lumina_jax", *argv]), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    track(proc.pid)
    try:
        output, _ = proc.communicate()  # in the forking thread: see die_with_parent
    finally:
        untrack(proc.pid)
    if _CLOSING.is_set() and proc.returncode != 0:
        raise WorkerClosing(f"worker {_worker_name()} closed while running lumina-jax {' '.join(argv[:2])}")
    return proc.returncode, output[-2000:]


async def _run_shard(client, argv: list[str], key: str, resources) -> tuple[int, str]:
    for _ in range(MAX_RESUBMITS):
        fut = client.submit(run_command, argv, key=f"{key}-{uuid.uuid4().hex[:8]}", pure=False, resources=resources)
        try:
            return await fut
        except WorkerClosing:
            continue  # its worker went away: run it again elsewhere (the shard resumes from its --out file)
        finally:
            fut.release()
    return 1, f"the worker closed under this shard {MAX_RESUBMITS} times"


async def _fan_out(spec: ClusterSpec, make_argv: Callable[[int, int], list[str]], n_shards: int | None,
                   workers: dict | None, log: Callable[[str], None]) -> int:
    async with connect(spec, workers=workers, log=log) as conn:
        m = n_shards or conn.expected_threads

        async def one(k: int) -> str:
            rc, tail = await _run_shard(conn.client, make_argv(k, m), f"shard-{k}-of-{m}", spec.resources)
            log(f"shard {k}/{m} finished (exit {rc})")
            last = tail.strip().splitlines()[-1] if tail.strip() else ""
            return "" if rc == 0 else f"shard {k}/{m} exit {rc}: {last}"

        failed = [f for f in await asyncio.gather(*(one(k) for k in range(m))) if f]
        if failed:
            raise UserError("; ".join(failed)[:600])
        return m


def fan_out(spec: ClusterSpec, make_argv: Callable[[int, int], list[str]], *, n_shards: int | None = None,
            n_local: int | None = None, log: Callable[[str], None] = lambda m: None) -> int:
    """Run the ``lumina-jax`` command lines ``make_argv(k, m)``, k = 0..m-1, as one Dask task each
    (``m`` = ``n_shards`` or the cluster's worker threads); returns ``m``.  A local cluster has
    ``n_local`` (default: ``spec.n_workers`` or 2) one-thread workers.  Raises UserError naming
    the shards that failed."""
    workers = None
    if spec.kind == "local":
        workers = local_workers(spec.n_workers or n_local or 2)
    return asyncio.run(_fan_out(spec, make_argv, n_shards, workers, log))
