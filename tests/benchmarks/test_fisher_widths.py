"""The Fisher widths of benchmarks/fisher_widths.py against closed forms."""

import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location("fisher_widths", Path(__file__).parents[2] / "benchmarks" / "fisher_widths.py")
fw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fw)


def _problem(n=150, width=3.0):
    x = np.linspace(-1, 1, n)
    G = np.stack([np.ones(n), x, np.exp(-((x - 0.2) / 0.3) ** 2)], 1)
    k = np.exp(-0.5 * (np.subtract.outer(np.arange(n), np.arange(n)) / width) ** 2)
    M = k / k.sum(1, keepdims=True)  # a smoothing operator: neighbouring bins correlate
    var = (0.05 * (1.0 + 0.5 * x)) ** 2
    return G, M, var


def test_smoothing_by_an_invertible_operator_keeps_the_information():
    """M square and invertible: the smoothed data hold what the pixels hold, G^T D^-1 G,
    although C = M D M^T has a condition number of ~1e17."""
    G, M, var = _problem()
    exact = np.sqrt(np.diag(np.linalg.inv((G / var[:, None]).T @ G)))
    np.testing.assert_allclose(fw.fisher_sd(G, M, var), exact, rtol=1e-6)
    assert fw.fisher_sd(G, M, var, 2).shape == (2,)


def test_dropped_edge_bins_against_the_direct_formula_where_it_is_well_conditioned():
    G, M, var = _problem(width=0.4)  # mild smoothing: C is well conditioned
    Mr = M[10:-10]  # the band keeps fewer bins than the smoothing reads
    J, C = Mr @ G, (Mr * var) @ Mr.T
    direct = np.sqrt(np.diag(np.linalg.inv(J.T @ np.linalg.solve(C, J))))
    np.testing.assert_allclose(fw.fisher_sd(G, Mr, var), direct, rtol=1e-8)


def test_independent_bin_view():
    G, M, var = _problem()
    J, cdiag = M @ G, np.einsum("ij,j,ij->i", M, var, M)
    # every smoothed bin taken as independent overstates the information of correlated bins
    assert np.all(fw.fisher_sd_diagonal(J, cdiag) < 0.6 * fw.fisher_sd(G, M, var))
    # without smoothing it is exact
    np.testing.assert_allclose(fw.fisher_sd_diagonal(G, var), fw.fisher_sd(G, np.eye(len(var)), var), rtol=1e-10)
