"""The NumPyro model of a spectrum fit and its flat unconstrained log density.

The model is the one definition of the density: its sample sites, their priors and, through
NumPyro's ``biject_to`` of each site's support, every coordinate transform.  The log density
(NumPyro's potential energy), :meth:`FlatModel.constrain`, :func:`prior_draws`,
:func:`z_from_values` and the MAP search's box Jacobian all use those transforms; the probit
link is a NumPyro transform registered here (:class:`ProbitTransform`).

Latent sites (all samplers see the same unconstrained vector ``z``, laid out in the fixed
order of :func:`site_layout`: the systematic, ``log_scale``, ``poly``, then ``u``):

- ``u`` [n_free]: the free physical parameters in the unit box of the stage's sampling
  box, prior Uniform(0, 1); theta = lows + u (highs - lows); inactive parameters are fixed.
  The sampler never meets a hard wall: with ``box_link="logit"`` (default) the site is
  Uniform(0, 1) and NumPyro samples logit(u); with ``box_link="probit"`` it samples w with
  u = Phi(w) (the normal CDF; w ~ Normal(0, 1) a priori), the same uniform prior on u.  The probit
  link maps a prior-dominated parameter to an exact standard normal, and a posterior pressed
  against a wall gets a Gaussian tail in w instead of logit's exponential one.
- ``log_scale``: flux normalisation, Normal(0, ``log_scale_sd``).
- the fractional systematic f_sys: by default (``f_sys_prior="half-normal"``) the site
  ``f_sys_signed`` ~ Normal(0, ``f_sys_scale``) with f_sys = |f_sys_signed| (a half-normal
  prior; the likelihood depends on f_sys^2, so the density is smooth through 0); or
  (``"log-uniform"``) the site ``log_f_sys`` ~ Uniform(log f_min, log f_max).  The log-uniform
  prior puts a plateau against its lower bound wherever the data allow a small systematic
  (a mock with no systematic: the posterior of log f_sys has a long tail to f_min, skewness
  -3, and its bulk ESS was half the next-slowest coordinate's at 135-D); on the linear scale
  that region is the smooth middle of a symmetric density.  Where the data need f_sys > 0 the
  density in ``f_sys_signed`` has two mirror-image modes; chains started around the MAP stay in
  its sign, and every reported quantity uses |f_sys_signed|.
- ``poly`` [K]: Legendre warp coefficients, Normal(0, ``poly_sd``) (absent when K = 0).

Optional informative priors ``{name: (mean, sd)}`` in physical units multiply the uniform
box prior by N(theta; mean, sd) (a truncated normal).  Velocity orderings the forward model
needs (``v_inner < v_break < v_outer``, ``v_core < v_wall < v_outer`` where active; the
training campaigns reject the rest, so the emulator was never trained there -- a quarter of
the stage-1 box) are imposed by a soft wall ``sum log sigmoid(margin / ordering_softness)``
(200 km/s, ~2 % of the velocity ranges): smooth for the gradient samplers, and the posterior
mass left on the wrong side is ~exp(-margin / 200 km/s).  The likelihood is
:func:`lumina_jax.inference.likelihood.log_likelihood`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import ParameterFreeTransform, biject_to

from lumina_jax.errors import ParameterError
from lumina_jax.inference.likelihood import LikelihoodData, log_likelihood, restrict_to_bins, used_bins
from lumina_jax.params import ParameterSpace

BOX_LINKS = ("logit", "probit")
F_SYS_PRIORS = ("half-normal", "log-uniform")
EMULATOR_ERRORS = ("correlated", "independent")
EMULATOR_SIGMA_MODES = ("fixed", "varying")


@dataclasses.dataclass(frozen=True)
class LikelihoodConfig:
    """Settings of the likelihood and the nuisance priors (the ``likelihood`` section of the
    inference configuration; these defaults are the only ones).

    n_poly: order of the multiplicative Legendre warp (0: none); f_sys_prior: ``half-normal``
    (sampled on the linear scale, scale ``f_sys_scale``) or ``log-uniform`` (on
    ``f_sys_range``); log_scale_sd, poly_sd: widths of the normal priors on the log flux scale
    and the warp coefficients; emulator_error: ``correlated`` (the checkpoint's empirical
    wavelength correlation of the emulator error, low rank + diagonal) or ``independent``;
    emulator_error_scale: variance factor on that model, ``checkpoint`` (its calibrated value)
    or a number; emulator_rank: leading directions used (None: all); stride: every stride-th
    5-A bin enters the likelihood; emulator_corr_length: Gaussian bumps of this width (A)
    instead of the empirical correlation; box_link: the sampler coordinates of the box
    parameters per stage (stages 1, 2, 3); ordering_softness: km/s width of the soft
    velocity-ordering wall (0: off); emulator_sigma: ``fixed`` (the emulator's sigma at the MAP,
    held while sampling) or ``varying``.
    """

    n_poly: int = 2
    f_sys_prior: str = "half-normal"
    f_sys_scale: float = 0.2
    f_sys_range: tuple[float, float] = (1e-3, 0.3)
    log_scale_sd: float = 0.5
    poly_sd: float = 0.1
    emulator_error: str = "correlated"
    emulator_error_scale: str | float = "checkpoint"
    emulator_rank: int | None = None
    stride: int = 8
    emulator_corr_length: float | None = None
    box_link: tuple[str, str, str] = ("logit", "probit", "probit")
    ordering_softness: float = 200.0
    emulator_sigma: str = "fixed"

    def link(self, stage: int) -> str:
        """The box link of ``stage`` (1, 2 or 3)."""
        return self.box_link[int(stage) - 1]


_LK = LikelihoodConfig()


class _ProbitInterval(constraints._Interval):
    """The unit interval, unconstrained by :class:`ProbitTransform` instead of the logit."""

    def __init__(self):
        super().__init__(0.0, 1.0)


probit_unit_interval = _ProbitInterval()


class ProbitTransform(ParameterFreeTransform):
    """u = Phi(w), the standard normal CDF; log |du/dw| = log N(w; 0, 1)."""

    domain = constraints.real
    codomain = probit_unit_interval
    sign = 1

    def __call__(self, x):
        return jax.scipy.special.ndtr(x)

    def _inverse(self, y):
        return jax.scipy.special.ndtri(y)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return dist.Normal(0.0, 1.0).log_prob(x)


@biject_to.register(_ProbitInterval)
def _probit_bijection(constraint):
    return ProbitTransform()


class _ProbitUniform(dist.Uniform):
    """Uniform(0, 1) whose support NumPyro unconstrains by the probit link."""

    support = probit_unit_interval

    def __init__(self, *, validate_args=None):
        super().__init__(0.0, 1.0, validate_args=validate_args)


def box_prior(box_link: str) -> dist.Distribution:
    """The prior of one box coordinate u: Uniform(0, 1), unconstrained by ``box_link``."""
    return dist.Uniform(0.0, 1.0) if box_link == "logit" else _ProbitUniform()


def box_transform(box_link: str):
    """NumPyro's bijection z -> u of ``box_link`` (the one the density uses)."""
    return biject_to(box_prior(box_link).support)


