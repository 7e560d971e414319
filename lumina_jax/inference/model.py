"""The NumPyro model of a spectrum fit and its flat unconstrained log density.

Latent sites (all samplers see the same unconstrained vector ``z``):

- ``u`` [n_free]: the free physical parameters in the unit box of the stage's sampling
  box, prior Uniform(0, 1); theta = lows + u (highs - lows); inactive parameters are fixed.
  The sampler never meets a hard wall: with ``box_link="logit"`` (default) the site is
  Uniform(0, 1) and NumPyro samples logit(u); with ``box_link="probit"`` the site's value is
  w ~ Normal(0, 1) and u = Phi(w) (the normal CDF), the same uniform prior on u.  The probit
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
from jax.flatten_util import ravel_pytree

from lumina_jax.errors import ParameterError
from lumina_jax.inference.likelihood import LikelihoodData, log_likelihood, restrict_to_bins, used_bins
from lumina_jax.params import ParameterSpace


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
    n_poly: int = 0
    f_sys_range: tuple[float, float] = (1e-3, 0.3)
    log_scale_sd: float = 0.5
    poly_sd: float = 0.1
    ordering_softness: float = 200.0  # km/s; 0 switches the ordering constraint off
    box_link: str = "logit"  # unconstrained coordinates of u: "logit" or "probit" (see the module docstring)
    f_sys_prior: str = "half-normal"  # or "log-uniform" (on f_sys_range)
    f_sys_scale: float = 0.2  # scale of the half-normal prior on f_sys

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


# box link: (to_box w -> u, from_box u -> w, log du/dw up to a constant), all elementwise
_LINKS = {
    "logit": (jax.nn.sigmoid, jax.scipy.special.logit, lambda w: -jax.nn.softplus(-w) - jax.nn.softplus(w)),
    "probit": (jax.scipy.special.ndtr, jax.scipy.special.ndtri, lambda w: -0.5 * w * w),
}
BOX_LINKS = tuple(_LINKS)
F_SYS_PRIORS = ("half-normal", "log-uniform")


def make_setup(space: ParameterSpace, *, free=None, fixed: Mapping[str, float] | None = None,
               priors: Mapping[str, tuple[float, float]] | None = None, n_poly: int = 0,
               f_sys_range=(1e-3, 0.3), log_scale_sd: float = 0.5, poly_sd: float = 0.1,
               ordering_softness: float = 200.0, box_link: str = "logit", f_sys_prior: str = "half-normal",
               f_sys_scale: float = 0.2) -> FitSetup:
    """Validated :class:`FitSetup`.  Inactive names are fixed at ``fixed`` or the box centre."""
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
    if setup.box_link == "probit":
        u = jax.scipy.special.ndtr(numpyro.sample("u", dist.Normal(0.0, 1.0).expand([setup.n_free]).to_event(1)))
    else:
        u = numpyro.sample("u", dist.Uniform(0.0, 1.0).expand([setup.n_free]).to_event(1))
    log_scale = numpyro.sample("log_scale", dist.Normal(0.0, setup.log_scale_sd))
    if setup.f_sys_prior == "half-normal":
        f_sys = jnp.abs(numpyro.sample("f_sys_signed", dist.Normal(0.0, setup.f_sys_scale)))
    else:
        lo, hi = np.log(setup.f_sys_range[0]), np.log(setup.f_sys_range[1])
        f_sys = jnp.exp(numpyro.sample("log_f_sys", dist.Uniform(lo, hi)))
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
    constrain(z) -> {site: constrained value}; theta(z) -> [dim] physical parameters;
    unravel(z) -> unconstrained dict; n_z: length of z.  For samplers that need the split
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
    from numpyro.infer.util import potential_energy

    if on_bins is not None:
        rows = used_bins(data)
        spectrum_and_sigma, data = on_bins(rows), restrict_to_bins(data, rows)

    template = {"u": jnp.zeros(setup.n_free), "log_scale": jnp.zeros(()), setup.sys_site: jnp.zeros(())}
    if setup.n_poly:
        template["poly"] = jnp.zeros(setup.n_poly)
    flat0, unravel = ravel_pytree(template)
    lo, hi = float(np.log(setup.f_sys_range[0])), float(np.log(setup.f_sys_range[1]))
    args = (setup, spectrum_and_sigma, data)

    def logdensity(z):
        return -potential_energy(spectral_model, args, {}, unravel(z))

    to_box = _LINKS[setup.box_link][0]

    def constrain(z):
        p = unravel(z)
        out = {"u": to_box(p["u"]), "log_scale": p["log_scale"]}
        if setup.f_sys_prior == "half-normal":
            out["f_sys"] = jnp.abs(p["f_sys_signed"])
        else:
            out["log_f_sys"] = lo + (hi - lo) * jax.nn.sigmoid(p["log_f_sys"])
            out["f_sys"] = jnp.exp(out["log_f_sys"])
        if "poly" in p:
            out["poly"] = p["poly"]
        return out

    def logprior(z):
        return -potential_energy(prior_model, (setup,), {}, unravel(z))

    def loglikelihood(z):
        c = constrain(z)
        theta = setup.theta_from_u(c["u"])
        flux, sigma = spectrum_and_sigma(theta)
        return (log_likelihood(flux, sigma, data, c["log_scale"], c["f_sys"], c.get("poly"))
                + _constraint_logprior(setup, theta))

    shapes = tuple((k, tuple(np.shape(v))) for k, v in template.items())
    return FlatModel(logdensity, constrain, unravel, int(flat0.size), setup, shapes, logprior, loglikelihood)


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


def hold_sigma_at_mode(fm: FlatModel, spectrum_and_sigma: Callable, data: LikelihoodData, z_map,
                       on_bins: Callable | None = None, newton_steps: int = 20):
    """The fixed-sigma model of ``infer`` (``likelihood.emulator_sigma: fixed``): ``fm``'s model
    with the emulator's sigma held at ``theta_ref = fm.theta(z_map)`` (:func:`freeze_sigma`; ``z_map``
    the mode of the varying-sigma model ``fm``), and its mode re-polished by up to
    ``newton_steps`` Newton steps from ``z_map``.

    Returns ``(fm_fixed, z_mode, ld_start, ld_mode, theta_ref, spectrum_and_sigma_fixed)``:
    ``ld_start`` the fixed model's log density at ``z_map``, ``ld_mode`` at the re-polished mode."""
    theta_ref = fm.theta(jnp.asarray(z_map))
    fixed, on_bins_fixed = freeze_sigma(spectrum_and_sigma, theta_ref, on_bins)
    fm_fixed = flatten_model(fm.setup, fixed, data, on_bins=on_bins_fixed)
    ld0 = float(jax.jit(fm_fixed.logdensity)(jnp.asarray(z_map)))
    z_mode, ld_mode = newton_ascent(fm_fixed.logdensity, jnp.asarray(z_map), ld0, newton_steps,
                                     hessian=fm_fixed.hessian, value_and_grad=fm_fixed.value_and_grad)
    return fm_fixed, z_mode, ld0, ld_mode, theta_ref, fixed


