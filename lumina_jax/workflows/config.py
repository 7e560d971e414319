"""The inference configuration: one frozen, typed tree whose defaults are the only defaults.

:class:`InferenceConfig` gathers the sections ``mock``, ``likelihood``
(:class:`~lumina_jax.inference.density.LikelihoodConfig`), ``priors``, ``observed``, ``sampler``
(:class:`~lumina_jax.inference.sampling.SamplerConfig`) and ``convergence``.  A YAML file
(``--config``) overrides any of its keys; ``lumina-jax config show`` prints the whole tree as
such a file.  Every results directory records the tree it ran with (:func:`config_record`,
format :data:`CONFIG_FORMAT_VERSION`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Callable

import yaml

from lumina_jax.errors import UserError
from lumina_jax.inference.density import (BOX_LINKS, EMULATOR_ERRORS, EMULATOR_SIGMA_MODES, F_SYS_PRIORS,
                                          LikelihoodConfig)
from lumina_jax.inference.diagnostics import MAX_DIVERGENT_FRAC, RHAT_MAX
from lumina_jax.inference.sampling import EMCEE_MOVES, SAMPLERS, SamplerConfig

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"  # package data
#: The shipped emulator of each stage: stage 1 in the full stage-1 box; stages 2 and 3 in the
#: boxes of the SN 2011fe chain (``lumina-jax pipeline --observed``, lumina_jax/checkpoints/README.md).
SHIPPED_EMULATORS = {1: "stage1_synth.h5", 2: "stage2_sn2011fe.h5", 3: "stage3_sn2011fe.h5"}
#: The shipped previous-stage result whose relaxed box each stage's shipped emulator was trained in.
SHIPPED_PREVIOUS = {2: "sn2011fe_stage1", 3: "sn2011fe_stage2"}
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / SHIPPED_EMULATORS[1]
DEFAULT_RESULTS = Path("results")
CONFIG_FORMAT_VERSION = 2  # 1: the untyped dict of earlier results (no "config" record)

#: The mock observation of ``infer`` without ``--observed``: the synthesizer at SN 2011fe-like
#: stage-1 parameters near B maximum (L ~ 1e43 erg/s, Pereira+2013 L_bol,peak ~ 1.2e43;
#: photosphere ~ 10,500 km/s; t_exp = 18 d, Nugent+2011; a Si-rich wall; ~0.15 initial 56Ni).
MOCK_STAGE1 = {"log_L": 43.0, "v_inner": 10500.0, "log_rho_0": -13.2, "density_exp": -7.0, "T_e_ratio": 0.9,
               "v_core": 12000.0, "v_wall": 16000.0, "X_Fe_core": 0.4, "X_Si_wall": 0.5, "v_break": 18000.0,
               "density_exp_outer": -10.0, "t_exp": 18.0, "X_Fe_wall": 0.05, "X_Ni": 0.15, "X_Fe_outer": 0.01}


@dataclasses.dataclass(frozen=True)
class MockConfig:
    """The synthesizer mock: parameters per stage (stages 2 and 3 None: derived from the
    previous stage's fit or the stage-1 mock), Gaussian noise per pixel as a fraction of the
    flux (0.02: S/N 50), its seed, and the wavelength window in A (the SN 2011fe SNfactory coverage)."""

    stage1: dict = dataclasses.field(default_factory=lambda: dict(MOCK_STAGE1))
    stage2: dict | None = None
    stage3: dict | None = None
    noise_frac: float = 0.02
    seed: int = 0
    window: tuple[float, float] | None = (3300.0, 9700.0)

    def parameters(self, stage: int) -> dict | None:
        """The mock parameters given for ``stage`` (None when not given)."""
        return getattr(self, f"stage{int(stage)}", None)


@dataclasses.dataclass(frozen=True)
class ObservedConfig:
    """How an observed spectrum is read: heliocentric redshift, Milky-Way and host E(B-V)
    (F99, R_V = 3.1), the telluric O2 A/B mask, A trimmed at each end, fitted window (A)."""

    redshift: float = 0.0
    ebv_mw: float = 0.0
    ebv_host: float = 0.0
    telluric: bool = False
    edge_trim: float = 10.0
    window: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class ConvergenceCriteria:
    """A fit has converged when its max R-hat <= ``rhat_max`` and at most ``max_divergent_frac``
    of its draws diverged."""

    rhat_max: float = RHAT_MAX
    max_divergent_frac: float = MAX_DIVERGENT_FRAC


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """The whole inference configuration (module docstring); ``priors``: informative Gaussian
    priors ``{name: (mean, sd)}`` in physical units, e.g. ``{"t_exp": (18.0, 1.0)}``."""

    mock: MockConfig = MockConfig()
    likelihood: LikelihoodConfig = LikelihoodConfig()
    priors: dict = dataclasses.field(default_factory=dict)
    observed: ObservedConfig = ObservedConfig()
    sampler: SamplerConfig = SamplerConfig()
    convergence: ConvergenceCriteria = ConvergenceCriteria()


def default_checkpoint(stage: int) -> Path:
    """The shipped emulator checkpoint of ``stage`` (:data:`SHIPPED_EMULATORS`).

    Any ``lumina_jax/checkpoints/stage1_synth.*`` is accepted when the stage-1 file itself is absent
    (the file extension is the emulator's choice)."""
    if stage not in SHIPPED_EMULATORS:
        raise UserError(f"no shipped emulator for stage {stage}: pass --checkpoint")
    path = CHECKPOINT_DIR / SHIPPED_EMULATORS[stage]
    if path.exists():
        return path
    alts = sorted(path.parent.glob(path.stem + ".*"))
    if alts:
        return alts[0]
    raise UserError(f"shipped stage-{stage} checkpoint not found at {path}; pass --checkpoint PATH")


def default_previous(stage: int) -> Path:
    """The shipped stage-(N-1) result that defines the box of stage ``stage``'s shipped emulator."""
    if stage not in SHIPPED_PREVIOUS:
        raise UserError(f"stage {stage} has no previous stage")
    path = CHECKPOINT_DIR / SHIPPED_PREVIOUS[stage]
    if not (path / "summary.json").is_file():
        raise UserError(f"shipped stage-{stage - 1} result not found at {path}; pass --from RESULTS_DIR")
    return path


class _Bad(ValueError):
    """A config value that breaks its rule; the message says what the rule wants."""


def _real(v, *, gt=None, ge=None, lt=None, le=None, want="a number"):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Bad(want)
    if (gt is not None and not v > gt) or (ge is not None and not v >= ge) or (lt is not None and not v < lt) \
            or (le is not None and not v <= le):
        raise _Bad(want)
    return float(v)


def _integer(v, *, lo=None, hi=None, want="an integer"):
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _Bad(want)
    return v


def _optional(check):
    return lambda v: None if v is None else check(v)


def _range(v, *, positive=False, want="[low, high] with low < high"):
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        raise _Bad(want)
    lo, hi = (_real(x, gt=0 if positive else None, want=want) for x in v)
    if not lo < hi:
        raise _Bad(want)
    return [lo, hi]


def _choice(*options):
    def check(v):
        if v not in options:
            raise _Bad("one of " + ", ".join(options))
        return v
    return check


def _flag(v):
    if not isinstance(v, bool):
        raise _Bad("true or false")
    return v


RIDGE_WANT = "a parameter name (e.g. t_exp), or null / none"


def ridge_name(value) -> str | None:
    """``sampler.ridge`` / ``--ridge`` value: None for None or ``none`` (off), the name itself for
    an identifier; ValueError otherwise (whether the stage has the parameter is checked by the fit)."""
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    if not (isinstance(value, str) and value.isidentifier()):
        raise ValueError(value)
    return value


def _name(v):
    try:
        return ridge_name(v)
    except ValueError:
        raise _Bad(RIDGE_WANT) from None


_STAGE_KEYS = ("stage1", "stage2", "stage3")


def _box_link(v):
    want = f"one of {', '.join(BOX_LINKS)} (or a mapping {{stage1: ..., stage2: ..., stage3: ...}} of them)"
    if isinstance(v, dict):
        bad = sorted(set(v) - set(_STAGE_KEYS), key=str)
        if bad:
            raise _Bad(f"a mapping with stage keys {', '.join(_STAGE_KEYS)}, not unknown stage key(s) {bad}")
        values = tuple(v.get(k, "logit") for k in _STAGE_KEYS)
    else:
        values = (v,) * 3
    if any(x not in BOX_LINKS for x in values):
        raise _Bad(want)
    return values


def _error_scale(v):
    return v if v == "checkpoint" else _real(v, gt=0, want="'checkpoint' or a positive number")


def _mock_values(v):
    want = "a mapping {name: number} of finite numbers"
    if not isinstance(v, dict):
        raise _Bad(want)
    return {str(k): _real(x, want=want) for k, x in v.items()}


def _prior(v):
    want = "[mean, sd] with a finite mean and a finite sd > 0"
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        raise _Bad(want)
    return (_real(v[0], want=want), _real(v[1], gt=0, want=want))


def _tuple_range(v):
    return tuple(_range(v))


_POS = functools.partial(_real, gt=0, want="a positive number")
_NONNEG = functools.partial(_real, ge=0, want="a number >= 0")


def _int(lo=None, hi=None):
    want = (f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}" if lo is not None
            else "an integer")
    return functools.partial(_integer, lo=lo, hi=hi, want=want)


def check_emulator_sigma(value: str | None, name: str = "emulator_sigma") -> str | None:
    """``value`` when it is one of :data:`EMULATOR_SIGMA_MODES` or None (None: the config's
    choice); a :class:`UserError` naming ``name`` otherwise (the CLI and ``InferRequest`` check)."""
    if value is not None and value not in EMULATOR_SIGMA_MODES:
        raise UserError(f"{name} must be varying or fixed, got {value!r}")
    return value


#: The keys a YAML file may set, each with its rule (dotted paths into :class:`InferenceConfig`;
#: ``priors`` is a mapping {parameter: [mean, sd]} instead).  Fields not listed (the sampler's
#: seed, progress bars, NPE checkpoint) are run options: command-line flags only.
CHECKS: dict[str, Callable] = {
    "mock.stage1": _mock_values, "mock.stage2": _optional(_mock_values), "mock.stage3": _optional(_mock_values),
    "mock.noise_frac": _POS, "mock.seed": _int(0), "mock.window": _optional(_tuple_range),
    "likelihood.n_poly": _int(0, 10),
    "likelihood.f_sys_prior": _choice(*F_SYS_PRIORS),
    "likelihood.f_sys_scale": _POS,
    "likelihood.f_sys_range": lambda v: tuple(_range(v, positive=True, want="[low, high] with 0 < low < high")),
    "likelihood.log_scale_sd": _POS, "likelihood.poly_sd": _POS,
    "likelihood.emulator_error": _choice(*EMULATOR_ERRORS),
    "likelihood.emulator_error_scale": _error_scale,
    "likelihood.emulator_rank": _optional(functools.partial(_integer, lo=1, want="a positive integer or null")),
    "likelihood.stride": _int(1, 50),
    "likelihood.emulator_corr_length": _optional(functools.partial(_real, gt=0, want="a positive length in Angstrom or null")),
    "likelihood.box_link": _box_link,
    "likelihood.ordering_softness": functools.partial(_real, ge=0, want="a number >= 0 km/s (0: off)"),
    "likelihood.emulator_sigma": _choice(*EMULATOR_SIGMA_MODES),
    "observed.redshift": functools.partial(_real, gt=-0.01, lt=5, want="a number in (-0.01, 5)"),
    "observed.ebv_mw": functools.partial(_real, ge=0, lt=5, want="a number in [0, 5)"),
    "observed.ebv_host": functools.partial(_real, ge=0, lt=5, want="a number in [0, 5)"),
    "observed.telluric": _flag, "observed.edge_trim": _NONNEG, "observed.window": _optional(_tuple_range),
    "sampler.name": _choice(*SAMPLERS), "sampler.num_chains": _int(1), "sampler.num_warmup": _int(0),
    "sampler.num_samples": _int(10),
    "sampler.target_accept": functools.partial(_real, gt=0, lt=1, want="a number in (0, 1)"),
    "sampler.max_tree_depth": _int(1, 20), "sampler.dense_mass": _optional(_flag), "sampler.map_starts": _int(1),
    "sampler.ridge": _optional(_name),
    "sampler.hmc.trajectory_length": _POS,
    "sampler.chees.min_chains": _int(2), "sampler.chees.learning_rate": _POS,
    "sampler.mclmc.target_accept": functools.partial(_real, gt=0, lt=1, want="a number in (0, 1)"),
    "sampler.mclmc.thin": _int(1), "sampler.mclmc.steps": functools.partial(_real, ge=1.2, want="a number >= 1.2"),
    "sampler.emcee.walkers": _int(0), "sampler.emcee.steps": _int(0), "sampler.emcee.thin": _int(0),
    "sampler.emcee.burn": functools.partial(_real, ge=0, lt=1, want="a number in [0, 1)"),
    "sampler.emcee.moves": _choice(*EMCEE_MOVES),
    "sampler.nested.live": _int(10), "sampler.nested.delete": _int(0), "sampler.nested.inner_steps": _int(0),
    "sampler.nested.dlogz": _POS, "sampler.nested.max_steps": _int(1),
    "convergence.rhat_max": functools.partial(_real, ge=1, want="a number >= 1"),
    "convergence.max_divergent_frac": functools.partial(_real, ge=0, le=1, want="a number in [0, 1]"),
}


def load_inference_config(path: Path | None = None) -> InferenceConfig:
    """The defaults of :class:`InferenceConfig`, overridden by the YAML file ``path`` (None: the
    defaults alone).  Unknown sections and keys, wrong types and out-of-range values stop here
    with one line naming the key (nothing is checked later, inside a fit)."""
    if path is None:
        return InferenceConfig()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"inference config not found: {path}") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise UserError(f"inference config {path} is not a readable YAML file ({exc.__class__.__name__})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"malformed YAML in {path}: {str(exc).splitlines()[0]}") from None
    if raw is None:
        return InferenceConfig()
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping")
    return override(InferenceConfig(), raw, where=str(path))


def override(cfg, raw: dict, *, where: str = "config", prefix: str = ""):
    """``cfg`` (a config dataclass) with the values of the mapping ``raw`` checked by
    :data:`CHECKS` and put in place; nested dataclasses take nested mappings."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    settable = sorted({k[len(prefix):].split(".")[0] for k in CHECKS if k.startswith(prefix)} | (
        {"priors"} if not prefix else set()))
    new = {}
    for key, value in raw.items():
        dotted = prefix + str(key)
        if key not in fields or key not in settable:
            what = f"section(s) [{key!r}]" if not prefix else f"key {dotted}"
            known = ", ".join(settable)
            raise UserError(f"{where}: unknown {what}; known{' keys of ' + repr(prefix[:-1]) if prefix else ''}: {known}")
        current = getattr(cfg, key)
        if dotted == "priors":
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise UserError(f"{where}: 'priors' must be a mapping")
            new[key] = {str(n): _checked(where, f"priors.{n}", v, _prior) for n, v in value.items()}
        elif dataclasses.is_dataclass(current):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise UserError(f"{where}: '{dotted}' must be a mapping")
            new[key] = override(current, value, where=where, prefix=dotted + ".")
        else:
            new[key] = _checked(where, dotted, value, CHECKS[dotted])
    try:
        return dataclasses.replace(cfg, **new)
    except UserError as exc:  # a rule across keys (the dataclass's own check)
        raise UserError(f"{where}: {exc}") from None


def _checked(where, key: str, value, check):
    try:
        return check(value)
    except _Bad as exc:
        raise UserError(f"{where}: {key} must be {exc}, got {value!r}") from None


def settable_dict(cfg, prefix: str = "") -> dict:
    """The keys of ``cfg`` a YAML file may set, as plain YAML-ready values (tuples as lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        dotted = prefix + f.name
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            sub = settable_dict(v, dotted + ".")
            if sub:
                out[f.name] = sub
        elif dotted == "priors":
            out[f.name] = {n: list(ms) for n, ms in v.items()}
        elif dotted in CHECKS:
            if dotted == "likelihood.box_link":
                v = dict(zip(_STAGE_KEYS, v))
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def config_record(cfg: InferenceConfig) -> dict:
    """What a results directory records of its configuration: the format version and every
    settable key (:func:`settable_dict`); :func:`load_inference_config` reads it back as YAML."""
    return {"format_version": CONFIG_FORMAT_VERSION, **settable_dict(cfg)}


def to_yaml(cfg: InferenceConfig) -> str:
    """The whole configuration as a YAML file that ``--config`` accepts."""
    return yaml.safe_dump(settable_dict(cfg), sort_keys=False, default_flow_style=False)


def sampler_config(base: SamplerConfig, **overrides) -> SamplerConfig:
    """``base`` with the ``overrides`` (command-line flags) that are not None put in place."""
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def parse_prior(text: str) -> tuple[str, tuple[float, float]]:
    """``"t_exp=18,1"`` -> ("t_exp", (18.0, 1.0)); the mean finite, the sd finite and > 0."""
    try:
        name, rest = text.split("=", 1)
        mu, sd = (float(x) for x in rest.split(","))
    except ValueError:
        raise UserError(f"--prior must look like NAME=MEAN,SD (e.g. t_exp=18,1), got {text!r}") from None
    if not (math.isfinite(mu) and math.isfinite(sd) and sd > 0):
        raise UserError(f"--prior {text}: MEAN must be finite and SD finite and > 0")
    return name.strip(), (mu, sd)


def parse_window(text: str | None):
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--window must look like LO,HI in Angstrom, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UserError(f"--window {text}: LO and HI must be finite")
    if not lo < hi:
        raise UserError(f"--window {text}: LO must be below HI")
    return lo, hi
