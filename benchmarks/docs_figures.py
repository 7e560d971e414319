"""Regenerate the figures of docs/ (docs/*.png) with the commands that made them.

    python benchmarks/docs_figures.py --list                  # every figure: command, inputs present?, cost
    python benchmarks/docs_figures.py [--skip-expensive]      # every figure whose inputs are present
    python benchmarks/docs_figures.py --only NAME[,NAME] [--dry-run]

Each figure is one or more commands, run as subprocesses from the repository root in
dependency order (a figure that reads another one's results runs after it).  Inputs: the SN
2011fe data (--data, default ../shared/data/sn2011fe; read in place, never copied), a
LUMINA-SN binary (--lumina-bin or $LUMINA_BIN), the campaign stores of the shipped stage-1
emulator (campaigns/), and results directories made by earlier commands (runs/).  A figure
whose inputs are missing is skipped with one line ``skip NAME: reason``.  Exit status 1 when a
command fails or a figure named by --only cannot run, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# placeholders of the command templates, filled in by :func:`expand`
PY, DATA, LUMINA = "{python}", "{data}", "{lumina_bin}"
LJ = (PY, "-m", "lumina_jax")  # the `lumina-jax` command of the docs

SN2011FE_OBS = f"{DATA}/sn2011fe_observed_Bmax.csv"
SN2011FE_FIT = ("--observed", SN2011FE_OBS, "--redshift", "0.0008", "--ebv-mw", "0.009", "--prior", "t_exp=18,1",
                "--ridge", "none")
CAMPAIGNS = tuple(f"campaigns/stage1{s}.h5" for s in ("", "b", "c", "d", "e", "f"))
COVERAGE = ("check", "coverage", "--stage", "1", "--n", "50", "--chains", "2", "--warmup", "300", "--samples", "500")
COV_DIR = "runs/docs_coverage_stage1"
COVERAGE3 = ("check", "coverage", "--stage", "3", "--n", "20", "--chains", "2", "--warmup", "100", "--samples", "100",
             "--map-starts", "4", "--seed", "0")
COV3_DIR = "runs/docs_coverage_stage3"
CHAIN = "runs/sn2011fe"
STAGE3_OBS = "runs/check/stage3_obs"


@dataclasses.dataclass(frozen=True)
class Need:
    """One input of a figure: a path (relative to the repository root, or under {data}), or the
    LUMINA binary (``path`` = LUMINA).  ``made_by``: the figure whose commands make it."""

    path: str
    made_by: str | None = None
    how: str = ""  # how to get it when it is missing


@dataclasses.dataclass(frozen=True)
class Figure:
    """``steps``: run in order; a step is one command or several run at once (a tuple of
    commands), or ``("copy", SRC, DST)``.  ``cost``: rough wall time, from the docs."""

    steps: tuple
    needs: tuple[Need, ...]
    cost: str
    doc: str
    expensive: bool = False


def _data(*names: str) -> tuple[Need, ...]:
    return tuple(Need(f"{DATA}/{n}", how="the SN 2011fe data lie in ../shared/data/sn2011fe (--data)")
                 for n in names)


LUMINA_NEED = Need(LUMINA, how="give --lumina-bin (a LUMINA-SN binary built from its public source) or set "
                               "LUMINA_BIN")

def _coverage_figure(args: tuple, folder: str, png: str, cost: str) -> Figure:
    """``check coverage ARGS`` in two shards side by side under ``folder``, then merged into ``png``."""
    shard = tuple(LJ + args + ("--shard", f"{k}/2", "--out", f"{folder}/cov_{k}.json") for k in (0, 1))
    merge = LJ + args + ("--merge", f"{folder}/cov_0.json", "--merge", f"{folder}/cov_1.json",
                         "--out", f"{folder}/cov_all.json", "--plot", png, "--force")
    return Figure(steps=(shard, merge), needs=(), expensive=True, cost=cost, doc="docs/inference.md")


#: docs/NAME.png -> how it is made
FIGURES: dict[str, Figure] = {
    "sn2011fe_comparison": Figure(
        steps=((PY, "benchmarks/compare_sn2011fe.py", "--data", DATA, "--out", "docs/sn2011fe_comparison.png"),),
        needs=_data("sn2011fe.yml", "tardis_spectrum.csv", "sn2011fe_observed_Bmax.csv"),
        cost="~1 min (one synthesizer spectrum, compilation included)", doc="docs/forward_model.md"),
    "lumina_comparison": Figure(
        steps=((PY, "benchmarks/compare_lumina.py", "--lumina-bin", LUMINA, "--data", DATA,
                "--out", "docs/lumina_comparison.png"),),
        needs=_data("sn2011fe.yml", "tardis_spectrum.csv", "sn2011fe_observed_Bmax.csv") + (LUMINA_NEED,),
        cost="~15 min (two LUMINA-SN runs, 200,000 packets x 10 iterations, ~335 s each on one core; "
             "reused from runs/lumina_compare when done)", doc="docs/campaigns.md"),
    "lumina_comparison_transfer": Figure(
        steps=((PY, "benchmarks/compare_lumina.py", "--lumina-bin", LUMINA, "--data", DATA,
                "--workdir", "runs/lumina_compare_1m", "--n-packets", "1000000", "--models", "tardis_config",
                "--line-interaction", "macroatom", "--radiation-field", "transfer",
                "--out", "docs/lumina_comparison_transfer.png"),),
        needs=_data("sn2011fe.yml", "tardis_spectrum.csv", "sn2011fe_observed_Bmax.csv") + (LUMINA_NEED,),
        cost="~55 min (one LUMINA-SN run, 1,000,000 packets x 10 iterations, 3,120 s on one core beside "
             "other work; reused from runs/lumina_compare_1m when done)", doc="docs/forward_model.md"),
    "emulator_stage1_report": Figure(
        steps=(LJ + ("emulator", "report", "lumina_jax/checkpoints/stage1_synth.h5")
               + sum((("--data", c) for c in CAMPAIGNS), ()) + ("--plot", "docs/emulator_stage1_report.png",
                                                                "--force"),),
        needs=tuple(Need(c, how="made by the `lumina-jax generate` commands of lumina_jax/checkpoints/README.md "
                                "(47,268 synthesizer models, hours of CPU)") for c in CAMPAIGNS),
        cost="minutes (scores the 4,727 held-out models of the six stores)", doc="lumina_jax/checkpoints/README.md"),
    "npe_sbc": Figure(
        steps=(LJ + ("check", "sbc", "--stage", "1", "--sampler", "npe", "--n", "200", "--draws", "199", "--data",
                     "runs/npe/stage1_heldout.h5", "--out", "runs/docs_npe_sbc", "--force", "--quiet"),
               ("copy", "runs/docs_npe_sbc/sbc.png", "docs/npe_sbc.png")),
        needs=(Need("runs/npe/stage1_heldout.h5", how="made by `lumina-jax generate --stage 1 --synth-config "
                    "lumina_jax/configs/synth_campaign.yaml --batch-size 32 --n-models 300 --seed 202 --out "
                    "runs/npe/stage1_heldout.h5` (41 s on two cores; lumina_jax/checkpoints/README.md)"),),
        cost="~1 min (200 held-out posteriors of the shipped stage-1 NPE)", doc="docs/npe.md"),
    "sn2011fe_stage1_fit": Figure(
        steps=(LJ + ("infer", "--stage", "1") + SN2011FE_FIT + ("--out", "runs/docs_sn2011fe_stage1", "--force"),
               ("copy", "runs/docs_sn2011fe_stage1/spectrum_fit.png", "docs/sn2011fe_stage1_fit.png")),
        needs=_data("sn2011fe_observed_Bmax.csv"),
        cost="~2 min (stage-1 fit of SN 2011fe, 1 min 47 s on 2 cores, plots included)", doc="docs/inference.md"),
    "coverage_stage1": _coverage_figure(
        COVERAGE, COV_DIR, "docs/coverage_stage1.png",
        "EXPENSIVE: ~65 min (50 injections in two shards of 62-63 min, one core each, in parallel; "
        f"resumable from {COV_DIR}/)"),
    "coverage_stage3": _coverage_figure(
        COVERAGE3, COV3_DIR, "docs/coverage_stage3.png",
        "EXPENSIVE: ~12 min (20 injections of the shipped stage-3 emulator in two shards of 11 min, one "
        f"core each, in parallel; resumable from {COV3_DIR}/)"),
    "sn2011fe_chain": Figure(
        steps=(LJ + ("pipeline", "--stages", "1-3") + SN2011FE_FIT
               + ("--n-models", "6000", "--epochs", "800", "--patience", "100", "--workdir", CHAIN,
                  "--allow-unconverged"),
               LJ + ("infer", "--stage", "3") + SN2011FE_FIT
               + ("--out", STAGE3_OBS, "--checkpoint", f"{CHAIN}/stage3/emulator.ckpt", "--from",
                  f"{CHAIN}/stage2/results", "--force"),
               LJ + ("chain-report", f"{CHAIN}/stage1/results", f"{CHAIN}/stage2/results", STAGE3_OBS,
                     "--figure", "docs/sn2011fe_chain.png", "--force")),
        needs=_data("sn2011fe_observed_Bmax.csv"), expensive=True,
        cost=f"EXPENSIVE: ~55 min on 2 cores (the stage 1-3 pipeline, 50 min, resumable in {CHAIN}/; "
             "stage 3 again with 1,000 draws per chain)", doc="docs/sn2011fe.md"),
    "sn2011fe_abundance": Figure(
        steps=(LJ + ("chain-report", STAGE3_OBS, "--abundance", "docs/sn2011fe_abundance.png", "--force"),),
        needs=(Need(f"{STAGE3_OBS}/summary.json", made_by="sn2011fe_chain"),
               Need(f"{STAGE3_OBS}/posterior.nc", made_by="sn2011fe_chain")),
        cost="~1 min, given the stage-3 fit of sn2011fe_chain", doc="docs/sn2011fe.md"),
}


# ----------------------------------------------------------------------------- helpers
def expand(arg: str, values: dict) -> str:
    for key, val in values.items():
        arg = arg.replace(key, str(val))
    return arg


def commands(fig: Figure, values: dict) -> list[list[list[str]]]:
    """The figure's steps with the placeholders filled: per step, its commands."""
    out = []
    for step in fig.steps:
        group = step if isinstance(step[0], tuple) else (step,)
        out.append([[expand(a, values) for a in cmd] for cmd in group])
    return out