@dataclasses.dataclass(frozen=True)
class FitSetup:
    """Static description of a fit (hashable; pass as a closure constant).

    space: the sampling box (``space.lows/highs``); free: names sampled (default: the active
    ones); fixed: values of the other names; priors: informative Gaussian priors
    ``((name, mean, sd), ...)``; n_poly: order K of the calibration warp; f_sys_prior:
    ``"half-normal"`` (scale ``f_sys_scale``) or ``"log-uniform"`` (on ``f_sys_range``);
    log_scale_sd, poly_sd: prior widths.
    """

    space: ParameterSpace
    free: tuple[str, ...]
    fixed: tuple[tuple[str, float], ...] = ()
    priors: tuple[tuple[str, float, float], ...] = ()
    n_poly: int = _LK.n_poly
    f_sys_range: tuple[float, float] = _LK.f_sys_range
    log_scale_sd: float = _LK.log_scale_sd
    poly_sd: float = _LK.poly_sd
    ordering_softness: float = _LK.ordering_softness  # km/s; 0 switches the ordering constraint off
    box_link: str = _LK.box_link[0]  # unconstrained coordinates of u: "logit" or "probit" (module docstring)
    f_sys_prior: str = _LK.f_sys_prior  # or "log-uniform" (on f_sys_range)
    f_sys_scale: float = _LK.f_sys_scale  # scale of the half-normal prior on f_sys

    @property
    def sys_site(self) -> str:
        """Name of the systematic's sample site: ``f_sys_signed`` or ``log_f_sys``."""
        return "f_sys_signed" if self.f_sys_prior == "half-normal" else "log_f_sys"

    @property
    def free_index(self) -> np.ndarray:
        return np.array([self.space.index(n) for n in self.free], dtype=int)

    @property
    def n_free(self) -> int:
        return len(self.free)

    def base_theta(self) -> np.ndarray:
        """Full parameter vector with fixed values set (free entries at the box centre)."""
        sp = self.space
        theta = 0.5 * (sp.lower + sp.upper)
        for n, v in self.fixed:
            theta[sp.index(n)] = v
        return theta

    def theta_from_u(self, u):
        """Unit-box free values [..., n_free] -> full physical vector [..., dim] (pure)."""
        sp = self.space
        idx = self.free_index
        lo, hi = sp.lower[idx], sp.upper[idx]
        base = jnp.asarray(self.base_theta())
        vals = lo + u * (hi - lo)
        return jnp.broadcast_to(base, vals.shape[:-1] + base.shape).at[..., idx].set(vals)


