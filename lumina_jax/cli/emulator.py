"""``lumina-jax train`` and ``lumina-jax emulator report``: fit and assess the spectral emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lumina_jax.cli import _interrupt
from lumina_jax.cli._output import check_in_file, check_out_file, check_plot_path, dumps_json
from lumina_jax.errors import UserError

emulator_app = typer.Typer(help="Spectral emulator tools (accuracy report).", no_args_is_help=True)


def train(
    data: list[Path] = typer.Option(..., "--data", help="campaign store (HDF5) with finished models; "
                                    "repeat to train on several stores of the same space"),
    out: Path = typer.Option(..., "--out", help="checkpoint file to write (HDF5)"),
    config: Optional[Path] = typer.Option(None, "--config", help="emulator YAML (default lumina_jax/configs/emulator.yaml)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="maximum epochs (overrides the config)"),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="early-stopping patience in epochs"),
    stage: Optional[int] = typer.Option(None, "--stage", help="require the store to be of this stage"),
    seed: Optional[int] = typer.Option(None, "--seed", help="split / initialisation seed"),
    sobolev: Optional[int] = typer.Option(None, "--sobolev", min=0, help="Sobolev training: fit the synthesizer's "
                                          "directional derivatives along this many random directions per training "
                                          "model as well (0: off; overrides sobolev.jvp_directions)"),
    sobolev_rows: Optional[int] = typer.Option(None, "--sobolev-rows", min=1, help="at most this many training "
                                               "models get derivatives (overrides sobolev.jvp_rows)"),
    sobolev_weight: Optional[float] = typer.Option(None, "--sobolev-weight", min=0.0,
                                                   help="weight of the derivative term (overrides sobolev.jvp_weight)"),
    synth_config: Optional[Path] = typer.Option(None, "--synth-config", help="synthesizer YAML of the derivatives "
                                                "(default: the one the store records)"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary instead of text"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing --out checkpoint"),
) -> None:
    """Train an emulator on a campaign store and write one self-describing checkpoint.

    An existing --out file is kept (the command stops) unless --force is given.  With --sobolev K
    the synthesizer's derivatives along K random directions per training model are computed first
    (forward-mode, cached beside each store in STORE.jvp-KEY.npz) and fitted with the values."""
    from lumina_jax.workflows import emulator as workflow

    check_out_file(out, force=force, inputs=data)
    check_in_file(config, option="--config", what="emulator YAML", text=True)
    check_in_file(synth_config, option="--synth-config", what="synthesizer YAML", text=True)
    overrides = dict(max_epochs=epochs, patience=patience, seed=seed, jvp_directions=sobolev, jvp_rows=sobolev_rows,
                     jvp_weight=sobolev_weight, jvp_synth_config=None if synth_config is None else str(synth_config))

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    show = not (quiet or as_json)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), transient=False, disable=not show)
    tasks = {}

    def on_derivatives(done, total):
        if "jvp" not in tasks:
            tasks["jvp"] = progress.add_task("synthesizer derivatives", total=None)
        progress.update(tasks["jvp"], completed=done, total=total)

    def on_epoch(epoch, max_epochs, tl, vl, best):
        if "train" not in tasks:
            tasks["train"] = progress.add_task("training", total=max_epochs)
        progress.update(tasks["train"], completed=epoch, description=f"train {tl:.3e}  val {vl:.3e}  best@{best}")

    with progress:
        summary = workflow.train(data, out, config=config, stage=stage, overrides=overrides,
                                 on_derivatives=on_derivatives, on_epoch=on_epoch, write_guard=_interrupt.critical)
    _interrupt.kept(f"the checkpoint is written: {out}")
    if as_json:
        typer.echo(dumps_json(summary))
    else:
        typer.echo(
            f"wrote {out}: {summary['n_train']} train / {summary['n_val']} val / {summary['n_test']} test models, "
            f"{summary['n_components']} PCA components, best epoch {summary['best_epoch']} of {summary['epochs']}, "
            f"validation mean fractional error {100 * summary['val_mean_fractional_error']:.2f} %, "
            f"sigma scale {summary['sigma_scale']:.3f} ({summary['train_seconds']:.0f} s)"
            + (f", synthesizer derivatives at {summary['n_derivative_rows']} rows" if summary["n_derivative_rows"] else ""))


@emulator_app.command("report")
def report(
    checkpoint: Path = typer.Argument(..., help="emulator checkpoint"),
    data: list[Path] = typer.Option(..., "--data", help="campaign store(s); rows used in training/validation "
                                    "are skipped"),
    as_json: bool = typer.Option(False, "--json", help="print all metrics as JSON"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG with per-wavelength error and an example"),
    all_rows: bool = typer.Option(False, "--all", help="use every row, including those trained on"),
    wl_min: float = typer.Option(3300.0, "--wl-min", help="lower end of the scored window, Å"),
    wl_max: float = typer.Option(9700.0, "--wl-max", help="upper end of the scored window, Å"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing --plot file"),
) -> None:
    """Held-out accuracy (fractional error of the smoothed flux) and sigma calibration.

    An existing --plot file is kept (the command stops before any work) unless --force."""
    import numpy as np

    if not (np.isfinite(wl_min) and np.isfinite(wl_max) and wl_min < wl_max):
        raise UserError(f"--wl-min {wl_min} must be below --wl-max {wl_max} (both in Å)")
    check_plot_path(plot, force=force, inputs=(checkpoint, *data))

    from lumina_jax.emulator import evaluate, load_emulator, prepare_spectra, theta_hashes
    from lumina_jax.emulator._checkpoint import read_seen_hashes
    from lumina_jax.emulator._report import plot_report
    from lumina_jax.preprocess import Preprocessor

    from lumina_jax.emulator._data import load_training_sets

    emu = load_emulator(checkpoint)
    ts = load_training_sets(data)
    data = ", ".join(str(d) for d in data)
    if ts.space.names != emu.space.names:
        raise UserError(f"{data} holds stage-{ts.space.stage} models; {checkpoint} is a stage-{emu.space.stage} emulator")
    if ts.theta.shape[0] == 0:
        raise UserError(f"{data} has no finished models to score (see `lumina-jax dataset info`)")
    prep = prepare_spectra(ts, Preprocessor(emu.settings.preprocess))
    if prep.theta.shape[0] == 0:
        raise UserError(f"none of the finished models of {data} is usable after preprocessing (their spectra do not "
                        "cover the emulator's grid)")
    unseen = np.ones(prep.theta.shape[0], bool)
    if not all_rows:
        unseen = ~np.isin(theta_hashes(prep.theta), read_seen_hashes(checkpoint))
    # Outside the training box the emulator extrapolates: report only rows inside it.
    inside = np.all((prep.theta >= emu.space.lower) & (prep.theta <= emu.space.upper), axis=1)
    keep = unseen & inside
    n_outside = int((unseen & ~inside).sum())
    if not keep.any():
        if not inside.any():
            raise UserError(f"none of the {prep.theta.shape[0]} finished models of {data} lies inside the emulator's "
                            "training box; there is nothing to score it on")
        raise UserError(f"no held-out models in {data} (all were used in training); pass --all to score them anyway")
    m = evaluate(emu, prep.theta[keep], prep.flux[keep], window=(wl_min, wl_max))
    m["n_skipped_seen"] = int(prep.theta.shape[0] - keep.sum() - n_outside)
    m["n_skipped_outside_box"] = n_outside
    m["checkpoint"] = str(checkpoint)
    m["data"] = str(data)
    if plot is not None:
        from lumina_jax.cli._output import write_atomic

        with _interrupt.critical():
            write_atomic(plot, lambda tmp: plot_report(m, emu, prep.theta[keep], prep.flux[keep], tmp))
    if as_json:
        typer.echo(dumps_json(m))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"emulator report: {checkpoint.name} on {m['n_spectra']} held-out models "
                    f"({wl_min:.0f}-{wl_max:.0f} Å)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("mean fractional error", f"{100 * m['mean_fractional_error']:.3f} %")
    t.add_row(f"  same, denominator floored at {m['flux_floor']:g} ({100 * m['fraction_bins_below_floor']:.2f} % of bins below)",
              f"{100 * m['mean_fractional_error_floored']:.3f} %")
    t.add_row("median / p95 / max per-spectrum error",
              f"{100 * m['median_spectrum_fractional_error']:.3f} / {100 * m['p95_spectrum_fractional_error']:.3f}"
              f" / {100 * m['max_spectrum_fractional_error']:.3f} %")
    t.add_row("rms asinh residual", f"{m['rms_asinh_residual']:.4f}")
    t.add_row("fraction within 1 sigma (target 0.6-0.75)", f"{m['fraction_within_1sigma']:.3f}")
    t.add_row("per-model sigma: rank corr. (predicted, actual error)", f"{m['sigma_error_rank_correlation']:.3f}")
    t.add_row("per-spectrum RMS(residual/sigma): median / p95", f"{m['per_spectrum_rms_z_median']:.2f} / "
              f"{m['per_spectrum_rms_z_p95']:.2f}")
    t.add_row("spectra with RMS(residual/sigma) > 2", f"{m['fraction_spectra_rms_z_above_2']:.3f}")
    t.add_row("fraction within 2 sigma (Gaussian 0.954)", f"{m['fraction_within_2sigma']:.3f}")
    for name, v in m["feature_windows_fractional_error"].items():
        t.add_row(f"  {name}", f"{100 * v:.3f} %")
    for w in m["worst_bins"]:
        t.add_row(f"  worst bin {w['wavelength']:.0f} Å", f"{100 * w['mean_fractional_error']:.3f} %")
    wl = np.asarray(m["wavelength"])
    fe = np.asarray(m["per_wavelength_fractional_error"])
    edges = np.arange(np.floor(wl_min / 1000) * 1000, wl_max + 1000, 1000)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (wl >= lo) & (wl < hi)
        if sel.any():
            t.add_row(f"  {lo:.0f}-{hi:.0f} Å", f"{100 * fe[sel].mean():.3f} %")
    con.print(t)
    if plot is not None:
        con.print(f"plot written to {plot}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.add_typer(emulator_app, name="emulator")


@emulator_app.command("calibrate")
def calibrate(
    checkpoint: Path = typer.Argument(..., help="emulator checkpoint (updated in place)"),
    data: list[Path] = typer.Option(..., "--data", help="the campaign store(s) it was trained on, in the same order"),
    stride: Optional[int] = typer.Option(None, "--stride", help="likelihood bin stride (default: the inference config, 8; `lumina-jax config show`)"),
    n_max: int = typer.Option(2000, "--n-max", min=1, help="validation models used at most"),
    dry_run: bool = typer.Option(False, "--dry-run", help="compute and print, do not write the checkpoint"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Calibrate the emulator-error covariance the likelihood uses, on the validation models.

    The factor makes the error's projection onto the parameter directions consistent with
    the error model (projected chi-square; lumina_jax.inference.calibration) and is stored as
    `error_cov_scale` in the checkpoint; `infer` and `check` apply it (likelihood.emulator_error_scale)."""
    from lumina_jax.workflows import emulator as workflow

    res = workflow.calibrate(checkpoint, data, stride=stride, n_max=n_max, dry_run=dry_run,
                             log=lambda m: typer.echo(m, err=True), write_guard=_interrupt.critical)
    if as_json:
        typer.echo(dumps_json(res))
    else:
        typer.echo(f"error_cov_scale {res['error_cov_scale']:.3f} (median projected chi2 / p = {res['median_q_over_p']:.3f}, "
                   f"mean {res['mean_q_over_p']:.3f}, p = {res['p']}; per-bin chi2 median {res['chi2_per_bin_median']:.3f}) "
                   f"from {res['n_models']} validation models" + ("" if dry_run else f"; written to {checkpoint}"))
