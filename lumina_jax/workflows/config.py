"""Inference configuration (``lumina_jax/configs/inference.yaml``) and the default checkpoint location."""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any, Callable

import yaml

from lumina_jax.errors import UserError
from lumina_jax.inference.diagnostics import MAX_DIVERGENT_FRAC, RHAT_MAX
from lumina_jax.inference.samplers import EMCEE_MOVES, SAMPLERS
from lumina_jax.params import CONFIG_DIR

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"  # package data
#: The shipped emulator of each stage: stage 1 in the full stage-1 box; stages 2 and 3 in the
#: boxes of the SN 2011fe chain (``lumina-jax pipeline --observed``, lumina_jax/checkpoints/README.md).
SHIPPED_EMULATORS = {1: "stage1_synth.h5", 2: "stage2_sn2011fe.h5", 3: "stage3_sn2011fe.h5"}
#: The shipped previous-stage result whose relaxed box each stage's shipped emulator was trained in.
SHIPPED_PREVIOUS = {2: "sn2011fe_stage1", 3: "sn2011fe_stage2"}
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / SHIPPED_EMULATORS[1]
INFERENCE_CONFIG = CONFIG_DIR / "inference.yaml"
DEFAULT_RESULTS = Path("results")


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


EMULATOR_ERROR_MODES = ("correlated", "independent")
_STAGE_KEYS = ("stage1", "stage2", "stage3")
_NO_DEFAULT = object()


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


def _box_link(v):
    from lumina_jax.inference.model import BOX_LINKS

    want = (f"one of {', '.join(BOX_LINKS)} (or a mapping {{stage1: ..., stage2: ..., stage3: ...}} of them)")
    if isinstance(v, dict):
        bad = sorted(set(v) - set(_STAGE_KEYS), key=str)
        if bad:
            raise _Bad(f"a mapping with stage keys {', '.join(_STAGE_KEYS)}, not unknown stage key(s) {bad}")
        values = list(v.values())
    else:
        values = [v]
    if any(x not in BOX_LINKS for x in values):
        raise _Bad(want)
    return v


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
    return [_real(v[0], want=want), _real(v[1], gt=0, want=want)]


_POS = functools.partial(_real, gt=0, want="a positive number")
_NONNEG = functools.partial(_real, ge=0, want="a number >= 0")

EMULATOR_SIGMA_MODES = ("fixed", "varying")  # likelihood.emulator_sigma (see model.freeze_sigma)


def check_emulator_sigma(value: str | None, name: str = "emulator_sigma") -> str | None:
    """``value`` when it is one of :data:`EMULATOR_SIGMA_MODES` or None (None: the config's
    choice); a :class:`UserError` naming ``name`` otherwise (the CLI and ``InferRequest`` check)."""
    if value is not None and value not in EMULATOR_SIGMA_MODES:
        raise UserError(f"{name} must be varying or fixed, got {value!r}")
    return value


#: {section: {key: (default, check)}}; ``priors`` is {parameter name: [mean, sd]} instead.
_SCHEMA: dict[str, dict[str, tuple[Any, Callable]]] = {
    "mock": {
        **{k: (_NO_DEFAULT, _mock_values) for k in ("stage1", "stage2", "stage3")},
        "noise_frac": (0.02, _POS),
        "seed": (0, functools.partial(_integer, lo=0, want="an integer >= 0")),
        "window": (None, _optional(_range)),
    },
    "likelihood": {
        "n_poly": (2, functools.partial(_integer, lo=0, hi=10, want="an integer in 0..10")),
        "f_sys_prior": ("half-normal", _choice("half-normal", "log-uniform")),
        "f_sys_scale": (0.2, _POS),
        "f_sys_range": ([1e-3, 0.3], functools.partial(_range, positive=True, want="[low, high] with 0 < low < high")),
        "log_scale_sd": (0.5, _POS),
        "poly_sd": (0.1, _POS),
        "emulator_error": ("correlated", _choice(*EMULATOR_ERROR_MODES)),
        "emulator_error_scale": ("checkpoint", _error_scale),
        "emulator_rank": (None, _optional(functools.partial(_integer, lo=1, want="a positive integer or null"))),
        "stride": (8, functools.partial(_integer, lo=1, hi=50, want="an integer in 1..50")),
        "emulator_corr_length": (None, _optional(functools.partial(
            _real, gt=0, want="a positive length in Angstrom or null"))),
        "box_link": ("logit", _box_link),
        "ordering_softness": (200.0, functools.partial(_real, ge=0, want="a number >= 0 km/s (0: off)")),
        "emulator_sigma": ("fixed", _choice(*EMULATOR_SIGMA_MODES)),
    },
    "observed": {
        "redshift": (0.0, functools.partial(_real, gt=-0.01, lt=5, want="a number in (-0.01, 5)")),
        "ebv_mw": (0.0, functools.partial(_real, ge=0, lt=5, want="a number in [0, 5)")),
        "ebv_host": (0.0, functools.partial(_real, ge=0, lt=5, want="a number in [0, 5)")),
        "telluric": (False, _flag),
        "edge_trim": (0.0, _NONNEG),
        "window": (None, _optional(_range)),
    },
    "sampler": {
        "name": ("nuts", _choice(*SAMPLERS)),
        "num_chains": (4, functools.partial(_integer, lo=1, want="an integer >= 1")),
        "num_warmup": (500, functools.partial(_integer, lo=0, want="an integer >= 0")),
        "num_samples": (1000, functools.partial(_integer, lo=10, want="an integer >= 10")),
        "target_accept": (0.8, functools.partial(_real, gt=0, lt=1, want="a number in (0, 1)")),
        "max_tree_depth": (10, functools.partial(_integer, lo=1, hi=20, want="an integer in 1..20")),
        "dense_mass": (None, _optional(_flag)),
        "map_starts": (32, functools.partial(_integer, lo=1, want="an integer >= 1")),
        "ns_live": (300, functools.partial(_integer, lo=10, want="an integer >= 10")),
        "emcee_moves": ("stretch", _choice(*EMCEE_MOVES)),
        "ridge": ("t_exp", _optional(_name)),
    },
    "convergence": {
        "rhat_max": (RHAT_MAX, functools.partial(_real, ge=1, want="a number >= 1")),
        "max_divergent_frac": (MAX_DIVERGENT_FRAC, functools.partial(_real, ge=0, le=1, want="a number in [0, 1]")),
    },
}
_SECTIONS = ("mock", "likelihood", "priors", "observed", "sampler", "convergence")


