"""CLI: ``lumina-jax simulate`` (one spectrum from a parameter file) and ``lumina-jax atomic build|info``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from lumina_jax.cli import _interrupt
from lumina_jax.cli._output import check_in_file, check_out_dir, check_out_file, check_plot_path, dumps_json, write_atomic
from lumina_jax.cli.model import read_params_file
from lumina_jax.errors import UserError


def write_spectrum_csv(path: Path, wavelength, l_lambda) -> None:
    """Write ``wavelength_A, L_lambda_erg_s_A`` columns (the directory must exist)."""
    np.savetxt(path, np.column_stack([wavelength, l_lambda]), delimiter=",",
               header="wavelength_A,L_lambda_erg_s_A", comments="", fmt=["%.3f", "%.6e"])


def plot_spectrum(path: Path, wavelength, l_lambda, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(wavelength, l_lambda, lw=1)
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel(r"$L_\lambda$ [erg s$^{-1}$ Å$^{-1}$]")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def absorption_minimum(wavelength, l_lambda, lo=5900.0, hi=6400.0) -> float:
    """Wavelength of the flux minimum in [lo, hi] (Si II 6355 by default)."""
    wavelength, l_lambda = np.asarray(wavelength), np.asarray(l_lambda)
    sel = (wavelength >= lo) & (wavelength <= hi)
    return float(wavelength[sel][np.argmin(l_lambda[sel])])


def simulate(
    stage: int = typer.Option(..., "--stage", help="parameter-space stage (1, 2 or 3)"),
    params: Path = typer.Option(..., "--params", help="JSON file: {name: value} (or {'theta': [...]})"),
    out: Path = typer.Option(..., "--out", help="output CSV (wavelength_A, L_lambda_erg_s_A)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="also save a PNG plot"),
    config: Optional[Path] = typer.Option(None, "--config", help="synthesizer config (default lumina_jax/configs/synth.yaml)"),
    atomic: Optional[str] = typer.Option(None, "--atomic", help="atomic data: default, a .npz, a TARDIS .h5 or a Kurucz folder"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing --out / --plot file"),
) -> None:
    """Synthesise one spectrum with the embedded JAX forward model.

    An existing --out or --plot file is kept (the command stops before any work) unless --force."""
    from lumina_jax.params import load_space
    from lumina_jax.synth import SynthConfig, Synthesizer

    space = load_space(stage)
    theta, warnings = read_params_file(params, space, bounds="prior")
    check_out_file(out, force=force, inputs=(params, config), make_parent=True)  # before the long work
    check_plot_path(plot, force=force, inputs=(out, params, config))
    check_in_file(config, option="--config", what="synthesizer YAML", text=True)
    cfg = SynthConfig.load(config)
    if atomic:
        cfg = cfg.replace(atomic=atomic)
    t0 = time.time()
    synth = Synthesizer.default(space, cfg)
    wl = synth.wavelength
    l_lam, state = synth.spectrum_and_state(theta)
    if not np.all(np.isfinite(l_lam)):
        raise UserError("the synthesizer returned non-finite fluxes for these parameters")
    with _interrupt.critical():
        write_atomic(out, lambda tmp: write_spectrum_csv(tmp, wl, l_lam))
    _interrupt.kept(f"spectrum written to {out}; no plot")
    if plot:
        with _interrupt.critical():
            write_atomic(plot, lambda tmp: plot_spectrum(tmp, wl, l_lam, title=f"stage {stage}: {params.name}"))
    summary = {
        "out": str(out), "plot": str(plot) if plot else None, "stage": stage, "n_wave": len(wl),
        "n_lines": synth.n_lines, "t_inner_K": float(state["t_inner"]),
        "l_emergent_over_requested": float(state["l_emergent"] / 10 ** theta[space.index("log_L")]),
        "si_ii_minimum_A": absorption_minimum(wl, l_lam), "seconds": round(time.time() - t0, 2),
        "warnings": warnings,
    }
    if as_json:
        typer.echo(dumps_json(summary, indent=1))
    else:
        for w in warnings:
            typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
        typer.echo(f"wrote {out} ({len(wl)} bins, {synth.n_lines} lines, T_inner {summary['t_inner_K']:.0f} K, "
                   f"Si II minimum {summary['si_ii_minimum_A']:.0f} A)")


atomic_app = typer.Typer(help="Build and inspect the atomic data of the synthesizer.", no_args_is_help=True)


@atomic_app.command("build")
def atomic_build(
    force: bool = typer.Option(False, "--force", help="rebuild even if the cache exists"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary"),
) -> None:
    """Build the default atomic data from the installed packages into the user cache."""
    from rich.console import Console

    from lumina_jax.atomic import build_default, default_path, load_default

    path = default_path()
    if path.exists() and not force:
        atomic, prov = load_default()
        status = "exists"
    else:
        console = Console(stderr=True)
        with console.status("building atomic data") as st:
            path, atomic, prov = build_default(progress=lambda m: st.update(m))
        status = "built"
    info = {"status": status, "path": str(path), "n_lines": atomic.n_lines,
            "build_seconds": prov.get("build_seconds"), "sources": prov.get("sources_used")}
    if as_json:
        typer.echo(dumps_json(info, indent=1))
    else:
        typer.echo(f"{status}: {path} ({atomic.n_lines} lines from {', '.join(info['sources'] or [])})")


@atomic_app.command("info")
def atomic_info(
    path: Optional[str] = typer.Option(None, "--path", help="atomic data (default cache, .npz, TARDIS .h5, Kurucz folder)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Lines and levels per ion, their level identity, and coverage of the key SN Ia features.

    The opacity fractions weight each line by its blocking sum_shells (1 - e^-tau) in the
    SN 2011fe-like model of lumina_jax.synth.state (the TARDIS configuration, stage-1 parameters)
    at TARDIS's converged T_inner = 10,521.52 K."""
    from lumina_jax.atomic import load_atomic
    from lumina_jax.atomic.info import summary
    import jax.numpy as jnp

    from lumina_jax.ejecta import build_ejecta
    from lumina_jax.params import load_space
    from lumina_jax.synth.state import REFERENCE_T_INNER, SN2011FE_LIKE, line_blocking, plasma_for_all_lines

    atomic, prov = load_atomic(path)
    space = load_space(1)
    ejecta = build_ejecta(jnp.asarray(space.from_dict(SN2011FE_LIKE)), space)
    st = plasma_for_all_lines(atomic, ejecta, t_inner=REFERENCE_T_INNER)
    s = summary(atomic, prov, weight=line_blocking(st["tau"]))
    if as_json:
        typer.echo(dumps_json(s, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{s['n_lines']} lines, {s['n_levels']} levels, "
                  f"{s['wavelength_range_A'][0]:.0f}-{s['wavelength_range_A'][1]:.0f} A, fingerprint {s['fingerprint']}")
    t = Table("ion", "levels (reference)", "lines", "matched", "derived", "g guessed", "opacity share",
              "opacity with full identity", title="level identity (opacity: SN 2011fe-like model)")

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f} %"

    ident = s["level_identity"]
    for ion, b in list(ident["per_ion"].items()) + [("total", ident["total"])]:
        t.add_row(ion, f"{b['levels']} ({b['levels_reference']})", str(b["lines"]), str(b["lines_matched"]),
                  str(b["lines_derived"]), str(b["lines_g_guessed"]), pct(b.get("opacity_share")),
                  pct(b.get("opacity_fraction_full")))
    console.print(t)
    k = Table("key feature", "coverage")
    for lab, v in s["key_features"].items():
        k.add_row(lab, v)
    console.print(k)


@atomic_app.command("download-kurucz")
def atomic_download_kurucz(
    dest: Optional[Path] = typer.Option(None, "--dest", help="folder (default: <cache>/kurucz)"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary"),
) -> None:
    """Download Kurucz gfZZII.pos line lists (ions I-IV of the model's elements); needs internet.

    Use them with ``--atomic <folder>`` or ``atomic: <folder>`` in lumina_jax/configs/synth.yaml."""
    from lumina_jax.atomic import cache_dir
    from lumina_jax.atomic.kurucz import download_kurucz

    dest = dest or cache_dir() / "kurucz"
    # resumable (files already there are kept), so an existing folder is fine; a file, or a folder
    # that cannot be written, is refused before any download
    check_out_dir(dest, force=True, option="--dest", what="line lists")
    files = download_kurucz(dest, progress=lambda m: typer.echo(m, err=True))
    if as_json:
        typer.echo(dumps_json({"dest": str(dest), "files": [str(f) for f in files]}, indent=1))
    else:
        typer.echo(f"{len(files)} files in {dest}")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    app.add_typer(atomic_app, name="atomic")
