"""Synthesizer configuration (``lumina_jax/configs/synth.yaml``), validated on load."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from lumina_jax.errors import UserError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synth.yaml"


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """All settings of the synthesizer (see lumina_jax/configs/synth.yaml for meanings)."""

    wl_start: float = 2000.0
    wl_stop: float = 10000.0
    wl_step: float = 5.0
    atomic: str = "default"
    t_rad_exponent: float = 0.45
    t_inner_guess: float = 1.20
    t_inner_iterations: int = 2
    radiation_field: str = "power_law"
    field_iterations: int = 10
    n_e_iterations: int = 30
    zeta: float = 1.0
    electron_scattering: bool = True
    thermalisation: float = 0.0
    line_interaction: str = "scatter"
    macroatom_iterations: int = 30
    occultation: bool = True
    opacity_dv_kms: float = 10.0
    obs_dv_kms: float = 150.0
    n_p_core: int = 12
    n_p_per_shell: int = 2
    tau_min: float = 0.01
    outlet_share: float = 1e-3
    n_samples: int = 24
    safety: float = 10.0
    max_lines: int | None = None
    seed: int = 0
    batch_size: int = 4

    @property
    def wavelength(self) -> np.ndarray:
        n = int(round((self.wl_stop - self.wl_start) / self.wl_step)) + 1
        return self.wl_start + self.wl_step * np.arange(n)

    def replace(self, **kw) -> "SynthConfig":
        c = dataclasses.replace(self, **kw)
        c.validate()
        return c

    def validate(self) -> None:
        def need(cond, msg):
            if not cond:
                raise UserError(f"synth config: {msg}")

        need(500.0 <= self.wl_start < self.wl_stop <= 50000.0, "wavelength range must satisfy 500 <= start < stop <= 50000 A")
        need(0 < self.wl_step <= (self.wl_stop - self.wl_start) / 2, "wavelength step must be positive and give >= 3 bins")
        need(0.0 <= self.t_rad_exponent <= 2.0, "t_rad_exponent must be in [0, 2]")
        need(0.5 <= self.t_inner_guess <= 3.0, "t_inner_guess must be in [0.5, 3]")
        need(0 <= self.t_inner_iterations <= 10, "t_inner_iterations must be 0..10")
        need(self.radiation_field in ("power_law", "transfer"),
             f"radiation.field must be power_law or transfer, got {self.radiation_field!r}")
        need(1 <= self.field_iterations <= 20, "radiation.field_iterations must be 1..20")
        need(1 <= self.n_e_iterations <= 500, "n_e_iterations must be 1..500")
        need(0.0 <= self.zeta <= 1.0, "zeta must be in [0, 1]")
        need(0.0 <= self.thermalisation <= 1.0, "thermalisation must be in [0, 1]")
        need(self.line_interaction in ("scatter", "downbranch", "macroatom"),
             f"line_interaction must be scatter, downbranch or macroatom, got {self.line_interaction!r}")
        need(self.line_interaction == "scatter" or self.thermalisation == 0.0,
             "thermalisation is a two-level stand-in for fluorescence: use it only with line_interaction: scatter")
        need(1 <= self.macroatom_iterations <= 1000, "macroatom_iterations must be 1..1000")
        need(0.0 <= self.outlet_share < 1.0, "line_selection.outlet_share must be in [0, 1)")
        need(0.5 <= self.opacity_dv_kms <= 200.0, "opacity_dv_kms must be in [0.5, 200]")
        need(self.opacity_dv_kms <= self.obs_dv_kms <= 2000.0, "obs_dv_kms must be >= opacity_dv_kms and <= 2000")
        need(2 <= self.n_p_core <= 200 and 1 <= self.n_p_per_shell <= 20, "n_p_core 2..200, n_p_per_shell 1..20")
        need(self.tau_min >= 0.0 and self.safety >= 1.0 and self.n_samples >= 1, "line_selection: tau_min >= 0, safety >= 1, n_samples >= 1")
        need(self.max_lines is None or self.max_lines >= 1, "max_lines must be >= 1 or null")
        need(self.batch_size >= 1, "batch_size must be >= 1")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> "SynthConfig":
        flat: dict[str, Any] = {}
        sections = {
            "wavelength": {"start": "wl_start", "stop": "wl_stop", "step": "wl_step"},
            "radiation": {"t_rad_exponent": "t_rad_exponent", "t_inner_guess": "t_inner_guess",
                          "t_inner_iterations": "t_inner_iterations", "field": "radiation_field",
                          "field_iterations": "field_iterations"},
            "plasma": {"n_e_iterations": "n_e_iterations", "zeta": "zeta"},
            "transfer": {k: k for k in ("electron_scattering", "thermalisation", "line_interaction", "macroatom_iterations",
                                        "occultation", "opacity_dv_kms",
                                        "obs_dv_kms", "n_p_core", "n_p_per_shell")},
            "line_selection": {k: k for k in ("tau_min", "outlet_share", "n_samples", "safety", "max_lines", "seed")},
        }
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, val in (d or {}).items():
            if key in sections:
                if not isinstance(val, Mapping):
                    raise UserError(f"{source}: section {key!r} must be a mapping")
                for k, v in val.items():
                    if k not in sections[key]:
                        raise UserError(f"{source}: unknown key {key}.{k}")
                    flat[sections[key][k]] = v
            elif key in ("atomic", "batch_size"):
                flat[key] = val
            else:
                raise UserError(f"{source}: unknown key {key!r}")
        out = {}
        for k, v in flat.items():
            typ = fields[k].type
            try:
                if v is None:
                    out[k] = None if k == "max_lines" else fields[k].default
                elif "bool" in str(typ):
                    if not isinstance(v, bool):
                        raise ValueError("expected true/false")
                    out[k] = v
                elif "int" in str(typ):
                    out[k] = int(v)
                elif "float" in str(typ):
                    out[k] = float(v)
                else:
                    out[k] = str(v)
            except (TypeError, ValueError) as exc:
                raise UserError(f"{source}: bad value for {k}: {v!r} ({exc})") from None
        cfg = cls(**out)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path | None = None) -> "SynthConfig":
        path = Path(path) if path else DEFAULT_CONFIG
        try:
            with open(path) as fh:
                d = yaml.safe_load(fh) or {}
        except FileNotFoundError:
            raise UserError(f"synth config not found: {path}") from None
        except yaml.YAMLError as exc:
            raise UserError(f"malformed YAML in {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(d, Mapping):
            raise UserError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(d, str(path))
