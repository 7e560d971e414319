"""benchmarks/compare_sn2011fe.py: the Planck-continuum test that tells a stand-in reference
spectrum (a Planck function times smooth dips) from a real one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "sn2011fe"


def _module():
    spec = importlib.util.spec_from_file_location("benchmarks_compare_sn2011fe", ROOT / "benchmarks" / "compare_sn2011fe.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _planck(wl, t_k):
    """B_lambda(T) in cgs per Angstrom, written out independently of the benchmark."""
    h, c, k = 6.62607015e-27, 2.99792458e10, 1.380649e-16
    lam = wl * 1e-8
    return 2 * h * c**2 / lam**5 / np.expm1(h * c / (lam * k * t_k)) * 1e-8


def test_planck_times_dips_gives_back_its_temperature_and_dips():
    cmp = _module()
    wl = np.linspace(3000.0, 10000.0, 2000)
    dips = 1 - 0.4 * np.exp(-0.5 * ((wl - 3800) / 60) ** 2) - 0.5 * np.exp(-0.5 * ((wl - 6100) / 80) ** 2)
    t_k, resid, n, found = cmp.planck_continuum(wl, 3e12 * _planck(wl, 9500.0) * dips)
    assert t_k == pytest.approx(9500.0, rel=1e-6)
    assert resid < 1e-6 and n > 1000
    assert [round(w, -1) for w, _ in found] == [3800, 6100]
    assert [d for _, d in found] == pytest.approx([0.4, 0.5], abs=2e-3)


def test_line_blanketed_spectrum_is_far_from_any_planck_function():
    cmp = _module()
    wl = np.linspace(3000.0, 10000.0, 2000)
    rng = np.random.default_rng(0)
    lines = np.exp(-np.convolve(rng.exponential(0.3, wl.size), np.ones(15) / 15, mode="same"))  # a forest of features
    _, resid, _, _ = cmp.planck_continuum(wl, _planck(wl, 11000.0) * lines)
    assert resid > 0.05


def test_too_few_points_in_the_windows_is_a_clear_error():
    cmp = _module()
    with pytest.raises(ValueError, match="continuum windows"):
        cmp.planck_continuum(np.array([5000.0, 5100.0]), np.ones(2))


@pytest.mark.skipif(not (DATA / "tardis_spectrum.csv").exists(),
                    reason="../shared/data/sn2011fe/tardis_spectrum.csv not present (not redistributable)")
def test_the_shipped_tardis_reference_is_a_planck_function_outside_three_dips():
    """What docs/forward_model.md states about the reference: 11,994 K Planck to 2e-4, three dips."""
    cmp = _module()
    ref = np.loadtxt(DATA / "tardis_spectrum.csv", delimiter=",", skiprows=1)
    t_k, resid, _, dips = cmp.planck_continuum(ref[:, 0], ref[:, 1])
    assert t_k == pytest.approx(11994.0, abs=5.0)
    assert resid < 2e-4
    assert len(dips) == 3
