"""Bayesian inference of SN Ia spectra through the differentiable emulator: the maths.

Modules: ``likelihood`` (Gaussian with emulator sigma, fractional systematic and a
calibration warp), ``model`` (NumPyro model and flat unconstrained density), ``samplers``
(NumPyro NUTS/HMC, BlackJAX NUTS / ChEES / adjusted MCLMC, emcee, nested sampling),
``ridge`` (profile-path preconditioning), ``diagnostics``, ``calibration`` (emulator-error
covariance), ``npe`` (conditional normalising flow), ``compare`` (two posteriors of one fit),
``toy``.  No module here reads or writes files, plots or imports the CLI: that is
:mod:`lumina_jax.workflows`.  Submodules are imported on use (JAX-heavy imports stay lazy).
"""
