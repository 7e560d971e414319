"""Stage parameter spaces (15-, 63- and 135-D) and the +-10 % relaxation rule.

A :class:`ParameterSpace` is an immutable, hashable description of one stage: the
parameter names, their current bounds (the sampling box), the full prior they came
from, their *kind* (which decides relaxation), the zone layout of the composition
and the ejecta settings.  Because it is hashable it can be a static argument of
``jax.jit``.

Spaces are defined by ``lumina_jax/configs/stageN.yaml`` and loaded with :func:`load_space`.

Relaxation (:func:`relaxed_ranges`): for a best-fit value ``b`` of a parameter of
kind ``log`` (log quantities and power-law exponents) the new range is
``b +- margin * (prior width)``; for kind ``linear`` it is ``b +- margin * |b|``;
both are clipped to the full prior.  Parameters absent from ``best`` (new in the
stage) keep their full prior.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import yaml

from lumina_jax.errors import ParameterError, UserError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data

#: Elements of the ejecta model, in the order of LUMINA's abundances.csv.
ELEMENTS: tuple[str, ...] = ("C", "O", "Mg", "Si", "S", "Ca", "Ti", "Cr", "Fe", "Co", "Ni")
ATOMIC_NUMBERS: tuple[int, ...] = (6, 8, 12, 14, 16, 20, 22, 24, 26, 27, 28)
#: Species with a free mass fraction per zone in stages 2 and 3 (Ni = initial 56Ni).
ZONE_SPECIES: tuple[str, ...] = ("Fe", "Si", "S", "Ca", "Ni", "Mg", "Ti", "Cr")

KINDS = ("log", "linear")

#: Axis symbols (matplotlib mathtext) of the global parameters; their units are the stage
#: YAMLs' (``unit``), zone mass fractions are named by :func:`label`.
SYMBOLS: dict[str, str] = {
    "log_L": r"$\log_{10} L$",
    "v_inner": r"$v_\mathrm{inner}$",
    "log_rho_0": r"$\log_{10} \rho_0$",
    "density_exp": r"$n_\mathrm{in}$",
    "T_e_ratio": r"$T_e / T_\mathrm{rad}$",
    "v_core": r"$v_\mathrm{core}$",
    "v_wall": r"$v_\mathrm{wall}$",
    "X_Fe_core": r"$X_\mathrm{Fe}^\mathrm{core}$",
    "X_Si_wall": r"$X_\mathrm{Si}^\mathrm{wall}$",
    "v_break": r"$v_\mathrm{break}$",
    "density_exp_outer": r"$n_\mathrm{out}$",
    "t_exp": r"$t_\mathrm{exp}$",
    "X_Fe_wall": r"$X_\mathrm{Fe}^\mathrm{wall}$",
    "X_Ni": r"$X_{^{56}\mathrm{Ni}}$",
    "X_Fe_outer": r"$X_\mathrm{Fe}^\mathrm{outer}$",
}
#: how a dimensionless quantity's unit reads in a label
DIMENSIONLESS = "dimensionless"


@dataclasses.dataclass(frozen=True)
class ZoneLayout:
    """Composition zones of stages 2 and 3.

    ``mapping="velocity"``: zone ``z`` covers ``[edges[z], edges[z+1])`` km/s, edges uniform
    from ``v_min`` to ``v_outer`` independent of ``v_inner``; a shell takes the
    volume-weighted mean of the zones it overlaps.  ``mapping="index"``: zone of shell ``i`` is
    ``i * n // n_shells`` (the original pipeline: zones move with ``v_inner``).
    """

    n: int
    v_min: float
    v_max: float
    mapping: str = "velocity"

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.v_min, self.v_max, self.n + 1)


@dataclasses.dataclass(frozen=True)
class EjectaSettings:
    """Shell grid and density reference of the ejecta model."""

    n_shells: int = 30
    v_outer: float = 25000.0  # km/s
    t_ref_days: float = 19.0  # epoch at which rho_0 is given
    composition: str = "zones3"  # "zones3" (stage 1) or "zones" (stages 2, 3)


@dataclasses.dataclass(frozen=True)
class ParameterSpace:
    """One stage's parameter space.  Immutable and hashable (usable as a jit static arg).

    Attributes
    ----------
    stage: stage number (1, 2, 3).
    names: parameter names, in vector order.
    lows, highs: current sampling bounds (tuple of float), possibly relaxed.
    prior_lows, prior_highs: the stage's full prior.
    kinds: "log" or "linear" per parameter.
    inactive: names that do not act on the ejecta model in this stage.
    zones: composition zones (stages 2, 3) or None.
    ejecta: shell-grid settings.
    parametrisation: "full" or "knots" (stage 3 reduced); ``n_knots`` for the latter.
    """

    stage: int
    names: tuple[str, ...]
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    prior_lows: tuple[float, ...]
    prior_highs: tuple[float, ...]
    kinds: tuple[str, ...]
    units: tuple[str, ...]
    inactive: tuple[str, ...] = ()
    zones: ZoneLayout | None = None
    ejecta: EjectaSettings = EjectaSettings()
    parametrisation: str = "full"
    n_knots: int = 0

    # ------------------------------------------------------------------ basics
    @property
    def dim(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return self.dim

    @property
    def lower(self) -> np.ndarray:
        return np.asarray(self.lows, dtype=np.float64)

    @property
    def upper(self) -> np.ndarray:
        return np.asarray(self.highs, dtype=np.float64)

    @property
    def active_mask(self) -> np.ndarray:
        return np.array([n not in self.inactive for n in self.names])

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ParameterError(
                f"unknown parameter {name!r} for stage {self.stage}; known: {', '.join(self.names[:20])}"
                + (" ..." if self.dim > 20 else "")
            ) from None

    def label(self, name: str) -> str:
        """Axis label of ``name`` with its unit (:func:`label`)."""
        return label(name, self.units[self.index(name)])

    def zone_param_name(self, species: str, zone: int) -> str:
        if self.parametrisation == "knots":
            return f"X_{species}_k{zone}"
        return f"X_{species}_z{zone}"

    def fingerprint(self) -> str:
        """Short hash of names and bounds (used to match checkpoints and stores to a space)."""
        import hashlib

        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # --------------------------------------------------------------- transforms
    def to_unit(self, theta):
        """Physical values ``[..., dim]`` -> unit box ``[..., dim]`` over the current bounds.

        Works on NumPy and JAX arrays (pure, jit/vmap/grad friendly)."""
        lo, hi = self.lower, self.upper
        return (theta - lo) / (hi - lo)

    def from_unit(self, u):
        """Unit box ``[..., dim]`` -> physical values ``[..., dim]``."""
        lo, hi = self.lower, self.upper
        return lo + u * (hi - lo)

    # ------------------------------------------------------------- dict <-> vec
    def from_dict(self, values: Mapping[str, float], *, fill: Mapping[str, float] | None = None) -> np.ndarray:
        """Parameter dict -> vector.  Unknown or missing names raise :class:`ParameterError`.

        ``fill`` supplies values for names missing from ``values`` (e.g. inactive ones)."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise ParameterError(
                f"unknown parameter(s) for stage {self.stage}: {', '.join(unknown)}"
            )
        fill = dict(fill or {})
        missing = [n for n in self.names if n not in values and n not in fill]
        if missing:
            shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
            raise ParameterError(f"missing parameter(s) for stage {self.stage}: {shown}")
        out = np.empty(self.dim)
        for i, n in enumerate(self.names):
            v = values[n] if n in values else fill[n]
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                raise ParameterError(f"parameter {n!r} must be a number, got {v!r}") from None
        return out

    def to_dict(self, theta=None) -> dict:
        """Vector -> {name: value}; with no argument, a JSON-able description of the space."""
        if theta is not None:
            theta = np.asarray(theta, dtype=float)
            return {n: float(v) for n, v in zip(self.names, theta)}
        return {
            "stage": self.stage,
            "dim": self.dim,
            "parametrisation": self.parametrisation,
            "n_knots": self.n_knots,
            "parameters": [
                {
                    "name": n,
                    "low": lo,
                    "high": hi,
                    "prior_low": plo,
                    "prior_high": phi,
                    "kind": k,
                    "unit": u,
                    "active": n not in self.inactive,
                }
                for n, lo, hi, plo, phi, k, u in zip(
                    self.names, self.lows, self.highs, self.prior_lows, self.prior_highs, self.kinds, self.units
                )
            ],
            "zones": dataclasses.asdict(self.zones) if self.zones else None,
            "ejecta": dataclasses.asdict(self.ejecta),
        }

    # ---------------------------------------------------------------- validation
    def check(self, theta, *, bounds: str = "current") -> None:
        """Validate one parameter vector at a boundary (not for jitted code).

        Raises :class:`ParameterError` for a wrong shape, non-finite values, values outside
        the bounds (``bounds="current"``) or the full prior (``bounds="prior"``), and
        inconsistent orderings.  What the ejecta model makes of valid values (e.g. a
        heavy-element budget > 1, renormalised) is :func:`lumina_jax.ejecta.check_parameters`.
        """
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.dim,):
            raise ParameterError(f"stage {self.stage} expects {self.dim} parameters, got shape {theta.shape}")
        bad = [n for n, v in zip(self.names, theta) if not math.isfinite(v)]
        if bad:
            raise ParameterError(f"non-finite value(s) for: {', '.join(bad)}")
        lo, hi = (self.lower, self.upper) if bounds == "current" else (
            np.asarray(self.prior_lows), np.asarray(self.prior_highs))
        for n, v, a, b in zip(self.names, theta, lo, hi):
            if not (a <= v <= b):
                raise ParameterError(f"{n} = {v:g} is outside its range [{a:g}, {b:g}]")
        for msg in self.ordering_violations(theta):
            raise ParameterError(msg)

    def ordering_violations(self, theta) -> list[str]:
        """Messages for inconsistent velocity orderings (empty when consistent)."""
        d = dict(zip(self.names, np.asarray(theta, dtype=float)))
        v_out = self.ejecta.v_outer
        out = []
        v_in = d["v_inner"]
        if "v_break" in d and not (v_in < d["v_break"] < v_out):
            out.append(
                f"v_break = {d['v_break']:g} km/s lies outside the ejecta ({v_in:g} to {v_out:g} km/s)"
            )
        if "v_core" in d and "v_core" not in self.inactive:
            if not d["v_core"] < d["v_wall"]:
                out.append(f"v_core = {d['v_core']:g} must be below v_wall = {d['v_wall']:g} km/s")
            if not d["v_wall"] < v_out:
                out.append(f"v_wall = {d['v_wall']:g} must be below the outer edge {v_out:g} km/s")
        return out


    def ordering_margins(self, theta):
        """Velocity-ordering margins ``[..., m]`` in km/s (pure JAX; all > 0 when consistent):
        ``v_break - v_inner``, ``v_outer - v_break`` and, where the layered composition is
        active, ``v_wall - v_core`` and ``v_outer - v_wall``.  ``m`` may be 0."""
        import jax.numpy as jnp

        theta = jnp.asarray(theta)
        col = {n: theta[..., i] for i, n in enumerate(self.names)}
        out = []
        if "v_break" in col and "v_inner" in col:
            out += [col["v_break"] - col["v_inner"], self.ejecta.v_outer - col["v_break"]]
        if "v_core" in col and "v_core" not in self.inactive:
            out += [col["v_wall"] - col["v_core"], self.ejecta.v_outer - col["v_wall"]]
        return jnp.stack(out, axis=-1) if out else jnp.zeros(theta.shape[:-1] + (0,), theta.dtype)

    def valid_mask(self, thetas) -> np.ndarray:
        """Vectorised ordering check ``[n, dim] -> bool[n]`` (for design rejection)."""
        thetas = np.atleast_2d(np.asarray(thetas, dtype=float))
        ok = np.all(np.isfinite(thetas), axis=1)
        return ok & np.all(np.asarray(self.ordering_margins(thetas)) > 0, axis=1)

    # --------------------------------------------------------------- new bounds
    def with_bounds(self, lows: Sequence[float], highs: Sequence[float]) -> "ParameterSpace":
        lows = tuple(float(x) for x in lows)
        highs = tuple(float(x) for x in highs)
        if len(lows) != self.dim or len(highs) != self.dim:
            raise ParameterError(f"bounds must have {self.dim} entries")
        for n, a, b, pa, pb in zip(self.names, lows, highs, self.prior_lows, self.prior_highs):
            if not (pa <= a < b <= pb):
                raise ParameterError(f"bounds of {n} [{a:g}, {b:g}] are empty or outside the prior [{pa:g}, {pb:g}]")
        return dataclasses.replace(self, lows=lows, highs=highs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str | Mapping) -> "ParameterSpace":
        """Rebuild a space written by :meth:`to_json` (bounds included)."""
        d = json.loads(text) if isinstance(text, str) else dict(text)
        base = load_space(d["stage"], parametrisation=d.get("parametrisation", "full"),
                          n_knots=d.get("n_knots") or None)
        ps = d["parameters"]
        names = tuple(p["name"] for p in ps)
        if names != base.names:
            raise ParameterError(f"stored parameter names do not match stage {d['stage']} of this version")
        return base.with_bounds([p["low"] for p in ps], [p["high"] for p in ps])