def show(cmd: list[str]) -> str:
    if cmd[0] == "copy":
        return "cp " + " ".join(shlex.quote(a) for a in cmd[1:])
    cmd = ["python" if a == sys.executable else a for a in cmd]
    if cmd[1:3] == ["-m", "lumina_jax"]:
        cmd = ["lumina-jax"] + cmd[3:]
    return " ".join(shlex.quote(a) for a in cmd)


def missing(fig: Figure, values: dict, made: set[str], failed: set[str] = frozenset()) -> str | None:
    """Why ``fig`` cannot run now (None when it can); ``made`` / ``failed``: figures of this run
    before it that succeeded / failed (a skipped one leaves what was there)."""
    for need in fig.needs:
        if need.made_by in failed:
            return f"figure {need.made_by}, which makes {expand(need.path, values)}, failed"
        if need.path == LUMINA:
            b = Path(values[LUMINA])
            if not (b if b.is_absolute() else ROOT / b).is_file():
                return f"no LUMINA-SN binary: {need.how}"
            continue
        if need.made_by in made:
            continue
        p = Path(expand(need.path, values))
        if not (p if p.is_absolute() else ROOT / p).exists():
            how = f"made by figure {need.made_by}" if need.made_by else need.how
            return f"{p} not found: {how}"
    return None