def z_names(fm: FlatModel) -> list[str]:
    """Names of the flat coordinates z[i] in their order (``jax.flatten_util.ravel_pytree``
    sorts the sites by name: the systematic and ``log_scale`` come before ``u``):
    ``u:<parameter>``, ``log_scale``, ``f_sys_signed`` or ``log_f_sys``, ``poly_<k>``."""
    idx = fm.unravel(jnp.arange(fm.n_z, dtype=float))
    names = [""] * fm.n_z
    for site, val in idx.items():
        flat = np.atleast_1d(np.asarray(val)).astype(int)
        labels = ([f"u:{n}" for n in fm.setup.free] if site == "u" else
                  [f"poly_{k + 1}" for k in range(flat.size)] if site == "poly" else [site])
        for i, lab in zip(flat, labels):
            names[i] = lab
    return names


def prior_draws(fm: FlatModel, rng_key, n: int):
    """``n`` exact draws from ``fm.logprior`` as flat z vectors [n, n_z] (pure)."""
    s = fm.setup
    ks = jax.random.split(rng_key, 4)
    from_box = _LINKS[s.box_link][1]
    parts = {"u": from_box(jax.random.uniform(ks[0], (n, s.n_free), minval=1e-12, maxval=1.0)),
             "log_scale": s.log_scale_sd * jax.random.normal(ks[1], (n,)),
             s.sys_site: (s.f_sys_scale * jax.random.normal(ks[2], (n,)) if s.f_sys_prior == "half-normal" else
                          jax.scipy.special.logit(jax.random.uniform(ks[2], (n,), minval=1e-12, maxval=1.0)))}
    if s.n_poly:
        parts["poly"] = s.poly_sd * jax.random.normal(ks[3], (n, s.n_poly))
    return jax.vmap(lambda p: ravel_pytree(p)[0])(parts)  # the flat layout of ``unravel``


