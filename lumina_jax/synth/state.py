"""The synthesizer's plasma state of one model for every line of the atomic data.

Used where the whole line list matters rather than the synthesizer's pruned selection: the
opacity weights of ``lumina-jax atomic info`` and the LUMINA reference directory.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lumina_jax.atomic.data import AtomicData
from lumina_jax.synth import plasma as pl

#: SN 2011fe-like stage-1 parameters: the TARDIS reference configuration
#: (``shared/data/sn2011fe/sn2011fe.yml``: L = 9.44e42 erg/s, t = 19 d, v_ph = 10,000 km/s,
#: rho_0 = 8e-14 g/cm^3 at 10,000 km/s, rho ~ v^-7) with a stratified composition
SN2011FE_LIKE = {"log_L": 42.975, "v_inner": 10000.0, "log_rho_0": -13.097, "density_exp": -7.0, "T_e_ratio": 0.9,
                 "v_core": 10000.0, "v_wall": 16000.0, "X_Fe_core": 0.5, "X_Si_wall": 0.4, "v_break": 20000.0,
                 "density_exp_outer": -7.0, "t_exp": 19.0, "X_Fe_wall": 0.1, "X_Ni": 0.1, "X_Fe_outer": 0.05}

#: TARDIS's converged inner-boundary temperature for that configuration, K (lumina_sn.md section 10)
REFERENCE_T_INNER = 10521.52


def plasma_for_all_lines(atomic: AtomicData, ejecta, t_inner: float | None = None, config=None) -> dict:
    """Plasma state of one :class:`~lumina_jax.ejecta.Ejecta`, with Sobolev depths of every line of ``atomic``.

    t_inner (K): the photospheric temperature; default: the synthesizer's converged value for this
    model (its T_inner iteration on the emergent luminosity, with ``config`` or lumina_jax/configs/synth.yaml).
    Returns a dict of NumPy arrays: w, t_rad, t_e, n_e [n_s]; fractions [n_s, n_el, N];
    tau [n_s, n_lines]; ejecta fields v_inner, v_outer [km/s], r_inner, r_outer [cm],
    rho [g/cm^3], X [n_s, n_el]; scalars t_inner [K], luminosity [erg/s], t_exp [s], t_e_ratio.
    """
    from lumina_jax.params import load_space
    from lumina_jax.synth import SynthConfig, Synthesizer

    if not isinstance(config, SynthConfig):
        config = SynthConfig.load(config)
    if t_inner is None:
        synth = Synthesizer(config, atomic, load_space(1), cache=False)
        _, st = synth.spectrum_of_ejecta(ejecta)
        t_inner = float(st["t_inner"])
    aj = AtomicData(*(jnp.asarray(a) for a in atomic))
    st = pl.plasma_state(aj, ejecta, jnp.asarray(t_inner), t_rad_exponent=config.t_rad_exponent,
                         n_e_iterations=config.n_e_iterations)
    out = {k: np.asarray(v) for k, v in st.items()}
    out.update(t_inner=float(t_inner), luminosity=float(ejecta.luminosity), t_exp=float(ejecta.t_exp),
               t_e_ratio=float(ejecta.t_e_ratio), v_inner=np.asarray(ejecta.v_inner),
               v_outer=np.asarray(ejecta.v_outer), r_inner=np.asarray(ejecta.r_inner),
               r_outer=np.asarray(ejecta.r_outer), rho=np.asarray(ejecta.rho), X=np.asarray(ejecta.X))
    return out


def line_blocking(tau) -> np.ndarray:
    """Each line's blocking weight ``sum_shells (1 - e^{-tau})`` [n_lines] from tau [n_s, n_lines]."""
    return np.sum(-np.expm1(-np.clip(np.asarray(tau), 0.0, None)), axis=0)
