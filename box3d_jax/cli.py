"""``lumina-jax ffi``: the command line of box3d_jax, mounted by ``lumina-jax`` (:func:`register`).

Commands:
  ffi box3d IN.h5 --out OUT.h5        Box3D asymptotic states for every row of IN.h5
                 [--residual CKPT]    ... plus the residual model (domain of validity checked)
  ffi train DATA.h5 --out CKPT        fit the equivariant residual model on top of Box3D
  ffi evaluate CKPT DATA.h5 [--json]  error metrics: no mixing / Box3D / Box3D + residual
  ffi export [CKPT] --out FILE        jax.export the jitted Box3D (+ residual) for simulation codes
  ffi solve IN.h5 --out OUT.h5        QKE ground truth (box3d_jax.qke) for every row of IN.h5
  ffi generate --n N --out FILE.h5    sample initial moments, solve, write a dataset [--resume]

Outputs that exist are kept unless ``--force``; an ``--out`` that is the input file is refused.
Bad input raises :class:`box3d_jax.errors.UserError`; the ``lumina-jax`` entry point prints it
as one ``error: ...`` line with exit code 2.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from box3d_jax.errors import ParameterError, UserError

#: Lowering platforms ``jax.export`` knows (``ffi export --platform``).
EXPORT_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")

app = typer.Typer(
    name="ffi",
    help="Box3D maximum-entropy FFI closure (box3d_jax): predict, train a residual model, evaluate, export.",
    no_args_is_help=True,
)


def register(main_app: typer.Typer) -> None:
    """Mount the ``ffi`` command group on a host command line (``lumina-jax``)."""
    main_app.add_typer(app, name="ffi")


# --- outputs: strict JSON, files checked before any work, nothing overwritten silently ---------
def _plain(obj):
    """``obj`` with numpy types as Python ones and non-finite floats as None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def dumps_json(obj, *, indent: int | None = None) -> str:
    """``obj`` as strict JSON (``jq`` reads it): NaN / inf become ``null``."""
    return json.dumps(_plain(obj), indent=indent, default=str, allow_nan=False)


def refuse_overwrite(path, *, force: bool, what: str = "output") -> None:
    """Stop with a :class:`UserError` when ``path`` exists (a file, or a non-empty directory)
    and ``force`` is false: outputs are never replaced silently."""
    p = Path(path)
    if force or not p.exists() or (p.is_dir() and not any(p.iterdir())):
        return
    kind = "directory" if p.is_dir() else "file"
    raise UserError(f"{what} {kind} {p} already exists; pass --force to overwrite it")


def _same_file(a, b) -> bool:
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_out_file(out: Path, *, force: bool, inputs=(), option: str = "--out") -> None:
    """Stop before any long work if ``out`` is one of ``inputs``, a directory, exists (unless
    ``force``) or lies in a directory that is missing or not writable."""
    out = Path(out)
    for src in inputs:
        if src is not None and _same_file(out, src):
            raise UserError(f"{option} {out} is the input file {src}; writing it would destroy the input -- "
                            "choose another output file")
    if out.is_dir():
        raise UserError(f"{option} {out} is a directory; give a file name")
    refuse_overwrite(out, force=force, what=option)
    parent = out.parent
    if not parent.is_dir():
        why = f"{parent} is not a directory" if parent.exists() else f"directory {parent} does not exist"
        raise UserError(f"{option} {out}: {why}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out}: directory {parent} is not writable")


def emit(obj: dict, as_json: bool) -> None:
    """Print ``obj`` as strict JSON (``--json``) or as ``key: value`` lines."""
    if as_json:
        typer.echo(dumps_json(obj, indent=2))
        return
    for key, value in obj.items():
        typer.echo(f"{key}: {value}")


