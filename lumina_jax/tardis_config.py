"""A TARDIS configuration (YAML) as an :class:`~lumina_jax.ejecta.Ejecta`.

Supported: ``model.structure.type: specific`` with a velocity grid (``start``, ``stop``, ``num``)
and a ``power_law`` density (``rho_0`` at ``v_0`` and ``time_0``, ``exponent``), uniform
abundances (of the model's elements; renormalised to 1), ``supernova.luminosity_requested`` and
``supernova.time_explosion``.  Quantities carry TARDIS's unit strings (``km/s``, ``day``,
``g/cm^3``, ``erg/s``).  Everything else of the file is ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from lumina_jax.ejecta import DAY, Ejecta
from lumina_jax.errors import DataFileError
from lumina_jax.params import ELEMENTS

_UNITS = {"km/s": 1.0, "cm/s": 1e-5, "day": 1.0, "d": 1.0, "s": 1.0 / DAY, "g/cm^3": 1.0, "g/cm3": 1.0,
          "erg/s": 1.0, "": 1.0}


def _quantity(text, what: str, units: tuple[str, ...]) -> float:
    m = re.match(r"\s*([-+\d.eE]+)\s*(\S*)\s*$", str(text))
    if not m or m.group(2) not in units:
        raise DataFileError(f"TARDIS configuration: cannot read {what} = {text!r} (expected a number with "
                            f"unit {' or '.join(u for u in units if u) or 'none'})")
    return float(m.group(1)) * _UNITS[m.group(2)]


def read_tardis_yaml(path, t_e_ratio: float = 0.9) -> Ejecta:
    """The ejecta of a TARDIS YAML configuration (see the module doc for what is supported)."""
    import yaml

    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataFileError(f"cannot read TARDIS configuration {path}: {exc}") from None
    try:
        st = cfg["model"]["structure"]
        v = st["velocity"]
        d = st["density"]
        ab = cfg["model"]["abundances"]
        sn = cfg["supernova"]
    except (KeyError, TypeError) as exc:
        raise DataFileError(f"{path}: not a TARDIS configuration with model.structure, model.abundances "
                            f"and supernova sections (missing {exc})") from None
    if st.get("type") != "specific" or d.get("type") != "power_law" or ab.get("type") != "uniform":
        raise DataFileError(f"{path}: only 'specific' structures with a power_law density and uniform "
                            "abundances are supported")
    n = int(v["num"])
    v_lo, v_hi = _quantity(v["start"], "velocity.start", ("km/s", "cm/s")), _quantity(v["stop"], "velocity.stop", ("km/s", "cm/s"))
    if n < 1 or not 0 < v_lo < v_hi:
        raise DataFileError(f"{path}: need 0 < velocity.start < velocity.stop and num >= 1")
    edges = np.linspace(v_lo, v_hi, n + 1)
    v_mid = 0.5 * (edges[1:] + edges[:-1])
    t_exp = _quantity(sn["time_explosion"], "supernova.time_explosion", ("day", "d", "s"))
    rho = (_quantity(d["rho_0"], "density.rho_0", ("g/cm^3", "g/cm3"))
           * (v_mid / _quantity(d["v_0"], "density.v_0", ("km/s", "cm/s"))) ** float(d["exponent"])
           * (_quantity(d["time_0"], "density.time_0", ("day", "d", "s")) / t_exp) ** 3)
    unknown = sorted(k for k in ab if k != "type" and k not in ELEMENTS)
    x = np.array([float(ab.get(e, 0.0)) for e in ELEMENTS])
    if x.sum() <= 0:
        raise DataFileError(f"{path}: no abundance of the model's elements ({', '.join(ELEMENTS)})")
    if unknown:
        raise DataFileError(f"{path}: abundances of elements the model lacks: {', '.join(unknown)}")
    x = x / x.sum()
    return Ejecta(v_inner=jnp.asarray(edges[:-1]), v_outer=jnp.asarray(edges[1:]), v_mid=jnp.asarray(v_mid),
                  t_exp=jnp.asarray(t_exp * DAY), rho=jnp.asarray(rho), X=jnp.asarray(np.tile(x, (n, 1))),
                  luminosity=jnp.asarray(_quantity(sn["luminosity_requested"], "supernova.luminosity_requested",
                                                   ("erg/s",))),
                  t_e_ratio=jnp.asarray(t_e_ratio))
