"""``lumina-jax train-npe`` and ``lumina-jax check sbc``: amortised neural posterior estimation."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lumina_jax.cli import _interrupt
from lumina_jax.cli._output import check_out_dir, check_out_file, dumps_json
from lumina_jax.errors import UserError


def _pair(text: str, option: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{option} must look like LO,HI, got {text!r}") from None
    if not lo < hi:
        raise UserError(f"{option}: need LO < HI, got {text}")
    return lo, hi


def _emulator_preprocess(checkpoint: Optional[Path], stage: int):
    from lumina_jax.workflows.loaders import get_emulator
    from lumina_jax.workflows.config import default_checkpoint

    emu = get_emulator(checkpoint or default_checkpoint(stage))
    return emu.settings.preprocess


def _progress(total: int, quiet: bool, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=quiet), label, total


def train_npe(
    stage: int = typer.Option(..., "--stage", help="Stage of the campaign stores (1, 2 or 3)."),
    data: List[Path] = typer.Option(..., "--data", help="Campaign store of the synthesizer (repeatable)."),
    out: Path = typer.Option(..., "--out", help="NPE checkpoint to write (HDF5)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Emulator whose preprocessing the NPE "
                                              "uses (default: the stage's shipped one)."),
    band: str = typer.Option("3300,9700", "--band", help="Rest-frame range LO,HI (A) the NPE reads; spectra must "
                             "cover it."),
    noise: str = typer.Option("0.005,0.1", "--noise", help="Per-pixel noise fraction range LO,HI (S/N 200..10) "
                              "of the on-the-fly noise."),
    n_poly: int = typer.Option(2, "--n-poly", help="Legendre warp coefficients inferred as nuisances (the "
                               "likelihood's likelihood.n_poly)."),
    poly_sd: float = typer.Option(0.1, "--poly-sd", help="Prior sd of the warp coefficients."),
    steps: int = typer.Option(6000, "--steps", min=1, help="Optimiser steps."),
    batch_size: int = typer.Option(256, "--batch-size", min=8, help="Simulations per step."),
    reps: int = typer.Option(32, "--reps", min=1, help="Noise / warp realisations drawn per training model."),
    components: int = typer.Option(64, "--components", min=1, help="PCA features of the spectrum."),
    flow_layers: int = typer.Option(5, "--flow-layers", min=1, help="Autoregressive spline layers."),
    nn_width: int = typer.Option(64, "--nn-width", min=8, help="Width of the flow's conditioner networks."),
    affine_layers: int = typer.Option(1, "--affine-layers", min=0, help="Conditional affine autoregressive layers "
                                      "after the splines (they carry the posterior's location and width)."),
    learning_rate: float = typer.Option(1e-3, "--learning-rate", help="Peak Adam learning rate (cosine decay)."),
    seed: int = typer.Option(0, "--seed", min=0),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
) -> None:
    """Train an amortised posterior (conditional normalising flow) on synthesizer campaign stores."""
    from lumina_jax.workflows import npe as npe_io

    check_out_file(out, force=force, inputs=data)
    opts = npe_io.TrainOptions(n_poly=n_poly, poly_sd=poly_sd, band=_pair(band, "--band"),
                               noise_range=_pair(noise, "--noise"), n_components=components, steps=steps,
                               batch_size=batch_size, reps=reps, learning_rate=learning_rate, seed=seed,
                               flow_layers=flow_layers, nn_width=nn_width, affine_layers=affine_layers)
    if not poly_sd > 0 or opts.noise_range[0] <= 0:
        raise UserError("--poly-sd and the --noise range must be positive")
    log = (lambda s: typer.echo(s, err=True)) if json_out else typer.echo
    cfg = _emulator_preprocess(checkpoint, stage)
    bar, label, total = _progress(steps, quiet or json_out, "training")
    with bar:
        task = bar.add_task(label, total=total)
        obj = npe_io.train(data, stage, cfg, opts, log=log,
                           progress=lambda i, tr, v: bar.update(task, completed=i,
                                                                description=f"train {tr:.3f}  val {v:.3f}"))
    with _interrupt.critical():
        npe_io.save_npe(obj, out)
    size = out.stat().st_size / 1e6
    log(f"wrote {out} ({size:.1f} MB)")
    if json_out:
        typer.echo(dumps_json({"out": str(out), "size_mb": size, **{k: v for k, v in obj.metadata.items()
                                                                    if k != "history"}}, indent=1))


def sbc(
    stage: int = typer.Option(1, "--stage", help="Stage."),
    sampler: str = typer.Option("npe", "--sampler", help="Posterior to check (npe)."),
    npe_path: Optional[Path] = typer.Option(None, "--npe", help="NPE checkpoint (default: the stage's shipped one)."),
    data: List[Path] = typer.Option(..., "--data", help="Held-out synthesizer campaign store(s) (never trained on)."),
    n: int = typer.Option(200, "--n", min=10, help="Held-out models checked."),
    draws: int = typer.Option(999, "--draws", min=19, help="Posterior draws per model (ranks 0..draws)."),
    bins: int = typer.Option(20, "--bins", min=2, help="Rank-histogram bins."),
    noise: float = typer.Option(0.02, "--noise", help="Mock noise, fraction of the flux per pixel."),
    seed: int = typer.Option(0, "--seed", min=0),
    out: Path = typer.Option(Path("results/sbc"), "--out", help="Directory for sbc.json and sbc.png."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out directory."),
    json_out: bool = typer.Option(False, "--json", help="Print sbc.json."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Simulation-based calibration of the amortised posterior on held-out synthesizer models:
    rank histograms per parameter (chi-square test, Bonferroni-corrected) and expected coverage."""
    from lumina_jax.workflows import npe as npe_io, sbc as sbc_mod

    if sampler != "npe":
        raise UserError(f"check sbc supports --sampler npe (amortised); got {sampler!r} (for the MCMC samplers "
                        "use `lumina-jax check coverage`)")
    if not noise > 0:
        raise UserError(f"--noise must be > 0, got {noise}")
    check_out_dir(out, force=force, option="--out", what="SBC results")
    log = (lambda s: typer.echo(s, err=True)) if json_out else typer.echo
    path = npe_path or npe_io.default_npe(stage)
    obj = npe_io.load_npe(path)
    if int(obj.space.stage) != stage:
        raise UserError(f"{path} was trained for stage {obj.space.stage}, not stage {stage}")
    bar, label, total = _progress(n, quiet or json_out, "SBC")
    with bar:
        task = bar.add_task(label, total=total)
        res = sbc_mod.run_sbc(obj, data, n=n, n_draws=draws, noise_frac=noise, seed=seed, n_bins=bins, log=log,
                              progress=lambda i: bar.update(task, completed=i))
    res["npe"] = str(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sbc.json").write_text(dumps_json(res, indent=1))
    sbc_mod.plot_sbc(res, out / "sbc.png")
    log(sbc_mod.describe(res))
    log(f"wrote {out / 'sbc.json'} and {out / 'sbc.png'}")
    if json_out:
        typer.echo(dumps_json(res, indent=1))


def compare(
    results: Path = typer.Argument(..., help="Results dir of the posterior to check (e.g. infer --sampler npe)."),
    reference: Path = typer.Argument(..., help="Results dir of the reference posterior (e.g. NUTS) of the same fit."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Compare two posteriors of one fit: per-parameter median shift (reference sd) and 68 % width
    ratio, and a k-NN classifier two-sample test of the joint draws."""
    from lumina_jax.inference import compare as cmp
    from lumina_jax.workflows.results import load_results, posterior_array

    (s1, i1), (s0, i0) = load_results(results), load_results(reference)
    if s1["free"] != s0["free"] or s1["stage"] != s0["stage"]:
        raise UserError(f"{results} and {reference} are fits of different parameters")
    names = s0["free"]
    res = cmp.compare(posterior_array(i1, names).reshape(-1, len(names)),
                      posterior_array(i0, names).reshape(-1, len(names)), names)
    res.update(results=str(results), reference=str(reference))
    if json_out:
        typer.echo(dumps_json(res, indent=1))
        return
    for n, v in res["per_parameter"].items():
        typer.echo(f"{n:>18s}  median {v['median']:.4g} vs {v['median_ref']:.4g}  "
                   f"shift {v['shift_in_ref_sd']:+.2f} sd  width x{v['width_ratio']:.2f}")
    typer.echo(f"max |shift| {res['max_abs_shift']:.2f} sd ({res['n_within_0.5sd']}/{len(names)} within 0.5 sd), "
               f"width ratios {res['width_ratio_range'][0]:.2f}-{res['width_ratio_range'][1]:.2f} "
               f"({res['n_width_within_30pc']}/{len(names)} within 30 %), C2ST accuracy {res['c2st_accuracy']:.3f}")


def register(app: typer.Typer) -> None:
    from lumina_jax.cli.inference import check_app

    app.command("train-npe")(train_npe)
    check_app.command("sbc")(sbc)
    check_app.command("compare")(compare)