def make_setup(space: ParameterSpace, *, free=None, fixed: Mapping[str, float] | None = None,
               priors: Mapping[str, tuple[float, float]] | None = None, n_poly: int = _LK.n_poly,
               f_sys_range=_LK.f_sys_range, log_scale_sd: float = _LK.log_scale_sd, poly_sd: float = _LK.poly_sd,
               ordering_softness: float = _LK.ordering_softness, box_link: str | None = None,
               f_sys_prior: str = _LK.f_sys_prior, f_sys_scale: float = _LK.f_sys_scale) -> FitSetup:
    """Validated :class:`FitSetup`.  Inactive names are fixed at ``fixed`` or the box centre;
    ``box_link`` None: :class:`LikelihoodConfig`'s link for ``space.stage``."""
    if box_link is None:
        box_link = _LK.link(space.stage) if space.stage in (1, 2, 3) else _LK.box_link[0]
    fixed = dict(fixed or {})
    if free is None:
        free = tuple(n for n in space.names if n not in space.inactive and n not in fixed)
    free = tuple(free)
    for n in list(free) + list(fixed) + list(priors or {}):
        space.index(n)  # raises ParameterError for unknown names
    centre = 0.5 * (space.lower + space.upper)
    fixed_full = {n: float(fixed.get(n, centre[space.index(n)])) for n in space.names if n not in free}
    pri = []
    for n, ms in (priors or {}).items():
        mu, sd = (float(x) for x in ms)
        if not (np.isfinite(mu) and np.isfinite(sd) and sd > 0):
            raise ParameterError(f"prior on {n}: need a finite mean and a finite sd > 0, got ({mu}, {sd})")
        pri.append((n, mu, sd))
    if not 0 < f_sys_range[0] < f_sys_range[1]:
        raise ParameterError(f"f_sys range must satisfy 0 < low < high, got {f_sys_range}")
    if f_sys_prior not in F_SYS_PRIORS:
        raise ParameterError(f"f_sys prior must be one of {', '.join(F_SYS_PRIORS)}, got {f_sys_prior!r}")
    if not (np.isfinite(f_sys_scale) and f_sys_scale > 0):
        raise ParameterError(f"f_sys scale must be positive, got {f_sys_scale}")
    for what, sd in (("log_scale_sd", log_scale_sd), ("poly_sd", poly_sd)):
        if not (np.isfinite(sd) and sd > 0):
            raise ParameterError(f"{what} must be a finite number > 0, got {sd}")
    if n_poly < 0 or n_poly > 10:
        raise ParameterError(f"n_poly must be in 0..10, got {n_poly}")
    if ordering_softness < 0:
        raise ParameterError(f"ordering_softness must be >= 0 km/s, got {ordering_softness}")
    if box_link not in BOX_LINKS:
        raise ParameterError(f"box_link must be one of {', '.join(BOX_LINKS)}, got {box_link!r}")
    return FitSetup(space, free, tuple(fixed_full.items()), tuple(pri), int(n_poly),
                    (float(f_sys_range[0]), float(f_sys_range[1])), float(log_scale_sd), float(poly_sd),
                    float(ordering_softness), box_link, f_sys_prior, float(f_sys_scale))


