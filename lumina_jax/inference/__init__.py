"""Bayesian inference of SN Ia spectra through the differentiable emulator.

Modules: ``observed`` (spectrum files -> likelihood data), ``likelihood`` (Gaussian with
emulator sigma, fractional systematic and a calibration warp), ``model`` (NumPyro model and
flat unconstrained density), ``samplers`` (NumPyro NUTS/HMC, BlackJAX NUTS / adjusted MCLMC,
emcee), ``diagnostics``, ``chaining`` (relaxed boxes between stages), ``fit`` / ``api``
(results directories), ``plots``, ``checks`` (physics checks), ``pipeline``, ``toy``.
Submodules are imported on use (JAX-heavy imports stay lazy).
"""
