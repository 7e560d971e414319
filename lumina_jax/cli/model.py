"""``lumina-jax params`` and ``lumina-jax ejecta``: the parameter spaces and the ejecta model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from lumina_jax.cli._output import dumps_json
from lumina_jax.errors import ParameterError, UserError


def _check(theta, space, bounds):
    from lumina_jax.ejecta import check_parameters  # JAX-heavy: imported on use

    return check_parameters(theta, space, bounds=bounds)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_json(path: Path):
    """Parsed JSON of a parameter file; anything unreadable is one :class:`UserError`."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"parameter file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a parameter file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text (JSON) file") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON in {path}: {exc.msg} (line {exc.lineno})") from None


def read_params_file(path: Path, space, *, bounds: str = "current") -> "tuple":
    """Read a parameter JSON file into a validated vector.  Returns ``(theta, warnings)``.

    Accepted: ``{name: value}``, ``{"params": {...}}``, a results ``summary.json`` (``best_fit``)
    or ``{"theta": [...]}`` (all values in the space's order).  ``bounds`` as in
    :meth:`ParameterSpace.check`."""
    d = _read_json(path)
    if isinstance(d, dict) and "theta" in d:
        theta = d["theta"]
        if not (isinstance(theta, list) and len(theta) == space.dim and all(map(_is_number, theta))):
            got = json.dumps(theta)
            raise ParameterError(f"{path}: 'theta' must be a list of {space.dim} numbers for stage {space.stage}, "
                                 f"got {got if len(got) <= 60 else got[:57] + '...'}")
        theta = np.asarray(theta, dtype=float)
        return theta, _check(theta, space, bounds)
    if isinstance(d, dict):
        for key in ("params", "best_fit"):
            if isinstance(d.get(key), dict):
                d = d[key]
                break
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected a JSON object {{name: value}}")
    for k, v in d.items():
        if not _is_number(v):
            raise ParameterError(f"{path}: parameter {k!r} must be a number, got {v!r}")
    # inactive parameters may be omitted: they do not act on the model; use the box centre
    centre = {n: 0.5 * (lo + hi) for n, lo, hi in zip(space.names, space.lows, space.highs) if n in space.inactive}
    theta = space.from_dict(d, fill=centre)
    return theta, _check(theta, space, bounds)


def register(app: typer.Typer) -> None:
    @app.command("params")
    def params_cmd(
        stage: int = typer.Option(..., "--stage", "-s", help="Stage: 1 (15-D), 2 (63-D) or 3 (135-D)."),
        parametrisation: Optional[str] = typer.Option(
            None, help="Stages 2, 3: 'full' (one value per zone) or 'knots' (smooth profiles, 15 + 8 x n_knots)."),
        n_knots: Optional[int] = typer.Option(
            None, help="Knots per species for --parametrisation knots: 2 to the number of zones (15 in stage 3)."),
        as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    ) -> None:
        """Print a stage's parameter space: names, ranges, kinds (relaxation rule), units."""
        from lumina_jax.params import load_space

        space = load_space(stage, parametrisation=parametrisation, n_knots=n_knots)  # checks the range of n_knots
        if n_knots is not None and space.parametrisation != "knots":
            raise ParameterError("--n-knots applies to --parametrisation knots only")
        if as_json:
            typer.echo(dumps_json(space.to_dict(), indent=1))
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
            typer.echo(dumps_json({
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