def _prior_sites(setup: FitSetup):
    """The model's sample sites (its prior without the informative factors): (u, log_scale, f_sys, poly)."""
    u = numpyro.sample("u", box_prior(setup.box_link).expand([setup.n_free]).to_event(1))
    log_scale = numpyro.sample("log_scale", dist.Normal(0.0, setup.log_scale_sd))
    if setup.f_sys_prior == "half-normal":
        f_sys = jnp.abs(numpyro.sample("f_sys_signed", dist.Normal(0.0, setup.f_sys_scale)))
    else:
        lo, hi = np.log(setup.f_sys_range[0]), np.log(setup.f_sys_range[1])
        f_sys = jnp.exp(numpyro.sample("log_f_sys", dist.Uniform(lo, hi)))
    numpyro.deterministic("f_sys", f_sys)
    coeffs = None
    if setup.n_poly:
        coeffs = numpyro.sample("poly", dist.Normal(0.0, setup.poly_sd).expand([setup.n_poly]).to_event(1))
    return u, log_scale, f_sys, coeffs


def _constraint_logprior(setup: FitSetup, theta):
    """Log prior factors beyond the box at ``theta`` [dim]: the informative Gaussian priors and
    the soft velocity-ordering wall (0 without either)."""
    out = jnp.zeros(())
    if setup.priors:
        idx = jnp.array([setup.space.index(n) for n, _, _ in setup.priors])
        mu = jnp.array([m for _, m, _ in setup.priors])
        sd = jnp.array([s for _, _, s in setup.priors])
        out = out + jnp.sum(dist.Normal(mu, sd).log_prob(theta[idx]))
    if setup.ordering_softness > 0:
        margins = setup.space.ordering_margins(theta)
        if margins.shape[-1]:
            out = out + jnp.sum(jax.nn.log_sigmoid(margins / setup.ordering_softness))
    return out


def spectral_model(setup: FitSetup, spectrum_and_sigma: Callable, data: LikelihoodData):
    """NumPyro model: priors on (u, log_scale, the systematic, poly), Gaussian likelihood as a factor."""
    u, log_scale, f_sys, coeffs = _prior_sites(setup)
    theta = setup.theta_from_u(u)
    if setup.priors or setup.ordering_softness > 0:
        numpyro.factor("constraint_prior", _constraint_logprior(setup, theta))
    flux, sigma = spectrum_and_sigma(theta)
    numpyro.factor("loglike", log_likelihood(flux, sigma, data, log_scale, f_sys, coeffs))


def prior_model(setup: FitSetup):
    """The sample sites of :func:`spectral_model` alone (its prior less the informative factors)."""
    _prior_sites(setup)


@dataclasses.dataclass(frozen=True)
class FlatModel:
    """The model as functions of one flat unconstrained vector z [n_z].

    logdensity(z) -> scalar (log posterior up to a constant, Jacobian included);
    constrain(z) -> {site: constrained value, and ``f_sys``}; theta(z) -> [dim] physical
    parameters; unravel(z) -> unconstrained dict, ravel its inverse; n_z: length of z;
    site_shapes: the layout of z (:func:`site_layout`).  For samplers that need the split
    (nested sampling): ``logprior(z)`` is the box/nuisance prior in z (Jacobian included,
    normalised, sampled exactly by :func:`prior_draws`) and ``loglikelihood(z)`` the data
    term plus the informative-prior and ordering factors, so ``logprior + loglikelihood ==
    logdensity`` (the evidence is then that of the box prior times those factors).
    """

    logdensity: Callable
    constrain: Callable
    unravel: Callable
    n_z: int
    setup: FitSetup
    site_shapes: tuple
    logprior: Callable | None = None
    loglikelihood: Callable | None = None
    ravel: Callable | None = None

    def theta(self, z):
        return self.setup.theta_from_u(self.constrain(z)["u"])

    @functools.cached_property
    def hessian(self) -> Callable:
        """Jitted ``z [n_z] -> [n_z, n_z]`` Hessian of :attr:`logdensity`, compiled once per model
        (the MAP search's Newton steps and the samplers' Laplace preconditioner share it)."""
        return jax.jit(jax.hessian(self.logdensity))

    @functools.cached_property
    def value_and_grad(self) -> Callable:
        """Jitted ``z -> (logdensity(z), its gradient)``, compiled once per model."""
        return jax.jit(jax.value_and_grad(self.logdensity))

    def nuisance(self, z) -> dict:
        c = self.constrain(z)
        out = {"f_sys": c["f_sys"], "log_scale": c["log_scale"]}
        if "poly" in c:
            out["poly"] = c["poly"]
        return out


