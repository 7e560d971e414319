"""``lumina-jax check coverage`` as a workflow: injections fitted as ``infer`` fits, saved after
every injection, resumed from the same file, split into shards (``shard=(k, m)``), merged from
shard files, or fanned out over a Dask cluster and merged.

The statistics themselves are :func:`lumina_jax.workflows.checks.coverage`; this module owns
the settings that must match for a resume or a merge, the coverage file and the fan-out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Callable

from lumina_jax.errors import UserError
from lumina_jax.strict_json import dumps


@dataclasses.dataclass(frozen=True)
class CoverageRun:
    """One coverage run.  ``sampler`` is the resolved :class:`SamplerConfig`; ``given`` holds the
    options as the user gave them (checkpoint, synth_config, emulator_sigma, config), passed on
    unchanged to the shards of a fan-out so that their recorded settings match this run's."""

    stage: int = 1
    n: int = 50
    noise: float = 0.02
    sampler_name: str = "nuts"
    warmup: int = 300
    samples: int = 300
    chains: int = 4
    map_starts: int = 32
    seed: int = 0
    simulator: str = "synth"
    checkpoint: Path | None = None
    synth_config: Path | None = None
    emulator_sigma: str | None = None
    config: Path | None = None
    out: Path | None = None
    shard: tuple[int, int] | None = None
    merge: tuple[Path, ...] = ()


