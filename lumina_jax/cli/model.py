"""``lumina-jax params`` and ``lumina-jax ejecta``: the parameter spaces and the ejecta model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lumina_jax.errors import ParameterError, UserError


def read_params_file(path: Path, space) -> "tuple":
    """Read a ``{name: value}`` JSON file (or ``{"params": {...}}`` / a results ``summary.json``
    with ``best_fit``) into a validated vector.  Returns ``(theta, warnings)``."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"parameter file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON in {path}: {exc.msg} (line {exc.lineno})") from None
    if isinstance(d, dict):
        for key in ("params", "best_fit"):
            if isinstance(d.get(key), dict):
                d = d[key]
                break
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected a JSON object {{name: value}}")
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParameterError(f"{path}: parameter {k!r} must be a number, got {v!r}")
    # inactive parameters may be omitted: they do not act on the model; use the box centre
    centre = {n: 0.5 * (lo + hi) for n, lo, hi in zip(space.names, space.lows, space.highs) if n in space.inactive}
    theta = space.from_dict(d, fill=centre)
    warnings = space.check(theta)
    return theta, warnings


def register(app: typer.Typer) -> None:
    @app.command("params")
    def params_cmd(
        stage: int = typer.Option(..., "--stage", "-s", help="Stage: 1 (15-D), 2 (63-D) or 3 (135-D)."),
        parametrisation: Optional[str] = typer.Option(
            None, help="Stage 3 only: 'full' (135-D) or 'knots' (smooth profiles, 15 + 8 x n_knots)."),
        n_knots: Optional[int] = typer.Option(None, help="Knots per species for --parametrisation knots."),
        as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    ) -> None:
        """Print a stage's parameter space: names, ranges, kinds (relaxation rule), units."""
        from lumina_jax.params import load_space

        space = load_space(stage, parametrisation=parametrisation, n_knots=n_knots)
        if as_json:
            typer.echo(json.dumps(space.to_dict(), indent=1))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"stage {space.stage}: {space.dim} parameters ({space.parametrisation})")
        for col in ("#", "name", "low", "high", "kind", "unit", "active"):
            t.add_column(col)
        for i, (n, lo, hi, k, u) in enumerate(zip(space.names, space.lows, space.highs, space.kinds, space.units)):
            t.add_row(str(i), n, f"{lo:g}", f"{hi:g}", k, u, "yes" if n not in space.inactive else "no")
        Console().print(t)

    @app.command("ejecta")
    def ejecta_cmd(
        stage: int = typer.Option(..., "--stage", "-s", help="Stage: 1, 2 or 3."),
        params: Path = typer.Option(..., "--params", "-p", help="JSON file {name: value} (inactive names may be omitted)."),
        parametrisation: Optional[str] = typer.Option(None, help="Stage 3 only: 'full' or 'knots'."),
        as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    ) -> None:
        """Print the shell table (velocity, density, mass fractions) of the ejecta model."""
        import jax

        from lumina_jax.ejecta import build_ejecta, ejecta_table
        from lumina_jax.params import ELEMENTS, load_space

        space = load_space(stage, parametrisation=parametrisation)
        theta, warnings = read_params_file(params, space)
        ej = jax.jit(build_ejecta, static_argnums=1)(theta, space)
        rows = ejecta_table(ej)
        for w in warnings:
            typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
        if as_json:
            typer.echo(json.dumps({
                "stage": stage,
                "t_exp_days": float(ej.t_exp) / 86400.0,
                "luminosity_erg_s": float(ej.luminosity),
                "T_e_ratio": float(ej.t_e_ratio),
                "warnings": warnings,
                "shells": rows,
            }, indent=1))
            return
        header = f"{'shell':>5} {'v_mid':>8} {'rho':>10} " + " ".join(f"{e:>7}" for e in ELEMENTS)
        typer.echo(f"stage {stage} ejecta at t_exp = {float(ej.t_exp) / 86400:.2f} d, "
                   f"L = {float(ej.luminosity):.3e} erg/s   (v in km/s, rho in g/cm^3 at t_exp)")
        typer.echo(header)
        for r in rows:
            typer.echo(f"{r['shell']:>5} {r['v_mid_kms']:>8.0f} {r['rho_gcm3']:>10.3e} "
                       + " ".join(f"{r['X_' + e]:>7.4f}" for e in ELEMENTS))
