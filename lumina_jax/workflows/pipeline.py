"""``lumina-jax pipeline``: generate -> train -> calibrate -> infer for each stage, resumable at each step.

Layout under ``workdir``::

    stage{N}/train.h5       training campaign (runners.campaign.generate; resumed when present)
    stage{N}/emulator.ckpt  emulator checkpoint (workflows.emulator.train, as `lumina-jax train`;
                            skipped when present), then its likelihood covariance factor
                            (workflows.emulator.calibrate, as `lumina-jax emulator calibrate`;
                            skipped when the checkpoint records one or has no error basis)
    stage{N}/results/       inference results (skipped when summary.json exists and converged)

Stage N > first is generated ``--from`` stage N-1's results (with the pipeline's ``--relax``
rule), so its emulator is trained in the box that inference then samples.  A step is complete
when its output exists: the store is resumed (the runner skips done jobs), the checkpoint file
exists (written atomically by the trainer), the results' summary.json exists (written last).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from lumina_jax.errors import UserError
from lumina_jax.inference.diagnostics import remedy
from lumina_jax.inference.sampling import SamplerConfig
from lumina_jax.params import CONFIG_DIR
from lumina_jax.workflows import chaining


@dataclasses.dataclass
class PipelineOptions:
    stages: str = "1-3"
    backend: str = "synth"
    n_models: int = 10000
    workdir: Path = Path("runs/pipeline")
    observed: Path | None = None
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    lumina_bin: Path | None = None
    lumina_ref: Path | None = None
    train_config: Path | None = None
    allow_unconverged: bool = False
    synth_config: Path | None = CONFIG_DIR / "synth_campaign.yaml"  # the shipped stage-1 emulator's setting
    batch_size: int = 32  # synth models per batched call (32 suits a CPU)
    epochs: int | None = None  # training overrides (None: the training config's)
    patience: int | None = None
    #: stage-1 emulator used as is (no stage-1 campaign or training); None: generate and train one
    stage1_emulator: Path | None = None
    redshift: float | None = None  # observed spectrum's heliocentric redshift (None: the config's)
    ebv_mw: float | None = None  # Milky-Way E(B-V) to correct
    ebv_host: float | None = None  # host E(B-V) to correct
    priors: dict = dataclasses.field(default_factory=dict)  # informative priors {name: (mean, sd)}, every stage
    relax: str = chaining.DEFAULT_RELAX  # the rule that builds stage N+1's box from stage N's fit


def parse_stages(text: str) -> list[int]:
    try:
        if "-" in text:
            a, b = (int(x) for x in text.split("-"))
            out = list(range(a, b + 1))
        else:
            out = [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--stages must look like 1-3 or 1,2, got {text!r}") from None
    if not out or any(s not in (1, 2, 3) for s in out) or out != sorted(set(out)):
        raise UserError(f"--stages must be increasing stages among 1, 2, 3, got {text!r}")
    return out


def check_options(opts: PipelineOptions) -> None:
    """Every input the stages will read, checked before the first campaign starts (hours of work
    otherwise precede a typo's error): numbers, the backend, the observed spectrum (read and
    validated), the training, synthesizer and inference configs (loaded with the overrides)."""
    from lumina_jax.observed import read_spectrum

    for flag, v in (("--n-models", opts.n_models), ("--batch-size", opts.batch_size), ("--epochs", opts.epochs),
                    ("--patience", opts.patience)):
        if v is not None and v < 1:
            raise UserError(f"{flag} must be >= 1, got {v}")
    if opts.backend not in ("synth", "lumina"):
        raise UserError(f"--backend must be synth or lumina, got {opts.backend!r}")
    chaining.check_relax(opts.relax)
    if opts.observed is not None:
        read_spectrum(opts.observed)
    if opts.stage1_emulator is not None and not Path(opts.stage1_emulator).is_file():
        raise UserError(f"--stage1-emulator {opts.stage1_emulator} is not a file")
    for flag, v in (("--redshift", opts.redshift), ("--ebv-mw", opts.ebv_mw), ("--ebv-host", opts.ebv_host)):
        if v is not None and not (v == v and 0 <= v < 10):
            raise UserError(f"{flag} must be a number in [0, 10), got {v}")
    for flag, path in (("--train-config", opts.train_config),
                       ("--synth-config", opts.synth_config if opts.backend == "synth" else None)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{flag} {path} is not a file")
    try:
        from lumina_jax.emulator import load_train_config
    except ImportError as exc:
        raise UserError(f"the emulator package is not available: {exc}") from None
    load_train_config(opts.train_config, max_epochs=opts.epochs, patience=opts.patience)
    if opts.backend == "synth" and opts.synth_config is not None:
        from lumina_jax.synth.config import SynthConfig

        SynthConfig.load(opts.synth_config)


def run_pipeline(opts: PipelineOptions, *, log: Callable[[str], None] = print,
                 steps: dict[str, Callable] | None = None) -> list[Path]:
    """Run the stages (inputs checked first, :func:`check_options`); ``steps`` may replace
    "generate", "train", "needs_calibration", "calibrate", "infer" (tests)."""
    stages = parse_stages(opts.stages)
    check_options(opts)
    steps = dict(steps or {})
    steps.setdefault("generate", _generate)
    steps.setdefault("train", lambda o, s, store, ckpt: _train(o, s, store, ckpt, log))
    steps.setdefault("needs_calibration", _needs_calibration)
    steps.setdefault("calibrate", lambda o, s, store, ckpt: _calibrate(o, s, store, ckpt, log))
    steps.setdefault("infer", _infer)
    wd = Path(opts.workdir)
    prev: Path | None = None
    if stages[0] > 1:
        prev = wd / f"stage{stages[0] - 1}" / "results"
        if not (prev / "summary.json").is_file():
            raise UserError(f"stage {stages[0]} needs the stage-{stages[0] - 1} results at {prev}")
    done = []
    for s in stages:
        sd = wd / f"stage{s}"
        sd.mkdir(parents=True, exist_ok=True)
        store, ckpt, res = sd / "train.h5", sd / "emulator.ckpt", sd / "results"
        summ = res / "summary.json"
        if s == 1 and opts.stage1_emulator is not None:
            ckpt = Path(opts.stage1_emulator)
            log(f"stage 1: emulator {ckpt} (no stage-1 campaign or training)")
            _infer_step(opts, steps, log, s, ckpt, prev, res)
            prev = res
            done.append(res)
            continue
        # an existing store is resumed: the runner reruns only pending / retryable jobs, so a
        # complete store costs nothing
        log(f"stage {s}: generate {opts.n_models} models ({opts.backend}) -> {store}"
            + (" (resume)" if store.exists() else ""))
        steps["generate"](opts, s, store, prev)
        if ckpt.exists():
            log(f"stage {s}: emulator exists, skipping train ({ckpt})")
        else:
            log(f"stage {s}: train emulator -> {ckpt}")
            steps["train"](opts, s, store, ckpt)
        if steps["needs_calibration"](ckpt):
            log(f"stage {s}: calibrate the emulator-error covariance of {ckpt} on its validation models"
                + (f" (the results in {res} were fitted before; delete them to refit)" if summ.is_file() else ""))
            steps["calibrate"](opts, s, store, ckpt)
        _infer_step(opts, steps, log, s, ckpt, prev, res)
        prev = res
        done.append(res)
    return done


def _infer_step(opts: PipelineOptions, steps: dict, log: Callable[[str], None], s: int, ckpt: Path,
                prev: Path | None, res: Path) -> None:
    """Fit stage ``s`` unless converged results exist; stop the pipeline on an unconverged fit."""
    summ = res / "summary.json"
    if summ.is_file() and (json.loads(summ.read_text()).get("converged") or opts.allow_unconverged):
        log(f"stage {s}: results exist, skipping infer ({res})")
    else:
        log(f"stage {s}: infer -> {res}")
        steps["infer"](opts, s, ckpt, prev, res)
    summary = json.loads(summ.read_text())
    if not summary.get("converged") and not opts.allow_unconverged:
        problems = summary.get("problems", [])
        raise UserError(f"stage {s} did not converge ({'; '.join(problems)}); stopping the pipeline "
                        f"({remedy(problems, opts.sampler.name)} to go on)")


def _generate(opts: PipelineOptions, stage: int, store: Path, prev: Path | None) -> None:
    try:
        from runners.campaign import GenerateOptions, generate
    except ImportError as exc:
        raise UserError(f"the campaign runner (runners.campaign) is not available: {exc}") from None
    synth_config = None
    if opts.backend == "synth" and opts.synth_config is not None:
        synth_config = str(opts.synth_config)
        if not Path(synth_config).is_file():
            raise UserError(f"synthesizer config not found: {synth_config}")
    resume = store.exists()  # a resumed store keeps the box it was made in
    generate(GenerateOptions(stage=stage, out=store, backend=opts.backend, n_models=None if resume else opts.n_models,
                             resume=resume, from_dir=None if resume else prev,
                             relax=chaining.DEFAULT_RELAX if resume else opts.relax, seed=opts.sampler.seed,
                             lumina_bin=opts.lumina_bin, lumina_ref=opts.lumina_ref, synth_config=synth_config,
                             batch_size=opts.batch_size, checkpoint_every=200))


def _train(opts: PipelineOptions, stage: int, store: Path, ckpt: Path, log: Callable[[str], None] = print) -> None:
    from lumina_jax.workflows import emulator

    def on_epoch(epoch, max_epochs, train_loss, val_loss, best):
        if epoch % 50 == 0:
            log(f"stage {stage}: epoch {epoch}/{max_epochs}, train {train_loss:.3e}, val {val_loss:.3e} (best {best})")

    s = emulator.train([store], ckpt, config=opts.train_config, on_epoch=on_epoch,
                       overrides={"max_epochs": opts.epochs, "patience": opts.patience})
    log(f"stage {stage}: emulator written, validation mean fractional error "
        f"{100 * s['val_mean_fractional_error']:.2f} % ({s['train_seconds']:.0f} s)")


def _needs_calibration(ckpt: Path) -> bool:
    from lumina_jax.emulator._checkpoint import needs_error_cov_calibration

    return needs_error_cov_calibration(ckpt)


def _calibrate(opts: PipelineOptions, stage: int, store: Path, ckpt: Path, log: Callable[[str], None] = print) -> None:
    from lumina_jax.workflows import emulator

    emulator.calibrate(ckpt, [store], log=log)


def _infer(opts: PipelineOptions, stage: int, ckpt: Path, prev: Path | None, res: Path) -> None:
    from lumina_jax.workflows import infer as api

    req = api.InferRequest(stage=stage, observed=opts.observed, checkpoint=ckpt, previous=prev, out=res,
                           relax=opts.relax if prev is not None else chaining.DEFAULT_RELAX,
                           sampler=opts.sampler, redshift=opts.redshift, ebv_mw=opts.ebv_mw, ebv_host=opts.ebv_host,
                           priors=dict(opts.priors))
    api.infer(req)