def lumina_path(given: str | None) -> str | None:
    """``--lumina-bin`` as an absolute path: a file (relative to the current directory) or a
    command on PATH; None when not given."""
    if not given:
        return None
    p = Path(given).expanduser()
    if p.is_file():
        return str(p.resolve())
    return shutil.which(given) or given


def order(names: list[str]) -> list[str]:
    """``names`` with every figure after the figures whose results it reads (table order otherwise)."""
    out: list[str] = []
    pending = [n for n in FIGURES if n in names]
    while pending:
        for n in pending:
            deps = {need.made_by for need in FIGURES[n].needs if need.made_by} & set(pending)
            if not deps:
                out.append(n)
                pending.remove(n)
                break
        else:  # a cycle in the table
            raise SystemExit(f"error: figures {', '.join(pending)} depend on each other")
    return out


def run_step(group: list[list[str]]) -> int:
    """Run one step's commands (several at once) from the repository root; the worst exit status."""
    if group[0][0] == "copy":
        src, dst = (ROOT / a for a in group[0][1:])
        if not src.is_file():
            print(f"error: {src} was not written", file=sys.stderr)
            return 1
        shutil.copyfile(src, dst)
        return 0
    for cmd in group:
        for a in cmd:  # parents of the files a command writes (coverage --out)
            if a.startswith("runs/") and a.endswith(".json"):
                (ROOT / a).parent.mkdir(parents=True, exist_ok=True)
    # commands side by side share the cores: one XLA thread each (README, *Shared cores*)
    env = {**os.environ, "LUMINA_JAX_SINGLE_THREAD": "1"} if len(group) > 1 else None
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env) for cmd in group]
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise


