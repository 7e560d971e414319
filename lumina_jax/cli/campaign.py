"""``lumina-jax generate`` (run a simulation campaign) and ``lumina-jax dataset info``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from lumina_jax.cli import _interrupt
from lumina_jax.cli._output import dumps_json
from lumina_jax.errors import UserError
from lumina_jax.workflows.chaining import DEFAULT_RELAX

dataset_app = typer.Typer(help="Inspect campaign stores (training sets).", no_args_is_help=True)


def _parse_gpus(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.split(",") if x.strip() != "")
    except ValueError:
        raise UserError(f"--gpus must be a comma-separated list of device numbers, got {text!r}") from None


def _parse_spec_range(text: str) -> tuple[float, float, int]:
    try:
        lo, hi, n = text.split(",")
        out = (float(lo), float(hi), int(n))
    except ValueError:
        raise UserError(f"--spec-range must be MIN,MAX,NBINS (Angstrom), got {text!r}") from None
    if not (0 < out[0] < out[1] and out[2] >= 2):
        raise UserError(f"--spec-range needs 0 < MIN < MAX and NBINS >= 2, got {text!r}")
    return out


def _parse_lum_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--lum-range must be LOW,HIGH (emitted / requested luminosity), got {text!r}") from None
    if not (0 <= lo < hi):
        raise UserError(f"--lum-range needs 0 <= LOW < HIGH, got {text!r}")
    return lo, hi


def _export_reference(space, folder):
    """``--lumina-ref auto``: lumina_jax.lumina_export.campaign_reference, with a status line."""
    from rich.console import Console

    from lumina_jax.lumina_export import campaign_reference

    with Console(stderr=True).status("exporting the LUMINA reference") as st:
        path = campaign_reference(space, folder, progress=lambda m: st.update(f"LUMINA reference: {m}"))
    typer.echo(f"wrote LUMINA reference {path}", err=True)
    return path


def _check_numbers(**options) -> None:
    """Lower bounds of the numeric options (``runners.campaign.plan`` checks the others).

    ``options`` maps an option name (``jobs_per_gpu``) to ``(value, lowest allowed)``; a ``None``
    value (not given) passes."""
    for name, (value, low) in options.items():
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def _fmt_eta(s: float) -> str:
    if not math.isfinite(s):
        return "--:--"
    s = int(s)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def generate(
    stage: int = typer.Option(..., "--stage", help="Stage whose parameter space is sampled (1, 2 or 3)."),
    n_models: Optional[int] = typer.Option(None, "--n-models", help="Number of models K (new campaign)."),
    backend: str = typer.Option("synth", "--backend", help="Forward model: 'synth' (embedded JAX) or 'lumina'."),
    out: Path = typer.Option(..., "--out", help="Campaign store FILE.h5 (created; or continued with --resume)."),
    resume: bool = typer.Option(False, "--resume", help="Continue FILE.h5: run pending and retryable failed jobs."),
    from_dir: Optional[Path] = typer.Option(None, "--from", help="Previous stage's RESULTS_DIR (summary.json): "
                                            "sample the box around its best fit that --relax builds."),
    relax: str = typer.Option(DEFAULT_RELAX, "--relax", help="Box around the --from fit: 'margin' (+-10 % of "
                              "the best fit) or 'union' (its hull with the fit's central 99.7 % interval)."),
    lumina_bin: Optional[Path] = typer.Option(None, "--lumina-bin", help="LUMINA-SN binary (GPU workers, and CPU "
                                              "workers unless --lumina-cpu-bin)."),
    lumina_cpu_bin: Optional[Path] = typer.Option(None, "--lumina-cpu-bin", help="CPU build of LUMINA for CPU workers."),
    lumina_ref: Optional[Path] = typer.Option(None, "--lumina-ref", help="LUMINA reference (atomic-data) directory, "
                                              "or 'auto': export one for the campaign's stage (our atomic data, the "
                                              "plasma state at the box centre) into FILE.ref beside the store."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU workers, e.g. 0,1 (CUDA_VISIBLE_DEVICES per worker)."),
    jobs_per_gpu: int = typer.Option(1, "--jobs-per-gpu", help="Concurrent LUMINA runs per GPU."),
    gpu_threads: int = typer.Option(1, "--gpu-threads", help="OMP_NUM_THREADS of each GPU job."),
    cpu_workers: Optional[int] = typer.Option(None, "--cpu-workers", help="LUMINA CPU workers M "
                                              "(default 1 without --gpus, else 0)."),
    cpu_threads: Optional[int] = typer.Option(None, "--cpu-threads", help="OMP_NUM_THREADS per CPU worker "
                                              "(default: cores / M; never inherited)."),
    n_packets: int = typer.Option(200_000, "--n-packets", help="LUMINA packets per iteration."),
    n_iters: int = typer.Option(10, "--n-iters", help="LUMINA iterations."),
    spectrum: str = typer.Option("rotation", "--spectrum", help="LUMINA spectrum kept: rotation, real or formal."),
    spec_range: str = typer.Option("500,20000,2000", "--spec-range", help="LUMINA_SPEC_RANGE MIN,MAX,NBINS (Angstrom)."),
    nlte: bool = typer.Option(False, "--nlte", help="Run LUMINA with NLTE."),
    nlte_start_iter: int = typer.Option(0, "--nlte-start-iter", help="First iteration with NLTE."),
    dynamic_transprob: bool = typer.Option(False, "--dynamic-transprob", help="Set LUMINA_DYNAMIC_TRANSPROB=1 "
                                           "(needed with expand_atomic_data.py references)."),
    lum_range: str = typer.Option("0.5,2", "--lum-range", help="LUMINA: accepted emitted / requested luminosity "
                                  "LOW,HIGH (spectrum over the grid, and stdout's last L_emitted); outside it a "
                                  "model fails as invalid_output."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Scratch directory for the per-job "
                                            "directories (default FILE.work beside the store)."),
    keep_workdirs: bool = typer.Option(False, "--keep-workdirs", help="Keep the working directories of "
                                       "successful jobs (failed ones are always kept)."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Checkpoint every N finished attempts."),
    timeout: float = typer.Option(600.0, "--timeout", help="Per-job timeout in seconds (LUMINA)."),
    max_attempts: int = typer.Option(3, "--max-attempts", help="Attempts per job before it counts as failed."),
    seed: int = typer.Option(0, "--seed", help="Seed (>= 0) of the Latin-hypercube design (and of LUMINA's "
                             "per-attempt seeds)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Models per vmapped synthesizer call."),
    synth_workers: int = typer.Option(1, "--synth-workers", help="Synth workers sharing the device, >= 1 (2 overlaps "
                                      "evaluation of one batch with storing the previous one: for a GPU; on a "
                                      "CPU 1 is faster)."),
    synth_factory: str = typer.Option("lumina_jax.synth:Synthesizer.default", "--synth-factory",
                                      help="module:callable building the synthesizer from a ParameterSpace."),
    synth_config: Optional[Path] = typer.Option(None, "--synth-config", help="Synthesizer YAML (default "
                                                "lumina_jax/configs/synth.yaml; lumina_jax/configs/synth_campaign.yaml is the cheaper "
                                                "training-set setting)."),
    executor: str = typer.Option("inprocess", "--executor", help="Where the jobs run: 'inprocess' (workers of this "
                                 "process) or 'dask' (a Dask cluster: --scheduler or --cluster; needs the cluster "
                                 "extra, pip install -e .[cluster])."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="--executor dask: address of a running Dask "
                                            "scheduler, e.g. tcp://node1:8786."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="--executor dask: start a cluster: local[:N] (N "
                                          "worker processes on this machine), slurm or pbs (batch jobs, "
                                          "--cluster-config)."),
    cluster_config: Optional[Path] = typer.Option(None, "--cluster-config", help="YAML: the batch jobs of "
                                                  "--cluster slurm|pbs (see docs/campaigns.md)."),
    max_in_flight: Optional[int] = typer.Option(None, "--max-in-flight", help="--executor dask: tasks submitted at "
                                                "once (default 2 x the cluster's worker threads)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary at the end."),
) -> None:
    """Run a simulation campaign into a crash-safe HDF5 store (the emulator's training set).

    Exit codes: 0 when at least one job of this run succeeded (or none was left to run);
    2 on bad input, or when the first attempts all failed (broken setup); 3 when jobs ran
    and none succeeded (the store is written; see `dataset info`); 130 when interrupted.
    """
    from runners.backends.lumina import LuminaSettings
    from runners.campaign import GenerateOptions
    from runners.campaign import generate as run_generate

    _check_numbers(seed=(seed, 0), synth_workers=(synth_workers, 1), jobs_per_gpu=(jobs_per_gpu, 1),
                   gpu_threads=(gpu_threads, 1), cpu_threads=(cpu_threads, 1), n_packets=(n_packets, 1),
                   n_iters=(n_iters, 1), nlte_start_iter=(nlte_start_iter, 0))
    if seed >= 2**63:
        raise UserError(f"--seed must be below 2**63, got {seed}")
    if spectrum not in ("rotation", "real", "formal"):
        raise UserError(f"--spectrum must be rotation, real or formal, got {spectrum!r}")
    settings = LuminaSettings(n_packets=n_packets, n_iters=n_iters, spectrum=spectrum, nlte=nlte,
                              nlte_start_iter=nlte_start_iter, spec_range=_parse_spec_range(spec_range),
                              extra_env=(("LUMINA_DYNAMIC_TRANSPROB", "1"),) if dynamic_transprob else (),
                              lum_range=_parse_lum_range(lum_range))
    opts = GenerateOptions(
        stage=stage, out=out, backend=backend, n_models=n_models, resume=resume, from_dir=from_dir, relax=relax, seed=seed,
        checkpoint_every=checkpoint_every, max_attempts=max_attempts, timeout_s=timeout, lumina_bin=lumina_bin,
        lumina_cpu_bin=lumina_cpu_bin, lumina_ref=lumina_ref, make_reference=_export_reference,
        gpus=_parse_gpus(gpus), jobs_per_gpu=jobs_per_gpu,
        gpu_threads=gpu_threads, cpu_workers=cpu_workers, cpu_threads=cpu_threads, work_dir=work_dir,
        keep_workdirs=keep_workdirs, lumina_settings=settings, batch_size=batch_size, synth_workers=synth_workers,
        synth_factory=synth_factory, synth_config=str(synth_config) if synth_config else None,
        executor=executor, scheduler=scheduler, cluster=cluster, cluster_config=cluster_config,
        max_in_flight=max_in_flight)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), console=console, disable=quiet, transient=False,
                   refresh_per_second=4)
    state = {}

    def on_start(store):
        c = store.counts()
        state["task"] = bar.add_task(f"stage {store.space.stage} {backend}", total=store.n,
                                     completed=c["done"] + c["failed"], info="")
        bar.start()
        state["started"] = True

    def on_progress(p):
        if "task" not in state:
            return
        rates = "  ".join(f"{k} {p.rate(k):.3g}/s" for k in sorted(p.by_kind))
        bar.update(state["task"], completed=p.n_done + p.n_failed,
                   info=f"done {p.n_done}  failed {p.n_failed}  ETA {_fmt_eta(p.eta_s())}  {rates}")

    def on_warning(msg):
        typer.secho(f"warning: {msg}", err=True, fg=typer.colors.YELLOW)

    try:
        store, prog = run_generate(opts, on_start=on_start, on_progress=on_progress, on_warning=on_warning,
                                   on_message=lambda m: typer.echo(m, err=True))
    except KeyboardInterrupt:
        if state.pop("started", False):
            bar.stop()
        if Path(opts.out).exists():
            _interrupt.report(f"progress checkpointed in {opts.out}; continue with --resume")
        else:
            _interrupt.report("no job ran; no store was written")
        raise typer.Exit(130)
    finally:
        if state.pop("started", False):
            bar.stop()
    _interrupt.kept(f"the campaign is checkpointed in {opts.out}")
    summary = {"out": str(opts.out), "counts": store.counts(), "elapsed_s": round(prog.elapsed_s, 3),
               "n_run": prog.n_todo_start, "checkpoints": prog.n_checkpoints,
               "throughput_per_s": {k: round(prog.rate(k), 4) for k in prog.by_kind}}
    if json_out:
        typer.echo(dumps_json(summary))
    else:
        c = summary["counts"]
        typer.echo(f"{opts.out}: {c['done']} done, {c['failed']} failed, {c['pending']} pending "
                   f"({prog.elapsed_s:.1f} s, {prog.n_checkpoints} checkpoints)")
    n_ok = sum(s.done for s in prog.by_kind.values())
    if prog.n_todo_start > 0 and n_ok == 0:
        from runners.store import store_info

        kinds = ", ".join(f"{k} x{v}" for k, v in store_info(opts.out)["failure_kinds"].items())
        typer.secho(f"error: none of the {prog.n_todo_start} jobs run succeeded ({kinds or 'none finished'}); "
                    f"the store is written: see `lumina-jax dataset info {opts.out}` and the per-job logs",
                    err=True, fg=typer.colors.RED)
        raise typer.Exit(3)


@dataset_app.command("info")
def info(
    path: Path = typer.Argument(..., help="Campaign store FILE.h5."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Counts by status, failure reasons and provenance of a campaign store."""
    from runners.store import store_info

    d = store_info(path)
    if json_out:
        typer.echo(dumps_json(d, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    a = d["attrs"]
    con.print(f"[bold]{d['path']}[/]: stage {a.get('stage')} campaign, backend {a.get('backend')}, "
              f"{d['n_models']} models x {d['dim']} parameters, {d['n_wave']} wavelengths")
    c = d["counts"]
    con.print(f"done {c['done']}  failed {c['failed']} ({d['retryable_failed']} retryable)  pending {c['pending']}")
    if d["failure_kinds"]:
        t = Table("failure kind", "jobs", title="failures")
        for k, v in d["failure_kinds"].items():
            t.add_row(k, str(v))
        con.print(t)
        t = Table("reason (first line)", "jobs")
        for k, v in d["failure_reasons"].items():
            t.add_row(k, str(v))
        con.print(t)
    if d["done_by_worker"]:
        con.print("done by worker: " + ", ".join(f"{k} {v}" for k, v in d["done_by_worker"].items()))
    if d["diagnostics_done"]:
        t = Table("figure (done models)", "median", "min", "max", "models")
        for k, v in d["diagnostics_done"].items():
            t.add_row(k, f"{v['median']:.4g}", f"{v['min']:.4g}", f"{v['max']:.4g}", str(v["n"]))
        con.print(t)
    t = Table("provenance", "value")
    for k in ("created", "updated", "host", "lumina_jax_version", "format_version", "seed", "config_hash",
              "binary_path", "binary_sha256", "lumina_ref", "lumina_ref_sha256", "synth", "n_checkpoints",
              "max_attempts"):
        if a.get(k) not in (None, ""):
            t.add_row(k, str(a[k]))
    con.print(t)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.add_typer(dataset_app, name="dataset")