def _progress(disable: bool, *, long: bool = False):
    """A progress bar on stderr; ``long`` runs (the QKE solver) show the elapsed time and keep it."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    elapsed = (TimeElapsedColumn(),) if long else ()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *elapsed,
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        transient=not long,
        disable=disable,
    )


# --- Box3D and the residual model ---------------------------------------------------------------
def _quadrature(method: str | None, order: int | None, width: float | None) -> tuple[str, int, float]:
    """Validated ``(method, order, width)`` with the defaults filled in (ParameterError)."""
    from box3d_jax import box3d as B

    return B.resolve_method(B.DEFAULT_METHOD if method is None else method.strip().lower(), order, width)


METHOD_HELP = "Box3D quadrature: smooth (converged, default) or sharp (Heaviside at Lebedev nodes, Rhea's)."
ORDER_HELP = "Lebedev order (default: 35 for smooth, 17 for sharp; 41: 590 directions, 131: 5810)."
WIDTH_HELP = "Half-width (radians) of the smoothed step of the smooth method (default 0.4)."
#: ``ffi box3d`` prints the predicted number densities of files with at most this many rows.
PREVIEW_ROWS = 10


def _parse_hidden(hidden: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(h) for h in hidden.split(",") if h.strip())
    except ValueError:
        raise ParameterError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
    if not widths or min(widths) < 1:
        raise ParameterError(f"--hidden needs at least one positive width, got {hidden!r}")
    return widths


def _check_platforms(platforms: list[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(p.strip().lower() for p in platforms))  # de-duplicated, in order
    for p in out:
        if p not in EXPORT_PLATFORMS:
            raise ParameterError(f"--platform {p!r} is not a jax.export platform; "
                                 f"use one or more of {', '.join(EXPORT_PLATFORMS)}")
    return out


@app.command("box3d")
def box3d_cmd(
    infile: Path = typer.Argument(..., help="HDF5 file with F4_initial(1|ccm), shape (n, 4, 2, NF)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output HDF5: F4_initial, F4_final = Box3D (+ residual), "
                             "growthRate = proxy; with --residual also F4_box3d(1|ccm) and residual_in_domain."),
    residual: Optional[Path] = typer.Option(None, "--residual", help="Checkpoint of a residual model (ffi train): "
                                            "F4_final = Box3D + residual, Box3D as the model was trained on."),
    method: Optional[str] = typer.Option(None, help=METHOD_HELP),
    order: Optional[int] = typer.Option(None, help=ORDER_HELP),
    width: Optional[float] = typer.Option(None, help=WIDTH_HELP),
    approx_z: bool = typer.Option(False, "--approx-z", help="Jedynak closed-form Z instead of the exact solve."),
    chunk: int = typer.Option(65536, min=1, help="Points per jitted call."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out (never the input file)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
) -> None:
    """Predict the asymptotic four-fluxes of every row of IN.h5 with Box3D (+ a residual model)."""
    from box3d_jax import box3d as B
    from box3d_jax import io

    model = None
    if residual is not None:
        from box3d_jax import residual as R

        model = R.load_model(residual)
        cfg = model.config
        given = {"method": None if method is None else method.strip().lower(), "order": order, "width": width}
        for name, own in (("method", cfg.method), ("order", cfg.order), ("width", cfg.width)):
            value = given[name]
            if value is not None and value != own:
                raise ParameterError(f"--{name} {value} conflicts with the residual model, which was trained on "
                                     f"Box3D with {name} = {own}; leave --{name} out")
        method, order, width = cfg.method, cfg.order, cfg.width
    else:
        method, order, width = _quadrature(method, order, width)
    check_out_file(out, force=force, inputs=(infile,))
    ds = io.read_dataset(infile)
    if model is not None and ds.nf != 3:
        raise ParameterError(f"{infile}: the residual model needs NF = 3 data, got NF = {ds.nf}")
    fn = B.jitted(order, ds.nf, method=method, width=width, approx_Z=approx_z)
    res_fn = None if model is None else R.jitted_residual(model.config)  # Box3D is computed once, by fn
    boxes, finals, growth, unstable = [], [], [], 0
    t0 = time.perf_counter()
    with _progress(as_json) as prog:
        task = prog.add_task("Box3D" if model is None else "Box3D + residual", total=ds.n, info="")
        for start in range(0, ds.n, chunk):
            block = ds.F4_initial[start : start + chunk]
            if block.shape[0] < chunk and ds.n > chunk:  # pad the last block: no recompilation
                block = np.concatenate([block, np.repeat(block[-1:], chunk - block.shape[0], 0)])
            res = fn(block)
            m = min(chunk, ds.n - start)
            boxes.append(np.asarray(res.F4)[:m])
            if res_fn is not None:
                finals.append(np.asarray(res.F4)[:m] + np.asarray(res_fn(model.params, block))[:m])
            growth.append(np.asarray(res.growth_rate)[:m])
            unstable += int(np.asarray(res.unstable)[:m].sum())
            prog.update(task, advance=m)
    seconds = time.perf_counter() - t0
    F4_box = np.concatenate(boxes)
    summary = {
        "input": str(infile),
        "output": str(out),
        "n_points": ds.n,
        "n_unstable": unstable,
        "method": method,
        "order": order,
        **({"width": width} if method == "smooth" else {}),
        "nf": ds.nf,
    }
    extra = None
    if model is None:
        F4_final = F4_box
    else:
        F4_final = np.concatenate(finals)
        outside, counts = R.outside_domain(ds.F4_initial, model.domain, model.config)
        extra = {io.BOX3D: B.to_file_layout(F4_box), io.IN_DOMAIN: ~outside}
        summary.update({"residual": str(residual), "n_outside_domain": int(outside.sum()),
                        "outside_domain_features": counts})
        if outside.any():
            msg = R.domain_message(int(outside.sum()), ds.n, counts, model.domain is not None)
            typer.secho(f"warning: {msg}; rows flagged in {io.IN_DOMAIN}", fg=typer.colors.YELLOW, err=True)
    io.write_dataset(out, ds.F4_initial, F4_final, growth_rate=np.concatenate(growth), extra=extra)
    if ds.n <= PREVIEW_ROWS:  # small files: the predicted number densities themselves
        def densities(F4):
            rows = [{"nu": [float(v) for v in row[0, :, 3]], "nubar": [float(v) for v in row[1, :, 3]]} for row in F4]
            if as_json:
                return rows
            return "; ".join("nu " + " ".join(f"{v:.5e}" for v in r["nu"]) + " | nubar "
                             + " ".join(f"{v:.5e}" for v in r["nubar"]) for r in rows)

        summary["N_box3d"] = densities(F4_box)  # cm⁻³, flavors (e, mu, tau)
        if model is not None:
            summary["N_box3d_residual"] = densities(F4_final)
    summary["seconds"] = round(seconds, 3)
    emit(summary, as_json)


def _split(ds, test_file: Optional[Path], test_fraction: float):
    from box3d_jax import io

    if test_file is not None:
        return ds, io.read_dataset(test_file, require_final=True), f"file {test_file}"
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    n_test = max(1, int(round(test_fraction * ds.n)))
    if n_test >= ds.n:
        raise ParameterError(f"{ds.n} rows are too few to hold out {n_test} test rows")
    # contiguous tail: rows are ordered by grid index, so neighbours stay on one side
    cut = ds.n - n_test
    return ds.select(slice(0, cut)), ds.select(slice(cut, None)), f"last {n_test} rows"


def _evaluate(params, config, ds) -> tuple[dict, int]:
    from box3d_jax import metrics
    from box3d_jax import residual as R

    data, kept = R.prepare_data(ds.F4_initial, ds.F4_final, config)
    if data.F4_initial.shape[0] == 0:
        raise ParameterError(f"no rows pass the flux-factor cut < {config.max_flux_factor}")
    pred = np.asarray(R.jitted_predict(config)(params, data.F4_initial))
    initial = ds.F4_initial[kept]
    ntot = initial[..., 3].sum(axis=(1, 2))[:, None, None, None]
    predictions = {"no_mixing": initial, "box3d": data.F4_box3d * ntot, "box3d_residual": pred * ntot}
    return metrics.compare_methods(predictions, ds.F4_final[kept], initial), int(kept.sum())


def _metrics_table(result: dict, title: str):
    from rich.table import Table

    table = Table(title=title, caption="errors divided by n_tot, per row")
    table.add_column("method")
    for name in ("RMS", "mean |ΔN_e|", "mean |ΔN̄_e|", "max |e|"):
        table.add_column(name, justify="right")
    for method, m in result.items():
        table.add_row(method, *(f"{m[k]:.3e}" for k in ("rms", "mean_abs_dNe", "mean_abs_dNebar", "max_error")))
    return table


@app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="Training HDF5 file with F4_initial and F4_final."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint directory to write."),
    test_file: Optional[Path] = typer.Option(None, help="Held-out test file (default: hold out the last rows)."),
    test_fraction: float = typer.Option(0.1, help="Fraction of rows held out when no --test-file is given."),
    epochs: int = typer.Option(200, min=1),
    batch_size: int = typer.Option(256, min=1),
    lr: float = typer.Option(3e-3, help="Peak Adam learning rate (cosine decay)."),
    hidden: str = typer.Option("64,64", help="Hidden-layer widths of the coefficient MLP."),
    method: Optional[str] = typer.Option(None, help="Box3D baseline: " + METHOD_HELP),
    order: Optional[int] = typer.Option(None, help=ORDER_HELP),
    width: Optional[float] = typer.Option(None, help=WIDTH_HELP),
    max_flux_factor: float = typer.Option(0.9, help="Drop rows with any initial flux factor >= this."),
    seed: int = typer.Option(0),
    force: bool = typer.Option(False, "--force", help="Write into an existing, non-empty --out directory."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
) -> None:
    """Train the equivariant, conservative residual model on top of Box3D."""
    from rich.console import Console

    from box3d_jax import io
    from box3d_jax import residual as R

    method, order, width = _quadrature(method, order, width)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; a checkpoint is a directory")
    refuse_overwrite(out, force=force, what="checkpoint")
    if not 0.0 < max_flux_factor <= 1.0:
        raise ParameterError(f"--max-flux-factor must be in (0, 1], got {max_flux_factor}")
    config = R.ResidualConfig(hidden=_parse_hidden(hidden), order=order, max_flux_factor=max_flux_factor,
                              method=method, width=width)
    ds = io.read_dataset(data, require_final=True)
    if ds.nf != 3:
        raise ParameterError(f"{data}: the residual model needs NF = 3 data, got NF = {ds.nf}")
    train_ds, test_ds, split = _split(ds, test_file, test_fraction)
    train_data, kept = R.prepare_data(train_ds.F4_initial, train_ds.F4_final, config)
    if train_data.F4_initial.shape[0] == 0:
        raise ParameterError(f"no training rows pass the flux-factor cut < {max_flux_factor}")
    t0 = time.perf_counter()
    with _progress(as_json) as prog:
        task = prog.add_task("training", total=epochs, info="")

        def callback(ep: int, mse: float) -> None:
            prog.update(task, advance=1, info=f"mse {mse:.3e}")

        params, history = R.train(
            train_data, config, epochs=epochs, batch_size=batch_size, learning_rate=lr, seed=seed, callback=callback
        )
    seconds = time.perf_counter() - t0
    test_metrics, n_test = _evaluate(params, config, test_ds)
    meta = {
        "data": str(data),
        "test": split,
        "n_train": int(kept.sum()),
        "n_test": n_test,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "seed": seed,
        "final_train_mse": history[-1],
        "train_seconds": round(seconds, 2),
        "test_metrics": test_metrics,
        "domain": R.training_domain(train_data.F4_initial, config),
    }
    R.save_checkpoint(out, params, config, meta)
    if as_json:
        typer.echo(dumps_json({"checkpoint": str(out), **{k: v for k, v in meta.items() if k != "domain"}}, indent=2))
    else:
        console = Console()
        console.print(f"trained on {meta['n_train']} rows in {seconds:.1f} s; checkpoint -> {out}")
        console.print(_metrics_table(test_metrics, f"held-out test set ({split}, {n_test} rows)"))


@app.command("evaluate")
def evaluate_cmd(
    ckpt: Path = typer.Argument(..., help="Checkpoint directory written by `ffi train`."),
    data: Path = typer.Argument(..., help="HDF5 file with F4_initial and F4_final."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Error metrics (n_tot-normalised) for no mixing, Box3D and Box3D + residual."""
    from rich.console import Console

    from box3d_jax import io
    from box3d_jax import residual as R

    params, config, _ = R.load_checkpoint(ckpt)
    ds = io.read_dataset(data, require_final=True)
    if ds.nf != 3:
        raise ParameterError(f"{data}: evaluation needs NF = 3 data, got NF = {ds.nf}")
    result, n_used = _evaluate(params, config, ds)
    if as_json:
        typer.echo(
            dumps_json(
                {"data": str(data), "checkpoint": str(ckpt), "n_rows": ds.n, "n_used": n_used,
                 "max_flux_factor": config.max_flux_factor, "method": config.method, "order": config.order,
                 "metrics": result},
                indent=2,
            )
        )
    else:
        title = (f"{data}: {n_used}/{ds.n} rows with flux factor < {config.max_flux_factor}, "
                 f"Box3D {config.method} (Lebedev {config.order})")
        Console().print(_metrics_table(result, title))