def z_from_values(fm: FlatModel, u, log_scale=0.0, f_sys=0.01, poly=None):
    """Unconstrained flat vector from constrained values (inverse of ``constrain``)."""
    from jax.scipy.special import logit

    s = fm.setup
    from_box = _LINKS[s.box_link][1]
    if s.f_sys_prior == "half-normal":
        sys_z = jnp.asarray(f_sys, float)
    else:
        lo, hi = np.log(s.f_sys_range[0]), np.log(s.f_sys_range[1])
        t = (jnp.log(f_sys) - lo) / (hi - lo)
        sys_z = logit(jnp.clip(jnp.asarray(t, float), 1e-9, 1 - 1e-9))
    parts = {"u": from_box(jnp.clip(jnp.asarray(u), 1e-9, 1 - 1e-9)), "log_scale": jnp.asarray(log_scale, float),
             s.sys_site: sys_z}
    if s.n_poly:
        parts["poly"] = jnp.zeros(s.n_poly) if poly is None else jnp.asarray(poly)
    # ravel in the same key order as NumPyro's dict
    ordered = {k: parts[k] for k, _ in fm.site_shapes}
    return ravel_pytree(ordered)[0]


def find_map(fm: FlatModel, rng_key, *, n_starts: int = 32, n_steps: int = 2000, lr: float = 0.05,
             n_polish: int = 8, polish_steps: int = 100, n_screen: int = 8192, z_polish_steps: int = 1000,
             newton_steps: int = 6):
    """Multi-start Adam climbs in the box coordinates u, L-BFGS polish, then the z-space mode.

    Starts: the log posterior is first screened at ``n_screen`` points drawn uniformly in the
    box (nuisances at their prior centre, the systematic at the geometric centre of its range,
    so the screen sees a broad likelihood); the best ``3/4 n_starts`` of them and ``n_starts/4``
    further uniform points start the climbs (``n_screen = 0``: all uniform).  On stage-1
    injections uniform starts alone ended in a wrong local mode (X_Si,wall 0.07 instead of
    0.50; truth 6 nats higher) in about 1 case of 10.  The climb maximises the posterior
    density of the *box coordinates* u (``logdensity`` minus the log-Jacobian of the logit
    map u -> z): in z that Jacobian costs ~2.5 nats per parameter near a box edge and hid
    modes with parameters at u ~ 0.97 behind worse interior ones.  Then ``n_steps`` Adam steps
    (cosine-decayed ``lr``), vectorised over starts; the best ``n_polish`` end points are
    refined by ``polish_steps`` of L-BFGS (one after the other: a vmapped line search hung
    XLA:CPU).  On stage-1 mocks 16 x 600 Adam steps stopped 50-150 nats below the mode found
    by 32 x 2000 (+ L-BFGS), and the Laplace preconditioner built at such a point slowed NUTS.
    Finally ``z_polish_steps`` of L-BFGS and up to ``newton_steps`` damped Newton steps (the
    Hessian's curvatures floored at 0.1, backtracking) move the best point to the mode of
    ``logdensity`` in z itself, which the samplers and the Laplace preconditioner see: the
    u-space optimum leaves prior-dominated directions where the z density still has slope
    (at 135-D it sat ~190 nats below the z mode; 1000 L-BFGS steps alone left a gradient norm
    of 13).
    Returns (z_best [n_z], logdensity(z_best) (in z, as the samplers see it), z_all
    [n_starts, n_z], log posterior in u of every end point [n_starts]).
    """
    import optax

    def log_jac(z):  # log-Jacobian of the link from z to the box coordinates u
        return jnp.sum(_LINKS[fm.setup.box_link][2](fm.unravel(z)["u"]))

    def target(z):  # log posterior density in u (the Jacobian of the link to the box coordinates removed)
        return fm.logdensity(z) - log_jac(z)

    k1, k2 = jax.random.split(rng_key)
    s = fm.setup
    # the screen's systematic: the log-uniform range's geometric centre (0.017 by default), 0.1 x the
    # half-normal scale (0.02)
    f_mid = np.sqrt(s.f_sys_range[0] * s.f_sys_range[1]) if s.f_sys_prior == "log-uniform" else 0.1 * s.f_sys_scale
    to_z = jax.vmap(lambda u: z_from_values(fm, u, 0.0, f_mid))
    us = jax.random.uniform(k1, (n_starts, s.n_free), minval=0.02, maxval=0.98)
    if n_screen > 0:
        n_top = n_starts - n_starts // 4
        cand = to_z(jax.random.uniform(k2, (int(n_screen), s.n_free), minval=0.02, maxval=0.98))
        chunk = 512
        pad = (-cand.shape[0]) % chunk
        cz = jnp.concatenate([cand, jnp.repeat(cand[:1], pad, 0)]).reshape(-1, chunk, cand.shape[1])
        ld_c = jax.jit(lambda a: jax.lax.map(jax.vmap(target), a))(cz).reshape(-1)[:cand.shape[0]]
        ld_c = jnp.where(jnp.isfinite(ld_c), ld_c, -jnp.inf)
        z0 = jnp.concatenate([cand[jnp.argsort(-ld_c)[:n_top]], to_z(us[:n_starts - n_top])])
    else:
        z0 = to_z(us)
    opt = optax.adam(optax.cosine_decay_schedule(lr, n_steps, alpha=0.02))
    neg = lambda z: -target(z)  # noqa: E731
    vg = jax.value_and_grad(neg)

    def run_one(z):
        def step(carry, _):
            z, st = carry
            v, g = vg(z)
            g = jnp.where(jnp.isfinite(g), g, 0.0)
            upd, st = opt.update(g, st, z)
            return (optax.apply_updates(z, upd), st), v

        (z, _), _ = jax.lax.scan(step, (z, opt.init(z)), None, length=n_steps)
        return z, target(z)

    lbfgs = optax.lbfgs()

    @jax.jit
    def polish(z, jac_weight, n):
        """``n`` L-BFGS steps (a traced count) maximising ``logdensity - jac_weight x log-Jacobian``
        (1: the u-space target, 0: the z density); returns (z, that function at z).  One
        compilation serves every polish below (each separate one cost ~5 s at stage 1)."""
        def fn(z):
            return fm.logdensity(z) - jac_weight * log_jac(z)

        neg_fn = lambda z: -fn(z)  # noqa: E731
        vg_state = optax.value_and_grad_from_state(neg_fn)

        def step(_, carry):
            z, st = carry
            v, g = vg_state(z, state=st)
            upd, st = lbfgs.update(g, st, z, value=v, grad=g, value_fn=neg_fn)
            z_new = optax.apply_updates(z, upd)
            return jnp.where(jnp.all(jnp.isfinite(z_new)), z_new, z), st

        z, _ = jax.lax.fori_loop(0, n, step, (z, lbfgs.init(z)))
        return z, fn(z)

    zs, lds = jax.jit(jax.vmap(run_one))(z0)
    lds = jnp.where(jnp.isfinite(lds), lds, -jnp.inf)
    if n_polish > 0 and polish_steps > 0:
        # one start after the other (a vmapped line search hung XLA:CPU)
        for i in np.asarray(jnp.argsort(-lds)[:min(n_polish, n_starts)]):
            zp, ldp = polish(zs[i], 1.0, polish_steps)
            if bool(jnp.isfinite(ldp)) and ldp > lds[i]:
                zs, lds = zs.at[i].set(zp), lds.at[i].set(ldp)
    best = int(jnp.argmax(lds))
    z_best, ld_best = polish(zs[best], 0.0, 0)  # the z density at the best point (no steps)
    if z_polish_steps > 0:
        z_p, ld_p = polish(z_best, 0.0, z_polish_steps)
        if bool(jnp.isfinite(ld_p)) and ld_p > ld_best:
            z_best, ld_best = z_p, ld_p
    if newton_steps > 0:
        z_best, ld_best = newton_ascent(fm.logdensity, z_best, ld_best, newton_steps, hessian=fm.hessian,
                                         value_and_grad=fm.value_and_grad)
    return z_best, float(ld_best), zs, lds