def main(argv=None) -> int:
    default_data = next((a / "shared" / "data" / "sn2011fe" for a in ROOT.parents
                         if (a / "shared" / "data" / "sn2011fe").exists()), ROOT.parent / "shared" / "data" / "sn2011fe")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print every figure's commands, inputs and cost")
    ap.add_argument("--only", help="comma-separated figure names (docs/NAME.png)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    ap.add_argument("--skip-expensive", action="store_true", help="leave out the figures marked EXPENSIVE")
    ap.add_argument("--data", type=Path, default=default_data,
                    help="folder of the SN 2011fe files (default ../shared/data/sn2011fe)")
    ap.add_argument("--lumina-bin", default=os.environ.get("LUMINA_BIN"),
                    help="LUMINA-SN binary (default $LUMINA_BIN)")
    args = ap.parse_args(argv)
    # paths relative to the repository root, where the commands run
    data = os.path.relpath(args.data.resolve(), ROOT)
    data = data if not data.startswith(os.path.join(os.pardir, os.pardir)) else str(args.data.resolve())
    values = {PY: sys.executable, DATA: data,
              LUMINA: lumina_path(args.lumina_bin) or "/path/to/lumina"}

    names = list(FIGURES)
    if args.only is not None:
        names = [n.strip().removesuffix(".png") for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in FIGURES]
        if unknown or not names:
            print(f"error: unknown figure {', '.join(map(repr, unknown)) or repr(args.only)} for --only; "
                  f"known: {', '.join(FIGURES)}", file=sys.stderr)
            return 2
    elif args.skip_expensive:
        names = [n for n in names if not FIGURES[n].expensive]

    if args.list:
        for n in order(names):
            fig = FIGURES[n]
            why = missing(fig, values, set())
            print(f"{n}  (docs/{n}.png; {fig.doc})")
            print(f"  cost:   {fig.cost}")
            print(f"  inputs: {'present' if why is None else 'MISSING: ' + why}")
            for group in commands(fig, values):
                for cmd in group:
                    print(f"  $ {show(cmd)}" + ("   # in parallel" if len(group) > 1 else ""))
        return 0

    made: set[str] = set()
    failed: set[str] = set()
    status = 0
    for n in order(names):
        fig = FIGURES[n]
        why = missing(fig, values, made, failed)
        if why is not None:
            print(f"skip {n}: {why}", flush=True)
            status = status or (1 if args.only is not None else 0)
            continue
        print(f"== {n}: {fig.cost}", flush=True)
        ok = True
        for group in commands(fig, values):
            for cmd in group:
                print(f"$ {show(cmd)}" + ("   # in parallel" if len(group) > 1 else ""), flush=True)
            if args.dry_run:
                continue
            rc = run_step(group)
            if rc != 0:
                print(f"error: figure {n}: the command above exited with status {rc}", file=sys.stderr, flush=True)
                ok = False
                break
        if not ok:
            status = 1
            failed.add(n)
        else:
            made.add(n)
    return status


if __name__ == "__main__":
    sys.exit(main())
