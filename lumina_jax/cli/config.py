"""``lumina-jax config show``: the inference configuration as a YAML file ``--config`` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The inference configuration (defaults and YAML overrides).", no_args_is_help=True)
    app.add_typer(group, name="config")

    @group.command("show")
    def show(
        config: Optional[Path] = typer.Option(None, "--config", help="A YAML file of overrides to apply first."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (with the format version) instead of YAML."),
    ) -> None:
        """Print every setting of `infer`, `check` and `pipeline`: the defaults, with --config's overrides.

        The output is itself a valid --config file: copy it, edit what you need, delete the rest."""
        from lumina_jax.cli._output import dumps_json
        from lumina_jax.workflows.config import config_record, load_inference_config, to_yaml

        cfg = load_inference_config(config)
        typer.echo(dumps_json(config_record(cfg), indent=1) if as_json else to_yaml(cfg).rstrip())