def newton_ascent(fn, z, f0, n_steps: int, min_curvature: float = 0.1, gtol: float = 1e-6,
                  hessian: Callable | None = None, value_and_grad: Callable | None = None, free=None):
    """Up to ``n_steps`` Newton steps on ``fn`` from ``z`` (value ``f0``): the step solves
    ``(-H) dz = g`` with the eigenvalues of ``-H`` floored at ``min_curvature`` (always an
    ascent direction), halved up to 20 times until ``fn`` increases; stops when the Newton
    decrement ``g . dz`` falls below ``gtol`` or no halving helps.  ``hessian``,
    ``value_and_grad``: compiled ``fn`` derivatives (default: compiled here).  ``free``: indices
    of the coordinates that move (default all; the others stay put -- a conditional maximum).
    Returns (z, fn(z))."""
    vg = value_and_grad if value_and_grad is not None else jax.jit(jax.value_and_grad(fn))
    hess = hessian if hessian is not None else jax.jit(jax.hessian(fn))
    f0 = float(f0)
    z = jnp.asarray(z)
    idx = np.arange(z.shape[0]) if free is None else np.asarray(free, int)
    for _ in range(n_steps):
        _, g = vg(z)
        h = -np.asarray(hess(z), np.float64)[np.ix_(idx, idx)]
        g = np.asarray(g, np.float64)[idx]
        if not (np.all(np.isfinite(h)) and np.all(np.isfinite(g))):
            break
        ev, vec = np.linalg.eigh(0.5 * (h + h.T))
        dz = np.zeros(z.shape[0])
        dz[idx] = vec @ ((vec.T @ g) / np.maximum(ev, min_curvature))
        if g @ dz[idx] < gtol:
            break
        for _ in range(20):
            f1, _ = vg(z + dz)
            if np.isfinite(float(f1)) and float(f1) > f0:
                z, f0 = z + dz, float(f1)
                break
            dz = 0.5 * dz
        else:
            break
    return z, f0
