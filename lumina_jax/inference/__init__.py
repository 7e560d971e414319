"""Bayesian inference of SN Ia spectra through the differentiable emulator: the maths.

Modules: ``likelihood`` (Gaussian with emulator sigma, fractional systematic and a
calibration warp), ``density`` (the NumPyro model: flat unconstrained density and every
coordinate transform), ``optimize`` (MAP search, Newton steps), ``precondition`` (Laplace
whitening around any sampler), ``sampling`` (one module per backend: NumPyro NUTS/HMC,
BlackJAX NUTS / ChEES / adjusted MCLMC, emcee, nested sampling), ``ridge`` (profile-path
preconditioning), ``diagnostics``, ``calibration`` (emulator-error
covariance), ``npe`` (conditional normalising flow), ``compare`` (two posteriors of one fit),
``toy``.  No module here reads or writes files, plots or imports the CLI: that is
:mod:`lumina_jax.workflows`.  Submodules are imported on use (JAX-heavy imports stay lazy).
"""
