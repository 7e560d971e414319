"""A LUMINA-SN reference directory from our atomic data and plasma state.

:func:`reference_tables` turns a level-resolved :class:`~lumina_jax.atomic.AtomicData` and one
model's plasma state (:func:`lumina_jax.synth.state.plasma_for_all_lines`) into the contents of
every file LUMINA-SN reads (``runners.backends.lumina_ref.REFERENCE_SPEC``):

* geometry, density, n_e, W / T_rad from our plasma solution (LUMINA's iteration 0 starts from a
  physical state) and tau_Sobolev of every line in every shell;
* abundances of the 11 elements, atom masses, levels (energy, g, metastable), ionisation
  energies, zeta tables (zeta = 1 where the atomic data have none);
* the line list sorted by nu descending with f_lu, A_ul, B_lu, B_ul consistent with the levels'
  g (:func:`lumina_jax.atomic.data.line_coefficients`);
* Lucy's macro-atom blocks and their transition probabilities at that plasma state
  (:mod:`lumina_jax.atomic.macroatom`, with Lucy's level-energy weights), and each line's upper
  macro level.

:func:`export_reference` is the workflow: it computes the state and writes (atomically, through
``runners.backends.lumina_ref.write_reference``, which validates the directory before it appears).
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from lumina_jax.atomic import macroatom
from lumina_jax.atomic.data import AtomicData, line_coefficients
from lumina_jax.params import ATOMIC_NUMBERS

KM = 1.0e5  # cm


def reference_tables(atomic: AtomicData, state: dict, *, n_packets: int = 200_000, n_iterations: int = 10,
                     seed: int = 23111963) -> dict:
    """Contents of every LUMINA reference file (plain arrays, see ``write_reference``).

    atomic : level-resolved atomic data (NumPy); state : dict of
    :func:`~lumina_jax.synth.state.plasma_for_all_lines` (tau [n_s, n_lines] for these lines).
    """
    n_s = len(state["w"])
    z_of = np.asarray(ATOMIC_NUMBERS)
    coef = line_coefficients(atomic)
    # line order: nu descending (stable); level numbers within each ion
    order = np.argsort(-coef["nu"], kind="stable")
    lev_el, lev_st = np.asarray(atomic.lev_el), np.asarray(atomic.lev_stage)
    ion_key = lev_el * 100 + lev_st
    first = np.concatenate([[0], np.flatnonzero(np.diff(ion_key)) + 1])
    ion_start = np.repeat(first, np.diff(np.concatenate([first, [len(ion_key)]])))
    level_number = np.arange(len(ion_key)) - ion_start
    lower, upper = np.asarray(atomic.lower)[order], np.asarray(atomic.upper)[order]
    el, st = np.asarray(atomic.el)[order], np.asarray(atomic.stage)[order]
    line_list = {
        "atomic_number": z_of[el], "ion_number": st,
        "level_number_lower": level_number[lower], "level_number_upper": level_number[upper],
        "f_lu": coef["f_lu"][order], "wavelength_cm": coef["wl_vac"][order] * 1e-8, "A_ul": coef["A_ul"][order],
        "B_lu": coef["B_lu"][order], "B_ul": coef["B_ul"][order], "nu": coef["nu"][order],
        "line_id": np.arange(len(order)), "wavelength": coef["wl_vac"][order], "f_ul": coef["f_ul"][order],
    }
    # macro-atom over the lines in line-list order
    macro = macroatom.build(lower, upper, atomic.n_levels)
    from lumina_jax.atomic.data import LINE_FIELDS

    atomic_sorted = atomic._replace(**{f: np.asarray(getattr(atomic, f))[order] for f in LINE_FIELDS})
    aj = AtomicData(*(jnp.asarray(a) for a in atomic_sorted))
    tau = np.asarray(state["tau"])[:, order]
    p = macroatom.transition_probabilities(macro, aj, jnp.asarray(tau), jnp.asarray(state["w"]),
                                           jnp.asarray(state["t_rad"]))
    shells = np.arange(n_s)
    n_el = len(z_of)
    n_stage_chi = np.shape(atomic.chi)[1]
    zeta = np.asarray(atomic.zeta)
    zeta_rows = [(e, k) for e in range(n_el) for k in range(n_stage_chi)]
    return {
        "config.json": {"time_explosion_s": float(state["t_exp"]), "T_inner_K": float(state["t_inner"]),
                        "luminosity_inner_erg_s": float(state["luminosity"]), "n_packets": int(n_packets),
                        "n_iterations": int(n_iterations), "seed": int(seed),
                        "T_e_T_rad_ratio": float(state["t_e_ratio"])},
        "geometry.csv": {"shell_id": shells, "r_inner": state["r_inner"], "r_outer": state["r_outer"],
                         "v_inner": state["v_inner"] * KM, "v_outer": state["v_outer"] * KM},
        "density.csv": {"shell_id": shells, "rho": state["rho"]},
        "electron_densities.csv": {"shell_id": shells, "n_e": state["n_e"]},
        "plasma_state.csv": {"shell_id": shells, "W": state["w"], "T_rad": state["t_rad"]},
        "abundances.csv": {"atomic_number": z_of, "mass_fractions": np.asarray(state["X"]).T},
        "atom_masses.csv": {"atomic_number": z_of, "mass_amu": np.asarray(atomic.mass)},
        "line_list.csv": line_list,
        "levels.csv": {"atomic_number": z_of[lev_el], "ion_number": lev_st, "level_number": level_number,
                       "energy_eV": np.asarray(atomic.lev_energy), "g": np.rint(np.asarray(atomic.lev_g)),
                       "metastable": np.asarray(atomic.lev_meta).astype(int)},
        "ionization_energies.csv": {"atomic_number": np.repeat(z_of, n_stage_chi),
                                    "ion_number": np.tile(np.arange(n_stage_chi), n_el),
                                    "ionization_energy_eV": np.asarray(atomic.chi).ravel()},
        "zeta_ions.csv": {"atomic_number": np.array([z_of[e] for e, _ in zeta_rows]),
                          "ion_number": np.array([k for _, k in zeta_rows])},
        "zeta_temps.csv": {"temperature": np.asarray(atomic.zeta_t)},
        # our zeta[el, j + 1] belongs to the ratio j -> j + 1 (the recombining ion j + 1)
        "zeta_data.npy": np.stack([zeta[e, k + 1] for e, k in zeta_rows]),
        "tau_sobolev.npy": tau.T,
        "transition_probabilities.npy": np.asarray(p).T,
        "macro_atom_references.csv": {"block_references": macro.block_start[:-1]},
        "macro_atom_data.csv": {"transition_type": macro.kind, "destination_level_idx": macro.dst,
                                "lines_idx": macro.line},
        "line2macro_level_upper.npy": upper.astype(np.int64),
    }


def export_reference(out, ejecta, *, atomic: AtomicData | None = None, config=None, n_packets: int = 200_000,
                     n_iterations: int = 10, seed: int = 23111963, overwrite: bool = False,
                     provenance: dict | None = None, progress=None) -> dict:
    """Write the LUMINA reference directory of one model to ``out``; returns a summary dict.

    ejecta : :class:`~lumina_jax.ejecta.Ejecta` (from a stage's parameters or a TARDIS YAML);
    atomic : level-resolved atomic data (default: ``config.atomic`` of lumina_jax/configs/synth.yaml);
    the plasma state is the synthesizer's at its converged T_inner.
    """
    import json

    from runners.backends.lumina_ref import write_reference
    from lumina_jax.atomic import load_atomic
    from lumina_jax.synth import SynthConfig
    from lumina_jax.synth.state import plasma_for_all_lines

    say = progress or (lambda msg: None)
    if not isinstance(config, SynthConfig):
        config = SynthConfig.load(config)
    prov = {}
    if atomic is None:
        say("loading atomic data")
        atomic, prov = load_atomic(config.atomic)
    say("solving the plasma state (synthesizer T_inner iteration)")
    state = plasma_for_all_lines(atomic, ejecta, config=config)
    say(f"writing {atomic.n_lines} lines, {atomic.n_levels} levels, {3 * atomic.n_lines} macro-atom transitions")
    tables = reference_tables(atomic, state, n_packets=n_packets, n_iterations=n_iterations, seed=seed)
    write_reference(out, tables, overwrite=overwrite)
    summary = {"path": str(out), "n_shells": len(state["w"]), "n_lines": atomic.n_lines, "n_levels": atomic.n_levels,
               "n_transitions": 3 * atomic.n_lines, "T_inner_K": state["t_inner"],
               "luminosity_erg_s": state["luminosity"], "W": [float(state["w"].min()), float(state["w"].max())],
               "T_rad_K": [float(state["t_rad"].min()), float(state["t_rad"].max())],
               "zeta": "from the atomic data" if np.any(np.asarray(atomic.zeta) != 1.0) else "1 (no zeta data)",
               "atomic": {"name": prov.get("name", "given"), "fingerprint": atomic.fingerprint()},
               **(provenance or {})}
    (Path(out) / "lumina_jax_export.json").write_text(json.dumps(summary, indent=1))
    return summary


def campaign_reference(space, out, *, config=None, progress=None) -> Path:
    """The reference of a campaign over ``space`` (``generate --lumina-ref auto``): our atomic data
    and plasma state at the centre of the space's box.  The runner rewrites the six per-model
    files for every model; tau_Sobolev (LUMINA's iteration 0) and the macro-atom transition
    probabilities (frozen unless LUMINA_DYNAMIC_TRANSPROB) stay those of the centre."""
    from lumina_jax.ejecta import build_ejecta

    centre = space.from_unit(np.full(space.dim, 0.5))
    ejecta = build_ejecta(jnp.asarray(centre), space)
    export_reference(out, ejecta, config=config, progress=progress,
                     provenance={"model": {"stage": space.stage, "box_centre": dict(zip(space.names, map(float, centre)))}})
    return Path(out)