@app.command("export")
def export_cmd(
    ckpt: Optional[Path] = typer.Argument(None, help="Checkpoint to include (default: Box3D alone)."),
    out: Path = typer.Option(..., "--out", "-o", help="Serialized jax.export file to write."),
    method: Optional[str] = typer.Option(None, help="Box3D alone (a checkpoint fixes its own): " + METHOD_HELP),
    order: Optional[int] = typer.Option(None, help=ORDER_HELP),
    width: Optional[float] = typer.Option(None, help=WIDTH_HELP),
    stablehlo: Optional[Path] = typer.Option(None, help="Also write the StableHLO module (MLIR text) here."),
    platform: list[str] = typer.Option(["cpu"], "--platform", help="Lowering platform(s): cpu, cuda, rocm, tpu "
                                       "(repeat the option for several)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing --out / --stablehlo files."),
) -> None:
    """Serialize the jitted Box3D (+ residual): F4 (n, 2, 3, 4) -> (F4', growth rate (n))."""
    from box3d_jax import export as E

    method, order, width = _quadrature(method, order, width)
    platforms = _check_platforms(platform)
    check_out_file(out, force=force)
    if stablehlo is not None:
        check_out_file(stablehlo, force=force, option="--stablehlo")
        if stablehlo.resolve() == out.resolve():
            raise UserError(f"--stablehlo and --out name the same file {out}")
    if ckpt is not None:
        from box3d_jax import residual as R

        params, config, _ = R.load_checkpoint(ckpt)
        exp = E.export_box3d(params=params, config=config, platforms=platforms)
    else:
        exp = E.export_box3d(order, method=method, width=width, platforms=platforms)
    E.save(out, exp)
    if stablehlo is not None:
        E.write_stablehlo(stablehlo, exp)
    typer.echo(f"wrote {out}" + (f" and {stablehlo}" if stablehlo else ""))