def flatten_model(setup: FitSetup, spectrum_and_sigma: Callable, data: LikelihoodData,
                  rng_key=None, *, on_bins: Callable | None = None) -> FlatModel:
    """Flat unconstrained log density of :func:`spectral_model`.

    The density is NumPyro's potential energy of the model (transforms and Jacobians by
    NumPyro); the flat layout and the constraining map are built here without tracing the
    model (cheap, pure).  ``rng_key`` is unused (kept for API symmetry).

    ``on_bins`` (optional): ``rows -> (theta -> (flux, sigma) [len(rows)])``, the same model on
    a subset of its grid, e.g. :meth:`lumina_jax.emulator.Emulator.on_bins`.  The density then
    evaluates the model and the likelihood on the likelihood's used bins only
    (:func:`~lumina_jax.inference.likelihood.used_bins`; at stride 8, 200 of 1601): the same
    value, 1.2-1.6x faster per gradient (more with more PCA components).
    """
    from numpyro.infer.util import constrain_fn, potential_energy

    if on_bins is not None:
        rows = used_bins(data)
        spectrum_and_sigma, data = on_bins(rows), restrict_to_bins(data, rows)

    layout = site_layout(setup)
    ravel, unravel = _flattener(layout)
    args = (setup, spectrum_and_sigma, data)

    def logdensity(z):
        return -potential_energy(spectral_model, args, {}, unravel(z))

    def constrain(z):
        return constrain_fn(prior_model, (setup,), {}, unravel(z), return_deterministic=True)

    def logprior(z):
        return -potential_energy(prior_model, (setup,), {}, unravel(z))

    def loglikelihood(z):
        c = constrain(z)
        theta = setup.theta_from_u(c["u"])
        flux, sigma = spectrum_and_sigma(theta)
        return (log_likelihood(flux, sigma, data, c["log_scale"], c["f_sys"], c.get("poly"))
                + _constraint_logprior(setup, theta))

    n_z = sum(int(np.prod(shape)) for _, shape in layout)
    return FlatModel(logdensity, constrain, unravel, n_z, setup, layout, logprior, loglikelihood, ravel)


