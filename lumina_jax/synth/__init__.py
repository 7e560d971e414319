"""Embedded differentiable SN Ia spectrum synthesizer (ejecta -> L_lambda), see docs/forward_model.md.

>>> from lumina_jax.synth import Synthesizer
>>> synth = Synthesizer.default(space)
>>> wavelength, l_lambda = synth.spectrum(theta)
"""

from lumina_jax.synth.config import SynthConfig
from lumina_jax.synth.synthesizer import Synthesizer, max_line_depth, model_spectrum

__all__ = ["SynthConfig", "Synthesizer", "max_line_depth", "model_spectrum"]