# --- QKE ground truth (box3d_jax.qke) -----------------------------------------------------------
def _config(n_z: int, order: int, t_end_growth: float, cfl: float, n_wavelengths: float, lsa_order: int,
            seed: int, conservation_tol: float):
    from box3d_jax import qke

    return qke.QKEConfig(
        n_z=n_z, lebedev_order=order, t_end_growth=t_end_growth, cfl=cfl, n_wavelengths=n_wavelengths,
        lsa_order=lsa_order, seed=seed, conservation_tol=conservation_tol,
    ).validate()


@app.command("solve")
def solve_cmd(
    infile: Path = typer.Argument(..., help="HDF5 file with F4_initial(1|ccm) [n, 4, 2, 3] (Rhea/Emu format)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output HDF5: F4_initial, F4_final, F4_final_stddev, growthRate."),
    n_z: int = typer.Option(128, help="Cells (Fourier modes) along the box."),
    order: int = typer.Option(29, help="Lebedev order of the directions (29: 302, 17: 110)."),
    t_end_growth: float = typer.Option(60.0, help="Run length in e-folding times 1/Γ_LSA."),
    cfl: float = typer.Option(0.4, help="Time step × max‖H‖."),
    n_wavelengths: float = typer.Option(8.0, help="Box length in fastest-growing wavelengths."),
    lsa_order: int = typer.Option(17, help="Lebedev order of the box-sizing LSA (0: same as --order)."),
    seed: int = typer.Option(0, help="Seed of the random off-diagonal perturbations (row i: seed + i)."),
    batch: int = typer.Option(1, min=1, help="Rows evolved together under jax.vmap (GPU: larger)."),
    conservation_tol: float = typer.Option(1e-6, help="Flag runs whose conservation error exceeds this (n_tot)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out (never the input file)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
) -> None:
    """Run the multi-angle QKE solver on every row of IN.h5 and write the asymptotic states.

    Rows whose run fails an acceptance test (no saturation within t_end/3, conservation,
    late-time fluctuations) are still written, and listed in the summary.
    """
    from box3d_jax import io, qke

    cfg = _config(n_z, order, t_end_growth, cfl, n_wavelengths, lsa_order, seed, conservation_tol)
    check_out_file(out, force=force, inputs=(infile,))
    ds = io.read_dataset(infile)
    if ds.nf != 3:
        raise ParameterError(f"{infile}: the QKE solver needs NF = 3 data, got NF = {ds.nf}")
    if (ds.F4_initial[..., 3].sum(axis=(1, 2)) <= 0).any():
        raise ParameterError(f"{infile}: a row has zero total number density")
    fins, stds, growth, results = [], [], [], []
    t0 = time.perf_counter()
    with _progress(as_json, long=True) as prog:
        task = prog.add_task("QKE", total=ds.n, info="")
        for s in range(0, ds.n, batch):
            blk = ds.F4_initial[s : s + batch]
            f, sd, g, r = qke.asymptotic_state(blk, cfg, seed=seed + s, batch=batch)
            fins.append(f)
            stds.append(sd)
            growth.append(g * qke.SQRT2_GF_OVER_HBAR)
            results += r
            prog.update(task, advance=len(blk), info=f"{sum(x.ok for x in results)} accepted")
    seconds = time.perf_counter() - t0
    growth_arr = np.nan_to_num(np.concatenate(growth), nan=0.0)
    io.write_dataset(out, ds.F4_initial, np.concatenate(fins), np.concatenate(stds), growth_arr)
    summary = {
        "input": str(infile),
        "output": str(out),
        "n_points": ds.n,
        "n_accepted": sum(r.ok for r in results),
        "rejected": {i: r.reason for i, r in enumerate(results) if not r.ok},
        "max_conservation_error": max(r.conservation_err for r in results),
        "growth_rate_fit_over_lsa": [  # null where no rate could be fitted
            (r.growth_rate / r.growth_lsa if r.growth_lsa > 0 else None) for r in results
        ],
        "resolution": {"n_z": n_z, "n_dir": int(qke.lebedev.n_points(order))},
        "seconds": round(seconds, 2),
    }
    emit(summary, as_json)

@app.command("generate")
def generate_cmd(
    n: int = typer.Option(..., "--n", min=1, help="Number of accepted points wanted."),
    out: Path = typer.Option(..., "--out", "-o", help="Output HDF5 (Rhea/Emu format + generation metadata)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an existing file made with the same settings."),
    n_z: int = typer.Option(128, help="Cells (Fourier modes) along the box."),
    order: int = typer.Option(29, help="Lebedev order of the directions (29: 302, 17: 110)."),
    t_end_growth: float = typer.Option(60.0, help="Run length in e-folding times 1/Γ_LSA."),
    cfl: float = typer.Option(0.4, help="Time step × max‖H‖."),
    n_wavelengths: float = typer.Option(8.0, help="Box length in fastest-growing wavelengths."),
    lsa_order: int = typer.Option(17, help="Lebedev order of the box-sizing LSA (0: same as --order)."),
    gamma_min: float = typer.Option(0.01, help="Skip unstable points growing slower than this (√2G_F n_tot/ħ)."),
    p_stable: float = typer.Option(0.25, help="Probability of keeping a stable candidate."),
    seed: int = typer.Option(0, help="Campaign seed (sampling and perturbations)."),
    batch: int = typer.Option(1, min=1, help="Runs evolved together under jax.vmap (GPU: larger)."),
    checkpoint_every: int = typer.Option(10, min=1, help="Rewrite the file (atomically) every this many points."),
    conservation_tol: float = typer.Option(1e-6, help="Reject runs whose conservation error exceeds this (n_tot)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
) -> None:
    """Sample physical initial moments, run the QKE solver and write a training dataset."""
    from box3d_jax import generate as G

    if not 0.0 <= p_stable <= 1.0:
        raise ParameterError(f"--p-stable must be in [0, 1], got {p_stable}")
    cfg = _config(n_z, order, t_end_growth, cfl, n_wavelengths, lsa_order, seed, conservation_tol)
    scfg = G.SamplerConfig(p_stable=p_stable, gamma_min=gamma_min)
    check_out_file(out, force=True)  # an existing file: G.generate refuses it unless --resume
    t0 = time.perf_counter()
    with _progress(as_json, long=True) as prog:
        task = prog.add_task("generate", total=n, info="")

        def cb(done: int, total: int, stats: dict) -> None:
            prog.update(task, completed=done,
                        info=f"rejected {stats['rejected']}, skipped {stats['skipped']}")

        stats = G.generate(out, n, cfg, sampler=scfg, seed=seed, resume=resume, batch=batch,
                           checkpoint_every=checkpoint_every, on_progress=cb)
    summary = {"output": str(out), **stats, "seconds": round(time.perf_counter() - t0, 1)}
    emit(summary, as_json)
