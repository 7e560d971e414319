"""Inference configuration (``configs/inference.yaml``) and the default checkpoint location."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from lumina_jax.errors import UserError
from lumina_jax.params import CONFIG_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The shipped stage-1 emulator checkpoint (the one constant to change if its name changes).
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "stage1_synth.h5"
INFERENCE_CONFIG = CONFIG_DIR / "inference.yaml"
DEFAULT_RESULTS = Path("results")


def default_checkpoint(stage: int) -> Path:
    """The shipped checkpoint of ``stage`` (only stage 1 ships one).

    Any ``checkpoints/stage1_synth.*`` is accepted when :data:`DEFAULT_CHECKPOINT` itself is
    absent (the file extension is the emulator's choice)."""
    if stage != 1:
        raise UserError(f"no shipped emulator for stage {stage}: pass --checkpoint (trained in the stage-{stage} "
                        f"box, e.g. by `lumina-jax pipeline`)")
    if DEFAULT_CHECKPOINT.exists():
        return DEFAULT_CHECKPOINT
    alts = sorted(DEFAULT_CHECKPOINT.parent.glob(DEFAULT_CHECKPOINT.stem + ".*"))
    if alts:
        return alts[0]
    raise UserError(f"shipped stage-1 checkpoint not found at {DEFAULT_CHECKPOINT}; pass --checkpoint PATH")


_SCHEMA: dict[str, type | tuple] = {
    "mock": dict, "likelihood": dict, "priors": dict, "observed": dict, "sampler": dict, "convergence": dict,
}


def load_inference_config(path: Path | None = None) -> dict[str, Any]:
    """Read and validate the inference YAML; returns a plain dict (a deep copy)."""
    path = Path(path) if path else INFERENCE_CONFIG
    try:
        cfg = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"inference config not found: {path}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"malformed YAML in {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a mapping")
    for k, typ in _SCHEMA.items():
        cfg.setdefault(k, {})
        if cfg[k] is None:
            cfg[k] = {}
        if not isinstance(cfg[k], typ):
            raise UserError(f"{path}: '{k}' must be a mapping")
    unknown = set(cfg) - set(_SCHEMA)
    if unknown:
        raise UserError(f"{path}: unknown section(s) {sorted(unknown)}")
    for n, v in cfg["priors"].items():
        if not (isinstance(v, (list, tuple)) and len(v) == 2):
            raise UserError(f"{path}: prior on {n} must be [mean, sd]")
    lk = cfg["likelihood"]
    lk.setdefault("n_poly", 2)
    lk.setdefault("f_sys_range", [1e-3, 0.3])
    lk.setdefault("f_sys_prior", "half-normal")
    lk.setdefault("f_sys_scale", 0.2)
    if lk["f_sys_prior"] not in ("half-normal", "log-uniform"):
        raise UserError(f"{path}: likelihood.f_sys_prior must be 'half-normal' or 'log-uniform', got {lk['f_sys_prior']!r}")
    if not (isinstance(lk["f_sys_scale"], (int, float)) and lk["f_sys_scale"] > 0):
        raise UserError(f"{path}: likelihood.f_sys_scale must be a positive number, got {lk['f_sys_scale']!r}")
    lk.setdefault("log_scale_sd", 0.5)
    lk.setdefault("poly_sd", 0.1)
    lk.setdefault("emulator_corr_length", None)
    if lk["emulator_corr_length"] is not None and not float(lk["emulator_corr_length"]) > 0:
        raise UserError(f"{path}: likelihood.emulator_corr_length must be a positive length in Angstrom or null")
    lk.setdefault("stride", 8)
    lk.setdefault("emulator_rank", None)
    if not (isinstance(lk["stride"], int) and 1 <= lk["stride"] <= 50):
        raise UserError(f"{path}: likelihood.stride must be an integer in 1..50, got {lk['stride']!r}")
    if lk["emulator_rank"] is not None and not (isinstance(lk["emulator_rank"], int) and lk["emulator_rank"] >= 1):
        raise UserError(f"{path}: likelihood.emulator_rank must be a positive integer or null")
    lk.setdefault("ordering_softness", 200.0)
    if not (isinstance(lk["ordering_softness"], (int, float)) and lk["ordering_softness"] >= 0):
        raise UserError(f"{path}: likelihood.ordering_softness must be >= 0 km/s (0: off)")
    from lumina_jax.inference.model import BOX_LINKS

    lk.setdefault("box_link", "logit")
    links = lk["box_link"]
    if isinstance(links, dict):
        bad = sorted(set(links) - set(_STAGE_KEYS))
        if bad:
            raise UserError(f"{path}: likelihood.box_link: unknown stage key(s) {bad}; use {', '.join(_STAGE_KEYS)}")
        values = list(links.values())
    else:
        values = [links]
    for v in values:
        if v not in BOX_LINKS:
            raise UserError(f"{path}: likelihood.box_link must be one of {', '.join(BOX_LINKS)} (or a mapping "
                            f"{{stage1: ..., stage2: ..., stage3: ...}} of them), got {v!r}")
    lk.setdefault("emulator_error_scale", "checkpoint")
    esc = lk["emulator_error_scale"]
    if esc != "checkpoint" and not (isinstance(esc, (int, float)) and not isinstance(esc, bool) and esc > 0):
        raise UserError(f"{path}: likelihood.emulator_error_scale must be 'checkpoint' or a positive number, got {esc!r}")
    lk.setdefault("emulator_error", "correlated")
    if lk["emulator_error"] not in EMULATOR_ERROR_MODES:
        raise UserError(f"{path}: likelihood.emulator_error must be one of {', '.join(EMULATOR_ERROR_MODES)}, "
                        f"got {lk['emulator_error']!r}")
    return copy.deepcopy(cfg)


EMULATOR_ERROR_MODES = ("correlated", "independent")
_STAGE_KEYS = ("stage1", "stage2", "stage3")


def box_link_for(likelihood: dict[str, Any], stage: int) -> str:
    """The box link of ``stage`` from a validated ``likelihood`` section: ``box_link`` is one
    link for every stage or a mapping ``{stage1: ..., stage2: ..., stage3: ...}`` (a stage it
    leaves out gets logit)."""
    links = likelihood.get("box_link", "logit")
    if isinstance(links, dict):
        return links.get(f"stage{int(stage)}", "logit")
    return links


def parse_prior(text: str) -> tuple[str, tuple[float, float]]:
    """``"t_exp=18,1"`` -> ("t_exp", (18.0, 1.0))."""
    try:
        name, rest = text.split("=", 1)
        mu, sd = (float(x) for x in rest.split(","))
    except ValueError:
        raise UserError(f"--prior must look like NAME=MEAN,SD (e.g. t_exp=18,1), got {text!r}") from None
    return name.strip(), (mu, sd)


def parse_window(text: str | None):
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--window must look like LO,HI in Angstrom, got {text!r}") from None
    if not lo < hi:
        raise UserError(f"--window {text}: LO must be below HI")
    return lo, hi