def load_inference_config(path: Path | None = None) -> dict[str, Any]:
    """Read and validate the inference YAML; returns a plain dict with every key filled in.

    Unknown sections and keys, wrong types and out-of-range values stop here with one line
    naming the key (nothing is checked later, inside a fit)."""
    path = Path(path) if path else INFERENCE_CONFIG
    try:
        cfg = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"inference config not found: {path}") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise UserError(f"inference config {path} is not a readable YAML file ({exc.__class__.__name__})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"malformed YAML in {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a mapping")
    unknown = sorted(set(cfg) - set(_SECTIONS), key=str)
    if unknown:
        raise UserError(f"{path}: unknown section(s) {unknown}; known: {', '.join(_SECTIONS)}")
    out: dict[str, Any] = {}
    for sec in _SECTIONS:
        raw = cfg.get(sec)
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise UserError(f"{path}: '{sec}' must be a mapping")
        if sec == "priors":
            out[sec] = {str(n): _checked(path, f"priors.{n}", v, _prior) for n, v in raw.items()}
            continue
        keys = _SCHEMA[sec]
        bad = sorted(set(raw) - set(keys), key=str)
        if bad:
            raise UserError(f"{path}: unknown key {sec}.{bad[0]}; known keys of '{sec}': {', '.join(keys)}")
        out[sec] = {k: _checked(path, f"{sec}.{k}", raw[k], check) for k, (_, check) in keys.items() if k in raw}
        for k, (default, _) in keys.items():
            if k not in raw and default is not _NO_DEFAULT:
                out[sec][k] = copy.deepcopy(default)
    return out


def _checked(path, key: str, value, check):
    try:
        return check(value)
    except _Bad as exc:
        raise UserError(f"{path}: {key} must be {exc}, got {value!r}") from None



#: the ``sampler`` keys that are :class:`~lumina_jax.inference.samplers.SamplerConfig` fields
SAMPLER_FIELDS = ("name", "num_chains", "num_warmup", "num_samples", "target_accept", "max_tree_depth", "dense_mass",
                  "ns_live", "emcee_moves", "ridge")


def sampler_config(section: dict[str, Any], **overrides):
    """:class:`SamplerConfig` from a validated ``sampler`` section; ``overrides`` (CLI flags)
    replace its values unless they are None."""
    from lumina_jax.inference.samplers import SamplerConfig

    kw = {k: section[k] for k in SAMPLER_FIELDS if k in section}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return SamplerConfig(**kw)


def box_link_for(likelihood: dict[str, Any], stage: int) -> str:
    """The box link of ``stage`` from a validated ``likelihood`` section: ``box_link`` is one
    link for every stage or a mapping ``{stage1: ..., stage2: ..., stage3: ...}`` (a stage it
    leaves out gets logit)."""
    links = likelihood.get("box_link", "logit")
    if isinstance(links, dict):
        return links.get(f"stage{int(stage)}", "logit")
    return links


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