# ----------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> dict:
    try:
        with open(path) as fh:
            d = yaml.safe_load(fh)
    except FileNotFoundError:
        raise UserError(f"parameter-space config not found: {path}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"malformed YAML in {path}: {exc}".splitlines()[0]) from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return d


def _parse_params(entries, path) -> list[dict]:
    out = []
    seen = set()
    for e in entries or []:
        try:
            name, lo, hi, kind = e["name"], float(e["low"]), float(e["high"]), e["kind"]
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: bad parameter entry {e!r} ({exc})") from None
        if kind not in KINDS:
            raise UserError(f"{path}: parameter {name}: kind must be one of {KINDS}, got {kind!r}")
        if not lo < hi:
            raise UserError(f"{path}: parameter {name}: low {lo} must be < high {hi}")
        if name in seen:
            raise UserError(f"{path}: duplicate parameter {name}")
        seen.add(name)
        out.append({"name": name, "low": lo, "high": hi, "kind": kind, "unit": str(e.get("unit", ""))})
    return out


def load_space(stage: int | str | Path, *, parametrisation: str | None = None,
               n_knots: int | None = None, config_dir: Path | None = None) -> ParameterSpace:
    """Load a stage's parameter space from ``lumina_jax/configs/stage{N}.yaml`` (or a YAML path).

    ``parametrisation`` ("full" or "knots") and ``n_knots`` override the stage-3 config.
    """
    config_dir = Path(config_dir) if config_dir else CONFIG_DIR
    if isinstance(stage, (str, Path)) and str(stage).endswith((".yaml", ".yml")):
        path = Path(stage)
    else:
        try:
            s = int(stage)
        except (TypeError, ValueError):
            raise UserError(f"stage must be 1, 2 or 3, got {stage!r}") from None
        if s not in (1, 2, 3):
            raise UserError(f"stage must be 1, 2 or 3, got {s}")
        path = config_dir / f"stage{s}.yaml"
    cfg = _read_yaml(path)
    params = []
    if "extends" in cfg:
        parent = _read_yaml(path.parent / f"{cfg['extends']}.yaml")
        params += _parse_params(parent.get("parameters"), path)
    params += _parse_params(cfg.get("parameters"), path)

    ej = EjectaSettings(**(cfg.get("ejecta") or {}))
    zones = None
    par = parametrisation or cfg.get("parametrisation", "full")
    if par not in ("full", "knots"):
        raise UserError(f"parametrisation must be 'full' or 'knots', got {par!r}")
    nk = n_knots if n_knots is not None else cfg.get("n_knots", 4)
    nk = nk if par == "knots" else 0
    if "zones" in cfg:
        z = cfg["zones"]
        zones = ZoneLayout(n=int(z["n"]), v_min=float(z.get("v_min", 7000.0)), v_max=ej.v_outer,
                           mapping=str(z.get("mapping", "velocity")))
        if par == "knots" and not (isinstance(nk, int) and not isinstance(nk, bool) and 2 <= nk <= zones.n):
            raise UserError(f"n_knots must be an integer from 2 to the {zones.n} composition zones, got {nk!r}")
        if zones.mapping not in ("velocity", "index"):
            raise UserError(f"{path}: zones.mapping must be 'velocity' or 'index'")
        species = cfg.get("species") or {}
        if tuple(species) != ZONE_SPECIES:
            raise UserError(f"{path}: species must be {ZONE_SPECIES} in this order")
        n_per = nk if par == "knots" else zones.n
        tag = "k" if par == "knots" else "z"
        for zi in range(n_per):
            for sp in ZONE_SPECIES:
                lo, hi = (float(x) for x in species[sp])
                params.append({"name": f"X_{sp}_{tag}{zi}", "low": lo, "high": hi, "kind": "linear", "unit": ""})
    elif par == "knots":
        raise UserError("the 'knots' parametrisation needs a stage with composition zones (2 or 3)")

    names = tuple(p["name"] for p in params)
    inactive = tuple(cfg.get("inactive") or ())
    unknown = set(inactive) - set(names)
    if unknown:
        raise UserError(f"{path}: inactive names not in the space: {sorted(unknown)}")
    lows = tuple(p["low"] for p in params)
    highs = tuple(p["high"] for p in params)
    return ParameterSpace(
        stage=int(cfg.get("stage", 0)),
        names=names,
        lows=lows,
        highs=highs,
        prior_lows=lows,
        prior_highs=highs,
        kinds=tuple(p["kind"] for p in params),
        units=tuple(p["unit"] for p in params),
        inactive=inactive,
        zones=zones,
        ejecta=ej,
        parametrisation=par,
        n_knots=nk,
    )


# ------------------------------------------------------------------------------ labels
_ZONE_NAME = re.compile(r"^X_([A-Za-z]+)_([zk])(\d+)$")


@functools.lru_cache(maxsize=1)
def _global_units() -> dict[str, str]:
    space = load_space(1)  # stages 2 and 3 extend stage 1: same globals, same units
    return dict(zip(space.names, space.units))


def label(name: str, unit: str | None = None) -> str:
    """Readable axis label of a parameter with its unit in brackets, e.g.
    ``label("v_inner") == "$v_\\mathrm{inner}$ [km/s]"``.

    ``unit``: as the space records it ("" for a dimensionless quantity, shown as
    ``[dimensionless]``); None takes the stage YAMLs' unit (zone mass fractions:
    dimensionless).  A unit "log10 U" of a logarithmic symbol is shown as ``[U]``.
    Names outside the stage spaces need ``unit``.
    """
    zone = _ZONE_NAME.match(name)
    if zone and zone.group(1) in ZONE_SPECIES:
        sp, tag, k = zone.groups()
        sp = r"^{56}\mathrm{Ni}" if sp == "Ni" else rf"\mathrm{{{sp}}}"
        symbol = rf"$X_{{{sp}}}$ {'zone' if tag == 'z' else 'knot'} {k}"
        default_unit = ""
    else:
        symbol = SYMBOLS.get(name, name)
        default_unit = _global_units().get(name)
    if unit is None:
        if default_unit is None:
            raise ParameterError(f"no unit known for parameter {name!r}; give it")
        unit = default_unit
    unit = unit.strip()
    if unit.startswith("log10 ") and r"\log" in symbol:
        unit = unit[len("log10 "):]
    unit = re.sub(r"\^(-?\d+)", r"$^{\1}$", unit) if unit else DIMENSIONLESS
    return f"{symbol} [{unit}]"


# -------------------------------------------------------------------------- relaxation
def relaxed_ranges(best: Mapping[str, float] | Sequence[float], space: ParameterSpace,
                   margin: float = 0.10) -> ParameterSpace:
    """The +-``margin`` search box around a previous stage's best fit.

    ``best`` is a {name: value} dict (names not in ``space`` are ignored, so a stage-1
    result can seed stage 2) or a vector of ``space``'s length.  Kind ``log``: +- margin x
    full prior width; kind ``linear``: +- margin x |value| (or margin x prior width when
    |value| < 1e-10).  Clipped to the full prior; a degenerate range is widened by 1e-6 of
    the prior width.  Parameters not in ``best`` keep their full prior.

    >>> s = relaxed_ranges({"log_L": 43.10, "v_inner": 11500.0}, load_space(1))
    >>> s.lows[:2], s.highs[:2]
    ((43.0, 10350.0), (43.2, 12650.0))
    """
    if not 0 < margin:
        raise ParameterError(f"margin must be positive, got {margin}")
    if not isinstance(best, Mapping):
        arr = np.asarray(best, dtype=float)
        if arr.shape != (space.dim,):
            raise ParameterError(f"best-fit vector must have {space.dim} entries, got shape {arr.shape}")
        best = dict(zip(space.names, arr))
    lows, highs = [], []
    for n, plo, phi, kind in zip(space.names, space.prior_lows, space.prior_highs, space.kinds):
        if n not in best:
            lows.append(plo)
            highs.append(phi)
            continue
        b = float(best[n])
        if not math.isfinite(b):
            raise ParameterError(f"best-fit value of {n} is not finite")
        if not (plo <= b <= phi):
            raise ParameterError(f"best-fit {n} = {b:g} lies outside the prior [{plo:g}, {phi:g}]")
        width = phi - plo
        delta = margin * width if (kind == "log" or abs(b) < 1e-10) else margin * abs(b)
        lo, hi = max(plo, b - delta), min(phi, b + delta)
        if hi - lo < 1e-6 * width:
            lo, hi = max(plo, b - 1e-6 * width), min(phi, b + 1e-6 * width)
        lows.append(round(lo, 12))
        highs.append(round(hi, 12))
    return space.with_bounds(lows, highs)


def transfer_best(best: Mapping[str, float], from_space: ParameterSpace,
                  to_space: ParameterSpace) -> dict[str, float]:
    """Map a best fit into another stage's names.

    Shared names are copied.  Zone abundances of a velocity-anchored ``from_space`` are
    carried to ``to_space``'s zones by the zone covering each target zone's centre (so a
    stage-2 best fit seeds stage 3's 120 zone parameters, which are then relaxed +-10 %
    instead of starting from the full prior).
    """
    fz, tz = from_space.zones, to_space.zones
    zone_names = set()
    if fz is not None and tz is not None:
        zone_names = {n for n in to_space.names if n.startswith("X_") and n.split("_")[-1][:1] in "zk"
                      and n.split("_")[1] in ZONE_SPECIES}
    out = {n: float(v) for n, v in best.items() if n in to_space.names and n not in zone_names}
    if not zone_names or from_space.parametrisation != "full" or to_space.parametrisation != "full":
        return out
    f_edges = fz.edges
    for zt, centre in enumerate(0.5 * (tz.edges[1:] + tz.edges[:-1])):
        zf = int(np.clip(np.searchsorted(f_edges, centre, side="right") - 1, 0, fz.n - 1))
        for sp in ZONE_SPECIES:
            src = from_space.zone_param_name(sp, zf)
            if src in best:
                out.setdefault(to_space.zone_param_name(sp, zt), float(best[src]))
    return out


def union_ranges(best: Mapping[str, float], lo: Mapping[str, float], hi: Mapping[str, float],
                 space: ParameterSpace, margin: float = 0.10) -> ParameterSpace:
    """The posterior-aware box: per parameter the hull of the +-``margin`` box around ``best``
    (:func:`relaxed_ranges`) and the previous posterior's interval [``lo``, ``hi``] (e.g. its
    central 99.7 %), clipped to the prior.  Names missing from ``lo`` / ``hi`` keep the
    +-``margin`` box; all dicts are in ``space``'s names (see :func:`transfer_best`)."""
    box = relaxed_ranges(best, space, margin=margin)
    lows, highs = [], []
    for n, blo, bhi, plo, phi in zip(space.names, box.lows, box.highs, space.prior_lows, space.prior_highs):
        a, b = lo.get(n), hi.get(n)
        if a is None or b is None or n not in best:
            lows.append(blo)
            highs.append(bhi)
            continue
        if not (math.isfinite(a) and math.isfinite(b) and a <= b):
            raise ParameterError(f"interval of {n} must be finite with low <= high, got [{a}, {b}]")
        lows.append(round(max(plo, min(blo, a)), 12))
        highs.append(round(min(phi, max(bhi, b)), 12))
    return space.with_bounds(lows, highs)


def next_box_hits(truth: Mapping[str, float], best: Mapping[str, float], space: ParameterSpace,
                  next_space: ParameterSpace, margin: float = 0.10,
                  interval: tuple[Mapping[str, float], Mapping[str, float]] | None = None) -> dict:
    """Does the next stage's box around a fit hold the next stage's truth?

    ``truth`` and ``best`` are {name: value} in ``space`` (an injection's truth and its fit);
    both are carried into ``next_space`` by :func:`transfer_best` (zones by their centres), the
    box is :func:`relaxed_ranges` of the carried fit and, with ``interval`` (``(lo, hi)`` dicts
    of the fit's posterior, in ``space``'s names), also :func:`union_ranges`.  Returns
    ``{"names": [...], "margin": [bool], "union": [bool] or None, "width_ratio": [float] or None}``
    over the names the fit carries (``width_ratio``: union width / margin width)."""
    t = transfer_best(truth, space, next_space)
    b = transfer_best(best, space, next_space)
    names = [n for n in next_space.names if n in b and n in t]
    box = relaxed_ranges(b, next_space, margin=margin)
    idx = [next_space.index(n) for n in names]
    lo, hi = np.asarray(box.lows)[idx], np.asarray(box.highs)[idx]
    x = np.array([t[n] for n in names])
    out = {"names": names, "margin": ((x >= lo) & (x <= hi)).tolist(), "union": None, "width_ratio": None}
    if interval is not None:
        ulo = transfer_best(interval[0], space, next_space)
        uhi = transfer_best(interval[1], space, next_space)
        ubox = union_ranges(b, ulo, uhi, next_space, margin=margin)
        ul, uh = np.asarray(ubox.lows)[idx], np.asarray(ubox.highs)[idx]
        out["union"] = ((x >= ul) & (x <= uh)).tolist()
        out["width_ratio"] = ((uh - ul) / np.maximum(hi - lo, 1e-300)).tolist()
    return out


def stage_summary_rows(space: ParameterSpace) -> Iterable[tuple]:
    for n, lo, hi, k, u in zip(space.names, space.lows, space.highs, space.kinds, space.units):
        yield n, lo, hi, k, u, n not in space.inactive