def site_layout(setup: FitSetup) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The sample sites in their order in z, with their shapes: the systematic
    (``f_sys_signed`` or ``log_f_sys``), ``log_scale``, ``poly`` (when ``n_poly`` > 0), ``u``."""
    out = [(setup.sys_site, ()), ("log_scale", ())]
    if setup.n_poly:
        out.append(("poly", (setup.n_poly,)))
    return tuple(out + [("u", (setup.n_free,))])


def _flattener(layout):
    """(ravel {site: value} -> z [n_z], unravel z -> {site: value}) for ``layout``.

    ``jax.flatten_util.ravel_pytree`` does the work (it orders a dict's sites by name);
    :func:`site_layout` lists the sites in that same order, checked here, so the layout of z is
    the one stated there."""
    from jax.flatten_util import ravel_pytree

    template = {k: jnp.zeros(shape) for k, shape in layout}
    _, unravel = ravel_pytree(template)
    if list(jax.tree_util.tree_structure(template).node_data()[1]) != [k for k, _ in layout]:
        raise AssertionError(f"site_layout {[k for k, _ in layout]} is not the order of the flat vector")

    def ravel(values):
        return ravel_pytree({k: jnp.asarray(values[k], float).reshape(shape) for k, shape in layout})[0]

    return ravel, unravel


def freeze_sigma(spectrum_and_sigma: Callable, theta_ref, on_bins: Callable | None = None):
    """The emulator with its sigma held at its value at ``theta_ref`` [dim]: returns
    ``(theta -> (flux(theta), sigma(theta_ref)), on_bins')`` for :func:`flatten_model`
    (``on_bins'`` likewise per subset of bins; None when ``on_bins`` is None).

    Why: with sigma evaluated at every theta the Gaussian likelihood's log-determinant
    ``-1/2 log|Sigma(theta)|`` and its weights move with theta, so the fit is pulled towards
    parameters where the emulator *claims* to be more accurate (e.g. deeper lines, whose
    asinh-space sigma maps to a smaller flux sigma), a pull that holds no information about
    the data (cf. Carron 2013, A&A 551, A88, on parameter-dependent covariances).  A covariance
    fixed at a reference point -- the usual choice -- keeps the emulator's error budget and
    drops the pull."""
    theta_ref = jnp.asarray(theta_ref)
    sigma_ref = jax.lax.stop_gradient(spectrum_and_sigma(theta_ref)[1])

    def fixed(theta):
        return spectrum_and_sigma(theta)[0], sigma_ref

    if on_bins is None:
        return fixed, None

    def fixed_on_bins(rows):
        f = on_bins(rows)
        s_rows = jax.lax.stop_gradient(f(theta_ref)[1])
        return lambda theta: (f(theta)[0], s_rows)

    return fixed, fixed_on_bins


def z_names(fm: FlatModel) -> list[str]:
    """Names of the flat coordinates z[i] in their order (:func:`site_layout`):
    ``f_sys_signed`` or ``log_f_sys``, ``log_scale``, ``poly_<k>``, ``u:<parameter>``."""
    names = []
    for site, shape in fm.site_shapes:
        n = int(np.prod(shape))
        names += ([f"u:{p}" for p in fm.setup.free] if site == "u" else
                  [f"poly_{k + 1}" for k in range(n)] if site == "poly" else [site])
    return names


def prior_draws(fm: FlatModel, rng_key, n: int):
    """``n`` exact draws from ``fm.logprior`` as flat z vectors [n, n_z]: the prior model's
    sites drawn by NumPyro and unconstrained by its own transforms (pure)."""
    from numpyro.infer import Predictive
    from numpyro.infer.util import unconstrain_fn

    sites = [k for k, _ in fm.site_shapes]
    draws = Predictive(prior_model, num_samples=n, return_sites=sites)(rng_key, fm.setup)
    return jax.vmap(lambda v: fm.ravel(unconstrain_fn(prior_model, (fm.setup,), {}, v)))(draws)


def z_from_values(fm: FlatModel, u, log_scale=0.0, f_sys=0.01, poly=None):
    """Unconstrained flat vector from constrained values (the inverse of ``fm.constrain``, by
    the model's own transforms); u and the log-uniform systematic are kept 1e-9 of their
    range inside their bounds."""
    from numpyro.infer.util import unconstrain_fn

    s = fm.setup
    if s.f_sys_prior == "half-normal":
        sys_v = jnp.asarray(f_sys, float)
    else:
        lo, hi = np.log(s.f_sys_range[0]), np.log(s.f_sys_range[1])
        eps = 1e-9 * (hi - lo)
        sys_v = jnp.clip(jnp.log(jnp.asarray(f_sys, float)), lo + eps, hi - eps)
    values = {"u": jnp.clip(jnp.asarray(u, float), 1e-9, 1 - 1e-9), "log_scale": jnp.asarray(log_scale, float),
              s.sys_site: sys_v}
    if s.n_poly:
        values["poly"] = jnp.zeros(s.n_poly) if poly is None else jnp.asarray(poly, float)
    return fm.ravel(unconstrain_fn(prior_model, (s,), {}, values))


def box_log_jacobian(fm: FlatModel, z):
    """log |du/dz| of the box coordinates u at ``z`` (the model's link transform), summed."""
    zu = fm.unravel(z)["u"]
    t = box_transform(fm.setup.box_link)
    return jnp.sum(t.log_abs_det_jacobian(zu, t(zu)))