def read_coverage(path: Path) -> dict:
    """A coverage file written by :func:`run_coverage` (checked: settings and injections)."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a readable coverage file ({e})") from None
    if not (isinstance(d, dict) and isinstance(d.get("settings"), dict) and isinstance(d.get("injections"), list)
            and all(isinstance(r, dict) and "index" in r for r in d["injections"])):
        raise UserError(f"{path} is not a coverage file of `lumina-jax check coverage` (needs 'settings' and "
                        "'injections')")
    return d


def _shard_argv(run: CoverageRun, shard_dir: Path, k: int, m: int) -> list[str]:
    """The ``lumina-jax`` command line of shard k of m (run on a cluster worker)."""
    argv = ["check", "coverage", "--stage", str(run.stage), "--n", str(run.n), "--noise", repr(run.noise),
            "--sampler", run.sampler_name, "--warmup", str(run.warmup), "--samples", str(run.samples),
            "--chains", str(run.chains), "--map-starts", str(run.map_starts), "--seed", str(run.seed),
            "--simulator", run.simulator, "--shard", f"{k}/{m}",
            "--out", str((shard_dir / f"{k}-of-{m}.json").resolve()), "--json"]
    given = [("--checkpoint", run.checkpoint),
             ("--synth-config", run.synth_config if run.simulator == "synth" else None),
             ("--emulator-sigma", run.emulator_sigma), ("--config", run.config)]
    for opt, v in given:  # as given: the settings recorded in the shard files must match ours
        argv += [opt, str(v)] if v is not None else []
    return argv


def shard_threads(shard):
    """One BLAS thread while a shard (``--shard K/M``) fits: shards run side by side on the
    cores, and OpenBLAS's spinning threads (the LAPACK behind JAX's CPU linear algebra) then
    starve each other -- two stage-1 shards on 2 cores took 496 s for one injection each with
    OpenBLAS's default threads, 106 s with one (Dask workers set one through their nanny)."""
    if shard is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def run_coverage(run: CoverageRun, sampler, *, cluster=None, log: Callable[[str], None] = print,
                 write_guard: Callable = contextlib.nullcontext) -> tuple[dict, list[str]]:
    """Fit the injections of ``run`` not yet done (in ``run.out``, the ``run.merge`` files or the
    shards of ``cluster``, a :class:`runners.cluster.ClusterSpec`) and return (the coverage
    result with its settings, the free parameter names).  ``run.out`` is rewritten after every
    injection, inside ``write_guard``."""
    from lumina_jax.inference.density import make_setup
    from lumina_jax.workflows import checks, infer, loaders
    from lumina_jax.workflows.chaining import check_emulator_stage
    from lumina_jax.params import CONFIG_DIR
    from lumina_jax.workflows.config import config_record, default_checkpoint, load_inference_config

    cfg = load_inference_config(run.config)
    checkpoint = run.checkpoint or default_checkpoint(run.stage)
    emu = loaders.get_emulator(checkpoint)
    check_emulator_stage(emu.space, run.stage)
    lk = cfg.likelihood
    if run.emulator_sigma:
        lk = dataclasses.replace(lk, emulator_sigma=run.emulator_sigma)
        cfg = dataclasses.replace(cfg, likelihood=lk)
    setup = make_setup(emu.space, n_poly=lk.n_poly, f_sys_range=lk.f_sys_range, f_sys_prior=lk.f_sys_prior,
                       f_sys_scale=lk.f_sys_scale, log_scale_sd=lk.log_scale_sd, poly_sd=lk.poly_sd,
                       ordering_softness=lk.ordering_softness, box_link=lk.link(run.stage))
    synth_config = None
    if run.simulator == "synth":
        synth_config = run.synth_config or CONFIG_DIR / "synth_campaign.yaml"
        if not Path(synth_config).is_file():
            raise UserError(f"--synth-config {synth_config} does not exist")
        simulate = loaders.get_synthesizer(emu.space, synth_config).spectrum
    elif run.simulator == "emulator":
        import numpy as np

        simulate = lambda th: (np.asarray(emu.wavelength), np.asarray(emu.spectrum(th)))  # noqa: E731
    else:
        raise UserError("--simulator must be synth or emulator")
    settings = {"stage": run.stage, "n": run.n, "noise": run.noise, "sampler": run.sampler_name,
                "warmup": run.warmup, "samples": run.samples, "chains": run.chains, "map_starts": run.map_starts,
                "seed": run.seed, "simulator": run.simulator,
                "synth_config": str(synth_config) if run.simulator == "synth" else None,
                "checkpoint": str(checkpoint)}
    if lk.emulator_sigma != "varying":  # (absent from files written before the option existed)
        settings["emulator_sigma"] = lk.emulator_sigma
    if run.config is not None:  # another config: what it resolved to must match for a resume / merge
        settings["config"] = config_record(dataclasses.replace(cfg, sampler=sampler))
    if run.simulator == "emulator":  # mocks are the prediction itself (before: re-preprocessed; such files do not resume)
        settings["mock_mean"] = "prediction"

    done, emu_error_prev, merged_wall = [], None, 0.0

    def not_done(records):
        have = {d["index"] for d in done}
        return [r for r in records if r["index"] not in have]

    merge = list(run.merge)
    if cluster is not None:  # every shard is `check coverage --shard k/m` on a worker, merged below
        from runners.cluster import fan_out

        out = run.out
        shard_dir = Path(f"{out}.shards") if out is not None else Path(tempfile.mkdtemp(prefix="coverage-shards-"))
        shard_dir.mkdir(exist_ok=True)
        m = fan_out(cluster, lambda k, m: _shard_argv(run, shard_dir, k, m), log=log)
        merge += [shard_dir / f"{k}-of-{m}.json" for k in range(m)]
    for path in merge:
        prev = read_coverage(path)
        other = {k: v for k, v in prev["settings"].items() if k != "shard"}
        if other != settings:
            raise UserError(f"--merge {path} holds a run with other settings {prev.get('settings')}")
        new = not_done(prev["injections"])
        done += new
        emu_error_prev = emu_error_prev or prev.get("emulator_error")
        merged_wall += float(prev.get("wall_s") or 0.0)
        log(f"merged {path}: {len(new)} injections")
    settings["shard"] = None if run.shard is None else f"{run.shard[0]}/{run.shard[1]}"
    if run.out is not None and run.out.exists():
        prev = read_coverage(run.out)
        if prev.get("settings") != settings:
            raise UserError(f"{run.out} holds a run with other settings {prev.get('settings')}; remove it or choose "
                            "another --out")
        done += not_done(prev["injections"])
        log(f"resuming {run.out}: {len(done)}/{run.n} injections done")

    def save(records, final=None):
        if run.out is None:
            return
        obj = final if final is not None else {"settings": settings, "complete": False, "injections": records}
        tmp = run.out.with_suffix(run.out.suffix + ".tmp")
        with write_guard():
            tmp.write_text(dumps(obj, indent=1))
            tmp.replace(run.out)

    def after_injection(records):
        # every injection compiles its own closures and JAX's caches keep them all alive (~0.3 GB
        # per stage-1 injection: a 50-injection run died of LLVM "Cannot allocate memory" after
        # 40).  A coverage run owns its process, so drop them (checks.coverage leaves caches alone).
        import jax

        jax.clear_caches()
        save(records)

    emu_basis, corr_length = infer.emulator_error_model(emu, lk, log=log)
    with shard_threads(run.shard):
        res = checks.coverage(setup, emu, simulate, n_injections=run.n, noise_frac=run.noise,
                              sampler=dataclasses.replace(sampler, map_starts=run.map_starts), seed=run.seed,
                              likelihood=lk, emu_basis=emu_basis, corr_length=corr_length,
                              emu_var_scale=infer.emulator_error_scale(emu, lk, emu_basis, log),
                              log=log, done=done, on_record=after_injection, shard=run.shard,
                              simulates_prediction=run.simulator == "emulator")
    res["emulator_error"] = res["emulator_error"] or emu_error_prev
    res["wall_s"] += merged_wall  # the shards' fitting time (they ran in parallel)
    res["simulator"] = run.simulator
    res["settings"] = settings
    res["complete"] = True
    save(None, res)
    return res, list(setup.free)

