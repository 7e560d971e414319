"""Workflows: what a command does, above the maths.

Each module takes typed options, reads and writes files (results directories, checkpoints,
campaign stores), reports progress through callbacks and calls the pure functions of
``lumina_jax.inference``, ``lumina_jax.emulator`` and ``lumina_jax.synth``.  The CLI parses,
calls one workflow and prints; nothing here imports the CLI.

``config`` (the typed inference configuration and the shipped checkpoints), ``infer`` (one stage's fit
from a request), ``fit`` (MAP, sampling, diagnostics, results directory), ``results``
(results directories read back), ``chaining`` (relaxed boxes between stages), ``emulator``
(training and error calibration from campaign stores), ``pipeline``, ``checks`` (coverage,
gradient, posterior-predictive), ``npe`` / ``npe_fit`` / ``sbc`` (amortised posteriors),
``plots``.  Submodules are imported on use.
"""
