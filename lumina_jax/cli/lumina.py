"""``lumina-jax lumina export-ref`` and ``lumina-jax lumina check-ref``: LUMINA-SN reference directories."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from lumina_jax.cli._output import dumps_json, refuse_overwrite
from lumina_jax.errors import UserError

lumina_app = typer.Typer(help="LUMINA-SN reference directories: write one from our atomic data, check one.",
                         no_args_is_help=True)


def _writable_parent(out: Path) -> None:
    parent = out.resolve().parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out {out}: directory {parent} is not writable")


@lumina_app.command("export-ref")
def export_ref(
    out: Path = typer.Option(..., "--out", "-o", help="reference directory to write (must not exist unless --force)"),
    stage: Optional[int] = typer.Option(None, "--stage", "-s", help="stage of --params (1, 2 or 3)"),
    params: Optional[Path] = typer.Option(None, "--params", "-p", help="JSON file {name: value} of the stage"),
    tardis_yaml: Optional[Path] = typer.Option(None, "--tardis-yaml", help="a TARDIS configuration (e.g. "
                                               "../shared/data/sn2011fe/sn2011fe.yml) instead of --stage/--params"),
    n_packets: int = typer.Option(200_000, "--n-packets", help="packets per iteration written into config.json"),
    n_iterations: int = typer.Option(10, "--n-iterations", help="iterations written into config.json"),
    seed: int = typer.Option(23111963, "--seed", help="seed written into config.json"),
    synth_config: Optional[Path] = typer.Option(None, "--synth-config", help="synthesizer YAML (default lumina_jax/configs/synth.yaml)"),
    force: bool = typer.Option(False, "--force", help="replace an existing --out"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary"),
) -> None:
    """Write every file LUMINA-SN reads, from our atomic data and our plasma solution of one model.

    Geometry, density, n_e, W/T_rad and tau_Sobolev come from the synthesizer's plasma state at
    its converged T_inner (LUMINA's iteration 0 starts from a physical state); levels, lines
    (nu descending), macro-atom blocks and their transition probabilities (Lucy's weights at that
    state) from the level-resolved atomic data; zeta = 1 where the atomic data have none.  The
    directory is validated (``lumina check-ref``) before it appears under its name.
    """
    from rich.console import Console

    from lumina_jax.lumina_export import export_reference

    if (tardis_yaml is None) == (params is None):
        raise UserError("give either --tardis-yaml FILE or --stage N --params FILE.json")
    if params is not None and stage is None:
        raise UserError("--params needs --stage")
    if n_packets < 1 or n_iterations < 1:
        raise UserError("--n-packets and --n-iterations must be positive")
    if not 0 <= seed < 2**62:
        raise UserError("--seed must lie in [0, 2^62)")
    refuse_overwrite(out, force=force, what="reference")
    _writable_parent(out)
    if tardis_yaml is not None:
        from lumina_jax.tardis_config import read_tardis_yaml

        ejecta = read_tardis_yaml(tardis_yaml)
        source = {"model": {"tardis_yaml": str(tardis_yaml)}}
    else:
        import jax.numpy as jnp

        from lumina_jax.cli.model import read_params_file
        from lumina_jax.ejecta import build_ejecta
        from lumina_jax.params import load_space

        space = load_space(stage)
        theta, warnings = read_params_file(params, space)
        for w in warnings:
            typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
        ejecta = build_ejecta(jnp.asarray(theta), space)
        source = {"model": {"stage": stage, "params": dict(zip(space.names, map(float, theta)))}}
    console = Console(stderr=True)
    with console.status("exporting") as st:
        summary = export_reference(out, ejecta, config=synth_config, n_packets=n_packets, n_iterations=n_iterations,
                                   seed=seed, overwrite=force, provenance=source, progress=lambda m: st.update(m))
    if as_json:
        typer.echo(dumps_json(summary, indent=1))
    else:
        typer.echo(f"wrote {out}: {summary['n_shells']} shells, {summary['n_lines']} lines, {summary['n_levels']} levels, "
                   f"{summary['n_transitions']} transitions; T_inner {summary['T_inner_K']:.0f} K, "
                   f"W {summary['W'][0]:.3f}-{summary['W'][1]:.3f}, T_rad {summary['T_rad_K'][0]:.0f}-"
                   f"{summary['T_rad_K'][1]:.0f} K; zeta {summary['zeta']}")


@lumina_app.command("check-ref")
def check_ref(
    ref: Path = typer.Argument(..., help="LUMINA reference directory"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON report"),
) -> None:
    """Check a reference directory against what LUMINA-SN's loaders need (exit 1 if it is not valid).

    Every file and column, .npy dtypes (int64/float64, C order) and shapes against the shell,
    line, level and transition counts, nu ordering, level and block references, probability
    block sums, and the element set of atom_masses.csv (the 11 elements: LUMINA silently drops
    the rows of elements it lacks)."""
    from runners.backends.lumina_ref import check_reference, reference_hash

    if not ref.is_dir():
        raise UserError(f"{ref} is not a directory")
    problems = check_reference(ref)
    digest = reference_hash(ref) if not problems else None
    if as_json:
        typer.echo(dumps_json({"path": str(ref), "valid": not problems, "problems": problems, "sha256": digest},
                              indent=1))
    elif problems:
        for p in problems:
            typer.echo(f"problem: {p}")
        typer.echo(f"{ref}: {len(problems)} problem(s); LUMINA-SN would crash or run on wrong data")
    else:
        typer.echo(f"{ref}: valid LUMINA-SN reference (sha256 {digest[:16]})")
    if problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(lumina_app, name="lumina")
